"""The live page's JSON (agent/web/overview.py) built from a store filled by hand."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from web_fixtures import EPOCH, host, reading, signals

from agent.model import GPU_STATES, DeviceStatus, GpuProcess, ProcessStats
from agent.web.overview import (
    MAX_POINTS,
    NO_DATA_LABEL,
    RECENT_SECONDS,
    STATE_LABELS,
    buckets,
    build_overview,
    host_view,
)
from agent.web.routes import diagnoses


def overview(node: Any, minutes: float = 5.0, with_diagnosis: bool = False) -> dict[str, Any]:
    found = diagnoses(node.runtime, minutes) if with_diagnosis else {}
    body = build_overview(node.runtime, minutes, found)
    return json.loads(json.dumps(body, allow_nan=False))  # what the browser gets: plain, finite JSON


def gpu(body: dict[str, Any], index: int) -> dict[str, Any]:
    return next(g for g in body["gpus"] if g["index"] == index)


def test_every_state_has_words() -> None:
    assert set(STATE_LABELS) == set(GPU_STATES)
    assert len(set(STATE_LABELS.values())) == len(GPU_STATES)  # no two states read the same


def test_before_the_first_snapshot_the_page_is_told_to_wait(filled: Any) -> None:
    body = overview(filled())
    assert body["ready"] is False and body["gpus"] == []
    assert body["node"]["states"] == list(GPU_STATES)
    assert body["node"]["health"]["healthy"] is True  # starting, within the start-up grace


def test_card_state_is_the_dominant_state_of_the_recent_seconds(filled: Any) -> None:
    node = filled()
    for t in range(1, 61):  # a minute of computing, then the cooling fails: 8 s of thermal throttling
        node.add(0, t, signals(compute_bound=1.0))
        node.add(1, t, signals(compute_bound=1.0))
    for t in range(61, 69):
        node.add(0, t, signals(throttled_thermal=0.9, compute_bound=0.1))
        node.add(1, t, signals(compute_bound=1.0))
    node.add(1, 69, signals(starved_other=1.0))  # one odd interval does not flip a card
    node.publish(69)
    body = overview(node)
    assert gpu(body, 0)["state"] == "throttled_thermal"
    assert gpu(body, 0)["state_label"] == "Throttled: thermal"
    assert gpu(body, 1)["state"] == "compute_bound" and gpu(body, 1)["state_label"] == "Computing"
    # ... while the shares still cover the whole window
    assert gpu(body, 0)["shares"]["compute_bound"] == pytest.approx((60 + 0.8) / 68)


def test_the_state_follows_a_change_within_the_recent_window(filled: Any) -> None:
    node = filled(1)
    for t in range(1, 101):
        node.add(0, t, signals(compute_bound=1.0))
    steps = 0
    t = 100
    while True:
        t += 1
        steps += 1
        node.add(0, t, signals(throttled_power=1.0))
        node.publish(t)
        if gpu(overview(node), 0)["state"] == "throttled_power":
            break
    assert steps <= RECENT_SECONDS / 2 + 1  # the majority of the recent window, no later


def test_a_lost_gpu_is_unavailable_whatever_its_history(filled: Any) -> None:
    node = filled()
    for t in range(1, 31):
        node.add(0, t, signals(compute_bound=1.0))
        node.add(1, t, signals(compute_bound=1.0))
    node.publish(31, status={1: DeviceStatus.LOST}, xids={(1, 79): 2})
    body = overview(node)
    assert gpu(body, 1)["state"] == "unavailable" and gpu(body, 1)["state_label"] == "Unavailable"
    assert gpu(body, 1)["status"] == "lost" and gpu(body, 1)["error"] == "GPU is lost"
    assert gpu(body, 1)["xids"] == {"79": 2} and gpu(body, 0)["xids"] == {}
    assert gpu(body, 0)["state"] == "compute_bound"


def test_no_signal_history_means_no_state_yet(filled: Any) -> None:
    node = filled(1)
    node.add(0, 1.0)
    node.publish(1.0)
    card = gpu(overview(node), 0)
    assert card["state"] is None and card["state_label"] == NO_DATA_LABEL and card["shares"] == {}


def test_shares_sum_to_one_and_follow_the_booked_seconds(filled: Any) -> None:
    node = filled(1)
    for t in range(1, 101):
        node.add(0, t, signals(starved_host=0.6, compute_bound=0.3, starved_other=0.1))
    node.publish(100)
    shares = gpu(overview(node), 0)["shares"]
    assert math.fsum(shares.values()) == pytest.approx(1.0)
    assert shares == pytest.approx({"starved_host": 0.6, "starved_other": 0.1, "compute_bound": 0.3})
    assert list(shares) == [s for s in GPU_STATES if s in shares]  # in the states' order, as the legend


def test_shares_cover_only_the_window_asked_for(filled: Any) -> None:
    node = filled(1)
    for t in range(1, 301):
        node.add(0, t, signals(idle=1.0) if t <= 240 else signals(compute_bound=1.0))
    node.publish(300)
    assert gpu(overview(node, minutes=1), 0)["shares"] == {"compute_bound": pytest.approx(1.0)}
    assert gpu(overview(node, minutes=5), 0)["shares"]["idle"] == pytest.approx(0.8, abs=0.01)


def test_series_are_averaged_into_at_most_max_points(filled: Any) -> None:
    node = filled(1)
    n = 600
    for i in range(n):  # 0.5 s interval, SM activity alternating 0.2 / 0.8
        node.add(0, i * 0.5 + 0.5, sm_active_ratio=0.2 if i % 2 else 0.8, power_watts=float(i))
    node.publish(n * 0.5)
    s = gpu(overview(node), 0)["series"]
    assert len(s["t"]) == MAX_POINTS
    assert all(len(column) == MAX_POINTS for column in s.values())
    assert s["t"] == sorted(s["t"]) and s["t"][-1] == EPOCH + n * 0.5  # ends at the newest reading
    assert s["sm"] == [pytest.approx(0.5)] * MAX_POINTS  # averaged, not sampled: no aliasing
    assert s["power_watts"][0] == pytest.approx(1.5)  # the mean of readings 0..3
    assert s["sm_clock_mhz"][0] == 1980 and s["memory_total_bytes"][0] == 80 * 2**30


def test_short_histories_are_sent_whole(filled: Any) -> None:
    node = filled(1)
    for t in range(1, 11):
        node.add(0, t, power_watts=100.0 + t)
    node.publish(10)
    s = gpu(overview(node), 0)["series"]
    assert s["power_watts"] == [100.0 + t for t in range(1, 11)]
    assert s["t"] == [EPOCH + t for t in range(1, 11)]


def test_missing_values_are_gaps_not_zeros(filled: Any) -> None:
    node = filled(1)
    node.add(0, 1.0)
    node.add(0, 2.0, power_watts=None, tensor_active_ratio=None, temperatures_celsius={})
    node.add(0, 3.0, sm_active_ratio=None, utilization_samples_ratio=None, utilization_gpu_ratio=0.4)
    missed = reading(0, 4.0)
    missed.status = DeviceStatus.UNRESPONSIVE  # a sample the agent could not take
    node.store.add_reading(missed)
    node.publish(4.0)
    s = gpu(overview(node), 0)["series"]
    assert s["power_watts"][1] is None and s["power_watts"][0] == 600.0
    assert s["tensor"][1] is None and s["temperature_celsius"][1] is None
    assert s["sm"][2] == 0.4  # the best activity source the device has: here utilization.gpu
    assert s["t"] == [EPOCH + t for t in (1, 2, 3, 4)]
    assert all(s[k][-1] is None for k in ("sm", "power_watts", "memory_used_bytes"))
    assert s["slowdown_celsius"][-1] is None  # nothing is carried into a sample that was not taken


def test_throttle_marks_follow_the_clock_event_reasons(filled: Any) -> None:
    node = filled(1)
    reasons = [0, 0x1, 0x4, 0x80, 0x20, 0x40 | 0x8, 0x20 | 0x4, 0x8]
    for i, bits in enumerate(reasons):
        node.add(0, i + 1.0, clock_event_reasons=bits)
    node.add(0, len(reasons) + 1.0, clock_event_reasons=None)  # not supported: no mark
    node.publish(len(reasons) + 1.0)
    marks = gpu(overview(node), 0)["series"]["throttle"]
    assert marks == [None, None, "power", "power", "thermal", "thermal", "thermal", None, None]


def test_a_bucket_is_marked_when_any_of_its_readings_was_throttled(filled: Any) -> None:
    node = filled(1)
    for i in range(MAX_POINTS * 4):
        node.add(0, i + 1.0, clock_event_reasons=0x20 if i == 10 else 0x4 if i == 100 else 0)
    node.publish(MAX_POINTS * 4.0)
    marks = gpu(overview(node, minutes=15), 0)["series"]["throttle"]
    assert marks.count("thermal") == 1 and marks.count("power") == 1 and marks[2] == "thermal"


def test_timeline_gives_the_dominant_state_per_bucket(filled: Any) -> None:
    node = filled(1)
    for t in range(1, 601):
        node.add(0, t, signals(starved_io=0.6, compute_bound=0.4) if t <= 300 else signals(idle=1.0))
    node.publish(600)
    timeline = gpu(overview(node, minutes=10), 0)["timeline"]
    assert len(timeline) == MAX_POINTS
    assert timeline[0][1] == "starved_io" and timeline[-1] == [EPOCH + 600, "idle"]
    assert [s for _t, s in timeline].count("idle") == MAX_POINTS // 2


def test_buckets_cover_every_item_once() -> None:
    for n in (0, 1, 149, 150, 151, 301, 1000):
        groups = buckets(list(range(n)))
        assert [x for g in groups for x in g] == list(range(n))
        assert len(groups) == min(n, MAX_POINTS)


def test_processes_carry_their_command_and_owner(filled: Any) -> None:
    node = filled(1)
    node.add(0, 1.0, processes=[GpuProcess(4121, 40 * 2**30), GpuProcess(999)])
    stats = ProcessStats(4121, 1, "python", cmdline="python train.py --lr 3e-4", user="ml")
    owners = {0: {"pod": "trainer-0", "namespace": "team-a", "container": "main", "slurm_job": None,
                  "processes": [{"pid": 4121, "host_pid": 4121, "pod": "trainer-0", "namespace": "team-a"}]}}
    node.publish(1.0, host=host(1.0, busy=1, idle=1, cpu_some=0, io_some=0, processes={4121: stats}),
                 owners=owners)
    card = gpu(overview(node), 0)
    assert card["processes"][0] == {"pid": 4121, "used_memory_bytes": 40 * 2**30,
                                    "command": "python train.py --lr 3e-4", "user": "ml",
                                    "pod": "trainer-0", "namespace": "team-a"}
    assert card["processes"][1] == {"pid": 999, "used_memory_bytes": None}  # known to NVML only
    assert card["owners"] == {"pod": "trainer-0", "namespace": "team-a", "container": "main"}


def test_host_view_cpu_and_pressure_over_the_last_two_readings() -> None:
    a = host(10.0, busy=100.0, idle=300.0, cpu_some=5.0, io_some=1.0)
    b = host(12.0, busy=106.0, idle=302.0, cpu_some=5.5, io_some=2.2)
    view = host_view([a, b])
    assert view["cpu_busy_ratio"] == pytest.approx(0.75)  # 6 busy of 8 CPU-seconds
    assert view["pressure_some_ratio"] == {"cpu": pytest.approx(0.25), "io": pytest.approx(0.6)}
    assert view["cpu_count"] == 8


def test_host_view_gives_no_figure_rather_than_a_wrong_one() -> None:
    only = host_view([host(1.0, busy=1, idle=1, cpu_some=1, io_some=1)])
    assert only["cpu_busy_ratio"] is None and only["pressure_some_ratio"] == {}
    reset = host_view([host(1.0, busy=5, idle=5, cpu_some=9.0, io_some=1.0),
                       host(2.0, busy=6, idle=6, cpu_some=0.1, io_some=1.5)])  # PSI counter went back
    assert "cpu" not in reset["pressure_some_ratio"]
    assert reset["pressure_some_ratio"]["io"] == pytest.approx(0.5)
    assert host_view([]) == {}


def test_node_header_data(filled: Any) -> None:
    node = filled(1)
    node.add(0, 1.0, sig=signals(idle=1.0))
    node.publish(1.0, host=host(1.0, busy=1, idle=1, cpu_some=0, io_some=0))
    node.store.add_host(host(0.0, busy=0, idle=0, cpu_some=0, io_some=0))
    node.store.add_host(host(1.0, busy=4, idle=4, cpu_some=0.5, io_some=0))
    body = overview(node)
    n = body["node"]
    assert n["nvml_up"] is True and n["interval_seconds"] == 1.0 and n["window_seconds"] == 300.0
    assert n["host"]["cpu_busy_ratio"] == pytest.approx(0.5)
    assert n["host"]["pressure_some_ratio"]["cpu"] == 0.5
    assert n["profiling_enabled"] is False
    assert n["state_labels"]["starved_host"] == "Starved by host CPU"


def test_diagnosis_sentence_and_mfu_come_from_the_signal_engine(filled: Any) -> None:
    node = filled(1)
    for t in range(1, 121):
        node.add(0, t, signals(starved_host=0.6, compute_bound=0.4))
    node.publish(120)
    card = gpu(overview(node, with_diagnosis=True), 0)
    assert card["diagnosis"].startswith("GPU 0 spent 60 % of the last 5 minutes starved by host CPU")
