from __future__ import annotations

import threading
import time

from agent.clock import ManualClock
from agent.device_worker import CallResult, DeviceWorker


def wait_result(worker: DeviceWorker, timeout: float = 5.0) -> CallResult:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = worker.take()
        if result is not None:
            return result
        time.sleep(0.002)
    raise AssertionError("no result")


def test_runs_a_call_and_hands_back_value_and_submit_time() -> None:
    clock = ManualClock(42.0)
    worker = DeviceWorker("w", clock)
    assert worker.submit(lambda a, b=0: a + b, 2, b=3)
    result = wait_result(worker)
    assert result.value == 5 and result.error is None
    assert result.submitted == 42.0
    assert result.duration_seconds >= 0
    assert worker.take() is None  # a result is handed back once


def test_an_exception_becomes_the_result_and_the_worker_lives_on() -> None:
    worker = DeviceWorker("w", ManualClock())

    def boom() -> None:
        raise RuntimeError("driver said no")

    worker.submit(boom)
    result = wait_result(worker)
    assert isinstance(result.error, RuntimeError) and result.value is None
    worker.submit(lambda: "again")
    assert wait_result(worker).value == "again"


def test_at_most_one_call_is_outstanding_and_no_thread_is_added() -> None:
    clock = ManualClock(10.0)
    worker = DeviceWorker("w", clock)
    gate = threading.Event()
    threads_before = threading.active_count()
    assert worker.submit(gate.wait, 30)
    clock.advance(3.0)
    for _ in range(50):  # a blocked device is asked again and again: nothing new runs
        assert not worker.submit(lambda: "second")
    assert worker.outstanding
    assert worker.outstanding_for(clock.now()) == 3.0
    assert threading.active_count() == threads_before
    gate.set()
    assert wait_result(worker).value is True
    assert not worker.outstanding and worker.outstanding_for(clock.now()) is None
    assert worker.submit(lambda: "next")
    assert wait_result(worker).value == "next"


def test_on_done_is_called_after_each_call() -> None:
    done: list[str] = []
    worker = DeviceWorker("w", ManualClock(), on_done=lambda w: done.append(w.name))
    worker.submit(lambda: 1)
    wait_result(worker)
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.002)
    assert done == ["w"]


def test_stop_ends_an_idle_worker() -> None:
    worker = DeviceWorker("w", ManualClock())
    worker.stop()
    assert worker.join(2.0)
    assert not worker.submit(lambda: 1)
