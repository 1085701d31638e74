"""The heap freezer reclaims cyclic garbage and keeps survivors out of later collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from agent.heap import HeapFreezer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_survivors_are_frozen_and_the_period_is_respected() -> None:
    keep = [Node() for _ in range(100)]
    freezer = HeapFreezer(every_seconds=3600)
    assert freezer.maybe_run()
    assert gc.get_freeze_count() >= len(keep)
    assert not freezer.maybe_run()  # not again before the period has passed
    assert freezer.runs == 1


def test_a_cycle_dropped_after_a_freeze_is_reclaimed_by_the_next_run() -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    freezer = HeapFreezer(every_seconds=0)
    freezer.maybe_run()  # the cycle is alive: frozen
    del a, b
    gc.collect()
    assert ref() is not None  # frozen objects are not examined by an ordinary collection
    freezer.maybe_run()  # unfreeze, collect, freeze
    assert ref() is None
