"""Score the derived signals against the simulated fleet's ground truth.

A scenario runs in-process on a ``ManualClock``: the simulator's device models behind
``FakeNvml``, read through the real ``NvmlBackend``, the simulator's host source, and the
``SignalEngine`` — sampled the way the sampler does it (every ``interval_s``, processes
every ``process_interval_s`` and carried between polls, a hung device reported
unresponsive). Simulated time costs no real time, so a 10-minute scenario takes seconds.

Scores, per state, are **time-weighted within each interval**: for each GPU and interval,
the agent's seconds ``a[s]`` and the truth's ``b[s]`` overlap by ``min(a[s], b[s])``;
precision = Σ overlap / Σ a, recall = Σ overlap / Σ b over all intervals and GPUs. That is
stricter than comparing totals, where errors of opposite sign would cancel.

MFU is compared over steady windows (``mfu_window_s``, no idle or unavailable time in the
truth): estimated FLOPs at the GPU's precision over peak x window, against the truth's.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

from agent.clock import ManualClock
from agent.model import GPU_STATES, DeviceStatus, GpuProcess, GpuReading
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.signals.engine import SignalEngine
from agent.signals.settings import TENSOR_PRECISIONS, SignalSettings
from agent.sim.fleet import Fleet
from agent.sim.physics import SimDevice
from agent.sim.scenario import Scenario, load_scenario
from agent.sim.truth import Truth, read_truth
from agent.specs import GpuSpec, SpecTable


@dataclass
class StateScore:
    agent_seconds: float = 0.0
    truth_seconds: float = 0.0
    overlap_seconds: float = 0.0

    @property
    def precision(self) -> float | None:
        return self.overlap_seconds / self.agent_seconds if self.agent_seconds > 0 else None

    @property
    def recall(self) -> float | None:
        return self.overlap_seconds / self.truth_seconds if self.truth_seconds > 0 else None

    @property
    def f1(self) -> float | None:
        """None for a state the truth does not contain (the targets cover the states present)."""
        if self.truth_seconds <= 0:
            return None
        p, r = self.precision or 0.0, self.recall or 0.0
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def add(self, other: StateScore) -> None:
        self.agent_seconds += other.agent_seconds
        self.truth_seconds += other.truth_seconds
        self.overlap_seconds += other.overlap_seconds


@dataclass
class MfuWindow:
    gpu: int
    start_s: float
    end_s: float
    estimated: float
    true: float

    @property
    def error(self) -> float:
        return abs(self.estimated - self.true)


@dataclass
class ScoreResult:
    scenario: str
    interval_s: float
    duration_s: float
    states: dict[str, StateScore] = field(default_factory=lambda: {s: StateScore() for s in GPU_STATES})
    mfu: list[MfuWindow] = field(default_factory=list)
    agent_totals: dict[int, dict[str, float]] = field(default_factory=dict)
    truth_totals: dict[int, dict[str, float]] = field(default_factory=dict)

    def present(self) -> list[str]:
        """States the truth contains."""
        return [s for s, sc in self.states.items() if sc.truth_seconds > 0]

    @property
    def mfu_max_error(self) -> float | None:
        return max((w.error for w in self.mfu), default=None)

    @property
    def mfu_mean_error(self) -> float | None:
        return sum(w.error for w in self.mfu) / len(self.mfu) if self.mfu else None


@dataclass
class _Interval:
    gpu: int
    t0: float
    t1: float
    states: dict[str, float]
    flops: dict[str, float]


def run_scenario(scenario: Scenario | str, interval_s: float | None = None, *,
                 settings: SignalSettings | None = None, duration_s: float | None = None,
                 process_interval_s: float = 5.0, phase_s: float = 0.37,
                 mfu_window_s: float = 60.0) -> ScoreResult:
    """Run ``scenario`` (a ``Scenario``, or a shipped name or path) and score the engine against its truth."""
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    interval = interval_s or sc.interval_s
    duration = duration_s or sc.duration_s or 300.0
    sc = sc.with_overrides(duration_s=duration, interval_s=interval)
    clock = ManualClock(0.0)
    out = io.StringIO()
    fleet = Fleet.from_scenario(sc, clock, truth=out)
    backend = NvmlBackend(FakeNvml(fleet.models, clock), clock)
    backend.start()
    engine = SignalEngine(settings or SignalSettings(), SpecTable())
    for identity in backend.identities():
        engine.set_identity(identity.index, identity)
    sampler = _Sampler(backend, fleet.models, interval, process_interval_s)

    prev: dict[int, GpuReading] = {}
    intervals: list[_Interval] = []
    t = phase_s  # the first read lands phase_s into the scenario: sample slots and reads do not line up
    while t <= duration + 1e-9:
        clock.set(t)
        readings = {i: sampler.read(i, t) for i in range(len(fleet.models))}
        pids: dict[int, tuple[int, ...]] = {p.pid: (i,) for i, r in readings.items() if r.processes
                                            for p in r.processes}
        host = fleet.host_source.read(pids)
        for i, r in readings.items():
            before = prev.get(i)
            prev[i] = r
            if before is None:
                continue
            sig = engine.interval(i, before, r, host, r.timestamp - before.timestamp)
            intervals.append(_Interval(i, before.timestamp, r.timestamp, sig.state_seconds,
                                       sig.estimated_flops))
        t += interval
    fleet.finish(duration)
    backend.close()
    truth = read_truth(out.getvalue().splitlines())
    specs = {i: spec for i in range(len(fleet.models)) if (spec := engine.spec(i)) is not None}
    return _score(sc.name, interval, duration, intervals, truth, mfu_window_s, engine.settings.precision,
                  specs)


class _Sampler:
    """Reads GPUs the way the agent's sampler does, without its threads."""

    def __init__(self, backend: NvmlBackend, models: list[SimDevice], interval: float,
                 process_interval_s: float) -> None:
        self.backend = backend
        self.models = models
        self.interval = interval
        self.process_interval_s = process_interval_s
        self.processes: dict[int, list[GpuProcess] | None] = {}
        self.polled: dict[int, float] = {}

    def read(self, i: int, t: float) -> GpuReading:
        """A hung device is unresponsive (the sampler's deadline), not waited on; processes are
        polled every ``process_interval_s`` and carried between polls."""
        model = self.models[i]
        if model.timeline.hang_until(t - model.start) is not None:
            self._forget(i)
            return GpuReading(index=i, uuid="", timestamp=t, status=DeviceStatus.UNRESPONSIVE, error="hung")
        poll = t - self.polled.get(i, -math.inf) >= self.process_interval_s - 0.5 * self.interval
        r = self.backend.read(i, processes=poll)
        if r.status is not DeviceStatus.OK:
            self._forget(i)
        elif r.processes is not None:
            self.processes[i] = r.processes
            self.polled[i] = t
        else:
            r.processes = self.processes.get(i)
        return r

    def _forget(self, i: int) -> None:
        self.processes[i] = None
        self.polled[i] = -math.inf


