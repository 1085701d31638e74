"""Keep Python's cyclic garbage collector off the agent's long-lived data.

The history ring buffers hold hundreds of thousands of small objects that live for 15
minutes. Left in the collector's generations they are traversed again and again, which
measured here as most of the agent's CPU at 8 GPUs with a full history (4.4 % of a core
against 1.2 % with them frozen). So once a minute the agent collects what is new since
the last freeze and freezes what survives: later collections look only at what is new.

Objects that leave the ring buffers are still freed at once by reference counting;
freezing only skips the cycle hunt, so the one thing a frozen object can leak is a
reference cycle formed after it was frozen. To bound that, every ``full_every_seconds``
the whole heap is unfrozen and collected (36 ms at 8 GPUs with a full history, against
3 ms for a collection of one minute's new objects).
"""

from __future__ import annotations

import gc
import time

FREEZE_EVERY_SECONDS = 60.0
FULL_COLLECT_EVERY_SECONDS = 15 * 60.0  # one history length: what aged out is reclaimed


class HeapFreezer:
    def __init__(
        self,
        every_seconds: float = FREEZE_EVERY_SECONDS,
        full_every_seconds: float = FULL_COLLECT_EVERY_SECONDS,
    ) -> None:
        self._every = every_seconds
        self._full_every = full_every_seconds
        now = time.monotonic()
        self._next = now
        self._next_full = now
        self.runs = 0
        self.full_runs = 0

    def maybe_run(self) -> bool:
        """Collect and freeze when the period has passed (real time); True when it ran."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._every
        if now >= self._next_full:
            self._next_full = now + self._full_every
            gc.unfreeze()  # frozen objects are never examined: thaw them so old cycles are found
            self.full_runs += 1
        gc.collect()
        gc.freeze()
        self.runs += 1
        return True
