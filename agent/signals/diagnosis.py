"""Per-GPU diagnosis over a window: the share of each state and one sentence naming the problem.

Input is the store's signal history (``(end time, IntervalSignals)`` per interval) and the
latest snapshot (temperatures, power, peaks, XIDs). The dominant *problem* is the largest of
unavailable / starved_* / throttled_* holding at least ``diagnosis_min_share`` of the window;
without one, the sentence says what the GPU mostly did (idle, memory-bound, computing).

Other features add evidence through ``extra_evidence`` (gpu index -> text), e.g. the
profiler's "62 % of worker samples in PIL/Image.py:decode"; it is appended to the sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from agent.model import GPU_STATES, DeviceStatus, GpuReading, IntervalSignals
from agent.signals import mfu, throttling
from agent.snapshot import CounterKey, Snapshot

History = list[tuple[float, IntervalSignals]]
# (gpu index, window seconds) -> evidence text or None; registered on SignalEngine.evidence_providers
EvidenceProvider = Callable[[int, float], "str | None"]

PROBLEM_STATES = ("unavailable", "starved_host", "starved_io", "starved_other", "throttled_power",
                  "throttled_thermal")
EXECUTING_STATES = ("throttled_power", "throttled_thermal", "memory_bound", "compute_bound")


class SignalHistory(Protocol):
    def signal_history(self, index: int, seconds: float) -> History: ...


@dataclass
class GpuDiagnosis:
    gpu: int
    uuid: str | None
    window_seconds: float
    covered_seconds: float
    shares: dict[str, float]
    dominant: str | None  # the state with the largest share
    problem: str | None  # the dominant problem state, if one holds diagnosis_min_share
    sentence: str
    evidence: str | None = None
    estimated_mfu: float | None = None  # estimated FLOPs at the configured precision / (peak x covered time)
    reported_mfu: float | None = None
    mbu: float | None = None  # estimated DRAM bytes / (peak bandwidth x covered time)
    clock_lost_ratio: float | None = None  # clock-lost seconds / executing seconds
    throttle_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def span(seconds: float) -> str:
    if seconds >= 119.5:
        return f"the last {seconds / 60:.3g} minutes"
    if seconds >= 59.5:
        return "the last minute"
    return f"the last {seconds:.0f} seconds"


@dataclass
class _Totals:
    covered: float = 0.0
    states: dict[str, float] = field(default_factory=dict)
    throttle: dict[str, float] = field(default_factory=dict)
    clock_lost: float = 0.0
    flops: float = 0.0
    reported: float = 0.0
    dram: float = 0.0
    has_flops: bool = False
    has_dram: bool = False
    evidence: dict[str, str] = field(default_factory=dict)  # starved state -> latest evidence


def _sum(history: list[tuple[float, IntervalSignals]], precision: str, window_seconds: float) -> _Totals:
    """Totals over the window ending at the newest interval; one straddling its start counts in part."""
    t = _Totals()
    if not history:
        return t
    start = history[-1][0] - window_seconds
    for end, sig in history:
        if end <= start or sig.dt <= 0:
            continue
        w = min(1.0, (end - start) / sig.dt)
        t.covered += sig.dt * w
        for state, seconds in sig.state_seconds.items():
            t.states[state] = t.states.get(state, 0.0) + seconds * w
            if seconds > 0 and state.startswith("starved") and sig.starvation_evidence:
                t.evidence[state] = sig.starvation_evidence
        for reason, seconds in sig.throttle_seconds.items():
            t.throttle[reason] = t.throttle.get(reason, 0.0) + seconds * w
        t.clock_lost += sig.clock_lost_seconds * w
        if precision in sig.estimated_flops:
            t.flops += sig.estimated_flops[precision] * w
            t.has_flops = True
        if sig.estimated_dram_bytes is not None:
            t.dram += sig.estimated_dram_bytes * w
            t.has_dram = True
        t.reported += sig.reported_flops * w
    return t


def _peak(snapshot: Snapshot | None, index: int, key: CounterKey) -> float | None:
    if snapshot is None:
        return None
    return snapshot.gpu_gauges.get(index, {}).get(key)


def _unavailable_cause(reading: GpuReading | None, xids: list[int]) -> str:
    if reading is None:
        cause = "not read"
    elif reading.status is DeviceStatus.LOST:
        cause = "lost (fell off the bus or needs a reset)"
    elif reading.status is DeviceStatus.UNRESPONSIVE:
        cause = "unresponsive (an NVML call missed its deadline)"
    elif reading.status is DeviceStatus.ERROR:
        cause = f"read failed: {reading.error or 'unknown error'}"
    else:
        cause = "no activity counter could be read" if reading.executing_ratio()[0] is None else \
            "it answers again now"
    if xids:
        cause += "; XID " + ", ".join(str(x) for x in sorted(xids)) + " seen"
    return cause


def _sentence(index: int, state: str | None, share: float, when: str, t: _Totals, d: GpuDiagnosis,
              reading: GpuReading | None, xids: list[int]) -> tuple[str, str | None]:
    """One sentence for the state that matters, and the evidence it quotes."""
    g = f"GPU {index}"
    executing = sum(t.states.get(s, 0.0) for s in EXECUTING_STATES)
    lost = f"{pct(d.clock_lost_ratio)} of its clock" if d.clock_lost_ratio is not None else "clock"
    if state is None:
        return f"{g}: no signal history in {when} yet", None
    if state == "unavailable":
        cause = _unavailable_cause(reading, xids)
        return f"{g} was unavailable {pct(share)} of {when}: {cause}", cause
    if state.startswith("starved"):
        evidence = t.evidence.get(state)
        what = {"starved_host": "starved by host CPU", "starved_io": "starved by I/O",
                "starved_other": "waiting with no CPU or I/O cause on the host "
                                 "(network, collectives or the program itself)"}[state]
        return f"{g} spent {pct(share)} of {when} {what}" + (f": {evidence}" if evidence else ""), evidence
    if state == "throttled_thermal":
        evidence = None
        if reading is not None and (headroom := throttling.thermal_headroom(reading)) is not None:
            side = "under" if headroom >= 0 else "over"
            evidence = f"temperature {abs(headroom):.0f} °C {side} the slowdown threshold"
        text = f"{g} lost {lost} to thermal slowdown over {when} (throttled {pct(share)} of the time)"
        return text + (f"; {evidence}" if evidence else ""), evidence
    if state == "throttled_power":
        evidence = None
        if reading is not None and reading.power_watts is not None and reading.power_limit_watts is not None:
            evidence = f"drawing {reading.power_watts:.0f} W of a {reading.power_limit_watts:.0f} W limit"
        text = f"{g} lost {lost} to the power cap over {when} (capped {pct(share)} of the time)"
        return text + (f"; {evidence}" if evidence else ""), evidence
    if state == "idle":
        return f"{g} was idle (no process) {pct(share)} of {when}", None
    if state == "memory_bound":
        mbu = f" at MBU {pct(d.mbu)}" if d.mbu is not None else ""
        return f"{g} was memory-bound {pct(share)} of {when}{mbu}: judge it by bandwidth, not FLOPs", None
    if d.reported_mfu is not None:  # the workload's own model FLOPs beat the counter estimate
        mfu_text = f" at a reported MFU of {pct(d.reported_mfu)}"
    elif d.estimated_mfu is not None:
        mfu_text = f" at an estimated MFU of {pct(d.estimated_mfu)}"
    else:
        mfu_text = ""
    return f"{g} computed {pct(executing / t.covered if t.covered else 0.0)} of {when}{mfu_text}; " \
           "no problem found", None


def diagnose_gpu(index: int, history: History, snapshot: Snapshot | None, window_seconds: float, *,
                 precision: str, min_share: float, extra_evidence: str | None = None) -> GpuDiagnosis:
    t = _sum(history, precision, window_seconds)
    reading = snapshot.readings.get(index) if snapshot is not None else None
    uuid = reading.uuid if reading is not None else None
    if uuid is None and snapshot is not None and index in snapshot.identities:
        uuid = snapshot.identities[index].uuid
    shares = {s: t.states.get(s, 0.0) / t.covered for s in GPU_STATES} if t.covered > 0 else {}
    dominant = max(shares, key=lambda s: shares[s]) if shares and t.covered > 0 else None
    problems = [(shares[s], s) for s in PROBLEM_STATES if shares.get(s, 0.0) >= min_share and shares[s] > 0]
    problem = max(problems)[1] if problems else None
    executing = sum(t.states.get(s, 0.0) for s in EXECUTING_STATES)
    d = GpuDiagnosis(gpu=index, uuid=uuid, window_seconds=window_seconds, covered_seconds=t.covered,
                     shares=shares, dominant=dominant, problem=problem, sentence="",
                     throttle_seconds=t.throttle)
    if executing > 0:
        d.clock_lost_ratio = t.clock_lost / executing
    peak = _peak(snapshot, index, (mfu.PEAK_FLOPS, (("precision", precision),)))
    if peak and t.covered > 0:
        if t.has_flops:
            d.estimated_mfu = t.flops / (peak * t.covered)
        if t.reported > 0:
            d.reported_mfu = t.reported / (peak * t.covered)
    bandwidth = _peak(snapshot, index, (mfu.PEAK_BANDWIDTH, ()))
    if bandwidth and t.has_dram and t.covered > 0:
        d.mbu = t.dram / (bandwidth * t.covered)
    xids = [x for (i, x) in (snapshot.xid_counts if snapshot is not None else {}) if i == index]
    state = problem or dominant
    share = shares.get(state, 0.0) if state else 0.0
    d.sentence, d.evidence = _sentence(index, state, share, span(window_seconds), t, d, reading, xids)
    if extra_evidence:
        d.sentence += f"; {extra_evidence}"
        d.evidence = f"{d.evidence}; {extra_evidence}" if d.evidence else extra_evidence
    return d


def diagnose(histories: Mapping[int, History], snapshot: Snapshot | None, window_seconds: float, *,
             precision: str, min_share: float,
             extra_evidence: Mapping[int, str] | None = None) -> list[GpuDiagnosis]:
    extra = extra_evidence or {}
    return [diagnose_gpu(i, histories[i], snapshot, window_seconds, precision=precision, min_share=min_share,
                         extra_evidence=extra.get(i)) for i in sorted(histories)]


def gpu_indices(snapshot: Snapshot | None) -> list[int]:
    if snapshot is None:
        return []
    return sorted(set(snapshot.identities) | set(snapshot.readings))


def collect_evidence(providers: Iterable[EvidenceProvider], indices: Iterable[int],
                     window_seconds: float) -> dict[int, str]:
    """Ask each registered provider for evidence per GPU; a failing provider is skipped, not fatal."""
    out: dict[int, str] = {}
    providers = list(providers)
    for index in indices:
        parts: list[str] = []
        for provider in providers:
            try:
                text = provider(index, window_seconds)
            except Exception:  # a feature's bug must not break the diagnosis
                continue
            if text:
                parts.append(text)
        if parts:
            out[index] = "; ".join(parts)
    return out


def diagnose_store(store: SignalHistory, snapshot: Snapshot | None, minutes: float, *, precision: str,
                   min_share: float, providers: Iterable[EvidenceProvider] = (),
                   extra_evidence: Mapping[int, str] | None = None) -> list[GpuDiagnosis]:
    """What ``GET /api/v1/diagnosis`` and ``gpulse status`` show: every GPU of the latest snapshot."""
    seconds = minutes * 60.0
    indices = gpu_indices(snapshot)
    extra = collect_evidence(providers, indices, seconds)
    for index, text in (extra_evidence or {}).items():
        extra[index] = f"{extra[index]}; {text}" if index in extra else text
    histories = {i: store.signal_history(i, seconds) for i in indices}
    return diagnose(histories, snapshot, seconds, precision=precision, min_share=min_share,
                    extra_evidence=extra)


def format_diagnosis(items: Iterable[Mapping[str, Any]]) -> str:
    """Terminal text for ``gpulse status``: per GPU the top state shares and the sentence.

    Takes the dicts of ``GpuDiagnosis.to_dict()`` (or the API's JSON), so the CLI can print
    what a running agent answered.
    """
    lines: list[str] = []
    for item in items:
        shares = sorted(((v, k) for k, v in (item.get("shares") or {}).items() if v >= 0.005), reverse=True)
        top = ", ".join(f"{k} {pct(v)}" for v, k in shares[:4]) or "no history"
        extras = []
        if item.get("estimated_mfu") is not None:
            extras.append(f"MFU~{pct(item['estimated_mfu'])}")
        if item.get("mbu") is not None:
            extras.append(f"MBU {pct(item['mbu'])}")
        tail = f"  [{', '.join(extras)}]" if extras else ""
        lines.append(f"GPU {item['gpu']}: {top}{tail}")
        lines.append(f"    {item['sentence']}")
    return "\n".join(lines)