def _score(name: str, interval: float, duration: float, intervals: list[_Interval], truth: Truth,
           mfu_window_s: float, precision: str, specs: dict[int, GpuSpec]) -> ScoreResult:
    result = ScoreResult(name, interval, duration)
    cursors: dict[int, _Sweep] = {}
    for iv in sorted(intervals, key=lambda iv: (iv.gpu, iv.t0)):
        t1 = min(iv.t1, duration)
        if t1 <= iv.t0:
            continue
        scale = (t1 - iv.t0) / (iv.t1 - iv.t0)
        sweep = cursors.get(iv.gpu)
        if sweep is None:
            sweep = cursors[iv.gpu] = _Sweep(truth.states.get(iv.gpu, []))
        real = sweep.seconds(iv.t0, t1)
        agent_totals = result.agent_totals.setdefault(iv.gpu, dict.fromkeys(GPU_STATES, 0.0))
        truth_totals = result.truth_totals.setdefault(iv.gpu, dict.fromkeys(GPU_STATES, 0.0))
        for s in GPU_STATES:
            a = iv.states.get(s, 0.0) * scale
            b = real.get(s, 0.0)
            sc = result.states[s]
            sc.agent_seconds += a
            sc.truth_seconds += b
            sc.overlap_seconds += min(a, b)
            agent_totals[s] += a
            truth_totals[s] += b
    result.mfu = _mfu_windows(intervals, truth, mfu_window_s, precision, specs)
    return result


