"""Rendering a Snapshot: valid in both formats, faithful to the catalog, nothing for what is absent."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent.model import DeviceStatus, GpuIdentity, GpuProcess, GpuReading, HostReading, ProcessStats
from agent.snapshot import CollectorStatus, CounterKey, Snapshot
from exporters import examples
from exporters.catalog import BY_NAME, CATALOG, COUNTER, INFO
from exporters.prometheus import OPENMETRICS, TEXT, Exposition, render

FIXTURES = Path(__file__).parent / "fixtures"
EPOCH = 1_700_000_000.0

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- snapshots built by hand ---------------------------------------------------------------


def t4_identity() -> GpuIdentity:
    return GpuIdentity(
        index=1,
        uuid="GPU-7e5a0c1d-t4",
        name="Tesla T4",
        pci_bus_id="00000000:3B:00.0",
        serial=None,
        vbios_version="90.04.96.00.02",
        driver_version="550.54.15",
        cuda_driver_version="12.4",
        compute_capability="7.5",
        mig_mode=None,
        brand="tesla",
    )


def t4_reading(timestamp: float) -> GpuReading:
    """An older GPU: no GPM, no NVLink, no row remapping, a fan, retired pages instead."""
    return GpuReading(
        index=1,
        uuid="GPU-7e5a0c1d-t4",
        timestamp=timestamp,
        memory_total_bytes=16 * 1024**3,
        memory_used_bytes=1024**3,
        memory_free_bytes=15 * 1024**3,
        utilization_gpu_ratio=0.0,
        utilization_memory_ratio=0.0,
        sm_clock_hz=300e6,
        memory_clock_hz=405e6,
        graphics_clock_hz=300e6,
        sm_clock_max_hz=1590e6,
        memory_clock_max_hz=5001e6,
        graphics_clock_max_hz=1590e6,
        power_watts=27.5,
        power_limit_watts=70.0,
        power_default_limit_watts=70.0,
        power_min_limit_watts=60.0,
        power_max_limit_watts=70.0,
        energy_joules=1.0e6,
        temperatures_celsius={"gpu": 41.0},
        temperature_thresholds_celsius={"shutdown": 96.0, "slowdown": 93.0},
        fan_speed_ratios={0: 0.45},
        performance_state=8,
        clock_event_reasons=0x1,
        supported_clock_event_reasons=0x1EF,
        pcie_tx_bytes=10**9,
        pcie_rx_bytes=2 * 10**9,
        pcie_replay_count=0,
        ecc_errors={("volatile", "corrected"): 0, ("volatile", "uncorrected"): 0},
        retired_pages={"single_bit_ecc": 2, "double_bit_ecc": 0},
        retired_pages_pending=False,
        processes=[],
    )


def representative_snapshot() -> Snapshot:
    """A busy H100, an idle T4 and an H100 that fell off the bus, plus host, processes and collectors."""
    now = 3600.0
    lost = replace(examples.reading(2, now - 5.0), status=DeviceStatus.LOST, error="GPU is lost")
    identities = {0: examples.identity(0), 1: t4_identity(), 2: examples.identity(2)}
    counters = {0: examples.gpu_counters(0, now), 2: examples.gpu_counters(2, now)}
    counters[1] = {
        ("gpulse_gpu_busy_seconds_total", ()): 12.5,
        ("gpulse_gpu_energy_joules_total", ()): 98000.0,
        ("gpulse_gpu_state_seconds_total", (("state", "idle"),)): 3588.0,
        ("gpulse_gpu_state_seconds_total", (("state", "starved_other"),)): 12.0,
    }
    counters[2][("gpulse_gpu_state_seconds_total", (("state", "unavailable"),))] = 300.0
    processes = {
        4000: examples.process(4000, 1, 0),
        4001: examples.process(4001, 4000, 0, 'pt_data_worker "0"'),
    }
    return Snapshot(
        timestamp=now,
        epoch=EPOCH + now,
        interval_seconds=1.0,
        nvml_up=True,
        nvml_message="NVML 12.550, 3 GPUs",
        identities=identities,
        readings={0: examples.reading(0, now, (4000,)), 1: t4_reading(now), 2: lost},
        gpu_counters=counters,
        gpu_gauges={
            0: examples.gpu_gauges(0),
            1: {("gpulse_gpu_thermal_headroom_celsius", ()): 52.0},
            2: examples.gpu_gauges(2),
        },
        node_counters={
            ("gpulse_agent_cpu_seconds_total", ()): 12.75,
            ("gpulse_profiles_total", (("trigger", "starvation"),)): 1.0,
            ("gpulse_attribution_dropped_series_total", ()): 0.0,
        },
        node_gauges={
            ("gpulse_agent_resident_memory_bytes", ()): 61_000_000.0,
            (
                "gpulse_process_info",
                (
                    ("pid", "4000"),
                    ("comm", "python"),
                    ("user", "alice"),
                    ("container_id", "c0ffee"),
                    ("pod", "train-0"),
                    ("namespace", "ml"),
                    ("container", "trainer"),
                    ("slurm_job", ""),
                ),
            ): 1.0,
            (
                "gpulse_gpu_allocation_info",
                (
                    ("gpu", "0"),
                    ("uuid", identities[0].uuid),
                    ("pod", "train-0"),
                    ("namespace", "ml"),
                    ("container", "trainer"),
                ),
            ): 1.0,
        },
        xid_counts={(2, 79): 1, (0, 13): 2},
        xid_last_seen={2: EPOCH + now - 6.0, 0: EPOCH + 100.0},
        host=examples.host(now, processes),
        collectors={
            "nvml": CollectorStatus(True, 0.004, last_success=now),
            "host": CollectorStatus(False, 0.02, last_success=now - 30.0, message="permission denied"),
            "kubernetes": CollectorStatus(False, 2.0, last_success=None, message="socket hangs"),
        },
        ticks=3600,
    )


def minimal_snapshot(readings: dict[int, GpuReading], **kwargs: object) -> Snapshot:
    identities = {
        i: GpuIdentity(index=i, uuid=r.uuid, name="NVIDIA H100 80GB HBM3", pci_bus_id=f"0:{i}")
        for i, r in readings.items()
    }
    fields: dict[str, object] = {
        "timestamp": 10.0,
        "epoch": EPOCH + 10.0,
        "interval_seconds": 1.0,
        "nvml_up": True,
        "nvml_message": "ok",
        "identities": identities,
        "readings": readings,
    }
    fields.update(kwargs)
    return Snapshot(**fields)  # type: ignore[arg-type]


# --- helpers -------------------------------------------------------------------------------


def series(body: str) -> Series:
    out: Series = {}
    for family in parse_text(body):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = sample.value
    return out


def names(body: str) -> set[str]:
    return {name for name, _ in series(body)}


def value(body: str, name: str, **labels: str) -> float | None:
    return series(body).get((name, frozenset(labels.items())))


def text_of(exposition: Exposition, fmt: str = TEXT) -> str:
    return exposition.body(fmt).decode()


# --- validity in both formats --------------------------------------------------------------


def test_representative_exposition_parses_in_both_formats_with_catalog_types() -> None:
    exposition = render(representative_snapshot())
    text_families = {f.name: f for f in parse_text(text_of(exposition))}
    om_families = {f.name: f for f in parse_openmetrics(text_of(exposition, OPENMETRICS))}
    assert len(text_families) == len(om_families) == exposition.families
    for metric in CATALOG:
        om = om_families.get(metric.om_family)
        assert om is not None, f"{metric.name} was not rendered"
        assert om.type == metric.type
        assert om.unit == metric.unit
        assert om.documentation == metric.help
        # prometheus_client's text parser names counter families without _total, as OpenMetrics does.
        text = text_families[metric.om_family if metric.type == COUNTER else metric.name]
        assert text.type == ("gauge" if metric.type == INFO else metric.type)


def test_every_sample_belongs_to_its_catalog_family_with_catalog_labels() -> None:
    body = text_of(render(representative_snapshot()))
    for (name, labels), sample_value in series(body).items():
        metric = BY_NAME[name]
        label_names = {k for k, _ in labels}
        if metric.type == INFO:
            assert label_names <= set(metric.labels) and sample_value == 1
            assert {"gpu", "uuid"} <= label_names or "gpu" not in metric.labels
        else:
            assert label_names == set(metric.labels), name
        if metric.type == COUNTER:
            assert sample_value >= 0


def test_each_family_has_one_help_and_type_and_contiguous_samples() -> None:
    body = text_of(render(examples.full_snapshot(3)))
    types = re.findall(r"^# TYPE (\S+) ", body, re.M)
    helps = re.findall(r"^# HELP (\S+) ", body, re.M)
    assert types == helps and len(types) == len(set(types))
    current = None
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif not line.startswith("#"):
            assert line.split("{")[0].split(" ")[0] == current


def test_openmetrics_metadata_and_eof() -> None:
    exposition = render(representative_snapshot())
    om, text = text_of(exposition, OPENMETRICS), text_of(exposition)
    assert om.endswith("\n# EOF\n") and "# EOF" not in text
    assert "# TYPE gpulse_gpu_energy_joules counter\n# UNIT gpulse_gpu_energy_joules joules\n" in om
    assert "# TYPE gpulse_gpu_energy_joules_total counter\n" in text and "# UNIT" not in text
    assert "# TYPE gpulse_gpu info\n" in om and "# TYPE gpulse_gpu_info gauge\n" in text
    # Samples are the same lines in both formats.
    assert [line for line in om.splitlines() if not line.startswith("#")] == [
        line for line in text.splitlines() if not line.startswith("#")
    ]


def test_series_count_matches_the_samples() -> None:
    exposition = render(examples.full_snapshot(2))
    assert exposition.series == len(series(text_of(exposition)))


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian's prometheus package provides it; CI installs it)",
)
def test_promtool_check_metrics_prints_nothing() -> None:
    for snapshot in (representative_snapshot(), examples.full_snapshot(4)):
        result = subprocess.run(
            ["promtool", "check", "metrics"],
            input=render(snapshot).body(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0 and result.stdout == b"" and result.stderr == b"", result


# --- absent, not zero ----------------------------------------------------------------------


def test_every_catalog_family_has_a_render_path() -> None:
    rendered = {name for name, _ in series(text_of(render(representative_snapshot())))}
    assert rendered == set(BY_NAME)


def test_none_fields_give_no_series() -> None:
    bare = GpuReading(index=0, uuid="GPU-bare", timestamp=10.0, memory_total_bytes=80 * 1024**3)
    rendered = names(text_of(render(minimal_snapshot({0: bare}))))
    gpu_series = {n for n in rendered if n.startswith("gpulse_gpu_") or n.startswith("gpulse_process_")}
    assert gpu_series == {
        "gpulse_gpu_info",
        "gpulse_gpu_up",
        "gpulse_gpu_status",
        "gpulse_gpu_memory_total_bytes",
    }


def test_nan_infinity_and_negative_counters_give_no_series() -> None:
    reading = GpuReading(
        index=0,
        uuid="GPU-nan",
        timestamp=10.0,
        power_watts=math.nan,
        sm_clock_hz=math.inf,
        memory_clock_hz=-math.inf,
        temperatures_celsius={"gpu": math.nan, "memory": 60.0},
    )
    snapshot = minimal_snapshot(
        {0: reading},
        gpu_counters={
            0: {
                ("gpulse_gpu_busy_seconds_total", ()): math.nan,
                ("gpulse_gpu_energy_joules_total", ()): -5.0,
                ("gpulse_gpu_clock_lost_seconds_total", ()): 1.5,
            }
        },
        gpu_gauges={0: {("gpulse_gpu_power_headroom_watts", ()): math.inf}},
    )
    body = text_of(render(snapshot))
    assert not re.search(r"NaN|Inf", body)
    rendered = names(body)
    for absent in (
        "gpulse_gpu_power_watts",
        "gpulse_gpu_sm_clock_hertz",
        "gpulse_gpu_memory_clock_hertz",
        "gpulse_gpu_busy_seconds_total",
        "gpulse_gpu_energy_joules_total",
        "gpulse_gpu_power_headroom_watts",
    ):
        assert absent not in rendered
    assert value(body, "gpulse_gpu_temperature_celsius", gpu="0", uuid="GPU-nan", sensor="memory") == 60.0
    assert value(body, "gpulse_gpu_temperature_celsius", gpu="0", uuid="GPU-nan", sensor="gpu") is None
    assert value(body, "gpulse_gpu_clock_lost_seconds_total", gpu="0", uuid="GPU-nan") == 1.5


def test_host_only_node() -> None:
    snapshot = Snapshot(
        timestamp=5.0,
        epoch=EPOCH,
        interval_seconds=1.0,
        nvml_up=False,
        nvml_message="no NVIDIA driver: host-only",
        host=HostReading(timestamp=5.0, cpu_count=4, cpu_seconds={"user": 10.0, "idle": 30.0}),
    )
    exposition = render(snapshot)
    body = text_of(exposition)
    assert value(body, "gpulse_nvml_up") == 0
    assert value(body, "gpulse_host_cpus") == 4
    assert not {n for n in names(body) if n.startswith("gpulse_gpu_")}
    list(parse_openmetrics(text_of(exposition, OPENMETRICS)))


# --- GPU status ----------------------------------------------------------------------------


def test_lost_gpu_is_down_without_fresh_readings_and_the_others_unaffected() -> None:
    body = text_of(render(representative_snapshot()))
    lost = {"gpu": "2", "uuid": examples.identity(2).uuid}
    healthy = {"gpu": "0", "uuid": examples.identity(0).uuid}
    assert value(body, "gpulse_gpu_up", **lost) == 0
    assert value(body, "gpulse_gpu_up", **healthy) == 1
    assert value(body, "gpulse_gpu_status", status="lost", **lost) == 1
    assert value(body, "gpulse_gpu_status", status="ok", **lost) == 0
    lost_names = {name for name, labels in series(body) if ("gpu", "2") in labels}
    # Identity, status, the agent's own counters and XIDs stay; readings and derived levels go.
    assert lost_names == {
        "gpulse_gpu_info",
        "gpulse_gpu_up",
        "gpulse_gpu_status",
        "gpulse_gpu_xid_errors_total",
        "gpulse_gpu_xid_last_seen_timestamp_seconds",
    } | {name for name, _ in examples.gpu_counters(2, 1.0)}
    assert value(body, "gpulse_gpu_state_seconds_total", state="unavailable", **lost) == 300.0
    assert value(body, "gpulse_gpu_xid_errors_total", xid="79", **lost) == 1
    assert value(body, "gpulse_gpu_power_watts", **healthy) == 612.5


@pytest.mark.parametrize("status", [DeviceStatus.UNRESPONSIVE, DeviceStatus.ERROR])
def test_unresponsive_or_failed_gpu_is_down(status: DeviceStatus) -> None:
    reading = GpuReading(index=0, uuid="GPU-x", timestamp=1.0, status=status, power_watts=100.0)
    body = text_of(render(minimal_snapshot({0: reading})))
    assert value(body, "gpulse_gpu_up", gpu="0", uuid="GPU-x") == 0
    assert value(body, "gpulse_gpu_status", gpu="0", uuid="GPU-x", status=status.value) == 1
    assert "gpulse_gpu_power_watts" not in names(body)


def test_known_gpu_without_a_reading_is_down() -> None:
    snapshot = minimal_snapshot({}, identities={0: examples.identity(0)})
    body = text_of(render(snapshot))
    assert value(body, "gpulse_gpu_up", gpu="0", uuid=examples.identity(0).uuid) == 0
    assert "gpulse_gpu_status" not in names(body)


# --- values and labels ---------------------------------------------------------------------


def test_label_values_are_escaped_and_parse_back() -> None:
    nasty = 'H100 "SXM" \\ rev\nB'
    identity = GpuIdentity(index=0, uuid='GPU-"q"\\', name=nasty, pci_bus_id="0:1")
    reading = GpuReading(index=0, uuid=identity.uuid, timestamp=1.0, power_watts=10.0)
    processes = {7: ProcessStats(pid=7, ppid=1, comm='we"ird\\name\n', user="bob")}
    snapshot = minimal_snapshot(
        {0: reading},
        identities={0: identity},
        host=HostReading(timestamp=1.0, processes=processes),
        collectors={'odd"collector': CollectorStatus(True, 0.5)},
    )
    exposition = render(snapshot)
    for fmt, parse in ((TEXT, parse_text), (OPENMETRICS, parse_openmetrics)):
        samples = {s.name: s.labels for f in parse(text_of(exposition, fmt)) for s in f.samples}
        assert samples["gpulse_gpu_info"]["name"] == nasty
        assert samples["gpulse_gpu_power_watts"]["uuid"] == identity.uuid
        assert samples["gpulse_process_info"]["comm"] == 'we"ird\\name\n'
        assert samples["gpulse_collector_success"]["collector"] == 'odd"collector'


def test_unknown_labels_are_left_out_of_info_series() -> None:
    identity = GpuIdentity(index=0, uuid="GPU-a", name="Tesla T4", pci_bus_id="0:1", mig_mode=True)
    snapshot = minimal_snapshot(
        {0: GpuReading(index=0, uuid="GPU-a", timestamp=1.0)}, identities={0: identity}
    )
    (labels,) = [dict(lab) for name, lab in series(text_of(render(snapshot))) if name == "gpulse_gpu_info"]
    assert labels == {
        "gpu": "0",
        "uuid": "GPU-a",
        "name": "Tesla T4",
        "pci_bus_id": "0:1",
        "mig_mode": "enabled",
    }


def test_clock_event_reasons_only_for_supported_bits() -> None:
    reading = GpuReading(
        index=0, uuid="GPU-c", timestamp=1.0, clock_event_reasons=0x44, supported_clock_event_reasons=0x4C
    )
    body = text_of(render(minimal_snapshot({0: reading})))
    active = {
        dict(lab)["reason"]: v
        for (name, lab), v in series(body).items()
        if name == "gpulse_gpu_clock_event_active"
    }
    assert active == {"sw_power_cap": 1, "hw_slowdown": 0, "hw_thermal_slowdown": 1}
    unknown_support = replace(reading, supported_clock_event_reasons=None)
    body = text_of(render(minimal_snapshot({0: unknown_support})))
    assert sum(1 for name, _ in series(body) if name == "gpulse_gpu_clock_event_active") == 9


def test_remapped_rows_split_into_counts_and_flags() -> None:
    reading = GpuReading(
        index=0,
        uuid="GPU-r",
        timestamp=1.0,
        remapped_rows={"corrected": 3, "uncorrected": 1, "pending": 1, "failure": 0},
    )
    body = text_of(render(minimal_snapshot({0: reading})))
    gpu = {"gpu": "0", "uuid": "GPU-r"}
    assert value(body, "gpulse_gpu_remapped_rows", type="corrected", **gpu) == 3
    assert value(body, "gpulse_gpu_remapped_rows", type="uncorrected", **gpu) == 1
    assert value(body, "gpulse_gpu_row_remap_pending", **gpu) == 1
    assert value(body, "gpulse_gpu_row_remap_failure", **gpu) == 0


def test_a_pid_listed_twice_on_a_gpu_is_one_series() -> None:
    reading = GpuReading(
        index=0,
        uuid="GPU-p",
        timestamp=1.0,
        processes=[
            GpuProcess(pid=9, used_memory_bytes=100),
            GpuProcess(pid=9, used_memory_bytes=200),
            GpuProcess(pid=10, used_memory_bytes=None, sm_ratio=0.5),
        ],
    )
    body = text_of(render(minimal_snapshot({0: reading})))
    memory = {
        dict(lab)["pid"]: v
        for (name, lab), v in series(body).items()
        if name == "gpulse_process_gpu_memory_bytes"
    }
    assert memory == {"9": 100}
    assert value(body, "gpulse_process_gpu_sm_utilization_ratio", gpu="0", uuid="GPU-p", pid="10") == 0.5


def test_process_series_from_the_host_reading() -> None:
    proc = ProcessStats(
        pid=42,
        ppid=1,
        comm="python",
        user="alice",
        cpu_user_seconds=10.5,
        cpu_system_seconds=2.0,
        threads_total=10,
        threads_running=3,
        threads_blocked_io=2,
        rss_bytes=1000,
        cgroup_cpu_throttled_seconds=0.25,
    )
    body = text_of(render(minimal_snapshot({}, host=HostReading(timestamp=1.0, processes={42: proc}))))
    assert value(body, "gpulse_process_cpu_seconds_total", pid="42", mode="user") == 10.5
    assert value(body, "gpulse_process_threads", pid="42", state="blocked_io") == 2
    assert value(body, "gpulse_process_threads", pid="42", state="other") == 5
    assert value(body, "gpulse_process_cgroup_cpu_throttled_seconds_total", pid="42") == 0.25
    assert "gpulse_process_io_read_bytes_total" not in names(body)  # None: not readable
    # Without attribution the host's process list gives the info series.
    assert value(body, "gpulse_process_info", pid="42", comm="python", user="alice") == 1


def test_attribution_info_replaces_the_host_fallback() -> None:
    body = text_of(render(representative_snapshot()))
    infos = [dict(lab) for name, lab in series(body) if name == "gpulse_process_info"]
    assert infos == [
        {
            "pid": "4000",
            "comm": "python",
            "user": "alice",
            "container_id": "c0ffee",
            "pod": "train-0",
            "namespace": "ml",
            "container": "trainer",
        }
    ]


def test_keys_that_do_not_fit_the_catalog_are_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reading = GpuReading(index=0, uuid="GPU-k", timestamp=1.0)
    counters: dict[CounterKey, float] = {
        ("gpulse_gpu_made_up_total", ()): 1.0,  # not in the catalog
        ("gpulse_gpu_state_seconds_total", (("reason", "idle"),)): 1.0,  # wrong label
        ("gpulse_gpu_state_seconds_total", ()): 1.0,  # label missing
        ("gpulse_gpu_power_headroom_watts", ()): 1.0,  # a gauge family, not a counter
        ("gpulse_gpu_state_seconds_total", (("state", "idle"),)): 7.0,
    }
    node: dict[CounterKey, float] = {
        ("gpulse_profiles_total", (("trigger", "manual"), ("pid", "1"))): 1.0,  # extra label
        ("gpulse_gpu_up", ()): 1.0,  # fed from readings, not from node gauges
    }
    with caplog.at_level(logging.WARNING, logger="exporters.prometheus"):
        body = text_of(
            render(
                minimal_snapshot(
                    {0: reading},
                    gpu_counters={0: counters},
                    node_counters=node,
                    node_gauges=node,
                    gpu_gauges={5: {("gpulse_gpu_peak_flops", (("precision", "bf16"),)): 1.0}},
                )
            )
        )
    rendered = series(body)
    assert [(n, dict(lab)) for n, lab in rendered if n == "gpulse_gpu_state_seconds_total"] == [
        ("gpulse_gpu_state_seconds_total", {"gpu": "0", "uuid": "GPU-k", "state": "idle"})
    ]
    assert not {"gpulse_gpu_made_up_total", "gpulse_profiles_total", "gpulse_gpu_peak_flops"} & names(body)
    assert sum(1 for n, _ in rendered if n == "gpulse_gpu_up") == 1
    assert "gpulse_gpu_made_up_total" in caplog.text


def test_counters_follow_their_keys_from_tick_to_tick() -> None:
    reading = GpuReading(index=0, uuid="GPU-t", timestamp=1.0)
    busy: CounterKey = ("gpulse_gpu_busy_seconds_total", ())
    idle: CounterKey = ("gpulse_gpu_state_seconds_total", (("state", "idle"),))
    bogus: CounterKey = ("gpulse_gpu_bogus_total", ())
    gpu = {"gpu": "0", "uuid": "GPU-t"}
    ticks: list[dict[CounterKey, float]] = [
        {busy: 1.0},
        {busy: 2.0, idle: 5.0},  # a key appears
        {idle: 5.5, busy: 2.5},  # the same keys in another order
        {idle: 6.0, bogus: 1.0, busy: 3.0},  # another order, and a key that does not fit
        {idle: 7.0},  # a key goes
    ]
    expected = [(1.0, None), (2.0, 5.0), (2.5, 5.5), (3.0, 6.0), (None, 7.0)]
    for counters, (busy_value, idle_value) in zip(ticks, expected, strict=True):
        body = text_of(render(minimal_snapshot({0: reading}, gpu_counters={0: counters})))
        assert value(body, "gpulse_gpu_busy_seconds_total", **gpu) == busy_value
        assert value(body, "gpulse_gpu_state_seconds_total", state="idle", **gpu) == idle_value
        assert "gpulse_gpu_bogus_total" not in body


def test_node_series_given_twice_in_another_label_order_render_once() -> None:
    node: dict[CounterKey, float] = {
        ("gpulse_profiles_total", (("trigger", "manual"),)): 3.0,
        ("gpulse_gpu_allocation_info", (("gpu", "0"), ("uuid", "u"), ("pod", "p"))): 1.0,
        ("gpulse_gpu_allocation_info", (("pod", "p"), ("uuid", "u"), ("gpu", "0"))): 1.0,
    }
    body = text_of(render(minimal_snapshot({}, node_gauges=node)))
    assert sum(1 for n, _ in series(body) if n == "gpulse_gpu_allocation_info") == 1


def test_collector_last_success_is_unix_time() -> None:
    snapshot = minimal_snapshot(
        {},
        timestamp=100.0,
        epoch=EPOCH + 100.0,
        collectors={"host": CollectorStatus(False, 0.25, last_success=95.0)},
    )
    body = text_of(render(snapshot))
    assert value(body, "gpulse_collector_success", collector="host") == 0
    assert value(body, "gpulse_collector_duration_seconds", collector="host") == 0.25
    assert value(body, "gpulse_collector_last_success_timestamp_seconds", collector="host") == EPOCH + 95.0
    assert value(body, "gpulse_last_sample_timestamp_seconds") == EPOCH + 100.0


# --- golden file ---------------------------------------------------------------------------


def _stable(body: str) -> str:
    # The Python version in gpulse_build_info differs between machines.
    return re.sub(r'python_version="[^"]*"', 'python_version="X"', body)


@pytest.mark.parametrize(
    ("fmt", "filename"), [(TEXT, "representative.prom"), (OPENMETRICS, "representative.om")]
)
def test_golden_exposition(fmt: str, filename: str) -> None:
    """Refresh with GPULSE_UPDATE_GOLDEN=1 after an intended change, and review the diff."""
    actual = _stable(text_of(render(representative_snapshot()), fmt))
    path = FIXTURES / filename
    if os.environ.get("GPULSE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        pytest.skip(f"golden file {filename} rewritten")
    assert path.exists(), f"{path} missing: run with GPULSE_UPDATE_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8")
