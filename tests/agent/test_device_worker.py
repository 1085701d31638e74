from __future__ import annotations

import threading
import time
from typing import Any

from agent.clock import ManualClock
from agent.device_worker import Batch, CallResult, DeviceWorker, WorkerPool


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


# ---------------------------------------------------------------- the shared pool
def run_round(workers: list[DeviceWorker], pool: WorkerPool, calls: dict[int, Any], budget: float) -> Batch:
    """Hand each idle worker its call, then collect like the sampler: rebalance between slices."""
    batch = Batch()
    for i, worker in enumerate(workers):
        worker.submit_in(batch, calls.get(i, lambda i=i: i))
    batch.close()
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        pool.rebalance()
        if batch.wait(min(pool.stall_seconds, deadline - time.monotonic())):
            break
    return batch


def test_many_workers_share_a_few_pool_threads() -> None:
    threads_before = threading.active_count()
    pool = WorkerPool("p", spare=2, stall_seconds=0.02)
    workers = [DeviceWorker(f"w{i}", ManualClock(), pool) for i in range(12)]
    assert threading.active_count() == threads_before + 2
    for _ in range(30):  # quick calls: the two threads keep up, no third one is started
        assert run_round(workers, pool, {}, 5.0).wait(0)
        assert [w.take().value for w in workers] == list(range(12))  # type: ignore[union-attr]
    assert pool.threads == 2 and threading.active_count() == threads_before + 2
    pool.stop()
    assert pool.join(2.0)
    assert threading.active_count() == threads_before


def test_calls_stuck_behind_hung_ones_get_a_new_thread_and_the_pool_shrinks_back() -> None:
    pool = WorkerPool("p", spare=2, stall_seconds=0.02)
    workers = [DeviceWorker(f"w{i}", ManualClock(), pool) for i in range(6)]
    gate = threading.Event()
    hung = {0: lambda: gate.wait(30), 1: lambda: gate.wait(30)}  # both pool threads end up inside these
    first = run_round(workers, pool, hung, 2.0)
    assert first.outstanding == 2  # the other four answered: a thread was started for them
    assert [workers[i].take().value for i in range(2, 6)] == [2, 3, 4, 5]  # type: ignore[union-attr]
    assert pool.threads == 3
    for _ in range(20):  # the hung workers get no second call; the others are served every round
        batch = run_round(workers, pool, {}, 2.0)
        assert batch.outstanding == 0
        assert [workers[i].take().value for i in range(2, 6)] == [2, 3, 4, 5]  # type: ignore[union-attr]
        assert pool.threads == 3  # one more than spare, however long the calls hang
    gate.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (workers[0].outstanding or workers[1].outstanding):
        time.sleep(0.01)
    run_round(workers, pool, {}, 2.0)  # a thread that finds the pool too big leaves after its call
    run_round(workers, pool, {}, 2.0)
    assert pool.threads == 2
    pool.stop()
    assert pool.join(2.0)


def test_a_slow_but_answering_pool_is_not_grown() -> None:
    pool = WorkerPool("p", spare=1, stall_seconds=0.08)
    workers = [DeviceWorker(f"w{i}", ManualClock(), pool) for i in range(8)]
    # a round (8 x 20 ms) spans slices, and calls come back in each: the thread is slow, not stuck
    slow = {i: (lambda i=i: time.sleep(0.02) or i) for i in range(8)}
    for _ in range(3):
        assert run_round(workers, pool, slow, 5.0).wait(0)
    assert pool.threads == 1
    pool.stop()
    assert pool.join(2.0)


def test_a_stopped_worker_in_a_pool_runs_nothing_more() -> None:
    pool = WorkerPool("p", spare=1, stall_seconds=0.02)
    worker = DeviceWorker("w", ManualClock(), pool)
    worker.stop()
    assert not worker.submit(lambda: 1)
    assert worker.join(0.1)  # a pooled worker has no thread of its own
    pool.stop()
    assert pool.join(2.0)
