"""Rendering a sequence of snapshots: what the renderer keeps between ticks never leaks into the output.

The renderer caches label text, line prefixes and whole lines across ticks. A sequence of
snapshots that changes what those caches depend on (a GPU's uuid, its keys and their order,
value types, non-finite values, a GPU lost and back, GPUs appearing and leaving, processes
appearing) is rendered in order and compared with a golden file, and each render is
compared with a render of the same snapshot from empty caches.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from agent.model import DeviceStatus, GpuIdentity, GpuProcess, GpuReading
from agent.snapshot import CounterKey, Snapshot
from exporters import examples
from exporters.prometheus import OPENMETRICS, TEXT, clear_caches, render

FIXTURES = Path(__file__).parent / "fixtures"
NEW_UUID = "GPU-replaced-0001"


def _with_uuid(snapshot: Snapshot, index: int, uuid: str) -> None:
    snapshot.identities[index] = replace(snapshot.identities[index], uuid=uuid)
    snapshot.readings[index] = replace(snapshot.readings[index], uuid=uuid)


def snapshot_sequence() -> list[Snapshot]:
    """Six ticks of four GPUs that change, one after the other, everything a cache could key on."""
    s0 = examples.full_snapshot(4, 2, uptime=3600.0)

    s1 = examples.full_snapshot(4, 2, uptime=3601.0)
    _with_uuid(s1, 1, NEW_UUID)  # GPU 1 replaced by another board at the same index
    s1.readings[2] = replace(
        s1.readings[2],
        power_watts=math.nan,
        power_instant_watts=math.inf,
        memory_used_bytes=6.0e10,  # type: ignore[arg-type]  # a float where an int was
        performance_state=True,  # a bool among ints
        retired_pages_pending=True,
        temperature_margin_celsius=-0.0,
        sm_clock_hz=1_755_000_000,  # an int among floats
        fan_speed_ratios={0: 0.5, 1: math.nan},
    )
    counters3 = s1.gpu_counters[3]
    counters3[("gpulse_gpu_made_up_total", ())] = 1.0  # not in the catalog: dropped
    counters3[("gpulse_gpu_throttle_seconds_total", (("reason", "sw_power_cap"),))] = -1.0  # negative counter
    counters3[("gpulse_gpu_busy_seconds_total", ())] = math.nan
    counters3[("gpulse_gpu_clock_lost_seconds_total", ())] = 42  # an int
    s1.gpu_gauges[3][("gpulse_gpu_power_headroom_watts", ())] = True  # a bool gauge

    s2 = examples.full_snapshot(4, 2, uptime=3602.0)
    _with_uuid(s2, 1, NEW_UUID)
    s2.readings[0] = replace(s2.readings[0], status=DeviceStatus.LOST, error="GPU is lost")
    r2 = s2.readings[2]
    s2.readings[2] = replace(
        r2,
        temperatures_celsius=dict(reversed(list(r2.temperatures_celsius.items()))),
        clock_event_reasons=0x44,
        supported_clock_event_reasons=None,
        energy_joules=1e308,
    )
    s2.gpu_counters[2][("gpulse_gpu_energy_joules_total", ())] = 1e308  # finite, but the sum of two is not
    s2.gpu_counters[2][("gpulse_gpu_pcie_transmit_bytes_total", ())] = 1e308
    s2.gpu_counters[3] = dict(reversed(list(s2.gpu_counters[3].items())))  # same keys, another order
    s2.gpu_counters[1][("gpulse_gpu_throttle_seconds_total", (("reason", "new_reason"),))] = 3.0  # a new key
    r1 = s2.readings[1]
    assert r1.processes is not None
    s2.readings[1] = replace(r1, processes=[*r1.processes, GpuProcess(pid=777, used_memory_bytes=5),
                                            GpuProcess(pid=777, used_memory_bytes=6)])

    s3 = examples.full_snapshot(4, 2, uptime=3603.0)
    _with_uuid(s3, 1, NEW_UUID)
    for table in (s3.identities, s3.readings, s3.gpu_counters, s3.gpu_gauges):
        del table[3]  # GPU 3 is gone
    s3.readings[5] = GpuReading(index=5, uuid='GPU-"odd"\\name', timestamp=3603.0, power_watts=10.0)
    s3.identities[2] = replace(s3.identities[2], serial='12"34', mig_mode=None)
    s3.gpu_counters[5] = {("gpulse_gpu_busy_seconds_total", ()): 1.5}
    s3.readings[2] = replace(s3.readings[2], clock_event_reasons=0x44)

    s5 = examples.full_snapshot(4, 2, uptime=3605.0)  # GPU 1 has its first uuid again
    s5.identities[4] = GpuIdentity(index=4, uuid="GPU-four", name="NVIDIA L4", pci_bus_id="0:4")
    return [s0, s1, s2, s3, s3, s5]


def _stable(body: str) -> str:
    # The Python version in gpulse_build_info differs between machines.
    return re.sub(r'python_version="[^"]*"', 'python_version="X"', body)


def _digest(body: bytes) -> str:
    return hashlib.sha256(_stable(body.decode()).encode()).hexdigest()


def _render_all(snapshots: list[Snapshot]) -> str:
    """One line per render: series, families and the SHA-256 of each format's body.

    Digests keep the fixture small (the six bodies are half a megabyte); a mismatch names the
    render, and ``test_each_render_equals_a_render_from_empty_caches`` shows the lines.
    """
    lines = []
    for i, snapshot in enumerate(snapshots):
        e = render(snapshot)
        lines.append(f"render {i}: {e.series} series, {e.families} families, "
                     f"text {_digest(e.body(TEXT))}, openmetrics {_digest(e.body(OPENMETRICS))}\n")
    return "".join(lines)


def test_sequence_matches_golden_file() -> None:
    """Refresh with GPULSE_UPDATE_GOLDEN=1 after an intended change (and check that change by eye)."""
    clear_caches()
    actual = _render_all(snapshot_sequence())
    path = FIXTURES / "render_sequence.sha256"
    if os.environ.get("GPULSE_UPDATE_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8")
        pytest.skip("golden file render_sequence.sha256 rewritten")
    assert actual == path.read_text(encoding="utf-8")


def test_each_render_equals_a_render_from_empty_caches() -> None:
    sequence = snapshot_sequence()
    clear_caches()
    warm = [render(snapshot).body(TEXT) for snapshot in sequence]
    for snapshot, body in zip(sequence, warm, strict=True):
        clear_caches()
        assert render(snapshot).body(TEXT) == body


def test_a_gpu_whose_uuid_changed_is_rendered_with_the_new_uuid_only() -> None:
    before = examples.full_snapshot(2, 1)
    render(before)
    after = examples.full_snapshot(2, 1)
    old = after.identities[1].uuid
    _with_uuid(after, 1, NEW_UUID)
    body = render(after).body(TEXT).decode()
    assert old not in body.replace(f'uuid="{old}",pod', "")  # the allocation info series keeps the old one
    gpu1 = [line for line in body.splitlines() if 'gpu="1"' in line and "allocation_info" not in line]
    assert gpu1 and all(f'uuid="{NEW_UUID}"' in line for line in gpu1)


def test_a_new_counter_key_and_a_new_process_appear_at_once() -> None:
    before = examples.full_snapshot(2, 1)
    render(before)
    after = examples.full_snapshot(2, 1)
    after.gpu_counters[0][("gpulse_gpu_throttle_seconds_total", (("reason", "brand_new"),))] = 2.5
    del after.gpu_counters[0][("gpulse_gpu_busy_seconds_total", ())]
    reading = after.readings[0]
    assert reading.processes is not None
    after.readings[0] = replace(reading, processes=[*reading.processes, GpuProcess(pid=99, sm_ratio=0.25)])
    body = render(after).body(TEXT).decode()
    assert re.search(r'gpulse_gpu_throttle_seconds_total\{gpu="0",[^}]*reason="brand_new"\} 2\.5\n', body)
    assert not re.search(r'gpulse_gpu_busy_seconds_total\{gpu="0",', body)
    assert re.search(r'gpulse_process_gpu_sm_utilization_ratio\{gpu="0",[^}]*pid="99"\} 0\.25\n', body)


def test_a_value_that_turns_non_finite_or_boolean_is_rendered_as_such() -> None:
    render(examples.full_snapshot(2, 1))
    after = examples.full_snapshot(2, 1)
    after.readings[1] = replace(after.readings[1], power_watts=math.inf, power_limit_watts=True)
    counters: dict[CounterKey, float] = after.gpu_counters[1]
    counters[("gpulse_gpu_clock_lost_seconds_total", ())] = -3.0
    body = render(after).body(TEXT).decode()
    assert not re.search(r'gpulse_gpu_power_watts\{gpu="1",', body)
    assert re.search(r'gpulse_gpu_power_limit_watts\{gpu="1",[^}]*\} 1\n', body)
    assert not re.search(r'gpulse_gpu_clock_lost_seconds_total\{gpu="1",', body)
    assert re.search(r'gpulse_gpu_power_watts\{gpu="0",[^}]*\} 612\.5\n', body)


def _cold(snapshot: Snapshot) -> bytes:
    clear_caches()
    return render(snapshot).body(TEXT)


def test_values_that_compare_equal_but_print_differently_are_rendered_anew() -> None:
    """0.0 / -0.0 and 1 / 1.0 / True compare equal; a line kept for an equal value would be wrong."""
    sequence = [0.0, -0.0, 0.0, 1, 1.0, True, 1.0, 2.5, 2.5]
    snapshots = []
    for value in sequence:
        snapshot = examples.full_snapshot(2, 1)
        snapshot.gpu_gauges[1][("gpulse_gpu_thermal_headroom_celsius", ())] = value
        snapshot.gpu_counters[1][("gpulse_gpu_clock_lost_seconds_total", ())] = value
        snapshot.readings[1] = replace(snapshot.readings[1], power_watts=value,
                                       temperatures_celsius={"gpu": value, "memory": 1.0})
        snapshots.append(snapshot)
    clear_caches()
    warm = [render(snapshot).body(TEXT) for snapshot in snapshots]
    for value, snapshot, body in zip(sequence, snapshots, warm, strict=True):
        assert body == _cold(snapshot), value
        text = body.decode()
        expected = "1" if value is True else repr(value)
        assert re.search(rf'gpulse_gpu_power_watts\{{gpu="1",[^}}]*\}} {re.escape(expected)}\n', text), value


def test_a_process_list_changed_in_place_is_rendered_as_it_is_now() -> None:
    snapshot = examples.full_snapshot(2, 1)
    processes = snapshot.readings[0].processes
    assert processes is not None
    render(snapshot)
    processes.append(GpuProcess(pid=4242, used_memory_bytes=7))  # the same list object, one more entry
    body = render(snapshot).body(TEXT)
    assert b'pid="4242"} 7\n' in body
    assert body == _cold(snapshot)


def test_an_identity_replaced_by_a_new_one_is_rendered_with_its_labels() -> None:
    before = examples.full_snapshot(2, 1)
    render(before)
    after = examples.full_snapshot(2, 1)  # equal identities, new objects
    after.identities[0] = replace(after.identities[0], serial="SERIAL-NEW", driver_version="999.1")
    body = render(after).body(TEXT).decode()
    assert 'serial="SERIAL-NEW"' in body and 'driver_version="999.1"' in body
    assert body.encode() == _cold(after)


def test_a_gpu_that_goes_lost_and_comes_back_renders_its_status_each_time() -> None:
    ok = examples.full_snapshot(2, 1)
    lost = examples.full_snapshot(2, 1)
    lost.readings[1] = replace(lost.readings[1], status=DeviceStatus.LOST)
    clear_caches()
    for snapshot, up in ((ok, 1), (lost, 0), (ok, 1)):
        body = render(snapshot).body(TEXT).decode()
        assert re.search(rf'gpulse_gpu_up\{{gpu="1",[^}}]*\}} {up}\n', body)
        assert (re.search(r'gpulse_gpu_power_watts\{gpu="1",', body) is not None) == bool(up)
