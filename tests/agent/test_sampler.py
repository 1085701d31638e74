"""The sampling loop, driven tick by tick on a ManualClock with scripted backends."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from agent.clock import ManualClock
from agent.config import Settings
from agent.model import DeviceStatus, GpuProcess, GpuReading, HostReading, IntervalSignals
from agent.runtime import Runtime
from agent.sampler import GPU_READER_THREADS, NVML_RETRY_SECONDS
from agent.snapshot import CounterKey, Snapshot

INTERVAL = 0.1


class RecordingEngine:
    """Books every interval as compute_bound (or unavailable) and records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float, DeviceStatus, HostReading | None]] = []
        self.identities: dict[int, str] = {}
        self.fail = False

    def set_identity(self, index: int, identity: Any) -> None:
        self.identities[index] = identity.name

    def interval(
        self, index: int, prev: GpuReading | None, cur: GpuReading, host: HostReading | None, dt: float
    ) -> IntervalSignals:
        if self.fail:
            raise ValueError("engine bug")
        self.calls.append((index, dt, cur.status, host))
        state = "compute_bound" if cur.status is DeviceStatus.OK else "unavailable"
        return IntervalSignals(dt=dt, state_seconds={state: dt})

    def gauges(self, index: int, reading: GpuReading) -> dict[CounterKey, float]:
        return {("gpulse_gpu_power_headroom_watts", ()): 400.0}


class FakeExposition:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def negotiate(self, accept: str | None, accept_encoding: str | None) -> tuple[bytes, dict[str, str]]:
        return f"ticks {self.snapshot.ticks}\n".encode(), {"Content-Type": "text/plain"}


class Harness:
    def __init__(
        self, scripted_gpu: Any, static_host: Any, count: int = 2, driver: bool = True, **settings: Any
    ) -> None:
        self.clock = ManualClock(100.0)
        self.gpu = scripted_gpu(count, self.clock, available=driver)
        self.host = static_host(self.clock)
        self.engine = RecordingEngine()
        self.render_fail = False
        self.rt = Runtime(
            Settings(interval_seconds=INTERVAL, **settings),
            self.gpu,
            self.host,
            self.clock,
            signals=self.engine,
            renderer=self.render,
        )

    def render(self, snapshot: Snapshot) -> FakeExposition:
        if self.render_fail:
            raise RuntimeError("render bug")
        return FakeExposition(snapshot)

    def tick(self, n: int = 1) -> Snapshot:
        for _ in range(n):
            snapshot = self.rt.sampler.tick()
            self.clock.advance(INTERVAL)
        return snapshot


