"""The starvation trigger: fires after a continuous streak, once per cooldown, one capture at a time."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from profiling_fixtures import FakeNodeMetrics, ScriptedPySpy, make_settings, make_snapshot, wait_done

from agent.clock import ManualClock
from agent.model import IntervalSignals
from agent.profiling.errors import NoGpuOwner
from agent.profiling.manager import CaptureRequest, Profile, ProfileManager
from agent.profiling.settings import ProfilingSettings
from agent.profiling.trigger import StarvationTrigger
from agent.snapshot import Snapshot

WORKER_STACKS = (
    'process {pid}:"python train.py";thread ({pid}): MainThread;wait (train.py:3) 5\n'
    'process {pid}:"python train.py";process 11:"python train.py";thread (11): MainThread;'
    "loop (worker.py:9);decode (PIL/Image.py:812) 62\n"
    'process {pid}:"python train.py";process 11:"python train.py";thread (11): MainThread;'
    "loop (worker.py:9);resize (PIL/Image.py:900) 38\n"
)


def starved(share: float, dt: float = 1.0) -> IntervalSignals:
    return IntervalSignals(
        dt=dt, state_seconds={"starved_host": share * dt, "compute_bound": (1 - share) * dt}
    )


@dataclass
class RecordingManager:
    """Stands in for ProfileManager: records what the trigger asks for."""

    active: int = 0
    submitted: list[tuple[CaptureRequest, str]] = field(default_factory=list)
    callbacks: list[Any] = field(default_factory=list)
    refuse: Exception | None = None

    def active_count(self) -> int:
        return self.active

    def submit(self, request: CaptureRequest, *, trigger: str, snapshot: Snapshot, on_done: Any) -> Profile:
        if self.refuse is not None:
            raise self.refuse
        self.submitted.append((request, trigger))
        self.callbacks.append(on_done)
        return Profile(
            **{**manager_profile_fields(), "id": f"id{len(self.submitted):020d}", "gpu": request.gpu}
        )


def run_ticks(trigger: StarvationTrigger, clock: ManualClock, shares: dict[int, float], seconds: int) -> None:
    for _ in range(seconds):
        clock.advance(1.0)
        snap = make_snapshot({i: [10] for i in shares}, timestamp=clock.now(),
                             signals={i: starved(s) for i, s in shares.items()})  # fmt: skip
        trigger.on_tick(snap)


def setup(tmp_path: Path, **trigger: Any) -> tuple[StarvationTrigger, RecordingManager, ManualClock]:
    settings = ProfilingSettings(enabled=True, token="t", directory=str(tmp_path), trigger=trigger)
    manager = RecordingManager()
    clock = ManualClock()
    return StarvationTrigger(settings, manager, clock), manager, clock  # type: ignore[arg-type]


def test_fires_after_the_configured_streak(tmp_path: Path) -> None:
    trigger, manager, clock = setup(tmp_path)
    run_ticks(trigger, clock, {3: 0.7}, 59)
    assert manager.submitted == []
    run_ticks(trigger, clock, {3: 0.7}, 1)
    assert len(manager.submitted) == 1
    request, kind = manager.submitted[0]
    assert kind == "starvation"
    assert (request.gpu, request.seconds, request.subprocesses) == (3, 20, True)


def test_a_break_in_the_streak_starts_it_over(tmp_path: Path) -> None:
    trigger, manager, clock = setup(tmp_path)
    run_ticks(trigger, clock, {0: 0.9}, 50)
    run_ticks(trigger, clock, {0: 0.2}, 1)  # mostly computing for one interval
    run_ticks(trigger, clock, {0: 0.9}, 50)
    assert manager.submitted == []
    run_ticks(trigger, clock, {0: 0.9}, 10)
    assert len(manager.submitted) == 1


def test_a_gpu_missing_from_a_tick_ends_its_streak(tmp_path: Path) -> None:
    trigger, manager, clock = setup(tmp_path, starved_host_seconds=10)
    run_ticks(trigger, clock, {0: 0.9}, 9)
    clock.advance(1.0)
    trigger.on_tick(make_snapshot({0: [10]}, timestamp=clock.now(), signals={}))
    run_ticks(trigger, clock, {0: 0.9}, 9)
    assert manager.submitted == []


def test_once_per_gpu_per_cooldown(tmp_path: Path) -> None:
    trigger, manager, clock = setup(tmp_path, starved_host_seconds=10, cooldown_seconds=100)
    run_ticks(trigger, clock, {0: 1.0}, 10)  # fires at t=10
    manager.callbacks[0](Profile(**{**manager_profile_fields(), "gpu": 0, "status": "done"}))
    run_ticks(trigger, clock, {0: 1.0}, 99)  # t=109: still cooling down
    assert len(manager.submitted) == 1
    run_ticks(trigger, clock, {0: 1.0}, 1)
    assert len(manager.submitted) == 2


def test_one_capture_at_a_time_on_the_node(tmp_path: Path) -> None:
    trigger, manager, clock = setup(tmp_path, starved_host_seconds=5)
    manager.active = 1  # an on-demand capture is running
    run_ticks(trigger, clock, {0: 1.0, 1: 1.0}, 10)
    assert manager.submitted == []
    manager.active = 0
    run_ticks(trigger, clock, {0: 1.0, 1: 1.0}, 1)
    assert [r.gpu for r, _ in manager.submitted] == [0]  # one per tick, even with two GPUs due
    manager.active = 1
    run_ticks(trigger, clock, {0: 1.0, 1: 1.0}, 3)
    manager.active = 0
    run_ticks(trigger, clock, {0: 1.0, 1: 1.0}, 1)
    assert [r.gpu for r, _ in manager.submitted] == [0, 1]


def test_a_refused_capture_is_retried_later(tmp_path: Path) -> None:
    trigger, manager, clock = setup(tmp_path, starved_host_seconds=5)
    manager.refuse = NoGpuOwner("GPU 0 has no compute process to profile")
    run_ticks(trigger, clock, {0: 1.0}, 10)
    manager.refuse = None
    run_ticks(trigger, clock, {0: 1.0}, 30)
    assert manager.submitted == []  # backing off
    run_ticks(trigger, clock, {0: 1.0}, 31)
    assert len(manager.submitted) == 1


def test_disabled_trigger_does_nothing(tmp_path: Path) -> None:
    trigger, manager, clock = setup(tmp_path, enabled=False, starved_host_seconds=1)
    run_ticks(trigger, clock, {0: 1.0}, 5)
    assert manager.submitted == []


def manager_profile_fields() -> dict[str, Any]:
    return dict(
        id="x" * 22, trigger="starvation", pid=10, gpu=0, reason="", cmdline="", seconds=20, rate_hz=100,
        subprocesses=True, native=False, idle=False, format="raw", created_at=0.0,
    )  # fmt: skip


def test_evidence_from_a_real_manager_capture(tmp_path: Path) -> None:
    """Trigger → manager (real storage, metrics and summary; scripted capture) → evidence."""
    pid = os.getpid()
    settings = make_settings(tmp_path, trigger={"starved_host_seconds": 5, "cooldown_seconds": 600})
    metrics = FakeNodeMetrics()
    manager = ProfileManager(settings, count=metrics.inc, pyspy=ScriptedPySpy(WORKER_STACKS.format(pid=pid)))
    clock = ManualClock()
    sink: dict[int, str] = {}
    trigger = StarvationTrigger(settings, manager, clock, evidence_sink=sink)
    for _ in range(6):
        clock.advance(1.0)
        trigger.on_tick(make_snapshot({2: [pid]}, timestamp=clock.now(), signals={2: starved(0.8)}))
    profiles = manager.list()
    assert len(profiles) == 1 and profiles[0].trigger == "starvation" and profiles[0].gpu == 2
    wait_done(manager, profiles[0].id)
    deadline = time.monotonic() + 5
    while trigger.evidence(2) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert trigger.evidence(2) == "62 % of worker samples in decode (PIL/Image.py:812)"
    assert sink == {2: "62 % of worker samples in decode (PIL/Image.py:812)"}
    assert metrics.counts == {("gpulse_profiles_total", (("trigger", "starvation"),)): 1.0}
    assert trigger.evidence(0) is None
    # evidence is quoted while fresh: within the cooldown, or a longer diagnosis window
    clock.advance(700)
    assert trigger.evidence(2) is None
    assert trigger.evidence(2, 3600.0) == "62 % of worker samples in decode (PIL/Image.py:812)"
    trigger.on_tick(make_snapshot({2: [pid]}, timestamp=clock.now(), signals={}))
    assert sink == {}
    manager.close()


@pytest.mark.parametrize("share", [0.5, 0.99])
def test_min_share_is_inclusive(tmp_path: Path, share: float) -> None:
    trigger, manager, clock = setup(tmp_path, starved_host_seconds=3, min_share=0.5)
    run_ticks(trigger, clock, {0: share}, 3)
    assert len(manager.submitted) == 1
