"""Helpers for the live page's tests: a runtime whose store the test fills by hand."""

from __future__ import annotations

from typing import Any

from agent.clock import ManualClock
from agent.config import Settings
from agent.model import DeviceStatus, GpuIdentity, GpuReading, HostReading, IntervalSignals, ProcessStats
from agent.runtime import Runtime
from agent.snapshot import Snapshot

EPOCH = 1_700_000_000.0  # wall-clock time of clock second 0
H100 = "NVIDIA H100 80GB HBM3"


def reading(index: int, t: float, **fields: Any) -> GpuReading:
    """A healthy H100 reading at clock time ``t``; ``fields`` override any value (None = unsupported)."""
    values: dict[str, Any] = {
        "sm_active_ratio": 0.9, "tensor_active_ratio": 0.6, "dram_active_ratio": 0.3,
        "sm_clock_hz": 1.98e9, "sm_clock_max_hz": 1.98e9, "power_watts": 600.0, "power_limit_watts": 700.0,
        "temperatures_celsius": {"gpu": 70.0}, "temperature_thresholds_celsius": {"slowdown": 89.0},
        "memory_used_bytes": 60 * 2**30, "memory_total_bytes": 80 * 2**30, "clock_event_reasons": 0,
    }
    values.update(fields)
    return GpuReading(index, f"GPU-{index:04d}", t, **values)


def signals(dt: float = 1.0, **state_seconds: float) -> IntervalSignals:
    return IntervalSignals(dt=dt, state_seconds=dict(state_seconds))


class FilledNode:
    """A Runtime (scripted backends, never started) with a store the test writes itself."""

    def __init__(self, scripted_gpu: Any, static_host: Any, gpus: int = 2) -> None:
        self.clock = ManualClock(0.0)
        self.gpu = scripted_gpu(gpus, self.clock)
        self.runtime = Runtime(Settings(interval_seconds=1.0, history_seconds=900), self.gpu,
                               static_host(self.clock), self.clock)
        self.store = self.runtime.store
        self.identities = {i: GpuIdentity(i, f"GPU-{i:04d}", H100, f"00000000:{0x18 + i:02X}:00.0")
                           for i in range(gpus)}

    def add(self, index: int, t: float, sig: IntervalSignals | None = None, **fields: Any) -> GpuReading:
        r = reading(index, t, **fields)
        self.store.add_reading(r)
        if sig is not None:
            self.store.add_signals(index, t, sig)
        return r

    def publish(self, t: float, *, host: HostReading | None = None,
                owners: dict[int, dict[str, object]] | None = None,
                xids: dict[tuple[int, int], int] | None = None,
                status: dict[int, DeviceStatus] | None = None) -> Snapshot:
        """Publish a snapshot at ``t`` whose readings are each GPU's newest (``status`` marks some lost)."""
        latest = {}
        for i in self.identities:
            history = self.store.history(i, 1e9)
            if history:
                latest[i] = history[-1]
        for i, st in (status or {}).items():
            latest[i] = GpuReading(i, f"GPU-{i:04d}", t, st, "GPU is lost")
        snap = Snapshot(timestamp=t, epoch=EPOCH + t, interval_seconds=1.0, nvml_up=True,
                        nvml_message="scripted driver", identities=dict(self.identities), readings=latest,
                        owners=owners or {}, xid_counts=xids or {}, host=host)
        self.store.publish(snap, None)
        return snap


def host(t: float, *, busy: float, idle: float, cpu_some: float, io_some: float,
         processes: dict[int, ProcessStats] | None = None) -> HostReading:
    return HostReading(t, cpu_count=8, cpu_seconds={"user": busy, "system": 0.0, "idle": idle, "iowait": 0.0},
                       pressure_stall_seconds={"cpu": {"some": cpu_some}, "io": {"some": io_some}},
                       processes=processes or {})

