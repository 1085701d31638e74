from __future__ import annotations

import pytest

from agent.model import DeviceStatus, IntervalSignals
from agent.signals.diagnosis import diagnose_gpu, diagnose_store, format_diagnosis, span
from agent.signals.mfu import PEAK_BANDWIDTH, PEAK_FLOPS
from agent.snapshot import Snapshot
from agent.store import Store

BF16 = (PEAK_FLOPS, (("precision", "bf16"),))


def _history(n: int, **fields) -> list[tuple[float, IntervalSignals]]:
    return [(float(i + 1), IntervalSignals(dt=1.0, **fields)) for i in range(n)]


def _snapshot(readings=None, gauges=None, xids=None) -> Snapshot:
    return Snapshot(timestamp=300.0, epoch=0.0, interval_seconds=1.0, nvml_up=True, nvml_message="",
                    readings=readings or {}, gpu_gauges=gauges or {}, xid_counts=xids or {})


def _diagnose(history, snapshot=None, index=0, extra=None):
    return diagnose_gpu(index, history, snapshot, 300.0, precision="bf16", min_share=0.1,
                        extra_evidence=extra)


def test_starved_host_sentence_quotes_the_latest_evidence() -> None:
    evidence = "pid 4121 (python train.py) and 4 workers used their whole 4-CPU quota"
    history = _history(100, state_seconds={"compute_bound": 0.42, "starved_host": 0.58},
                       starvation_evidence=evidence)
    d = _diagnose(history, index=3)
    assert d.problem == "starved_host"
    assert d.shares["starved_host"] == pytest.approx(0.58)
    assert d.sentence == (f"GPU 3 spent 58 % of the last 5 minutes starved by host CPU: {evidence}")


def test_thermal_sentence_names_the_clock_lost_and_the_headroom(build) -> None:
    history = _history(60, state_seconds={"throttled_thermal": 1.0}, clock_lost_seconds=0.22)
    reading = build.reading(temperatures_celsius={"gpu": 84.0},
                            temperature_thresholds_celsius={"slowdown": 87.0})
    d = _diagnose(history, _snapshot({0: reading}))
    assert d.sentence.startswith("GPU 0 lost 22 % of its clock to thermal slowdown over the last 5 minutes")
    assert d.sentence.endswith("temperature 3 °C under the slowdown threshold")


def test_power_sentence_quotes_the_draw_and_the_limit(build) -> None:
    history = _history(60, state_seconds={"throttled_power": 0.8, "compute_bound": 0.2},
                       clock_lost_seconds=0.15)
    reading = build.reading(power_watts=399.0, power_limit_watts=400.0)
    d = _diagnose(history, _snapshot({0: reading}))
    assert d.problem == "throttled_power"
    assert "lost 15 % of its clock to the power cap" in d.sentence
    assert d.sentence.endswith("drawing 399 W of a 400 W limit")


def test_unavailable_sentence_names_the_status_and_xids(build) -> None:
    history = _history(10, state_seconds={"compute_bound": 1.0})
    history += [(t + 10, s) for t, s in _history(30, state_seconds={"unavailable": 1.0})]
    snap = _snapshot({7: build.reading(index=7, status=DeviceStatus.LOST)}, xids={(7, 79): 1})
    d = _diagnose(history, snap, index=7)
    assert d.problem == "unavailable"
    assert d.sentence == ("GPU 7 was unavailable 75 % of the last 5 minutes: lost (fell off the bus or needs "
                          "a reset); XID 79 seen")


def test_healthy_gpu_reports_mfu_and_no_problem() -> None:
    history = _history(100, state_seconds={"compute_bound": 0.97, "starved_other": 0.03},
                       estimated_flops={"bf16": 0.45 * 989.5e12}, estimated_dram_bytes=0.3 * 3.35e12)
    snap = _snapshot(gauges={0: {BF16: 989.5e12, (PEAK_BANDWIDTH, ()): 3.35e12}})
    d = _diagnose(history, snap)
    assert d.problem is None and d.dominant == "compute_bound"
    assert d.estimated_mfu == pytest.approx(0.45) and d.mbu == pytest.approx(0.3)
    assert d.sentence == ("GPU 0 computed 97 % of the last 5 minutes at an estimated MFU of 45 %; "
                          "no problem found")


