"""The data behind the live page: one JSON document with everything a card needs.

The page polls ``GET /api/v1/overview`` every couple of seconds. Everything is read from
the store (the latest snapshot and the ring buffers), so the page costs the node no
NVML calls. Chart series are averaged into at most ``MAX_POINTS`` buckets per chart, so
a 15-minute window at a 0.1 s interval sends 150 points per chart, not 9000, and a short
spike or gap is averaged in rather than skipped.

"Absent, not zero" holds here too: a value the device does not report, or a sample the
agent could not take, is ``null`` in the JSON and a gap in the chart.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import agent
from agent.model import GPU_STATES, DeviceStatus, GpuReading, HostReading, IntervalSignals
from agent.snapshot import Snapshot

if TYPE_CHECKING:
    from agent.runtime import Runtime

MAX_POINTS = 150
# The card's state is the dominant one over this many seconds (at least RECENT_INTERVALS intervals):
# a single interval flickers between the phases of a bursty job, a longer window reacts too late.
RECENT_SECONDS = 10.0
RECENT_INTERVALS = 3

# Words an on-call engineer reads on the card; colour is never the only carrier of the state.
STATE_LABELS: dict[str, str] = {
    "unavailable": "Unavailable",
    "idle": "Idle",
    "starved_host": "Starved by host CPU",
    "starved_io": "Starved by I/O",
    "starved_other": "Waiting (no host cause)",
    "throttled_power": "Throttled: power",
    "throttled_thermal": "Throttled: thermal",
    "memory_bound": "Memory-bound",
    "compute_bound": "Computing",
}
NO_DATA_LABEL = "No data yet"

# Clock-event reason bits marked on the SM clock chart, grouped the way the states are.
THERMAL_BITS = 0x20 | 0x40  # SwThermalSlowdown, HwThermalSlowdown
POWER_BITS = 0x04 | 0x80  # SwPowerCap, HwPowerBrakeSlowdown

T = TypeVar("T")
_PRIORITY = {s: i for i, s in enumerate(GPU_STATES)}


def dominant_state(intervals: Iterable[IntervalSignals]) -> str | None:
    """The state with the most seconds over the given intervals (ties: the higher-priority state)."""
    totals: dict[str, float] = {}
    for sig in intervals:
        for state, seconds in sig.state_seconds.items():
            totals[state] = totals.get(state, 0.0) + seconds
    if not totals or max(totals.values()) <= 0:
        return None
    return max(totals, key=lambda s: (totals[s], -_PRIORITY.get(s, len(_PRIORITY))))


def current_state(
    history: Sequence[tuple[float, IntervalSignals]], reading: GpuReading | None, interval_seconds: float
) -> str | None:
    """What the GPU is doing now: unavailable while its reading says so, else the recent dominant state."""
    if reading is not None and reading.status is not DeviceStatus.OK:
        return "unavailable"
    if not history:
        return None
    span = max(RECENT_SECONDS, RECENT_INTERVALS * interval_seconds)
    cutoff = history[-1][0] - span
    return dominant_state(sig for t, sig in history if t > cutoff)


def bucket_edges(n: int, max_points: int = MAX_POINTS) -> list[tuple[int, int]]:
    """(start, end) index pairs of consecutive groups of ``n`` items, at most ``max_points`` of them."""
    if n <= max_points:
        return [(i, i + 1) for i in range(n)]
    edges = [round(i * n / max_points) for i in range(max_points + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def buckets(items: Sequence[T], max_points: int = MAX_POINTS) -> list[Sequence[T]]:
    """Consecutive groups of ``items``, at most ``max_points`` of them, covering every item once."""
    return [items[a:b] for a, b in bucket_edges(len(items), max_points)]


def _mhz(hz: float | None) -> float | None:
    return None if hz is None else hz / 1e6


def _throttle(reasons: int | None) -> str | None:
    if not reasons:
        return None
    return "thermal" if reasons & THERMAL_BITS else "power" if reasons & POWER_BITS else None


def _levels(r: GpuReading) -> tuple[float | None, ...]:
    """The chart values of one reading, in ``_COLUMNS`` order."""
    return (
        r.executing_ratio()[0],
        r.tensor_active_ratio,
        r.dram_active_ratio,
        _mhz(r.sm_clock_hz),
        _mhz(r.sm_clock_max_hz),
        r.power_watts,
        r.power_limit_watts,
        r.temperatures_celsius.get("gpu"),
        r.temperature_thresholds_celsius.get("slowdown"),
        r.memory_used_bytes,
        r.memory_total_bytes,
    )


# chart columns, in _levels order, with the decimals kept (0: an integer)
_COLUMNS: tuple[tuple[str, int], ...] = (
    ("sm", 3),
    ("tensor", 3),
    ("dram", 3),
    ("sm_clock_mhz", 0),
    ("sm_clock_max_mhz", 0),
    ("power_watts", 1),
    ("power_limit_watts", 1),
    ("temperature_celsius", 1),
    ("slowdown_celsius", 1),
    ("memory_used_bytes", 0),
    ("memory_total_bytes", 0),
)


def series(readings: Sequence[GpuReading], epoch_offset: float) -> dict[str, list[Any]]:
    """Column-wise chart data averaged per bucket; null where no reading in the bucket had a value.

    A reading that is not OK (lost, unresponsive, failed) has no levels: its bucket is a gap.
    """
    edges = bucket_edges(len(readings))
    cols: dict[str, list[Any]] = {"t": [round(readings[b - 1].timestamp + epoch_offset, 3) for _, b in edges]}
    empty = (None,) * len(_COLUMNS)
    rows = [_levels(r) if r.status is DeviceStatus.OK else empty for r in readings]
    for (name, digits), values in zip(_COLUMNS, zip(*rows, strict=True), strict=True) if rows else ():
        column: list[Any] = []
        for a, b in edges:
            if b - a == 1:
                v = values[a]
            else:
                present = [x for x in values[a:b] if x is not None]
                v = sum(present) / len(present) if present else None
            column.append(None if v is None else round(v) if digits == 0 else round(v, digits))
        cols[name] = column
    if not rows:
        cols.update({name: [] for name, _ in _COLUMNS})
    marks = [_throttle(r.clock_event_reasons) if r.status is DeviceStatus.OK else None for r in readings]
    throttle: list[str | None] = []
    for a, b in edges:
        group = marks[a:b] if b - a > 1 else (marks[a],)
        throttle.append("thermal" if "thermal" in group else "power" if "power" in group else None)
    cols["throttle"] = throttle
    return cols


def timeline(history: Sequence[tuple[float, IntervalSignals]], epoch_offset: float) -> list[list[Any]]:
    """[end epoch, dominant state] per bucket of intervals: the strip under the share bar."""
    out: list[list[Any]] = []
    for group in buckets(history):
        state = dominant_state([sig for _t, sig in group])
        if state is not None:
            out.append([round(group[-1][0] + epoch_offset, 3), state])
    return out


def shares(history: Sequence[tuple[float, IntervalSignals]], window_seconds: float) -> dict[str, float]:
    """Share of the window each state took; the values sum to 1 (empty without history).

    Like the diagnosis, an interval that straddles the window's start counts in part.
    """
    if not history:
        return {}
    start = history[-1][0] - window_seconds
    totals: dict[str, float] = {}
    for end, sig in history:
        if end <= start or sig.dt <= 0:
            continue
        weight = min(1.0, (end - start) / sig.dt)
        for state, seconds in sig.state_seconds.items():
            if seconds > 0:
                totals[state] = totals.get(state, 0.0) + seconds * weight
    whole = sum(totals.values())
    if whole <= 0:
        return {}
    ordered = [s for s in GPU_STATES if s in totals] + [s for s in totals if s not in GPU_STATES]
    return {s: totals[s] / whole for s in ordered}


def _rate(a: float | None, b: float | None, dt: float) -> float | None:
    if a is None or b is None or dt <= 0 or b < a:
        return None  # a counter that went backwards was reset: no figure rather than a wrong one
    return (b - a) / dt


def host_view(hosts: Sequence[HostReading]) -> dict[str, Any]:
    """Host CPU busy share and pressure stall shares (PSI "some") over the last two host readings."""
    if not hosts:
        return {}
    last = hosts[-1]
    view: dict[str, Any] = {
        "cpu_count": last.cpu_count,
        "load_average": list(last.load_average) if last.load_average else None,
        "memory_total_bytes": last.memory_total_bytes,
        "memory_available_bytes": last.memory_available_bytes,
        "cpu_busy_ratio": None,
        "pressure_some_ratio": {},
        "errors": dict(last.errors),
    }
    if len(hosts) < 2:
        return view
    prev = hosts[-2]
    dt = last.timestamp - prev.timestamp
    modes = set(last.cpu_seconds) & set(prev.cpu_seconds)
    total = sum(last.cpu_seconds[m] - prev.cpu_seconds[m] for m in modes)
    idle = sum(last.cpu_seconds[m] - prev.cpu_seconds[m] for m in modes & {"idle", "iowait"})
    if total > 0:
        view["cpu_busy_ratio"] = round(max(0.0, min(1.0, 1.0 - idle / total)), 4)
    pressure: dict[str, float] = {}
    for resource, kinds in last.pressure_stall_seconds.items():
        rate = _rate(prev.pressure_stall_seconds.get(resource, {}).get("some"), kinds.get("some"), dt)
        if rate is not None:
            pressure[resource] = round(min(1.0, rate), 4)
    view["pressure_some_ratio"] = pressure
    return view


_OWNER_KEYS = ("pod", "namespace", "container", "slurm_job")


def processes(
    reading: GpuReading | None, snapshot: Snapshot, owners: dict[str, object]
) -> list[dict[str, Any]]:
    """The GPU's compute processes with their command line and, once attributed, pod or job."""
    if reading is None or not reading.processes:
        return []
    host_procs = snapshot.host.processes if snapshot.host is not None else {}
    listed = owners.get("processes")
    attributed = {p.get("pid"): p for p in listed if isinstance(p, dict)} if isinstance(listed, list) else {}
    out = []
    for gp in reading.processes:
        entry: dict[str, Any] = {"pid": gp.pid, "used_memory_bytes": gp.used_memory_bytes}
        att = attributed.get(gp.pid) or {}
        stats = host_procs.get(att.get("host_pid") or gp.pid)
        if stats is not None:
            entry["command"] = stats.cmdline or stats.comm
            entry["user"] = stats.user
        for key in _OWNER_KEYS:
            if att.get(key):
                entry[key] = att[key]
        out.append(entry)
    return out


