"""``gpulse demo`` and ``gpulse record``: argument errors, and the demo end to end as a real process."""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.api.app import create_app
from agent.clock import ManualClock
from agent.config import Settings
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.sim.cli import demo_runtime, register
from agent.sim.fleet import Fleet
from agent.sim.scenario import load_scenario
from agent.sim.truth import read_truth

ROOT = Path(__file__).parents[3]
SHIM = "import sys; from agent.sim.cli import main; sys.exit(main(sys.argv[1:]))"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpulse")
    register(parser.add_subparsers())
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--speed", "80"], "--speed: must be between 1 and 50 (got 80)"),
        (["demo", "--speed", "0.5"], "--speed: must be between 1 and 50 (got 0.5)"),
        (["demo", "--scenario", "default", "--gpus", "2"], "--gpus/--model: they describe a steady fleet"),
        (["demo", "--scenario", "nope"], "no shipped scenario named 'nope'"),
        (["demo", "--model", "H300"], "--model: model: unknown GPU model 'H300'"),
        (["demo", "--duration", "0"], "--duration: must be > 0"),
        (["demo", "--real-processes", "--speed", "10"], "--speed: real processes run in real time"),
        (["demo", "--replay", "x.jsonl", "--scenario", "default"], "--replay: plays a capture as recorded"),
        (["demo", "--replay", "/nonexistent/x.jsonl"], "cannot read the capture"),
        (
            ["record", "--out", "x", "--seconds", "5", "--interval", "0"],
            "--interval: must be between 0.1 and 60",
        ),
        (["record", "--out", "x", "--seconds", "-1"], "--seconds: must be between 0 and a week"),
    ],
)
def test_bad_arguments_name_the_flag(argv: list[str], message: str, capsys) -> None:
    args = _parse(argv)
    assert args.func(args) == 2
    assert message in capsys.readouterr().err


def test_bad_scenario_file_names_the_field(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("gpus: [{model: H100-SXM, workload: {kind: training, wait_s: 1, wait_cause: cpu}}]\n")
    args = _parse(["demo", "--scenario", str(path)])
    assert args.func(args) == 2
    assert (
        "gpus[0].workload.wait_cause: must be one of host_cpu, io, other (got 'cpu')"
        in capsys.readouterr().err
    )


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None, reason="this node has an NVIDIA driver"
)
def test_record_without_a_driver_says_so(tmp_path: Path, capsys) -> None:
    args = _parse(["record", "--out", str(tmp_path / "c.jsonl"), "--seconds", "1"])
    assert args.func(args) == 1
    assert "nothing to record" in capsys.readouterr().err


