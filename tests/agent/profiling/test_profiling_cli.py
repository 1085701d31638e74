"""`gpulse profile`: through a running agent, directly, and falling back when no agent answers."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Proc
from fastapi import FastAPI
from profiling_fixtures import TOKEN, fake_runtime, make_settings, make_snapshot

from agent.api.profiles_routes import router
from agent.profiling import cli
from agent.profiling.service import attach
from agent.profiling.settings import ProfilingSettings


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gpulse")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["profile", *argv])
    return int(args.func(args))


def free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed


def test_format_follows_the_output_name() -> None:
    assert cli.format_for("p.svg", None) == "flamegraph"
    assert cli.format_for("p.speedscope.json", None) == "speedscope"
    assert cli.format_for("p.txt", None) == "raw"
    assert cli.format_for(None, None) == "speedscope"
    assert cli.format_for("p.svg", "raw") == "raw"


def test_gpu_without_an_agent_asks_nvml_here(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    except Exception:
        pass
    assert run_cli("--gpu", "0", "--url", free_url()) == 1
    err = capsys.readouterr().err
    assert "no agent answers" in err
    assert "--gpu 0: " in err and "use --pid" in err


def test_seconds_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("--pid", "1", "--seconds", "0", "--direct") == 2
    assert "--seconds: 0 is out of range" in capsys.readouterr().err


def test_profiling_disabled_on_the_agent(
    tmp_path: Path, live_server: Callable[[Any], str], capsys: pytest.CaptureFixture[str]
) -> None:
    app = FastAPI()
    app.include_router(router)
    app.state.runtime = fake_runtime(ProfilingSettings(), make_snapshot({}))
    base = live_server(app)
    assert run_cli("--pid", "1", "--url", base) == 1
    err = capsys.readouterr().err
    assert "profiling is off" in err and "--direct" in err


@pytest.mark.e2e
def test_through_the_agent(
    hot_process: Proc,
    pyspy_attach: None,
    tmp_path: Path,
    live_server: Callable[[Any], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = FastAPI()
    app.include_router(router)
    app.state.runtime = fake_runtime(make_settings(tmp_path), make_snapshot({0: [hot_process.pid]}))
    app.state.profiling = attach(app.state.runtime)
    base = live_server(app)
    out = tmp_path / "gpu0.svg"
    assert run_cli("--gpu", "0", "--seconds", "1", "--url", base, "--output", str(out)) == 1  # no token
    assert "pass --token" in capsys.readouterr().err
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    code = run_cli(
        "--gpu", "0", "--seconds", "1", "--url", base, "--token-file", str(token_file), "-o", str(out)
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "burn_cpu_hot_loop" in captured.out.split("Top functions by self samples:")[1].splitlines()[1]
    assert "kept by the agent" in captured.err
    assert out.read_text().startswith("<?xml") and "burn_cpu_hot_loop" in out.read_text()
    app.state.profiling.close()


@pytest.mark.e2e
def test_direct_when_no_agent_answers(
    hot_process: Proc, pyspy_attach: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.speedscope.json"
    code = run_cli(
        "--pid", str(hot_process.pid), "--seconds", "1", "--url", free_url(), "-o", str(out), "--json"
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "running py-spy directly" in captured.err
    summary = json.loads(captured.out)
    assert summary["top_self"][0]["function"] == "burn_cpu_hot_loop"
    assert json.loads(out.read_text())["$schema"].startswith("https://www.speedscope.app/")


@pytest.mark.e2e
def test_direct_on_a_vanished_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("--pid", "999999", "--direct", "--seconds", "1") == 1
    assert "process 999999 does not exist" in capsys.readouterr().err
