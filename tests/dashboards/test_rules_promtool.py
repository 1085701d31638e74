"""The shipped Prometheus rules: `promtool check rules`, the promtool unit tests, and their metadata."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "dashboards" / "rules"
RULE_FILES = sorted(RULES.glob("*.rules.yml"))
UNIT_TESTS = sorted((RULES / "tests").glob("*.test.yml"))
OPERATIONS = REPO / "docs" / "operations.md"
PROMTOOL = Path("/usr/bin/promtool")
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_BASE = "https://github.com/gpulse/gpulse/blob/main/docs/operations.md#"

needs_promtool = pytest.mark.skipif(
    not PROMTOOL.exists(), reason="/usr/bin/promtool missing: install Debian's 'prometheus' package (CI does)"
)


def _rules() -> list[dict[str, Any]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += group["rules"]
    return out


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            text = re.sub(r"[`*_]", "", m.group(1)).strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return anchors


def test_rule_files_found() -> None:
    assert [p.name for p in RULE_FILES] == ["gpulse-alerts.rules.yml", "gpulse-recording.rules.yml"]
    assert len(UNIT_TESTS) >= 4


@needs_promtool
def test_promtool_check_rules_is_clean() -> None:
    result = subprocess.run([str(PROMTOOL), "check", "rules", *map(str, RULE_FILES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    # Nothing but "Checking <file>" and "SUCCESS: N rules found" lines: no warnings, no lint findings.
    noise = [line for line in lines if not line.startswith(("Checking ", "SUCCESS: "))]
    assert not noise, noise


@needs_promtool
@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(unit_test: Path) -> None:
    result = subprocess.run([str(PROMTOOL), "test", "rules", unit_test.name], cwd=unit_test.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    """Each alert has a unit test where it fires and one where it must stay quiet."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fires == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"


def test_unit_tests_load_every_rule_file() -> None:
    for path in UNIT_TESTS:
        files = {Path(f).name for f in yaml.safe_load(path.read_text())["rule_files"]}
        assert "gpulse-recording.rules.yml" in files, path.name


def test_alerts_carry_severity_summary_description_and_runbook() -> None:
    anchors = _github_anchors(OPERATIONS.read_text())
    for rule in _alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and len(annotations["description"]) > 60, name
        url = annotations["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), (name, url)
        anchor = url.removeprefix(RUNBOOK_BASE)
        assert anchor == name.lower(), (name, anchor)
        assert anchor in anchors, f"{name}: docs/operations.md has no heading for #{anchor}"


def test_paging_alerts_are_few() -> None:
    """Only hardware/agent failures page; efficiency alerts never do (LLM decode must not page)."""
    critical = {rule["alert"] for rule in _alerts() if rule["labels"]["severity"] == "critical"}
    assert critical == {"GpulseAgentDown", "GpuUnavailable", "GpuXidCritical", "GpuEccUncorrectable",
                        "GpuRowRemapPendingOrFailed"}


def test_recording_rules_follow_level_metric_operations() -> None:
    records = [rule["record"] for rule in _rules() if "record" in rule]
    assert len(records) == len(set(records)), "a recording rule name is used twice"
    for name in records:
        level, metric, operations = name.split(":")
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", level), name
        assert re.fullmatch(r"gpulse_[a-z0-9_]+", metric) and not metric.endswith("_total"), name
        assert re.fullmatch(r"[a-z0-9_]+", operations), name


def test_every_alert_threshold_is_documented() -> None:
    """Each `# threshold:` comment in the alert file appears in the docs' threshold table."""
    text = (RULES / "gpulse-alerts.rules.yml").read_text()
    docs = OPERATIONS.read_text()
    comments = re.findall(r"#\s*threshold:\s*(.+)$", text, flags=re.MULTILINE)
    assert len(comments) >= 15
    missing = [c.strip() for c in comments if c.strip() not in docs]
    assert not missing, f"thresholds not in docs/operations.md: {missing}"


def test_xid_lists_match_the_documented_reference() -> None:
    docs = OPERATIONS.read_text()
    table = docs[docs.index("## XID reference"):]
    for rule in _alerts():
        m = re.search(r'xid=~"([0-9|]+)"', rule["expr"])
        if not m:
            continue
        for xid in m.group(1).split("|"):
            row = re.search(rf"^\| {xid} \|.*$", table, flags=re.MULTILINE)
            assert row, f"XID {xid} ({rule['alert']}) is not in the XID reference"
            alert = rule["alert"]
            assert alert in row.group(0), f"the XID reference does not say XID {xid} raises {alert}"
