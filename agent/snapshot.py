"""The immutable picture of the node that one sampling tick produces.

The sampler builds a ``Snapshot`` once per tick; the Prometheus exporter renders it
once, and the HTTP API reads it. Nothing downstream of the sampler calls a backend.

Counters the agent accumulates itself (integrated activities, deltas of raw device
counters, derived-signal seconds) live in ``gpu_counters``, keyed by the catalog's
metric name and the labels beyond ``gpu``/``uuid``::

    snapshot.gpu_counters[0][("gpulse_gpu_state_seconds_total", (("state", "idle"),))] == 12.5
    snapshot.gpu_counters[0][("gpulse_gpu_busy_seconds_total", ())] == 40.1
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.model import GpuIdentity, GpuReading, HostReading, IntervalSignals

Labels = tuple[tuple[str, str], ...]
CounterKey = tuple[str, Labels]


@dataclass(frozen=True)
class CollectorStatus:
    success: bool
    duration_seconds: float
    last_success: float | None = None  # clock time of the last success
    message: str | None = None


@dataclass(frozen=True)
class Snapshot:
    timestamp: float  # clock seconds
    epoch: float  # wall-clock seconds for display
    interval_seconds: float
    nvml_up: bool
    nvml_message: str
    identities: dict[int, GpuIdentity] = field(default_factory=dict)
    readings: dict[int, GpuReading] = field(
        default_factory=dict
    )  # latest per GPU (status may be lost/unresponsive)
    signals: dict[int, IntervalSignals] = field(default_factory=dict)  # the latest interval per GPU
    gpu_counters: dict[int, dict[CounterKey, float]] = field(default_factory=dict)
    gpu_gauges: dict[int, dict[CounterKey, float]] = field(
        default_factory=dict
    )  # derived levels (headroom, peaks)
    # Series whose labels are complete as given (gpu/uuid/pid included where they apply): agent-level
    # counters (profiles, dropped series), per-process series and info series (value 1).
    node_counters: dict[CounterKey, float] = field(default_factory=dict)
    node_gauges: dict[CounterKey, float] = field(default_factory=dict)
    # Who uses each GPU: gpu index -> {"processes": [...], "pod": ..., "namespace": ..., "slurm_job": ...}
    owners: dict[int, dict[str, object]] = field(default_factory=dict)
    xid_counts: dict[tuple[int, int], int] = field(default_factory=dict)  # (gpu index, xid) -> count
    xid_last_seen: dict[int, float] = field(
        default_factory=dict
    )  # gpu index -> epoch seconds of the last XID
    host: HostReading | None = None
    collectors: dict[str, CollectorStatus] = field(default_factory=dict)
    ticks: int = 0
