"""The metric catalog: naming rules, OpenMetrics safety, and the README table kept in step with it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from agent.model import GpuReading
from exporters import catalog
from exporters.catalog import (
    BY_NAME,
    CATALOG,
    COUNTER,
    DEVICE_COUNTER_DELTAS,
    FEEDS,
    GAUGE,
    GPU_COUNTER,
    GPU_LABELS,
    INFO,
    INTEGRATED_RATIOS,
    MARKDOWN_BEGIN,
    MARKDOWN_END,
    markdown_table,
)

ROOT = Path(__file__).resolve().parents[2]

# The names the issues fix, with the labels each must carry (beyond any others it has).
REQUIRED: dict[str, set[str]] = {
    "gpulse_gpu_info": {"gpu", "uuid", "name", "pci_bus_id", "driver_version", "cuda_capability"},
    "gpulse_gpu_up": {"gpu", "uuid"},
    "gpulse_gpu_busy_seconds_total": {"gpu", "uuid"},
    "gpulse_gpu_sm_active_seconds_total": {"gpu", "uuid"},
    "gpulse_gpu_tensor_active_seconds_total": {"gpu", "uuid"},
    "gpulse_gpu_dram_active_seconds_total": {"gpu", "uuid"},
    "gpulse_gpu_sm_clock_hertz": {"gpu", "uuid"},
    "gpulse_gpu_sm_clock_max_hertz": {"gpu", "uuid"},
    "gpulse_gpu_memory_clock_hertz": {"gpu", "uuid"},
    "gpulse_gpu_power_watts": {"gpu", "uuid"},
    "gpulse_gpu_power_limit_watts": {"gpu", "uuid"},
    "gpulse_gpu_energy_joules_total": {"gpu", "uuid"},
    "gpulse_gpu_temperature_celsius": {"gpu", "uuid", "sensor"},
    "gpulse_gpu_temperature_threshold_celsius": {"gpu", "uuid", "threshold"},
    "gpulse_gpu_memory_used_bytes": {"gpu", "uuid"},
    "gpulse_gpu_memory_total_bytes": {"gpu", "uuid"},
    "gpulse_gpu_clock_event_active": {"gpu", "uuid", "reason"},
    "gpulse_gpu_throttle_seconds_total": {"gpu", "uuid", "reason"},
    "gpulse_gpu_xid_errors_total": {"gpu", "uuid", "xid"},
    "gpulse_gpu_ecc_errors_total": {"gpu", "uuid"},
    "gpulse_gpu_pcie_transmit_bytes_total": {"gpu", "uuid"},
    "gpulse_gpu_pcie_receive_bytes_total": {"gpu", "uuid"},
    "gpulse_gpu_nvlink_transmit_bytes_total": {"gpu", "uuid"},
    "gpulse_gpu_nvlink_receive_bytes_total": {"gpu", "uuid"},
    "gpulse_nvml_up": set(),
    "gpulse_collector_success": {"collector"},
    "gpulse_collector_duration_seconds": {"collector"},
    "gpulse_build_info": {"version", "python_version"},
    "gpulse_host_cpu_seconds_total": {"mode"},
    "gpulse_host_pressure_stall_seconds_total": set(),
    "gpulse_process_cpu_seconds_total": set(),
    "gpulse_gpu_state_seconds_total": {"gpu", "uuid", "state"},
    "gpulse_gpu_clock_lost_seconds_total": {"gpu", "uuid"},
    "gpulse_gpu_thermal_headroom_celsius": {"gpu", "uuid"},
    "gpulse_gpu_power_headroom_watts": {"gpu", "uuid"},
    "gpulse_gpu_peak_flops": {"gpu", "uuid", "precision"},
    "gpulse_gpu_peak_memory_bandwidth_bytes_per_second": {"gpu", "uuid"},
    "gpulse_gpu_estimated_flops_total": {"gpu", "uuid", "precision"},
    "gpulse_gpu_estimated_dram_bytes_total": {"gpu", "uuid"},
    "gpulse_gpu_reported_flops_total": {"gpu", "uuid"},
    "gpulse_profiles_total": {"trigger"},
    "gpulse_process_info": {
        "pid",
        "comm",
        "user",
        "container_id",
        "pod",
        "namespace",
        "container",
        "slurm_job",
    },
    "gpulse_process_gpu_memory_bytes": {"gpu", "uuid", "pid"},
    "gpulse_gpu_allocation_info": {"gpu", "uuid", "pod", "namespace", "container", "slurm_job"},
    "gpulse_agent_resident_memory_bytes": set(),
    "gpulse_agent_cpu_seconds_total": set(),
}
# Exact label sets where the issues give them in full.
EXACT_LABELS = {
    "gpulse_process_info",
    "gpulse_process_gpu_memory_bytes",
    "gpulse_gpu_allocation_info",
    "gpulse_gpu_state_seconds_total",
    "gpulse_gpu_up",
}
BASE_UNITS = {"seconds", "bytes", "watts", "joules", "celsius", "hertz", "ratio", "bytes_per_second"}
IDENTITY_LABELS = {
    "name",
    "pci_bus_id",
    "serial",
    "vbios_version",
    "driver_version",
    "cuda_driver_version",
    "cuda_capability",
    "mig_mode",
    "brand",
}
LABEL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
METRIC_NAME = re.compile(r"^gpulse_[a-z0-9_]+$")


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_metric_is_catalogued_with_its_labels(name: str) -> None:
    assert name in BY_NAME, f"{name} is missing from the catalog"
    labels = set(BY_NAME[name].labels)
    assert REQUIRED[name] <= labels
    if name in EXACT_LABELS:
        assert labels == REQUIRED[name]


def test_names_are_unique_prefixed_snake_case() -> None:
    names = [m.name for m in CATALOG]
    assert len(names) == len(set(names))
    bad = [n for n in names if not METRIC_NAME.match(n) or "__" in n]
    assert not bad


@pytest.mark.parametrize("metric", CATALOG, ids=lambda m: m.name)
def test_type_matches_name_suffix(metric: catalog.MetricDef) -> None:
    assert metric.type in (GAUGE, COUNTER, INFO)
    assert metric.name.endswith("_total") == (metric.type == COUNTER)
    assert metric.name.endswith("_info") == (metric.type == INFO)
    if metric.type == INFO:
        assert metric.unit == "", "OpenMetrics forbids a unit on info families"


@pytest.mark.parametrize("metric", CATALOG, ids=lambda m: m.name)
def test_unit_is_a_base_unit_that_ends_the_family_name(metric: catalog.MetricDef) -> None:
    family = metric.om_family
    if metric.unit:
        assert metric.unit in BASE_UNITS
        assert family.endswith("_" + metric.unit), "OpenMetrics rejects a UNIT the name does not end with"
    else:
        # A family that ends in a unit must declare it, so the OpenMetrics UNIT line is not forgotten.
        assert not any(family.endswith("_" + unit) for unit in BASE_UNITS), family
    assert not re.search(r"_(percent|milli\w*|kilo\w*|mega\w*|mib|kib|gib|mhz|mw|mj)(_|$)", metric.name)


@pytest.mark.parametrize("metric", CATALOG, ids=lambda m: m.name)
def test_labels(metric: catalog.MetricDef) -> None:
    assert len(metric.labels) == len(set(metric.labels))
    assert all(LABEL_NAME.match(label) for label in metric.labels)
    assert metric.feed in FEEDS
    if "gpu" in metric.labels or "uuid" in metric.labels:
        # Per-GPU series carry gpu and uuid first, together.
        assert metric.labels[:2] == GPU_LABELS
    if metric.name != "gpulse_gpu_info":
        assert not IDENTITY_LABELS & set(metric.labels), "identity belongs in gpulse_gpu_info only"
    for label, values in metric.values:
        assert label in metric.labels
        assert values and len(values) == len(set(values))


def test_openmetrics_names_never_clash() -> None:
    # What an OpenMetrics parser reserves for each family (family name plus its type's suffixes).
    suffixes = {COUNTER: ("", "_total", "_created"), GAUGE: ("",), INFO: ("", "_info")}
    taken: dict[str, str] = {}
    for metric in CATALOG:
        for suffix in suffixes[metric.type]:
            reserved = metric.om_family + suffix
            assert reserved not in taken, f"{metric.name} clashes with {taken.get(reserved)}"
            taken[reserved] = metric.name
    # Gauges must not look like parts of histograms or summaries either.
    for metric in CATALOG:
        if metric.type == GAUGE:
            assert not re.search(r"_(count|sum|bucket|created|gcount|gsum)$", metric.name), metric.name


@pytest.mark.parametrize("metric", CATALOG, ids=lambda m: m.name)
def test_help_and_source_are_one_plain_line(metric: catalog.MetricDef) -> None:
    # No escaping needed in HELP (either format), and nothing that breaks a Markdown table row.
    for text in (metric.help, metric.source):
        assert text and text == text.strip()
        assert not set(text) & {"\\", '"', "\n", "|", "<", ">", "*", "`"}, text


def test_integration_tables_point_at_reading_fields_and_counter_families() -> None:
    fields = {f.name for f in dataclasses.fields(GpuReading)}
    for field, name, labels in INTEGRATED_RATIOS:
        assert field in fields and field.endswith("_ratio")
        assert BY_NAME[name].feed == GPU_COUNTER and BY_NAME[name].unit == "seconds"
        assert tuple(label for label, _ in labels) == BY_NAME[name].own_labels
    assert len({(n, lab) for _, n, lab in INTEGRATED_RATIOS}) == len(INTEGRATED_RATIOS)
    for field, name in DEVICE_COUNTER_DELTAS:
        assert field in fields
        assert BY_NAME[name].feed == GPU_COUNTER and BY_NAME[name].own_labels == ()


def test_markdown_table_has_one_row_per_metric_and_the_vocabularies() -> None:
    table = markdown_table()
    for metric in CATALOG:
        rows = [
            line for line in table.splitlines() if line.startswith(f"| `{metric.name}` | {metric.type} |")
        ]
        assert len(rows) == 1, metric.name
        assert metric.help in rows[0] and metric.source in rows[0]
    assert "| `gpulse_gpu_state_seconds_total` | `state` | `unavailable`, `idle`," in table


def test_cli_prints_the_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert catalog.main(["--markdown"]) == 0
    assert capsys.readouterr().out == markdown_table()


def test_update_rewrites_only_the_marked_section(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(f"# Title\n\n{MARKDOWN_BEGIN}\nold table\n{MARKDOWN_END}\n\nAfter.\n", encoding="utf-8")
    assert catalog.main(["--update", str(doc)]) == 0
    assert (
        doc.read_text(encoding="utf-8")
        == f"# Title\n\n{MARKDOWN_BEGIN}\n{markdown_table()}{MARKDOWN_END}\n\nAfter.\n"
    )


def test_update_refuses_a_document_without_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("no markers here\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        catalog.main(["--update", str(doc)])
    assert exc.value.code == 2
    assert "no <!-- metrics:begin -->" in capsys.readouterr().err
    assert doc.read_text(encoding="utf-8") == "no markers here\n"


def _between_markers(path: Path) -> str | None:
    text = path.read_text(encoding="utf-8")
    if MARKDOWN_BEGIN not in text:
        return None
    begin = text.index(MARKDOWN_BEGIN) + len(MARKDOWN_BEGIN)
    end = text.index(MARKDOWN_END, begin)
    return text[begin:end].strip("\n") + "\n"


def test_docs_metrics_table_matches_the_catalog() -> None:
    table = _between_markers(ROOT / "docs" / "metrics.md")
    assert table is not None, "docs/metrics.md lost its metrics markers"
    assert table == markdown_table(), (
        "docs/metrics.md is stale: paste `python -m exporters.catalog --markdown`"
    )


def test_readme_metrics_table_matches_the_catalog() -> None:
    readme = ROOT / "README.md"
    if not readme.exists() or _between_markers(readme) is None:
        pytest.skip("README.md has no <!-- metrics:begin --> section yet")
    assert _between_markers(readme) == markdown_table(), (
        "README.md's metric table is stale: paste `python -m exporters.catalog --markdown`"
    )
