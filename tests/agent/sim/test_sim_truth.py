"""Ground truth: state intervals tile each GPU's time, and the summary adds up to the duration."""

from __future__ import annotations

import io
import itertools
import json

import pytest

from agent.model import GPU_STATES
from agent.sim.fleet import Fleet
from agent.sim.scenario import load_scenario
from agent.sim.truth import read_truth


def _run(name: str, duration: float | None = None) -> tuple[Fleet, list[dict]]:
    scenario = load_scenario(name)
    if duration is not None:
        scenario = scenario.with_overrides(duration_s=duration)
    out = io.StringIO()
    fleet = Fleet.from_scenario(scenario, truth=out)
    fleet.finish()
    return fleet, [json.loads(line) for line in out.getvalue().splitlines()]


def test_default_shows_every_state_within_two_minutes_and_sums_to_the_duration() -> None:
    _, records = _run("default", 130.0)
    summary = records[-1]
    assert summary["duration_s"] == 130.0
    for gpu, per in summary["summary"].items():
        assert set(per) == set(GPU_STATES)
        assert sum(per.values()) == pytest.approx(130.0, abs=1e-6), gpu
    seen = {r["state"] for r in records if "state" in r}
    assert seen == set(GPU_STATES)
    # and every state still holds in the last ten seconds
    late = {r["state"] for r in records if "state" in r and r["end_s"] > 120.0}
    assert late == set(GPU_STATES)
    expected = {
        0: "compute_bound",
        1: "memory_bound",
        2: "starved_host",
        3: "starved_io",
        4: "throttled_power",
        5: "throttled_thermal",
        6: "idle",
        7: "unavailable",
    }
    for gpu, state in expected.items():
        assert summary["summary"][str(gpu)][state] > 35.0, gpu
    assert summary["summary"]["7"]["unavailable"] == pytest.approx(130.0 - 92.0)


def test_state_records_tile_time_without_gaps() -> None:
    _, records = _run("mixed")
    by_gpu: dict[int, list[tuple[float, float]]] = {}
    for r in records:
        if "state" in r:
            by_gpu.setdefault(r["gpu"], []).append((r["start_s"], r["end_s"]))
    assert len(by_gpu) == 6
    for gpu, spans in by_gpu.items():
        spans.sort()
        assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(300.0)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start == pytest.approx(end, abs=1e-6), gpu


def test_truth_reader_and_windows() -> None:
    fleet, records = _run("starvation")
    truth = read_truth([json.dumps(r) for r in records])
    assert truth.duration_s == 300.0
    assert truth.uuids[0] == fleet.models[0].identity.uuid
    # before the fix at 150 s GPU 0 waits 75 % of the time on its host CPU, afterwards not at all
    early = truth.state_seconds(0, 0, 150)
    assert early["starved_host"] == pytest.approx(112.5, abs=0.01)
    assert early["compute_bound"] == pytest.approx(37.5, abs=0.01)
    assert truth.state_seconds(0, 150, 300)["compute_bound"] == pytest.approx(150.0, abs=0.01)
    # MFU: a quarter of the time computing at the training pipe activity, full clock
    wl_pipe = 0.65
    clock_ratio = fleet.models[0].spec.max_sm_clock_mhz / fleet.models[0].spec.peak_clock_mhz
    assert truth.mfu(0, 10, 140) == pytest.approx(0.25 * wl_pipe * clock_ratio, rel=0.01)
    assert truth.mfu(0, 160, 290) == pytest.approx(wl_pipe * clock_ratio, rel=0.01)
    flops = [r for r in records if "flops" in r and r["gpu"] == 0]
    assert len(flops) == 300 and all(r["precision"] == "bf16" and r["peak_flops"] == 989.5e12 for r in flops)


def test_reason_records_show_the_limiters() -> None:
    _, records = _run("thermal")
    reasons = {(r["gpu"], tuple(r["reasons"])) for r in records if "reasons" in r}
    assert (1, ("sw_power_cap",)) in reasons
    assert (0, ("sw_thermal_slowdown",)) in reasons
    assert (2, ("hw_slowdown", "hw_power_brake_slowdown")) in reasons
    brake = [
        r for r in records if "reasons" in r and r["gpu"] == 2 and "hw_power_brake_slowdown" in r["reasons"]
    ]
    assert brake[0]["start_s"] == pytest.approx(100.0) and brake[-1]["end_s"] == pytest.approx(120.0)


def test_open_ended_run_ends_where_the_fleet_got_to() -> None:
    scenario = load_scenario("default")
    out = io.StringIO()
    fleet = Fleet.from_scenario(scenario, truth=out)
    fleet.models[3].snapshot(42.0)  # only one GPU was read
    summary = fleet.finish()
    assert summary["duration_s"] == pytest.approx(42.05)
    per_gpu = summary["summary"]
    assert isinstance(per_gpu, dict) and len(per_gpu) == 8
    for per in per_gpu.values():
        assert sum(per.values()) == pytest.approx(42.05)
    assert fleet.finish() is summary  # idempotent


def test_truth_file_path(tmp_path) -> None:
    path = tmp_path / "truth.jsonl"
    fleet = Fleet.from_scenario(load_scenario("thermal").with_overrides(duration_s=20), truth=path)
    fleet.finish()
    truth = read_truth(path)
    assert truth.duration_s == 20.0 and set(truth.summary) == {0, 1, 2, 3}
