"""The Grafana dashboards: built from dashboards/build.py, importable as is, every panel readable.

Whether each query parses and returns data is checked against a real Prometheus in
tests/e2e/test_prometheus_e2e.py (promtool has no query parser).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
FILES = ("gpulse-fleet.json", "gpulse-node.json", "gpulse-workloads.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's global variables (https://grafana.com/docs/grafana/latest/dashboards/variables/add-template-variables/)
GRAFANA_GLOBALS = {"__rate_interval", "__interval", "__range", "__value", "__url_time_range",
                   "__all_variables"}


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpulse_dashboard_build", DASHBOARDS / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _boards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARDS / name).read_text()) for name in FILES}


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_dashboard_files_are_the_build_output(tmp_path: Path) -> None:
    build = _load_build()
    assert build.main(["--check"]) == 0, "dashboards/*.json are stale: run python dashboards/build.py"
    assert build.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(FILES)


@pytest.mark.parametrize("name", FILES)
def test_dashboard_is_importable_as_is(name: str) -> None:
    board = json.loads((DASHBOARDS / name).read_text())
    assert board["uid"].startswith("gpulse-") and board["title"].startswith("gpulse / ")
    assert board["schemaVersion"] >= 36  # Grafana 9.3+; we target 10+
    assert "id" not in board and "__inputs" not in board  # no instance-specific ids, no import prompts
    assert "gpulse" in board["tags"]
    names = [v["name"] for v in board["templating"]["list"]]
    assert names[:3] == ["datasource", "instance", "gpu"]
    ds = board["templating"]["list"][0]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for var in board["templating"]["list"][1:]:
        assert var["type"] == "query" and var["datasource"] == DATASOURCE
        if var["includeAll"]:
            assert var["allValue"] == ".*"


@pytest.mark.parametrize("name", FILES)
def test_every_panel_has_unit_description_and_the_datasource_variable(name: str) -> None:
    board = _boards()[name]
    panels = _panels(board)
    assert len(panels) >= 10
    for panel in panels:
        title = panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        assert len(panel.get("description", "")) >= 60, f"{title}: no description saying how to read it"
        assert panel["datasource"] == DATASOURCE, title
        assert panel["targets"], f"{title}: no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, title
            assert target["expr"].strip(), title


@pytest.mark.parametrize("name", FILES)
def test_no_hard_coded_uids(name: str) -> None:
    board = _boards()[name]
    for path, key, value in _walk(board):
        if key == "uid" and path == "":
            continue  # the dashboard's own, stable uid
        if key == "uid":
            assert value in ("${datasource}", "-- Grafana --"), f"{path}.uid = {value!r}"
        if isinstance(value, str):
            assert "DS_PROMETHEUS" not in value, path


@pytest.mark.parametrize("name", FILES)
def test_every_template_variable_used_is_defined(name: str) -> None:
    board = _boards()[name]
    defined = {v["name"] for v in board["templating"]["list"]}
    used: set[str] = set()
    for _, _, value in _walk(board):
        if isinstance(value, str):
            used |= set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", value))
    assert used, "no variables used at all"
    assert used - defined - GRAFANA_GLOBALS == set()
    # Every query of a per-GPU panel is filtered by the variables (or deliberately fleet-wide).
    for panel in _panels(board):
        for target in panel["targets"]:
            expr = target["expr"]
            fleet_wide = panel["title"].startswith("Fleet ")
            assert "$instance" in expr or fleet_wide, f"{panel['title']}: ignores $instance"


@pytest.mark.parametrize("name", FILES)
def test_queries_are_balanced(name: str) -> None:
    """A cheap syntax guard; the real parse happens in Prometheus in the end-to-end test."""
    for panel in _panels(_boards()[name]):
        for target in panel["targets"]:
            expr = re.sub(r'"[^"]*"', '""', target["expr"])
            for open_, close in ("()", "{}", "[]"):
                assert expr.count(open_) == expr.count(close), f"{panel['title']}: unbalanced {open_}{close}"


@pytest.mark.parametrize("name", FILES)
def test_panels_do_not_overlap(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in _boards()[name]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                 for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_panel_ids_unique() -> None:
    for name, board in _boards().items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name


def _titles(name: str) -> set[str]:
    return {p["title"] for p in _panels(_boards()[name])}


def test_fleet_overview_has_what_the_issue_lists() -> None:
    board = _boards()["gpulse-fleet.json"]
    titles = _titles("gpulse-fleet.json")
    assert {"GPUs by time-accounting state", "Fleet MFU", "MFU per node", "Fleet MBU (memory-bound GPUs)",
            "Throttled GPUs now", "Starved GPUs", "Unavailable GPUs", "GPUs with XID errors",
            "GPUs with uncorrectable ECC errors", "Power draw per node", "Energy over the time range",
            "Worst GPUs by wasted time"} <= titles
    states = next(p for p in _panels(board) if p["title"] == "GPUs by time-accounting state")
    # Stacked, so that the waste is visible at a glance.
    assert states["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    coloured = {o["matcher"]["options"] for o in states["fieldConfig"]["overrides"]}
    assert coloured == {"unavailable", "idle", "starved_host", "starved_io", "starved_other",
                        "throttled_power", "throttled_thermal", "memory_bound", "compute_bound"}
    mfu = [t["expr"] for p in _panels(board) if "MFU" in p["title"] for t in p["targets"]]
    assert all("gpulse_gpu_mfu" in expr for expr in mfu)  # reported where present, else estimated


def test_node_detail_has_what_the_issue_lists() -> None:
    board = _boards()["gpulse-node.json"]
    assert {"SM, tensor and DRAM activity", "SM clock against its maximum", "Active throttle reasons",
            "Power against its limit", "Temperatures against their thresholds", "GPU memory used",
            "PCIe throughput", "NVLink throughput", "Processes on these GPUs", "Host CPU by mode",
            "Host pressure stall (PSI)", "CPU of the GPU processes"} <= _titles("gpulse-node.json")
    instance = board["templating"]["list"][1]
    assert instance["multi"] is False  # one node at a time


def test_workload_dashboard_groups_by_process_pod_and_slurm_job() -> None:
    board = _boards()["gpulse-workloads.json"]
    exprs = [t["expr"] for p in _panels(board) for t in p["targets"]]
    assert any("gpulse_process_info" in e for e in exprs)
    assert any("group_left (namespace, pod)" in e and "avg by (namespace, pod)" in e for e in exprs)
    assert any("group_left (slurm_job)" in e and "avg by (slurm_job)" in e for e in exprs)
    for what in ("pod", "Slurm job"):
        assert {f"MFU by {what}", f"Starved share by {what}", f"Throttled share by {what}"} <= _titles(
            "gpulse-workloads.json")
    # Shared GPUs: per-process SM shares from NVML, not the GPU's value copied to each process.
    assert any("gpulse_process_gpu_sm_utilization_ratio" in e for e in exprs)