def _diagnosis_figure(diagnosis: dict[str, Any], key: str) -> float | None:
    value = diagnosis.get(key)
    return round(value, 4) if isinstance(value, (int, float)) else None


def build_overview(runtime: Runtime, minutes: float, diagnoses: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The whole page's data; ``diagnoses`` maps GPU index -> the diagnosis dict of that GPU."""
    snapshot: Snapshot | None = runtime.store.latest()
    seconds = minutes * 60.0
    profiling = getattr(runtime.settings, "profiling", None)
    healthy, health_detail = runtime.health()
    node: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "version": agent.__version__,
        "window_seconds": seconds,
        "profiling_enabled": bool(getattr(profiling, "enabled", False)),
        "state_labels": STATE_LABELS,
        "states": list(GPU_STATES),
        "health": {"healthy": healthy, "detail": health_detail},
    }
    if snapshot is None:
        return {"node": node, "gpus": [], "ready": False}
    epoch_offset = snapshot.epoch - snapshot.timestamp
    node.update(
        {
            "epoch": snapshot.epoch,
            "interval_seconds": snapshot.interval_seconds,
            "nvml_up": snapshot.nvml_up,
            "nvml_message": snapshot.nvml_message,
            "host": host_view(runtime.store.host_history(max(3 * snapshot.interval_seconds, 2.0))),
            "collectors_failed": sorted(k for k, c in snapshot.collectors.items() if not c.success),
        }
    )
    gpus = []
    for index in sorted(set(snapshot.identities) | set(snapshot.readings)):
        identity = snapshot.identities.get(index)
        reading = snapshot.readings.get(index)
        history = runtime.store.signal_history(index, seconds)
        state = current_state(history, reading, snapshot.interval_seconds)
        owners = snapshot.owners.get(index) or {}
        diagnosis = diagnoses.get(index, {})
        gpus.append(
            {
                "index": index,
                "uuid": identity.uuid
                if identity is not None
                else reading.uuid
                if reading is not None
                else None,
                "name": identity.name if identity is not None else None,
                "status": reading.status.value if reading is not None else "unknown",
                "error": reading.error if reading is not None else None,
                "state": state,
                "state_label": STATE_LABELS.get(state, state) if state is not None else NO_DATA_LABEL,
                "shares": shares(history, seconds),
                "timeline": timeline(history, epoch_offset),
                "series": series(runtime.store.history(index, seconds), epoch_offset),
                "diagnosis": diagnosis.get("sentence"),
                "estimated_mfu": _diagnosis_figure(diagnosis, "estimated_mfu"),
                "reported_mfu": _diagnosis_figure(diagnosis, "reported_mfu"),
                "mbu": _diagnosis_figure(diagnosis, "mbu"),
                "processes": processes(reading, snapshot, owners),
                "owners": {k: owners[k] for k in _OWNER_KEYS if isinstance(owners.get(k), str) and owners[k]},
                "xids": {str(xid): n for (i, xid), n in sorted(snapshot.xid_counts.items()) if i == index},
            }
        )
    return {"node": node, "gpus": gpus, "ready": True}
