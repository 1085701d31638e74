"""Record and replay: a capture of the simulated fleet plays back through FakeNvml unchanged."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from agent.clock import ManualClock
from agent.model import DeviceStatus, GpuReading
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.sim.capture import CaptureError, read_capture, record
from agent.sim.fleet import Fleet
from agent.sim.replay import replay_models
from agent.sim.scenario import parse_scenario

FIXTURE = Path(__file__).parents[2] / "fixtures" / "sim" / "capture_sim_h100.jsonl"
SCENARIO = """
    seed: 21
    gpus:
      - {model: H100-SXM, workload: {kind: training, precision: bf16}}
      - {model: H100-SXM, workload: {kind: training, compute_s: 0.1, wait_s: 0.15, wait_cause: host_cpu}}
      - {model: A100-SXM-80GB, workload: {kind: inference_decode}}
    events:
      - {at_s: 8, gpu: 0, kind: power_cap, watts: 400}
      - {at_s: 12, gpu: 2, kind: xid, xid: 48}
      - {at_s: 20, gpu: 1, kind: process_exit}
"""
SAME = (
    "power_watts",
    "power_limit_watts",
    "sm_clock_hz",
    "memory_clock_hz",
    "sm_clock_max_hz",
    "clock_event_reasons",
    "temperatures_celsius",
    "temperature_thresholds_celsius",
    "memory_used_bytes",
    "memory_total_bytes",
    "performance_state",
    "violation_ns",
    "ecc_errors",
    "remapped_rows",
)


def _record(clock, seconds: float = 30.0) -> str:
    fleet = Fleet.from_scenario(parse_scenario(textwrap.dedent(SCENARIO)), clock)
    fake = FakeNvml(fleet.models, clock)
    backend = NvmlBackend(fake, clock)
    assert backend.start()
    out = io.StringIO()
    try:
        lines = record(backend, clock, out, seconds=seconds, interval_s=1.0)
    finally:
        fake.release()
        backend.close()
    assert lines >= 3 * (int(seconds) + 1)
    return out.getvalue()


def _replayed(path: Path, times: list[float]) -> dict[float, list[GpuReading]]:
    clock = ManualClock()
    models = replay_models(path)
    fake = FakeNvml(models, clock)
    backend = NvmlBackend(fake, clock)
    assert backend.start()
    got: dict[float, list[GpuReading]] = {}
    try:
        clock.set(times[0] - 1.0)  # a first read: GPM and the sample buffer need a previous one
        for i in range(len(models)):
            backend.read(i, processes=True)
        for t in times:
            clock.set(t)
            got[t] = [backend.read(i, processes=True) for i in range(len(models))]
    finally:
        fake.release()
        backend.close()
    return got


def _compare(captured: GpuReading, replayed: GpuReading) -> None:
    for name in SAME:
        assert getattr(replayed, name) == getattr(captured, name), name
    assert replayed.status == captured.status
    assert [p.pid for p in replayed.processes or []] == [p.pid for p in captured.processes or []]
    for name in ("sm_active_ratio", "tensor_active_ratio", "dram_active_ratio"):
        want, got = getattr(captured, name), getattr(replayed, name)
        assert (want is None) == (got is None), name
        if want is not None:
            assert got == pytest.approx(want, abs=0.011), name
    assert replayed.energy_joules == pytest.approx(captured.energy_joules, abs=0.01)


def test_record_then_replay_round_trip(tmp_path: Path, auto_clock) -> None:
    path = tmp_path / "capture.jsonl"
    path.write_text(_record(auto_clock))
    cap = read_capture(path)
    assert cap.header["format"] == "gpulse-capture" and cap.header["interval_s"] == 1.0
    assert [g["spec"] for g in cap.identities] == ["H100-SXM", "H100-SXM", "A100-SXM-80GB"]
    assert cap.xids[2] == [(12.0, 48)]
    # replayed from clock time 100, the schedule is published in that clock's time
    models = replay_models(cap, start=100.0)
    assert models[2].xids == [(100.0 + 12.0 - cap.readings[2][0].timestamp, 48)] and models[0].xids == []
    times = [float(t) for t in range(2, 31)]
    replayed = _replayed(path, times)
    for t in times:
        for gpu in range(3):
            captured = cap.readings[gpu][int(t)]
            assert captured.timestamp == t
            _compare(captured, replayed[t][gpu])
    # the power cap and the process exit are in the capture and come back out of the replay
    assert replayed[10.0][0].clock_event_reasons & 0x4  # type: ignore[operator]
    assert replayed[25.0][1].processes == []


def test_capture_lines_are_compact(auto_clock) -> None:
    lines = _record(auto_clock, seconds=3).splitlines()
    header = json.loads(lines[0])
    assert header["gpus"][0]["uuid"].startswith("GPU-")
    rec = json.loads(lines[4])
    assert rec["t"] == 1.0 and "uuid" not in rec and "timestamp" not in rec
    assert all(v is not None for v in rec.values())
    assert "fan_speed_ratios" not in rec  # empty: no fans, left out


def test_replay_loops_and_counters_keep_growing(tmp_path: Path, auto_clock) -> None:
    path = tmp_path / "capture.jsonl"
    path.write_text(_record(auto_clock, seconds=10))
    model = replay_models(path)[0]
    period = 11.0  # 11 readings one second apart
    first, again = model.snapshot(3.0), model.snapshot(3.0 + period)
    assert again.sm_clock_mhz == first.sm_clock_mhz and again.power_average_mw == first.power_average_mw
    assert again.energy_mj > first.energy_mj
    assert model.activity(0.0, period).busy == pytest.approx(model.activity(period, 2 * period).busy)


def test_committed_capture_replays(tmp_path: Path) -> None:
    """The capture under tests/fixtures plays back through FakeNvml and the real backend."""
    cap = read_capture(FIXTURE)
    times = sorted({r.timestamp for r in cap.readings[0]})[2:]
    replayed = _replayed(FIXTURE, times)
    for t in times:
        for gpu, readings in cap.readings.items():
            captured = next(r for r in readings if r.timestamp == t)
            _compare(captured, replayed[t][gpu])
    statuses = {r.status for rs in replayed.values() for r in rs}
    assert DeviceStatus.OK in statuses


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: not a capture header"),
        ('{"format": "other"}', "line 1: format must be 'gpulse-capture'"),
        ('{"format": "gpulse-capture", "version": 9}', "unsupported capture version 9"),
        ('{"format": "gpulse-capture", "version": 1, "gpus": []}', "gpus: the header lists no GPUs"),
        (
            '{"format": "gpulse-capture", "version": 1, "gpus": [{"index": 0}]}\n{"t": 0, "gpu": 3}',
            "line 2: gpu: 3 is not in the header",
        ),
        ('{"format": "gpulse-capture", "version": 1, "gpus": [{"index": 0}]}\n{"t": 0}', "line 2: "),
        ('{"format": "gpulse-capture", "version": 1, "gpus": [{"index": 0}]}\n', "GPU 0 has no readings"),
    ],
)
def test_bad_captures_say_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(CaptureError, match=message):
        read_capture(path)