class _Sweep:
    """Truth seconds per state for windows asked in increasing order: one pass over a GPU's records."""

    def __init__(self, records: list[tuple[float, float, str]]) -> None:
        self.records = sorted(records)
        self.i = 0

    def seconds(self, t0: float, t1: float) -> dict[str, float]:
        while self.i < len(self.records) and self.records[self.i][1] <= t0:
            self.i += 1
        out: dict[str, float] = {}
        j = self.i
        while j < len(self.records) and self.records[j][0] < t1:
            a, b, state = self.records[j]
            lo, hi = max(a, t0), min(b, t1)
            if hi > lo:
                out[state] = out.get(state, 0.0) + hi - lo
            j += 1
        return out


def _mfu_windows(intervals: list[_Interval], truth: Truth, window_s: float, precision: str,
                 specs: dict[int, GpuSpec]) -> list[MfuWindow]:
    """Estimated vs true MFU per GPU over consecutive windows of whole intervals with steady truth."""
    by_gpu: dict[int, list[_Interval]] = {}
    for iv in intervals:
        by_gpu.setdefault(iv.gpu, []).append(iv)
    out: list[MfuWindow] = []
    for gpu, ivs in by_gpu.items():
        records = truth.flops.get(gpu, [])
        precisions = {p for _a, _b, _f, p, _pk in records if p}
        if len(precisions) != 1:
            continue  # no compute workload, or it changed precision: no single MFU to compare
        true_precision = precisions.pop()
        # The engine estimates the configured tensor precision from tensor activity; fp32/fp64 work
        # shows in the pipe estimates under its own name.
        key = precision if true_precision in TENSOR_PRECISIONS else true_precision
        i = 0
        while i < len(ivs):
            start = ivs[i].t0
            j = i
            while j < len(ivs) and ivs[j].t1 - start < window_s - 1e-9:
                j += 1
            if j >= len(ivs):
                break
            window = ivs[i:j + 1]
            end = window[-1].t1
            real = truth.state_seconds(gpu, start, end)
            if real["idle"] > 0 or real["unavailable"] > 0:
                i = j + 1
                continue
            true_mfu = truth.mfu(gpu, start, end)
            spec = specs.get(gpu)
            peak = spec.peak_flops.get(key) if spec is not None else None
            # No estimate at all (no tensor-activity counter: pre-Hopper) is absent, not zero.
            if true_mfu is not None and peak and any(key in iv.flops for iv in window):
                estimated = sum(iv.flops.get(key, 0.0) for iv in window) / (peak * (end - start))
                out.append(MfuWindow(gpu, start, end, estimated, true_mfu))
            i = j + 1
    return out


def format_table(results: list[ScoreResult]) -> str:
    """The score table of docs/signals.md: per interval, per state P / R / F1, then MFU errors."""
    lines = ["| interval | state | truth s | precision | recall | F1 |", "|---|---|---|---|---|---|"]
    by_interval: dict[float, dict[str, StateScore]] = {}
    for r in results:
        acc = by_interval.setdefault(r.interval_s, {s: StateScore() for s in GPU_STATES})
        for s, sc in r.states.items():
            acc[s].add(sc)
    for interval, states in sorted(by_interval.items()):
        for s, sc in states.items():
            if sc.truth_seconds <= 0 and sc.agent_seconds <= 0:
                continue
            lines.append(f"| {interval:g} s | {s} | {sc.truth_seconds:.0f} | {_f(sc.precision)} | "
                         f"{_f(sc.recall)} | {_f(sc.f1)} |")
    lines += ["", "| scenario | interval | MFU windows | mean abs error | max abs error |",
              "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.scenario} | {r.interval_s:g} s | {len(r.mfu)} | {_f(r.mfu_mean_error, 4)} | "
                     f"{_f(r.mfu_max_error, 4)} |")
    return "\n".join(lines)


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"
