"""Every metric, label and label value the dashboards and rules name exists in the metric catalog."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.model import GPU_STATES
from agent.specs import PRECISIONS
from exporters.catalog import (
    BY_NAME,
    ECC_COUNTERS,
    ECC_TYPES,
    PRESSURE_KINDS,
    PRESSURE_RESOURCES,
    TEMPERATURE_SENSORS,
    TEMPERATURE_THRESHOLDS,
    THROTTLE_REASONS,
)

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((REPO / "dashboards" / "rules").glob("*.rules.yml"))
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series
# Label vocabularies: a literal value a query matches must be one the agent can export.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "state": GPU_STATES, "reason": THROTTLE_REASONS, "precision": PRECISIONS, "sensor": TEMPERATURE_SENSORS,
    "threshold": TEMPERATURE_THRESHOLDS, "counter": ECC_COUNTERS, "type": ECC_TYPES,
    "resource": PRESSURE_RESOURCES, "kind": PRESSURE_KINDS,
}
SELECTOR = re.compile(r"\b([a-z_][a-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-z_][a-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _expressions() -> Iterator[tuple[str, str]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield f"{path.name}: {rule.get('record') or rule.get('alert')}", rule["expr"]
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']} {target['refId']}", target["expr"]
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                yield f"{path.name}: variable {var['name']}", var["definition"]


def _recorded() -> dict[str, str]:
    """Recording rule name -> the catalog metric it derives from (its middle part)."""
    out = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    out[rule["record"]] = rule["record"].split(":")[1]
    return out


def _literals(value: str) -> list[str] | None:
    """The literal alternatives of a matcher value, or None when it is a real regular expression."""
    if value.startswith("$") or re.search(r"[.*+?()\[\]{}^\\]", value):
        return None
    return value.split("|")


def test_expressions_found() -> None:
    assert sum(1 for _ in _expressions()) > 100


RECORDED_NAME = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")


def test_every_gpulse_metric_is_in_the_catalog() -> None:
    recorded = _recorded()
    unknown = set()
    for where, expr in _expressions():
        for name in RECORDED_NAME.findall(expr):
            if name not in recorded:
                unknown.add(f"{where}: recording rule {name} does not exist")
        for name in re.findall(r"\b(gpulse_[a-z0-9_]+)\b", RECORDED_NAME.sub(" ", expr)):
            if name not in BY_NAME:
                unknown.add(f"{where}: {name}")
    assert not unknown, sorted(unknown)


def test_recording_rules_are_grounded_in_catalog_metrics() -> None:
    """Each recording rule reads catalog metrics, or recording rules that do (no name from nowhere)."""
    exprs: dict[str, str] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            exprs |= {rule["record"]: rule["expr"] for rule in group["rules"] if "record" in rule}
    grounded: set[str] = set()
    while True:
        new = {name for name, expr in exprs.items() if name not in grounded and (
            any(m in BY_NAME for m in re.findall(r"\b(gpulse_[a-z0-9_]+)\b", RECORDED_NAME.sub(" ", expr)))
            or any(r in grounded for r in RECORDED_NAME.findall(expr)))}
        if not new:
            break
        grounded |= new
    assert set(exprs) == grounded


def test_selector_labels_and_values_exist() -> None:
    problems = []
    for where, expr in _expressions():
        for metric, matchers in SELECTOR.findall(expr):
            if metric.startswith("gpulse_"):
                allowed = set(BY_NAME[metric].labels) | TARGET_LABELS if metric in BY_NAME else set()
            else:
                allowed = None  # recording rules keep their source's labels; checked by value below
            for label, _, value in MATCHER.findall(matchers):
                if allowed is not None and label not in allowed:
                    problems.append(f"{where}: {metric} has no label {label!r}")
                literals = _literals(value)
                if label in VOCABULARY and literals:
                    problems += [f"{where}: {label}={v!r} is never exported" for v in literals
                                 if v not in VOCABULARY[label]]
    assert not problems, problems


@pytest.mark.parametrize("state", GPU_STATES)
def test_wasted_and_useful_states_cover_every_state(state: str) -> None:
    """The recording rules' state groups (wasted, starved, assigned) name real states only and leave
    exactly the executing states out of "wasted"."""
    text = (REPO / "dashboards" / "rules" / "gpulse-recording.rules.yml").read_text()
    wasted = re.search(r'state=~"(unavailable\|idle\|starved_host[^"]*)"', text)
    assert wasted
    executing = {"throttled_power", "throttled_thermal", "memory_bound", "compute_bound"}
    assert (state in wasted.group(1).split("|")) == (state not in executing)