def test_record_a_simulated_fleet(tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    args = _parse(
        ["record", "--scenario", "thermal", "--out", str(out), "--seconds", "5", "--interval", "0.5"]
    )
    assert args.func(args) == 0
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["interval_s"] == 0.5
    assert len(lines) == 1 + 4 * 11
    assert json.loads(lines[-1])["t"] == 5.0


def test_demo_runtime_exports_the_scenarios_owners() -> None:
    """The demo's runtime on the default fleet, ticked by hand: the real sampler, store, exporter and
    API show the scenario's pods and Slurm job, and no owner read from this machine."""
    clock = ManualClock()
    scenario = load_scenario("default")
    fleet = Fleet.from_scenario(scenario, clock)
    fake = FakeNvml(fleet.models, clock)
    settings = Settings(interval_seconds=1.0)
    rt = demo_runtime(settings, NvmlBackend(fake, clock), fleet.host_source, clock, scenario)
    try:
        for _ in range(4):  # start NVML, read the GPUs and their processes, read the host for those pids
            rt.sampler.tick()
            clock.advance(1.0)
        client = TestClient(create_app(rt))
        metrics = client.get("/metrics").text
        gpus = client.get("/api/v1/gpus").json()
    finally:
        rt.stop(timeout=0.5)
        fake.release()
    uuids = [m.identity.uuid for m in fleet.models]
    train = 'pod="train-0",namespace="ml",container="trainer"'
    for gpu in (0, 2, 3):
        assert f'gpulse_gpu_allocation_info{{gpu="{gpu}",uuid="{uuids[gpu]}",{train}}} 1' in metrics
    decode = 'pod="llm-decode-0",namespace="serving",container="vllm"'
    assert f'gpulse_gpu_allocation_info{{gpu="1",uuid="{uuids[1]}",{decode}}} 1' in metrics
    assert f'gpulse_gpu_allocation_info{{gpu="5",uuid="{uuids[5]}",slurm_job="4242"}} 1' in metrics
    for gpu in (4, 6, 7):  # unattributed: a series without owner labels
        assert f'gpulse_gpu_allocation_info{{gpu="{gpu}",uuid="{uuids[gpu]}"}} 1' in metrics
    main = gpus[2]["reading"]["processes"][0]["pid"]
    info = [line for line in metrics.splitlines() if line.startswith(f'gpulse_process_info{{pid="{main}"')]
    assert len(info) == 1 and train in info[0]
    workers = [
        line
        for line in metrics.splitlines()
        if line.startswith("gpulse_process_info{")
        and 'comm="pt_data_worker"' in line
        and 'slurm_job="4242"' in line
    ]
    assert len(workers) == 4  # GPU 5's training loader workers belong to the job too
    assert "gpulse_attribution_dropped_series_total 0" in metrics
    assert gpus[0]["owners"]["pod"] == "train-0" and gpus[5]["owners"]["slurm_job"] == "4242"
    assert gpus[6]["owners"]["attributed"] is False


def test_demo_runtime_without_attribution_or_scenario_has_no_owners() -> None:
    clock = ManualClock()
    scenario = load_scenario("default")
    fleet = Fleet.from_scenario(scenario, clock)
    fake = FakeNvml(fleet.models, clock)
    off = Settings.model_validate({"attribution": {"enabled": False}})
    try:
        backend = NvmlBackend(fake, clock)
        assert demo_runtime(off, backend, fleet.host_source, clock, scenario).owners_provider is None
        # a replay has no scenario, hence no owners
        assert demo_runtime(Settings(), backend, fleet.host_source, clock, None).owners_provider is None
        assert (
            demo_runtime(Settings(), backend, fleet.host_source, clock, scenario).owners_provider is not None
        )
    finally:
        fake.release()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    """The body, or "" while the agent is not ready yet (503)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            return ""
        raise


@pytest.mark.e2e
def test_demo_runs_the_agent_on_the_default_fleet(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SHIM,
            "demo",
            "--speed",
            "20",
            "--truth",
            str(truth),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "scenario 'default' (8 GPUs, seed 7), speed 20x" in banner
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            found = re.search(r"listening on (http://\S+)", line)
            url = found.group(1) if found else None
        assert url is not None
        # keep reading its output, so that a full pipe never blocks the demo's logging
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        metrics = ""
        while time.monotonic() < deadline:  # GPU 7 falls off the bus 92 simulated seconds in
            metrics = _get(url + "metrics")
            # one scrape showing the lost GPU down and a healthy one up (on a busy machine a healthy
            # GPU can miss a tick's deadline for a moment, so wait for a scrape that shows both)
            if re.search(r'gpulse_gpu_up\{gpu="7",[^}]*\} 0', metrics) and re.search(
                r'gpulse_gpu_up\{gpu="0",[^}]*\} 1', metrics
            ):
                break
            time.sleep(0.2)
        assert re.search(r'gpulse_gpu_up\{gpu="7",[^}]*\} 0', metrics)
        assert re.search(r'gpulse_gpu_up\{gpu="0",[^}]*\} 1', metrics)
        gpus = json.loads(_get(url + "api/v1/gpus"))
        assert [g["name"] for g in gpus] == ["NVIDIA H100 80GB HBM3"] * 8
        assert gpus[4]["reading"]["power_limit_watts"] == 350
        # the scenario's owners, from the demo's owners provider
        assert re.search(
            r'gpulse_gpu_allocation_info\{gpu="0",uuid="[^"]+",'
            r'pod="train-0",namespace="ml",container="trainer"\} 1',
            metrics,
        )
        assert re.search(r'gpulse_gpu_allocation_info\{gpu="5",uuid="[^"]+",slurm_job="4242"\} 1', metrics)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    assert rc == 0
    result = read_truth(truth)
    assert result.duration_s is not None and result.duration_s > 92
    for gpu in range(8):
        assert sum(result.summary[gpu].values()) == pytest.approx(result.duration_s, abs=1e-3)
    assert result.summary[7]["unavailable"] > 0
