"""One long-lived thread per device, with at most one call outstanding.

A wedged driver can block an NVML call for minutes, and a Python thread cannot be
killed. So each device gets one worker thread for its whole life: the sampler hands
it a call, waits for the result only until the tick's deadline, and while that call
is still running the device gets no second one. A blocked device therefore costs
exactly one parked thread, however long it stays blocked, and never delays the
others. The sampler decides what a missed deadline means (see ``agent.sampler``).
"""

from __future__ import annotations

import ctypes
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.clock import Clock

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
    """A device's one thread. Hand-offs go through C-level primitives (a ``SimpleQueue`` and a
    plain lock), not ``threading.Condition``: with a read per GPU per second, the hand-off is
    a measurable share of the agent's CPU at 64 GPUs."""

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()  # guards _submitted, _result, _stopping
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._submitted: float | None = None  # clock time of the outstanding call; None when idle
        self._result: CallResult | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
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
        self._jobs.put((fn, args, kwargs, submitted, batch))
        return True

    def take(self) -> CallResult | None:
        """The finished call's result, once; None while running or when there is nothing new."""
        with self._lock:
            result, self._result = self._result, None
            return result

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._jobs.put(None)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        name_os_thread(self.name)
        while True:
            job = self._jobs.get()
            if job is None or self._stopping:
                return
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
