"""``gpulse start`` runs the real agent: on this driverless machine, over the simulated fleet."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent.cli_start import demo_argv, driver_present

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_argv_carries_the_settings_options() -> None:
    args = argparse.Namespace(
        config="/etc/gpulse.yaml", listen="127.0.0.1:9000", interval=0.5, log_level=None
    )
    assert demo_argv(args) == [
        "demo",
        "--config",
        "/etc/gpulse.yaml",
        "--listen",
        "127.0.0.1:9000",
        "--interval",
        "0.5",
    ]


@pytest.mark.skipif(driver_present(), reason="this machine has an NVIDIA driver: start would serve real GPUs")
def test_start_without_a_driver_serves_the_simulated_fleet() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "start", "--listen", f"127.0.0.1:{port}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        ready = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and ready is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    ready = json.load(response)
            except OSError:
                time.sleep(0.3)
        assert ready is not None, "the agent never became ready"
        assert ready["mode"] == "gpu" and ready["gpus"] == 8  # the default simulated fleet
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "running the simulated fleet" in err
    assert "host-only" not in err  # the probe's warning is not shown: start did not run host-only
