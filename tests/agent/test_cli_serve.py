"""``gpulse serve``'s runtime: attribution wired in on the real path, parts closed on stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from agent.attribution.attributor import ALLOCATION_INFO, Attributor
from agent.attribution.settings import AttributionSettings
from agent.cli_serve import node_runtime
from agent.clock import ManualClock
from agent.config import Settings
from agent.model import HostReading
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.nvml.steady import SteadyDevice
from agent.runtime import Runtime
from agent.specs import SPECS


class Host:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def read(self, gpu_pids: dict[int, tuple[int, ...]]) -> HostReading:
        return HostReading(self.clock.now(), cpu_count=1)


def settings(tmp_path: Path) -> Settings:
    # no kubelet here: auto mode must carry on without its socket
    attribution = AttributionSettings(kubelet_socket=str(tmp_path / "kubelet.sock"))
    return Settings(interval_seconds=0.1, attribution=attribution)


def test_serve_runtime_attributes_gpus_through_the_attributor(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    fake = FakeNvml([SteadyDevice(SPECS["H100-SXM"], i) for i in range(2)], clock)
    rt = node_runtime(settings(tmp_path), NvmlBackend(fake, clock), Host(clock), clock)
    assert [type(p) for p in rt.parts] == [Attributor]
    rt.start()
    try:
        deadline = time.monotonic() + 10
        while rt.store.latest() is None or not rt.store.latest().readings:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no reading"
            time.sleep(0.02)
        snap = rt.store.latest()
        assert snap is not None
        assert snap.collectors["owners"].success, snap.collectors["owners"]
        assert sorted(snap.owners) == [0, 1]
        allocations = [labels for name, labels in snap.node_gauges if name == ALLOCATION_INFO]
        assert sorted(dict(labels)["gpu"] for labels in allocations) == ["0", "1"]
        text = rt.store.exposition().negotiate(None, None)[0].decode()
        assert f'{ALLOCATION_INFO}{{gpu="0"' in text
    finally:
        rt.stop(timeout=1.5)
    kubelet = rt.parts[0].kubelet
    assert kubelet._stop.is_set()  # closed with the runtime


class Part:
    def __init__(self, hang: bool = False, fail_start: bool = False) -> None:
        self.started = self.closed = False
        self.hang = hang
        self.fail_start = fail_start
        self.release = threading.Event()

    def start(self) -> None:
        if self.fail_start:
            raise RuntimeError("cannot start")
        self.started = True

    def close(self) -> None:
        self.closed = True
        if self.hang:
            self.release.wait(30)


def test_parts_and_profiling_are_closed_on_stop_within_the_budget(
    scripted_gpu: Any, static_host: Any
) -> None:
    clock = ManualClock(0.0)
    rt = Runtime(Settings(interval_seconds=0.1), scripted_gpu(1, clock), static_host(clock), clock)
    good, broken, hung, profiling = Part(), Part(fail_start=True), Part(hang=True), Part(hang=True)
    for part in (good, broken, hung):
        rt.add_part(part)
    rt.profiling_service = profiling
    rt.start()  # a part that fails to start does not stop the others or the sampler
    assert good.started and rt.sampler._thread is not None and rt.sampler._thread.is_alive()
    began = time.monotonic()
    rt.stop(timeout=1.5)
    took = time.monotonic() - began
    hung.release.set()
    profiling.release.set()
    assert good.closed and broken.closed and hung.closed and profiling.closed
    assert took < 1.8


def test_the_profiling_service_attach_stores_is_closed_by_stop(
    scripted_gpu: Any, static_host: Any
) -> None:
    from agent.api.app import create_app

    clock = ManualClock(0.0)
    rt = Runtime(Settings(), scripted_gpu(1, clock), static_host(clock), clock)
    create_app(rt)
    service = rt.profiling_service
    assert service is not None
    closed: list[bool] = []
    service.close = lambda: closed.append(True)
    rt.stop(timeout=0.5)
    assert closed == [True]


def test_the_demo_runtime_does_not_attribute_this_machines_processes(tmp_path: Path) -> None:
    from agent.sim.cli import demo_runtime

    clock = ManualClock(0.0)
    fake = FakeNvml([SteadyDevice(SPECS["H100-SXM"], 0)], clock)
    rt = demo_runtime(settings(tmp_path), NvmlBackend(fake, clock), Host(clock), clock, None)
    assert rt.owners_provider is None and rt.parts == []
