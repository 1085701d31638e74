"""Device calls run off the sampling thread, with at most one call outstanding per device.

A wedged driver can block an NVML call for minutes, and a Python thread cannot be
killed. So the sampler hands each device's call to a ``DeviceWorker``, waits for the
result only until the tick's deadline, and while that call is still running the device
gets no second one. A blocked device therefore parks at most one thread, however long
it stays blocked. The sampler decides what a missed deadline means (see ``agent.sampler``).

A worker either owns its thread (the host reader, NVML's start) or shares a
``WorkerPool`` with the other GPUs. A pool of a few threads reads every GPU: a thread
per GPU, each woken once a second, cost the agent about a sixth of its CPU at 64 GPUs
in wake-ups and cold caches. A call that hangs keeps its pool thread, and when calls
are waiting while every thread is inside a call and none has come back for a while,
the pool starts one more, so the other GPUs are not held up; once the hung call
returns, the extra thread leaves.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.clock import Clock

log = logging.getLogger(__name__)

_PR_SET_NAME = 15
_libc: ctypes.CDLL | None = None


def name_os_thread(name: str) -> None:
    """Give the calling thread its name at the OS level too (``top -H``, ``/proc/<pid>/task/*/comm``).

    Python names threads only for itself; ops tools and the benchmark's per-thread CPU
    figures see the kernel's name. Linux only (silently nothing elsewhere); at most 15 bytes.
    """
    global _libc
    if not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Batch:
    """The calls handed out in one round; ``wait`` returns once every one of them has answered.

    The waiter wakes once per round, not once per answer: at 64 GPUs, 64 wake-ups a second
    (each one a fight for the interpreter lock with the workers still reading) were a
    measurable share of the agent's CPU. A call that answers after its round is over
    finishes only that old round, so a late answer never ends a later round's wait early.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expected = 0
        self._finished = 0
        self._closed = False
        self._done = threading.Event()

    def add(self) -> None:
        with self._lock:
            self._expected += 1

    def finish(self) -> None:
        with self._lock:
            self._finished += 1
            if self._closed and self._finished >= self._expected:
                self._done.set()

    def close(self) -> None:
        """No more calls will be added: from now on the batch is done when they have all answered."""
        with self._lock:
            self._closed = True
            if self._finished >= self._expected:
                self._done.set()

    def cancel(self) -> None:
        """End a wait at once (shutdown)."""
        self._done.set()

    def wait(self, timeout: float) -> bool:
        """True when every call answered (or the batch was cancelled) within ``timeout`` seconds."""
        return self._done.wait(max(0.0, timeout))

    @property
    def outstanding(self) -> int:
        with self._lock:
            return self._expected - self._finished


_Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], float, Batch | None]


@dataclass(frozen=True)
class CallResult:
    value: Any
    error: Exception | None
    submitted: float  # clock time the call was handed over
    duration_seconds: float  # real seconds the call ran (a cost, so not clock seconds)


class DeviceWorker:
    """A device's calls, one at a time, on its own thread or on a shared ``WorkerPool``.

    Hand-offs go through C-level primitives (a ``SimpleQueue`` and a plain lock), not
    ``threading.Condition``: with a read per GPU per second, the hand-off is a measurable
    share of the agent's CPU at 64 GPUs."""

    def __init__(self, name: str, clock: Clock, pool: WorkerPool | None = None) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()  # guards _submitted, _result, _stopping
        self._pool = pool
        self._jobs: queue.SimpleQueue[_Job | None] | None = None  # only a worker with its own thread
        self._submitted: float | None = None  # clock time of the outstanding call; None when idle
        self._result: CallResult | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        if pool is None:
            self._jobs = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._run, args=(self._jobs,), name=name, daemon=True)
            self._thread.start()

    @property
    def outstanding(self) -> bool:
        return self._submitted is not None

    def outstanding_for(self, now: float) -> float | None:
        """Clock seconds the current call has been running, or None when idle."""
        submitted = self._submitted
        return None if submitted is None else now - submitted

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Hand over a call; False (and nothing happens) while the previous one is still running."""
        return self.submit_in(None, fn, *args, **kwargs)

    def submit_in(self, batch: Batch | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """``submit``, counting the call in ``batch`` (which it finishes when it answers)."""
        with self._lock:
            if self._submitted is not None or self._stopping:
                return False
            submitted = self._submitted = self._clock.now()
        if batch is not None:
            batch.add()  # before the job is queued: it cannot finish before it is counted
        job = (fn, args, kwargs, submitted, batch)
        if self._jobs is not None:
            self._jobs.put(job)
        elif self._pool is not None:
            self._pool.put(self, job)
        return True

    def take(self) -> CallResult | None:
        """The finished call's result, once; None while running or when there is nothing new."""
        with self._lock:
            result, self._result = self._result, None
            return result

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """No more calls; the worker's own thread ends (a pool is stopped by its owner)."""
        with self._lock:
            self._stopping = True
        if self._jobs is not None:
            self._jobs.put(None)

    def join(self, timeout: float) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def execute(self, job: _Job) -> None:
        """Run one handed-over call on the calling thread and hand its result back."""
        fn, args, kwargs, submitted, batch = job
        start = time.perf_counter()
        value: Any = None
        error: Exception | None = None
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # the sampler turns it into a reading; the worker lives on
            error = exc
        result = CallResult(value, error, submitted, time.perf_counter() - start)
        with self._lock:
            self._result = result
            self._submitted = None
        if batch is not None:
            batch.finish()  # after the result is set: a finished batch's results can be taken

    def _run(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        name_os_thread(self.name)
        while True:
            job = jobs.get()
            if job is None or self._stopping:
                return
            self.execute(job)


class WorkerPool:
    """A few threads that run the calls of many ``DeviceWorker``s, and one more per hung call.

    ``spare`` threads serve the queue. The owner calls ``rebalance`` while it waits for a
    round of calls: when calls are waiting, every thread is inside a call, and no call has
    come back since the previous ``rebalance``, the threads are stuck, and one more starts.
    A thread that finishes a call while the pool has more threads than ``spare`` plus those
    stuck in a call for over ``stall_seconds`` leaves. Since a device has at most one call
    outstanding, the pool never holds more than ``spare`` threads plus one per hung device.
    """

    def __init__(self, name: str, spare: int, stall_seconds: float) -> None:
        self.name = name
        self.spare = max(1, spare)
        self.stall_seconds = stall_seconds
        self._jobs: queue.SimpleQueue[tuple[DeviceWorker, _Job] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _threads, _serial, _stopping
        self._threads: dict[int, threading.Thread] = {}
        self._busy: dict[int, float] = {}  # thread serial -> perf_counter() its current call began
        self._serial = 0
        self._completed = 0  # calls finished (only ever compared for change)
        self._seen = 0  # _completed at the last rebalance
        self._stopping = False
        with self._lock:
            for _ in range(self.spare):
                self._spawn()

    @property
    def threads(self) -> int:
        return len(self._threads)

    def put(self, worker: DeviceWorker, job: _Job) -> None:
        self._jobs.put((worker, job))

    def rebalance(self) -> bool:
        """Start one more thread if calls wait behind threads that are all stuck; True if it did."""
        completed = self._completed
        progressed, self._seen = completed != self._seen, completed
        if progressed or self._stopping or self._jobs.empty():
            return False
        with self._lock:
            if self._stopping or len(self._busy) < len(self._threads):
                return False  # a thread is between calls: it takes the next one
            self._spawn()
            count = len(self._threads)
        log.info("%s: every thread is inside a call that has not returned; started another (%d now)",
                 self.name, count)
        return True

    def stop(self) -> None:
        """End the threads once they are idle; a thread inside a hung call ends when it returns."""
        with self._lock:
            self._stopping = True
            count = len(self._threads)
        for _ in range(count):
            self._jobs.put(None)

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in list(self._threads.values()))

    def _spawn(self) -> None:  # with _lock held
        serial = self._serial
        self._serial += 1
        thread = threading.Thread(target=self._run, args=(serial,), name=f"{self.name}-{serial}", daemon=True)
        self._threads[serial] = thread
        thread.start()

    def _run(self, serial: int) -> None:
        name_os_thread(f"{self.name}-{serial}")
        busy = self._busy
        while True:
            item = self._jobs.get()
            if item is None:
                break
            worker, job = item
            if worker.stopping:
                continue
            busy[serial] = time.perf_counter()
            try:
                worker.execute(job)
            finally:
                del busy[serial]
                self._completed += 1
            if len(self._threads) > self.spare and self._surplus(serial):
                return
        with self._lock:
            self._threads.pop(serial, None)

    def _surplus(self, serial: int) -> bool:
        """Leave (True) when the pool has more threads than it needs besides those stuck in a call."""
        now = time.perf_counter()
        with self._lock:
            # list() copies in one step: the workers add and remove entries without this lock
            stuck = sum(1 for began in list(self._busy.values()) if now - began >= self.stall_seconds)
            if len(self._threads) - stuck <= self.spare:
                return False
            del self._threads[serial]
            return True
