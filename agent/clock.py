"""The agent's notion of time.

Every timestamp, interval and integrated counter in the agent is in *clock* seconds.
On a real node the clock is ``time.monotonic``. The simulated fleet runs a scaled
clock (``--speed X``: X simulated seconds per real second), shared by the fake
devices and the agent, so that a 10-minute scenario can be scored in 20 s and the
agent's code never asks whether it is simulated.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    speed: float

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` of clock time or until ``stop`` is set; True when stopped."""
        ...

    def epoch(self) -> float:
        """Wall-clock seconds since 1970 for the current clock reading (for display and NVML timestamps)."""
        ...


class MonotonicClock:
    speed = 1.0

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()

    def now(self) -> float:
        return time.monotonic()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(max(0.0, seconds))

    def epoch(self) -> float:
        return self.now() + self._offset


class ScaledClock:
    """Runs ``speed`` times real time, starting at ``start`` seconds."""

    def __init__(self, speed: float = 1.0, start: float = 0.0) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self.speed = float(speed)
        self._start = float(start)
        self._t0 = time.monotonic()
        self._epoch0 = time.time()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._t0) * self.speed

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(max(0.0, seconds) / self.speed)

    def epoch(self) -> float:
        return self._epoch0 + (self.now() - self._start)


class ManualClock:
    """A clock that only moves when told to: for tests that need exact times."""

    speed = 1.0

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._cond = threading.Condition()

    def now(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def set(self, t: float) -> None:
        with self._cond:
            self._now = max(self._now, t)
            self._cond.notify_all()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        deadline = self.now() + seconds
        with self._cond:
            while self._now < deadline and not stop.is_set():
                self._cond.wait(0.01)
        return stop.is_set()

    def epoch(self) -> float:
        return 1_700_000_000.0 + self.now()