def test_reported_mfu_is_preferred_in_the_sentence() -> None:
    history = _history(100, state_seconds={"compute_bound": 1.0}, estimated_flops={"bf16": 0.5 * 989.5e12},
                       reported_flops=0.4 * 989.5e12)
    d = _diagnose(history, _snapshot(gauges={0: {BF16: 989.5e12}}))
    assert d.reported_mfu == pytest.approx(0.4) and d.estimated_mfu == pytest.approx(0.5)
    assert d.sentence == ("GPU 0 computed 100 % of the last 5 minutes at a reported MFU of 40 %; "
                          "no problem found")


def test_small_problems_below_the_min_share_are_not_named() -> None:
    history = _history(100, state_seconds={"compute_bound": 0.95, "starved_io": 0.05})
    assert _diagnose(history).problem is None


def test_idle_and_memory_bound_sentences() -> None:
    assert _diagnose(_history(5, state_seconds={"idle": 1.0})).sentence == \
        "GPU 0 was idle (no process) 100 % of the last 5 minutes"
    d = _diagnose(_history(5, state_seconds={"memory_bound": 1.0}, estimated_dram_bytes=0.7 * 3.35e12),
                  _snapshot(gauges={0: {(PEAK_BANDWIDTH, ()): 3.35e12}}))
    assert d.sentence == "GPU 0 was memory-bound 100 % of the last 5 minutes at MBU 70 %: judge it by " \
                         "bandwidth, not FLOPs"


def test_extra_evidence_is_appended() -> None:
    history = _history(10, state_seconds={"starved_host": 1.0}, starvation_evidence="a thread of pid 9 ran")
    d = _diagnose(history, extra="62 % of worker samples in PIL/Image.py:decode")
    assert d.sentence.endswith("a thread of pid 9 ran; 62 % of worker samples in PIL/Image.py:decode")


def test_no_history_says_so() -> None:
    assert _diagnose([]).sentence == "GPU 0: no signal history in the last 5 minutes yet"


def test_span_wording() -> None:
    assert span(300) == "the last 5 minutes"
    assert span(90) == "the last minute"
    assert span(30) == "the last 30 seconds"
    assert span(150) == "the last 2.5 minutes"


def test_diagnose_store_reads_the_window_and_asks_providers(build) -> None:
    store = Store(interval_seconds=1.0, history_seconds=900)
    for t in range(1, 601):
        state = "idle" if t <= 300 else "starved_io"
        store.add_signals(0, float(t), IntervalSignals(dt=1.0, state_seconds={state: 1.0},
                                                       starvation_evidence="3 threads of pid 5 in D state"))
    snap = _snapshot({0: build.reading(t=600.0)})

    def provider(index: int, seconds: float) -> str | None:
        assert seconds == 120.0
        return "62 % of worker samples in read()"

    def broken(index: int, seconds: float) -> str | None:
        raise RuntimeError("a provider bug")

    [d] = diagnose_store(store, snap, 2.0, precision="bf16", min_share=0.1, providers=[broken, provider])
    assert d.covered_seconds == pytest.approx(120.0)
    assert d.shares["starved_io"] == pytest.approx(1.0)
    assert d.sentence == ("GPU 0 spent 100 % of the last 2 minutes starved by I/O: "
                          "3 threads of pid 5 in D state; "
                          "62 % of worker samples in read()")


def test_format_for_the_status_command() -> None:
    d = _diagnose(_history(10, state_seconds={"compute_bound": 0.6, "starved_host": 0.4}))
    text = format_diagnosis([d.to_dict()])
    assert text.splitlines()[0] == "GPU 0: compute_bound 60 %, starved_host 40 %"
    assert text.splitlines()[1].strip() == d.sentence
