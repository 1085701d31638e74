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


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_survivors_are_frozen_and_the_period_is_respected() -> None:
    keep = [Node() for _ in range(100)]
    freezer = HeapFreezer(every_seconds=3600)
    assert freezer.maybe_run()
    assert gc.get_freeze_count() >= len(keep)
    assert not freezer.maybe_run()  # not again before the period has passed
    assert freezer.runs == 1


def test_new_cyclic_garbage_is_reclaimed_by_an_ordinary_run() -> None:
    freezer = HeapFreezer(every_seconds=0, full_every_seconds=3600)
    freezer.maybe_run()  # the first run is a full one
    gc.disable()  # only the freezer may collect in this test
    try:
        ref = _cycle()  # created and dropped after the freeze: young garbage
        assert ref() is not None
        freezer.maybe_run()
        assert ref() is None
        assert freezer.full_runs == 1
    finally:
        gc.enable()


def test_a_frozen_cycle_dropped_later_is_reclaimed_only_by_the_full_run() -> None:
    freezer = HeapFreezer(every_seconds=0, full_every_seconds=0)
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    freezer.maybe_run()  # the cycle is alive: frozen
    del a, b
    gc.collect()
    assert ref() is not None  # frozen objects are not examined by an ordinary collection
    freezer.maybe_run()  # full: unfreeze, collect, freeze
    assert ref() is None
    assert freezer.full_runs == 2


def test_between_full_runs_frozen_objects_stay_frozen() -> None:
    freezer = HeapFreezer(every_seconds=0, full_every_seconds=3600)
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    freezer.maybe_run()
    del a, b
    freezer.maybe_run()  # ordinary: collects only what is not frozen
    assert ref() is not None
    assert freezer.full_runs == 1