@pytest.fixture
def harness(scripted_gpu: Any, static_host: Any) -> Any:
    made: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        h = Harness(scripted_gpu, static_host, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.gpu.unblock()
        h.rt.stop(timeout=0.5)


def test_the_first_tick_starts_nvml_and_reads_every_gpu(harness: Any) -> None:
    h = harness()
    assert not h.rt.readiness()[0]
    first = h.tick()
    assert first.nvml_up and sorted(first.identities) == [0, 1]
    assert h.engine.identities == {0: "NVIDIA H100 80GB HBM3", 1: "NVIDIA H100 80GB HBM3"}
    # no snapshot names a GPU without its first reading
    assert sorted(first.readings) == [0, 1]
    assert all(r.status is DeviceStatus.OK for r in first.readings.values())
    assert first.collectors["gpu:0"].success and first.collectors["host"].success
    assert first.host is not None
    ready, body = h.rt.readiness()
    assert ready and body["mode"] == "gpu" and body["gpus"] == 2
    assert h.rt.store.exposition().negotiate(None, None)[0] == b"ticks 1\n"


def test_readings_signals_and_gauges_flow_into_counters_and_the_snapshot(harness: Any) -> None:
    h = harness()
    snap = h.tick(11)  # 11 reads = 10 intervals of 0.1 s
    counters = snap.gpu_counters[0]
    assert counters[("gpulse_gpu_state_seconds_total", (("state", "compute_bound"),))] == pytest.approx(1.0)
    assert counters[("gpulse_gpu_busy_seconds_total", ())] == pytest.approx(0.5)
    assert counters[("gpulse_gpu_energy_joules_total", ())] == pytest.approx(1000.0)  # 100 J per read
    assert snap.signals[0].state_seconds == {"compute_bound": pytest.approx(INTERVAL)}
    assert snap.gpu_gauges[1] == {("gpulse_gpu_power_headroom_watts", ()): 400.0}
    assert all(dt == pytest.approx(INTERVAL) for _, dt, _, _ in h.engine.calls)
    assert all(
        host is not None for _, _, _, host in h.engine.calls
    )  # the engine sees the tick's host reading
    assert len(h.rt.store.history(0, 0.55)) == 6
    assert snap.collectors["signals"].success


def test_lost_gpu_reads_down_others_unaffected_and_it_is_picked_up_again(harness: Any) -> None:
    h = harness()
    h.tick(3)
    h.gpu.lose(1)
    snap = h.tick()
    assert snap.readings[1].status is DeviceStatus.LOST
    assert not snap.collectors["gpu:1"].success
    assert snap.readings[0].status is DeviceStatus.OK and snap.collectors["gpu:0"].success
    busy_before = snap.gpu_counters[1][("gpulse_gpu_busy_seconds_total", ())]
    snap = h.tick(3)
    assert snap.readings[1].status is DeviceStatus.LOST
    assert (
        snap.gpu_counters[1][("gpulse_gpu_busy_seconds_total", ())] == busy_before
    )  # no activity while lost
    unavailable = ("gpulse_gpu_state_seconds_total", (("state", "unavailable"),))
    assert snap.gpu_counters[1][unavailable] == pytest.approx(4 * INTERVAL)
    h.gpu.restore(1)
    snap = h.tick(3)
    assert snap.readings[1].status is DeviceStatus.OK and snap.collectors["gpu:1"].success
    assert snap.gpu_counters[1][("gpulse_gpu_busy_seconds_total", ())] > busy_before


def test_a_blocked_gpu_is_unresponsive_within_two_intervals_and_isolated(harness: Any) -> None:
    h = harness(count=3)
    h.tick(3)
    threads = threading.active_count()
    h.gpu.block(0)
    stale = h.rt.store.latest().readings[0]
    seen_status = []
    for _ in range(2):  # the call is outstanding for less than two intervals: the last reading stands
        snap = h.tick()
        seen_status.append(snap.readings[0].status)
        assert snap.readings[0] is stale
    snap = h.tick()  # two intervals after the call began
    assert snap.readings[0].status is DeviceStatus.UNRESPONSIVE
    assert "no answer" in (snap.readings[0].error or "")
    assert not snap.collectors["gpu:0"].success
    others_before = {i: snap.readings[i].timestamp for i in (1, 2)}
    for _ in range(20):
        snap = h.tick()
        assert snap.readings[0].status is DeviceStatus.UNRESPONSIVE
        assert snap.readings[0].timestamp == pytest.approx(snap.timestamp)  # booked every tick
        for i in (1, 2):
            assert snap.readings[i].status is DeviceStatus.OK
            assert snap.readings[i].timestamp > others_before[i]
            others_before[i] = snap.readings[i].timestamp
    assert threading.active_count() == threads  # one parked worker, no new threads
    assert h.gpu.reads[0] < h.gpu.reads[1] - 20  # the blocked device was never asked again
    h.gpu.unblock(0)
    for _ in range(5):
        snap = h.tick()
        if snap.readings[0].status is DeviceStatus.OK:
            break
    assert snap.readings[0].status is DeviceStatus.OK
    assert snap.readings[0].timestamp == pytest.approx(snap.timestamp)  # a fresh call, not the stale answer
    unavailable = ("gpulse_gpu_state_seconds_total", (("state", "unavailable"),))
    assert snap.gpu_counters[0][unavailable] > 20 * INTERVAL


def test_a_read_that_raises_becomes_an_error_reading(harness: Any) -> None:
    h = harness()
    h.tick(2)
    h.gpu.fail(0, RuntimeError("NVML_ERROR_UNKNOWN"))
    snap = h.tick()
    assert snap.readings[0].status is DeviceStatus.ERROR
    assert "NVML_ERROR_UNKNOWN" in (snap.readings[0].error or "")
    assert snap.collectors["gpu:0"].message == snap.readings[0].error
    assert snap.readings[1].status is DeviceStatus.OK
    h.gpu.restore(0)
    assert h.tick().readings[0].status is DeviceStatus.OK


def test_without_a_driver_it_runs_host_only_and_retries(harness: Any) -> None:
    h = harness(driver=False)
    snap = h.tick(2)
    assert not snap.nvml_up and snap.identities == {} and snap.readings == {}
    assert not snap.collectors["nvml"].success
    assert "host-only" in snap.nvml_message
    assert snap.host is not None and snap.collectors["host"].success
    ready, body = h.rt.readiness()
    assert ready and body["mode"] == "host-only" and "host-only" in body["detail"]
    assert h.gpu.start_calls == 1
    h.gpu.driver = True  # the driver container came up later
    h.clock.advance(NVML_RETRY_SECONDS)
    h.tick(2)
    snap = h.tick()
    assert h.gpu.start_calls == 2
    assert snap.nvml_up and sorted(snap.readings) == [0, 1]


def test_process_lists_are_polled_every_process_interval_and_carried(harness: Any) -> None:
    h = harness(process_interval_seconds=0.5)
    h.gpu.processes[0] = [GpuProcess(4121, 2**30)]
    h.gpu.processes[1] = [GpuProcess(4121, 2**30), GpuProcess(77, 2**20)]
    snap = h.tick(20)  # 20 reads over 2 s: processes at 0, 0.5, 1.0 and 1.5 s
    assert h.gpu.process_reads[0] == 4
    assert [p.pid for p in snap.readings[0].processes or []] == [4121]
    assert snap.readings[0].processes_timestamp is not None
    assert h.host.last_gpu_pids == {4121: (0, 1), 77: (1,)}


def test_listener_and_owners_errors_never_stop_the_loop(harness: Any) -> None:
    h = harness()
    seen: list[int] = []
    h.rt.tick_listeners.append(lambda s: (_ for _ in ()).throw(RuntimeError("listener bug")))
    h.rt.tick_listeners.append(lambda s: seen.append(s.ticks))
    h.rt.owners_provider = lambda s: {0: {"pod": "train-0", "namespace": "ml"}}
    snap = h.tick(2)
    assert seen == [1, 2]
    assert snap.owners == {0: {"pod": "train-0", "namespace": "ml"}}
    assert snap.collectors["owners"].success

    def broken(snapshot: Snapshot) -> dict[int, dict[str, object]]:
        raise KeyError("kubelet")

    h.rt.owners_provider = broken
    snap = h.tick()
    assert seen[-1] == 3
    assert not snap.collectors["owners"].success and snap.owners == {}


def test_render_and_engine_failures_are_collector_failures(harness: Any) -> None:
    h = harness()
    h.tick(2)
    h.render_fail = True
    snap = h.tick()
    assert not snap.collectors["render"].success and "render bug" in (snap.collectors["render"].message or "")
    assert h.rt.store.exposition().negotiate(None, None)[0] == b"ticks 2\n"  # the last good one is served
    assert h.rt.store.latest() is snap
    h.render_fail = False
    h.engine.fail = True
    snap = h.tick()
    assert not snap.collectors["signals"].success
    assert snap.readings[0].status is DeviceStatus.OK
    assert h.rt.store.exposition().negotiate(None, None)[0] == b"ticks 4\n"


def test_loop_keeps_a_fixed_grid_and_skips_missed_ticks(scripted_gpu: Any, static_host: Any) -> None:
    clock = ManualClock(0.0)
    rt = Runtime(
        Settings(interval_seconds=1.0),
        scripted_gpu(1, clock),
        static_host(clock),
        clock,
        renderer=lambda s: None,
    )
    stamps: list[float] = []
    ticked = threading.Event()

    def on_tick(s: Snapshot) -> None:
        stamps.append(s.timestamp)
        ticked.set()

    rt.tick_listeners.append(on_tick)

    def step(seconds: float) -> None:
        ticked.clear()
        clock.advance(seconds)

    rt.sampler.start()
    try:
        assert ticked.wait(5)
        for _ in range(3):
            step(1.0)
            assert ticked.wait(5)
        step(3.5)  # a stall of three and a half intervals
        assert ticked.wait(5)
        step(0.25)  # 6.75: not yet the next grid point (7.0)
        assert not ticked.wait(0.1)
        step(0.25)
        assert ticked.wait(5)
    finally:
        rt.stop(timeout=1.0)
    assert stamps == [0.0, 1.0, 2.0, 3.0, 6.5, 7.0]  # 4, 5 and 6 skipped, not bunched


def test_xid_events_are_counted(scripted_gpu: Any, static_host: Any) -> None:
    clock = ManualClock(0.0)
    gpu = scripted_gpu(2, clock)
    rt = Runtime(Settings(interval_seconds=1.0), gpu, static_host(clock), clock, renderer=lambda s: None)
    rt.sampler.tick()  # NVML up: the XID thread starts waiting
    rt.start()
    try:
        gpu.emit_xid(1, 79)
        gpu.emit_xid(1, 79)
        gpu.emit_xid(0, 48)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(rt.store.xids()[0].values()) < 3:
            time.sleep(0.01)
        snap = rt.sampler.tick()
    finally:
        rt.stop(timeout=1.5)
    assert snap.xid_counts == {(1, 79): 2, (0, 48): 1}
    assert set(snap.xid_last_seen) == {0, 1}
    assert snap.collectors["events"].success
    assert gpu.closed


def test_a_hung_nvml_initialisation_leaves_the_host_sampled(harness: Any) -> None:
    h = harness()
    h.gpu.start_gate = threading.Event()
    for _ in range(5):
        snap = h.tick()
        assert snap.host is not None and snap.collectors["host"].success
        assert not snap.nvml_up and "still running" in (snap.collectors["nvml"].message or "")
    ready, body = h.rt.readiness()
    assert not ready and "NVML initialisation running for 0.5 s" in str(body["detail"])
    assert h.rt.health()[0]
    assert h.gpu.start_calls == 1  # never a second init while the first one hangs
    h.gpu.start_gate.set()
    h.tick(3)
    snap = h.tick()
    assert snap.nvml_up and sorted(snap.readings) == [0, 1]
    assert h.rt.readiness()[0]


def test_state_changes_are_logged_once_not_per_tick(harness: Any, caplog: Any) -> None:
    h = harness()
    h.tick(3)
    h.gpu.block(0)
    with caplog.at_level("WARNING", logger="agent.sampler"):
        h.tick(12)
        h.gpu.unblock(0)
        # The hung call returns on its own thread, whenever that is scheduled; the read after it is OK.
        for _ in range(100):
            if h.tick().readings[0].status is DeviceStatus.OK:
                break
            time.sleep(0.01)
        h.tick(3)  # nothing more is logged while it stays up
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unresponsive" in m for m in messages) == 1
    assert sum("is back" in m for m in messages) == 1


def test_a_grid_point_that_falls_due_during_a_tick_runs_at_once(scripted_gpu: Any, static_host: Any) -> None:
    clock = ManualClock(0.0)
    rt = Runtime(Settings(interval_seconds=1.0), scripted_gpu(1, clock), static_host(clock), clock,
                 renderer=lambda s: None)
    stamps: list[float] = []
    second = threading.Event()

    def on_tick(s: Snapshot) -> None:
        stamps.append(s.timestamp)
        if len(stamps) == 1:
            clock.advance(1.0)  # this tick took a whole interval: the next grid point is due now
        else:
            second.set()

    rt.tick_listeners.append(on_tick)
    rt.sampler.start()
    try:
        assert second.wait(5), f"the due tick did not run (ticks at {stamps})"
    finally:
        rt.stop(timeout=1.0)
    assert stamps[:2] == [0.0, 1.0]


def test_a_late_answers_notice_does_not_end_the_next_ticks_wait_early(
    scripted_gpu: Any, static_host: Any
) -> None:
    clock = ManualClock(0.0)
    gpu = scripted_gpu(2, clock)
    rt = Runtime(Settings(interval_seconds=1.0), gpu, static_host(clock), clock, renderer=lambda s: None)
    try:
        for _ in range(2):
            rt.sampler.tick()
            clock.advance(1.0)
        gpu.block(0)
        rt.sampler.tick()  # GPU 0's call misses this tick's deadline
        clock.advance(1.0)
        gpu.unblock(0)  # ...and answers late: its "done" notice waits for the next tick
        deadline = time.monotonic() + 5
        while gpu.reads[0] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.05)  # the worker has posted its notice
        gpu.block(0)  # the next call takes a while, well within the tick's 0.5 s deadline
        timer = threading.Timer(0.1, gpu.unblock, args=(0,))
        timer.start()
        rt.sampler.tick()
        # the tick waited for this tick's call, not just for the stale notice of the last one
        assert gpu.reads[0] == 4
        timer.join()
    finally:
        gpu.unblock()
        rt.stop(timeout=1.0)


def test_gpus_keep_being_read_when_hung_calls_hold_every_reader_thread(harness: Any) -> None:
    h = harness(count=GPU_READER_THREADS + 2)
    h.tick(3)
    threads = threading.active_count()
    hung = range(GPU_READER_THREADS)
    for i in hung:
        h.gpu.block(i)
    healthy = range(GPU_READER_THREADS, GPU_READER_THREADS + 2)
    before = {i: h.rt.store.latest().readings[i].timestamp for i in healthy}
    for _ in range(20):
        snap = h.tick()
        for i in healthy:  # read every tick, though every reader thread it started with is stuck
            assert snap.readings[i].status is DeviceStatus.OK
            assert snap.readings[i].timestamp > before[i]
            before[i] = snap.readings[i].timestamp
    assert all(snap.readings[i].status is DeviceStatus.UNRESPONSIVE for i in hung)
    assert threading.active_count() == threads + 1  # one thread more, not one per tick or per hung GPU
    h.gpu.unblock()
    for _ in range(100):
        if all(h.tick().readings[i].status is DeviceStatus.OK for i in hung):
            break
        time.sleep(0.01)
    h.tick(3)
    assert threading.active_count() == threads  # the extra thread left once the calls returned
