"""FakeNvml's event wait: it sleeps until something happens, like the driver's, instead of polling."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pynvml
import pytest

from agent.clock import ScaledClock
from agent.nvml import consts as C
from agent.nvml import fake as fake_module
from agent.nvml.fake import FakeNvml
from agent.nvml.steady import SteadyDevice
from agent.sim.device import Activity, DeviceSnapshot
from agent.specs import SPECS

T0 = 600.0
LONG_MS = 5000  # a wait that would run for 5 s of real time at speed 1


class Unpublished:
    """A model that keeps its XIDs to itself: only its snapshots show them (the protocol's minimum)."""

    def __init__(self, inner: SteadyDevice) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.identity = inner.identity

    def snapshot(self, t: float) -> DeviceSnapshot:
        return self.inner.snapshot(t)

    def activity(self, t0: float, t1: float) -> Activity:
        return self.inner.activity(t0, t1)


class Rig:
    def __init__(self, models: list[Any], speed: float = 1.0) -> None:
        self.clock = ScaledClock(speed=speed, start=T0)
        self.models = models
        self.nvml = FakeNvml(models, self.clock)
        self.nvml.nvmlInit()
        self.es = self.nvml.nvmlEventSetCreate()
        for i in range(len(models)):
            self.nvml.nvmlDeviceRegisterEvents(
                self.nvml.nvmlDeviceGetHandleByIndex(i), C.EVENT_XID_CRITICAL, self.es
            )
        self.looks = 0  # how often a wait looked for events: once at the start, once per wake-up
        original = self.nvml._next_event

        def counting(es: Any) -> Any:
            self.looks += 1
            return original(es)

        self.nvml._next_event = counting  # type: ignore[method-assign]

    def wait_in_thread(self, timeout_ms: int) -> tuple[threading.Thread, dict[str, Any]]:
        """Start an event wait on a thread; the dict gets its result (or error) and real duration."""
        out: dict[str, Any] = {}

        def run() -> None:
            start = time.monotonic()
            try:
                out["data"] = self.nvml.nvmlEventSetWait_v2(self.es, timeout_ms)
            except pynvml.NVMLError as e:
                out["error"] = e
            out["seconds"] = time.monotonic() - start

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        _until(lambda: self.looks >= 1)  # it has looked once and gone to sleep
        time.sleep(0.02)
        return thread, out


def _until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


@pytest.fixture
def no_poll(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # a poll this slow never fires within a test: whatever wakes a wait must be an event
    monkeypatch.setattr(fake_module, "EVENT_POLL_S", 60.0)
    yield


def test_an_xid_raised_during_a_wait_wakes_it_at_once(no_poll: None) -> None:
    rig = Rig([SteadyDevice(SPECS["H100-SXM"], i) for i in range(2)])
    thread, out = rig.wait_in_thread(LONG_MS)
    assert rig.looks == 1 and thread.is_alive()
    rig.models[1].add_xid(rig.clock.now(), 79)
    thread.join(LONG_MS / 1000)
    assert not thread.is_alive()
    assert out["data"].eventData == 79 and rig.nvml.nvmlDeviceGetIndex(out["data"].device) == 1
    assert out["seconds"] < LONG_MS / 1000 / 2  # woken by the XID, not by the timeout
    assert rig.looks == 2  # one look at the start, one after the wake-up


def test_a_scheduled_xid_is_delivered_at_its_time(no_poll: None) -> None:
    rig = Rig([SteadyDevice(SPECS["H100-SXM"], i) for i in range(2)], speed=10.0)
    due = rig.clock.now() + 1.0  # 0.1 s of real time ahead
    rig.models[0].add_xid(due, 48)
    data = rig.nvml.nvmlEventSetWait_v2(rig.es, 20_000)  # 2 s of real time at most
    assert data.eventData == 48 and rig.nvml.nvmlDeviceGetIndex(data.device) == 0
    assert rig.clock.now() >= due  # not before its time
    assert rig.clock.now() < due + 5.0  # and not at the timeout (20 clock seconds)
    assert rig.looks <= 3  # it slept until the XID was due instead of polling


def test_a_wait_with_nothing_scheduled_does_not_wake_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # with a fast poll, a polling wait would look ~40 times in 0.2 s; models that publish
    # their XIDs (SteadyDevice does) are not polled at all
    monkeypatch.setattr(fake_module, "EVENT_POLL_S", 0.005)
    models = [SteadyDevice(SPECS["H100-SXM"], i) for i in range(4)]
    models[2].add_xid(T0 - 100.0, 13)  # raised before the registration: not an event
    rig = Rig(models)
    with pytest.raises(pynvml.NVMLError_Timeout):
        rig.nvml.nvmlEventSetWait_v2(rig.es, 200)
    assert rig.looks <= 2


def test_a_model_that_publishes_nothing_is_polled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_module, "EVENT_POLL_S", 0.01)
    inner = SteadyDevice(SPECS["H100-SXM"], 0)
    rig = Rig([Unpublished(inner)])
    thread, out = rig.wait_in_thread(LONG_MS)
    inner.add_xid(rig.clock.now(), 31)  # nobody tells the fake: its poll finds it
    thread.join(LONG_MS / 1000)
    assert out["data"].eventData == 31
    assert out["seconds"] < LONG_MS / 1000 / 2 and rig.looks >= 2


def test_an_xid_due_before_the_cached_snapshot_expires_is_delivered_without_spinning(no_poll: None) -> None:
    rig = Rig([SteadyDevice(SPECS["H100-SXM"], 0)])
    rig.models[0].add_xid(rig.clock.now() + 0.005, 94)
    rig.nvml.snapshot(0)  # cached for the next 20 ms: it does not show the XID yet
    data = rig.nvml.nvmlEventSetWait_v2(rig.es, 2000)
    assert data.eventData == 94
    assert rig.looks <= 5  # at most a look per cached-snapshot lifetime, not a busy loop


@pytest.mark.parametrize("how", ["release", "shutdown"])
def test_release_and_shutdown_wake_a_waiting_call(no_poll: None, how: str) -> None:
    rig = Rig([SteadyDevice(SPECS["H100-SXM"], 0)])
    thread, out = rig.wait_in_thread(LONG_MS)
    if how == "release":
        rig.nvml.release()
    else:
        rig.nvml.nvmlShutdown()
    thread.join(LONG_MS / 1000)
    expected = pynvml.NVMLError_Timeout if how == "release" else pynvml.NVMLError_Uninitialized
    assert isinstance(out["error"], expected)
    assert out["seconds"] < LONG_MS / 1000 / 2


def test_a_model_does_not_keep_the_fake_alive() -> None:
    model = SteadyDevice(SPECS["H100-SXM"], 0)
    nvml = FakeNvml([model], ScaledClock(start=T0))
    gone = weakref.ref(nvml)
    del nvml
    gc.collect()
    assert gone() is None
    model.add_xid(T0, 79)  # the fake's callback outlived it: calling it is harmless
    assert model.xids == [(T0, 79)]
