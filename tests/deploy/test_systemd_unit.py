"""deploy/systemd/gpulse.service: sandboxed, verified by systemd-analyze where it is installed."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "gpulse.service"
EXEC = "/opt/gpulse/bin/gpulse"


def _service() -> dict[str, list[str]]:
    """[Service] settings; a key given twice keeps both values, as systemd does."""
    out: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            out.setdefault(key, []).append(value)
    return out


def test_unit_parses_and_runs_gpulse_serve() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    assert _service()["ExecStart"] == [f"{EXEC} serve"]


def test_sandboxing() -> None:
    s = _service()
    expected = {
        "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "CapabilityBoundingSet": "", "AmbientCapabilities": "", "DynamicUser": "yes",
        "DevicePolicy": "closed",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert s.get(key) == [value], key
    devices = s["DeviceAllow"]
    assert all(re.fullmatch(r"char-nvidia[-a-z]* (r|rw)", d) for d in devices), devices
    assert "char-nvidia-frontend rw" in devices  # /dev/nvidiactl and /dev/nvidia0..N
    # The agent must see every user's processes: /proc is not hidden.
    assert "ProtectProc" not in s or s["ProtectProc"] == ["default"]
    assert s["StateDirectory"] == ["gpulse"]


def test_profiling_is_not_enabled_by_the_unit() -> None:
    s = _service()
    assert not any("PROFILING__ENABLED" in value for value in s.get("Environment", []))
    assert "CAP_SYS_PTRACE" not in "".join(s.get("AmbientCapabilities", []))


def _verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a stand-in executable: verify checks the binary exists."""
    binary = tmp_path / "gpulse"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    unit = tmp_path / "gpulse.service"
    unit.write_text(UNIT.read_text().replace(EXEC, str(binary)))
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(_verifiable_copy(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Findings about our unit name it; other lines are about units of the machine running the test.
    assert [line for line in result.stderr.splitlines() if "gpulse" in line] == [], result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                             str(_verifiable_copy(tmp_path))], capture_output=True, text=True, timeout=60)
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    assert float(match.group(1)) <= 2.0  # systemd rates 0-2 "OK"; a default service is 9.6 "UNSAFE"
