from __future__ import annotations

import threading
import time

from agent.clock import ManualClock
from agent.device_worker import Batch, CallResult, DeviceWorker


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


def test_when_its_batch_is_done_the_result_can_be_taken() -> None:
    worker = DeviceWorker("w", ManualClock())
    for n in range(20):  # the batch is finished only after the result is in place
        batch = Batch()
        worker.submit_in(batch, lambda n=n: n)
        batch.close()
        assert batch.wait(5.0)
        result = worker.take()
        assert result is not None and result.value == n


def test_stop_ends_an_idle_worker() -> None:
    worker = DeviceWorker("w", ManualClock())
    worker.stop()
    assert worker.join(2.0)
    assert not worker.submit(lambda: 1)


def test_a_batch_is_done_when_every_call_in_it_has_answered() -> None:
    workers = [DeviceWorker(f"w{i}", ManualClock()) for i in range(3)]
    gate = threading.Event()
    batch = Batch()
    assert workers[0].submit_in(batch, lambda: 0)
    assert workers[1].submit_in(batch, gate.wait, 30)
    assert workers[2].submit_in(batch, lambda: 2)
    batch.close()
    assert not batch.wait(0.2)  # one call is still running
    assert batch.outstanding == 1
    gate.set()
    assert batch.wait(5.0)
    assert [wait_result(w).value for w in workers] == [0, True, 2]


def test_a_late_answer_finishes_only_its_own_batch() -> None:
    worker, other = DeviceWorker("w", ManualClock()), DeviceWorker("o", ManualClock())
    gate = threading.Event()
    first = Batch()
    worker.submit_in(first, gate.wait, 30)
    first.close()
    assert not first.wait(0.05)  # the round ends with the call still running
    second = Batch()
    slow = threading.Event()
    assert other.submit_in(second, slow.wait, 30)
    second.close()
    gate.set()  # the first round's call answers now, during the second round
    assert first.wait(5.0)
    assert not second.wait(0.1)  # ...which does not end the second round's wait
    slow.set()
    assert second.wait(5.0)


def test_an_empty_or_cancelled_batch_does_not_wait() -> None:
    empty = Batch()
    empty.close()
    assert empty.wait(0.0)
    worker = DeviceWorker("w", ManualClock())
    gate = threading.Event()
    cancelled = Batch()
    worker.submit_in(cancelled, gate.wait, 30)
    cancelled.close()
    cancelled.cancel()  # shutdown: the wait ends at once
    assert cancelled.wait(0.0)
    gate.set()
