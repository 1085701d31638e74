"""Helpers for the profiling tests: settings, snapshots and a small stand-in for the runtime."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.clock import ManualClock
from agent.model import GpuIdentity, GpuProcess, GpuReading, HostReading, IntervalSignals, ProcessStats
from agent.profiling.manager import Profile, ProfileManager
from agent.profiling.pyspy import PySpy, RecordOptions, RecordResult
from agent.profiling.settings import ProfilingSettings
from agent.snapshot import Labels, Snapshot

TOKEN = "s3cret-token"


def make_settings(tmp_path: Path, **overrides: Any) -> ProfilingSettings:
    values: dict[str, Any] = {"enabled": True, "token": TOKEN, "directory": str(tmp_path / "profiles")}
    values.update(overrides)
    return ProfilingSettings(**values)


def make_snapshot(
    gpu_pids: dict[int, list[int]],
    *,
    timestamp: float = 100.0,
    host_processes: dict[int, ProcessStats] | None = None,
    signals: dict[int, IntervalSignals] | None = None,
) -> Snapshot:
    readings = {}
    identities = {}
    for index, pids in gpu_pids.items():
        uuid = f"GPU-{index:08d}-0000-0000-0000-000000000000"
        identities[index] = GpuIdentity(
            index=index, uuid=uuid, name="NVIDIA H100 80GB HBM3", pci_bus_id=f"0:{index}"
        )
        readings[index] = GpuReading(
            index=index,
            uuid=uuid,
            timestamp=timestamp,
            processes=[
                GpuProcess(pid=pid, used_memory_bytes=(len(pids) - n) * 2**30) for n, pid in enumerate(pids)
            ],
        )
    host = HostReading(timestamp=timestamp, processes=host_processes or {})
    return Snapshot(
        timestamp=timestamp,
        epoch=1_700_000_000.0 + timestamp,
        interval_seconds=1.0,
        nvml_up=True,
        nvml_message="test",
        identities=identities,
        readings=readings,
        signals=signals or {},
        host=host,
    )


class FakeNodeMetrics:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, Labels], float] = {}
        self.lock = threading.Lock()

    def inc(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        with self.lock:
            key = (name, tuple(labels))
            self.counts[key] = self.counts.get(key, 0.0) + value


@dataclass
class FakeStore:
    snapshot: Snapshot | None = None

    def latest(self) -> Snapshot | None:
        return self.snapshot


@dataclass
class FakeSignals:
    evidence_providers: list[Any] = field(default_factory=list)


@dataclass
class FakeRuntime:
    """The parts of agent.runtime.Runtime that profiling uses."""

    settings: Any
    store: FakeStore
    clock: ManualClock = field(default_factory=ManualClock)
    node_metrics: FakeNodeMetrics = field(default_factory=FakeNodeMetrics)
    tick_listeners: list[Any] = field(default_factory=list)
    signals: FakeSignals = field(default_factory=FakeSignals)


@dataclass
class _SettingsHolder:
    profiling: ProfilingSettings


def fake_runtime(settings: ProfilingSettings, snapshot: Snapshot | None) -> FakeRuntime:
    return FakeRuntime(settings=_SettingsHolder(settings), store=FakeStore(snapshot))


def process_stats(pid: int, ppid: int, gpus: tuple[int, ...] = ()) -> ProcessStats:
    return ProcessStats(pid=pid, ppid=ppid, comm="python", gpu_indices=gpus)


STACKS = "thread (1): MainThread;<module> (a.py:1);hot (a.py:5) {n}\n"


def wait_done(manager: ProfileManager, profile_id: str, timeout: float = 60.0) -> Profile:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        profile = manager.get(profile_id)
        if not profile.active:
            return profile
        time.sleep(0.05)
    raise AssertionError(f"profile {profile_id} still {manager.get(profile_id).status}")


class ScriptedPySpy(PySpy):
    """py-spy's process handling stays real; the capture writes given stacks at once (or on release)."""

    def __init__(self, stacks: str = STACKS.format(n=100), hold: threading.Event | None = None) -> None:
        super().__init__()
        self.stacks = stacks
        self.hold = hold

    def binary(self) -> str:
        return "/usr/bin/py-spy-scripted"

    def record(self, options: RecordOptions, output: Path, *, stop=None, on_start=None) -> RecordResult:  # type: ignore[no-untyped-def, override]
        self.require_process(options.pid)
        if on_start is not None:
            on_start()
        if self.hold is not None:
            self.hold.wait(10)
        output.write_text(self.stacks)
        return RecordResult(output, None, None, False, False, 0.01)
