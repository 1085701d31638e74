"""Builders for the signal tests: readings, host processes and host readings with plain defaults."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agent.model import GpuProcess, GpuReading, HostReading, ProcessStats

H100 = "NVIDIA H100 80GB HBM3"


def reading(index: int = 0, t: float = 1.0, **kw: Any) -> GpuReading:
    """An H100-like OK reading: one process, full clocks, no activity unless given."""
    base: dict[str, Any] = {
        "sm_clock_hz": 1830e6, "sm_clock_max_hz": 1980e6, "processes": [GpuProcess(pid=100)],
        "memory_used_bytes": 20 * 1024**3,
    }
    base.update(kw)
    return GpuReading(index=index, uuid=f"GPU-{index}", timestamp=t, **base)


def proc(pid: int, ppid: int = 1, gpus: tuple[int, ...] = (), **kw: Any) -> ProcessStats:
    base: dict[str, Any] = {"comm": "python", "cmdline": "python train.py --lr 3e-4", "create_time": 1000.0}
    base.update(kw)
    return ProcessStats(pid=pid, ppid=ppid, gpu_indices=gpus, **base)


def host(t: float, *procs: ProcessStats, **kw: Any) -> HostReading:
    base: dict[str, Any] = {"cpu_count": 32}
    base.update(kw)
    return HostReading(timestamp=t, processes={p.pid: p for p in procs}, **base)


@pytest.fixture
def build() -> SimpleNamespace:
    return SimpleNamespace(reading=reading, proc=proc, host=host, H100=H100)
