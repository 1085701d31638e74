"""Workloads are exact periodic functions of time; timelines follow the events."""

from __future__ import annotations

import itertools
import random
import textwrap

import pytest

from agent.sim.scenario import WorkloadSpec, parse_scenario
from agent.sim.workload import Timeline, make_workload
from agent.specs import SPECS

H100 = SPECS["H100-SXM"]


def _numeric_busy(wl, start: float, a: float, b: float, n: int = 20000) -> float:
    """Midpoint-rule integral of the burst indicator, independent of the closed form."""
    c, w = wl.spec.compute_s, wl.spec.wait_s
    h = (b - a) / n
    total = 0.0
    for i in range(n):
        t = a + (i + 0.5) * h
        if t >= start and (w <= 0 or (t - start) % (c + w) < c):
            total += h
    return total / (b - a)


def test_starved_activity_matches_duty_cycle() -> None:
    wl = make_workload(
        WorkloadSpec(kind="training", compute_s=0.10, wait_s=0.15, wait_cause="host_cpu"), H100
    )
    assert wl is not None
    tl = Timeline.for_gpu(
        parse_scenario(
            "gpus: [{model: H100-SXM, workload: {kind: training, compute_s: 0.1, "
            "wait_s: 0.15, wait_cause: host_cpu}}]"
        ),
        0,
        H100,
    )
    act = tl.activity(0.0, 60.0)
    assert act.busy == pytest.approx(0.10 / 0.25, abs=1e-9)
    assert act.tensor == pytest.approx(wl.pipe * 0.4, abs=1e-9)
    rng = random.Random(5)
    for _ in range(20):
        a = rng.uniform(0, 50)
        b = a + rng.uniform(0.01, 3.0)
        assert tl.activity(a, b).busy == pytest.approx(_numeric_busy(wl, 0.0, a, b), abs=2e-3)


def test_phases_tile_the_window() -> None:
    wl = make_workload(WorkloadSpec(kind="training", compute_s=0.3, wait_s=0.2, wait_cause="io"), H100)
    assert wl is not None
    pieces = list(wl.phases(1.0, 1.05, 7.33))
    assert pieces[0][0] == pytest.approx(1.05) and pieces[-1][1] == pytest.approx(7.33)
    for (_, a1, _), (b0, _, _) in itertools.pairwise(pieces):
        assert a1 == pytest.approx(b0)
    computing = sum(b - a for a, b, c in pieces if c)
    assert computing == pytest.approx(wl.compute_time(1.0, 7.33) - wl.compute_time(1.0, 1.05))
    assert wl.wait_elapsed(1.0, 1.0 + 0.35) == pytest.approx(0.05)
    assert wl.wait_elapsed(1.0, 1.0 + 0.1) == -1.0


def test_decode_is_memory_bound_training_is_not() -> None:
    decode = make_workload(WorkloadSpec(kind="inference_decode"), H100)
    train = make_workload(WorkloadSpec(kind="training", precision="bf16"), H100)
    assert decode is not None and train is not None
    assert decode.memory_bound and decode.levels.dram > 0.7 and decode.levels.tensor < 0.2
    assert not train.memory_bound and train.levels.hmma == train.levels.tensor > 0.5
    fp32 = make_workload(WorkloadSpec(kind="training", precision="fp32"), H100)
    assert fp32 is not None and fp32.levels.tensor == 0 and fp32.levels.fp32 == fp32.pipe
    assert make_workload(WorkloadSpec(kind="idle"), H100) is None


def test_timeline_follows_events() -> None:
    scenario = parse_scenario(
        textwrap.dedent("""
        gpus:
          - {model: H100-SXM, workload: {kind: training}}
        events:
          - {at_s: 10, gpu: 0, kind: workload, workload: {kind: inference_decode}}
          - {at_s: 20, gpu: 0, kind: process_exit}
          - {at_s: 30, gpu: 0, kind: workload, workload: {kind: training}}
          - {at_s: 40, gpu: 0, kind: gpu_lost}
          - {at_s: 45, gpu: 0, kind: workload, workload: {kind: training}}
          - {at_s: 50, gpu: 0, kind: gpu_recovered}
          - {at_s: 60, gpu: 0, kind: nvml_hang, seconds: 5}
    """)
    )
    tl = Timeline.for_gpu(scenario, 0, H100)
    kinds = [(s.start, s.workload.spec.kind if s.workload else None) for s in tl.segments]
    assert kinds == [(0.0, "training"), (10, "inference_decode"), (20, None), (30, "training"), (40, None)]
    assert [s.number for s in tl.segments] == [0, 1, 2, 3, 4]
    assert tl.lost == [(40, 50)]
    assert tl.is_lost(45) and not tl.is_lost(50)
    assert tl.hang_until(62) == 65 and tl.hang_until(65) is None
    assert tl.activity(20, 30).busy == 0.0
    assert tl.activity(5, 15).busy == pytest.approx(1.0)
