from __future__ import annotations

import pytest

from agent.signals.reported import ReportedFlops, ReportError, node_peak


def _reports(peak: float = 1e15) -> ReportedFlops:
    return ReportedFlops(absurd_factor=10.0, ttl_seconds=100.0, node_peak_flops=lambda: peak)


def test_first_report_is_the_baseline_and_later_ones_add() -> None:
    r = _reports()
    assert r.report(7, 5e15, now=0.0).baseline
    acc = r.report(7, 8e15, now=10.0)
    assert acc.added == 3e15 and not acc.baseline
    assert r.take(0, lambda pid: (0,), now=10.0) == pytest.approx(3e15)
    assert r.take(0, lambda pid: (0,), now=11.0) == 0.0  # credited once


def test_a_lost_report_loses_nothing() -> None:
    r = _reports()
    r.report(7, 0.0, now=0.0)
    r.report(7, 1e15, now=10.0)
    r.report(7, 3e15, now=20.0)  # the one at t=15 never arrived
    assert r.take(0, lambda pid: (0,), now=20.0) == pytest.approx(3e15)


def test_decreasing_negative_and_absurd_totals_are_refused_with_a_reason() -> None:
    r = _reports(peak=1e15)
    r.report(7, 1e16, now=0.0)
    with pytest.raises(ReportError, match="decreased"):
        r.report(7, 1e15, now=1.0)
    with pytest.raises(ReportError, match="negative"):
        r.report(8, -1.0, now=1.0)
    with pytest.raises(ReportError, match="absurd"):
        r.report(7, 1e16 + 10 * 1e15 * 2.0 + 1e14, now=2.0)  # > 10 x peak x 2 s
    r.report(7, 1e16 + 10 * 1e15 * 2.0 - 1e14, now=2.0)  # just under the limit is accepted
    with pytest.raises(ReportError, match="finite"):
        r.report(7, float("nan"), now=3.0)
    with pytest.raises(ReportError, match="pid"):
        r.report(0, 1.0, now=3.0)


def test_one_process_on_several_gpus_splits_evenly() -> None:
    r = _reports()
    r.report(7, 0.0, now=0.0)
    r.report(7, 8e15, now=10.0)
    gpus = {7: (0, 1, 2, 3)}
    taken = [r.take(i, lambda pid: gpus.get(pid, ()), now=10.0) for i in range(5)]
    assert taken == pytest.approx([2e15, 2e15, 2e15, 2e15, 0.0])


def test_flops_added_before_the_pid_is_mapped_wait_for_its_gpus() -> None:
    r = _reports()
    r.report(7, 0.0, now=0.0)
    r.report(7, 4e15, now=10.0)
    assert r.take(0, lambda pid: (), now=10.0) == 0.0  # not mapped yet (process list lags)
    assert r.take(0, lambda pid: (0,), now=11.0) == pytest.approx(4e15)
    r.report(7, 6e15, now=20.0)  # now it uses two GPUs: the new 2e15 is shared
    assert r.take(1, lambda pid: (0, 1), now=20.0) == pytest.approx(1e15)
    assert r.take(0, lambda pid: (0, 1), now=20.0) == pytest.approx(1e15)


def test_silent_pids_expire() -> None:
    r = _reports()
    r.report(7, 5.0, now=0.0)
    r.take(0, lambda pid: (0,), now=200.0)
    assert r.pids() == []
    assert r.report(7, 1.0, now=201.0).baseline  # a new baseline: the old total is forgotten


def test_node_peak_sums_gpus_and_stands_in_for_unknown_ones() -> None:
    assert node_peak([1e15, 2e15]) == 3e15
    assert node_peak([None]) == 1e16
    assert node_peak([]) == 1e16
