from __future__ import annotations

import io
import socket
from typing import Any

import httpx

from agent import cli, cli_serve
from agent.api.app import create_app
from agent.cli_status import print_diagnosis, print_table
from agent.clock import ManualClock, MonotonicClock
from agent.config import Settings
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.nvml.steady import SteadyDevice
from agent.runtime import Runtime
from agent.signals.diagnosis import format_diagnosis
from agent.specs import SPECS


def free_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed again: nothing answers there


def test_status_reads_a_running_agent(
    scripted_gpu: Any, static_host: Any, live_server: Any, capsys: Any
) -> None:
    clock = ManualClock(5.0)
    gpu = scripted_gpu(2, clock)
    rt = Runtime(Settings(interval_seconds=0.1), gpu, static_host(clock), clock)
    for _ in range(3):
        rt.sampler.tick()
        clock.advance(0.1)
    gpu.lose(1)
    rt.sampler.tick()
    base = live_server(create_app(rt))
    assert cli.main(["status", "--url", base]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "GPU",
        "NAME",
        "STATUS",
        "UTIL",
        "SM",
        "MEMORY",
        "POWER",
        "TEMP",
        "SM",
        "CLOCK",
        "PROCS",
    ]
    assert out[1].split()[:9] == ["0", "NVIDIA", "H100", "80GB", "HBM3", "ok", "50%", "25%", "10.0/80.0"]
    assert "300/700 W" in out[1] and "50°C" in out[1] and "1980 MHz" in out[1]
    assert out[2].split()[5:] == ["lost", "-", "-", "-", "-", "-", "-", "-"]
    assert out[3] == f"(2 GPUs, from the agent at {base})"
    # then the agent's own diagnosis, as format_diagnosis renders its answer
    answer = httpx.get(base + "/api/v1/diagnosis", timeout=5).json()
    assert out[4] == "" and out[5] == f"Diagnosis over the last {answer['minutes']:g} min:"
    assert "\n".join(out[6:]) == format_diagnosis(answer["gpus"])
    assert out[6].startswith("GPU 0: ") and any(line.startswith("GPU 1: ") for line in out[6:])
    rt.stop(timeout=0.5)


def test_a_missing_diagnosis_is_one_line_not_a_failure() -> None:
    out = io.StringIO()
    print_diagnosis(free_url(), 0.5, out)
    assert out.getvalue().startswith("(no diagnosis: ") and out.getvalue().count("\n") == 1


def test_status_falls_back_to_the_local_driver(monkeypatch: Any, capsys: Any) -> None:
    clock = MonotonicClock()
    fake = FakeNvml([SteadyDevice(SPECS["H100-SXM"], i, busy=0.5) for i in range(2)], clock)
    monkeypatch.setattr(cli_serve, "real_backends", lambda settings, c: (NvmlBackend(fake, clock), None))
    assert cli.main(["status", "--url", free_url(), "--timeout", "0.5"]) == 0
    captured = capsys.readouterr()
    assert "reading the local driver directly" in captured.err
    lines = captured.out.splitlines()
    assert len(lines) == 5 and lines[3] == "(2 GPUs, from the local driver)"
    assert lines[4] == "(no diagnosis: it needs a running agent's history)"
    assert " ok " in lines[1] and "H100" in lines[1]
    assert fake.system_calls["nvmlShutdown"] == 1


def test_status_without_agent_or_driver_exits_1(monkeypatch: Any, capsys: Any) -> None:
    clock = MonotonicClock()
    fake = FakeNvml([], clock, library_missing=True)
    monkeypatch.setattr(cli_serve, "real_backends", lambda settings, c: (NvmlBackend(fake, clock), None))
    assert cli.main(["status", "--url", free_url(), "--timeout", "0.5"]) == 1
    assert "no NVIDIA driver" in capsys.readouterr().err


def test_table_columns_align_and_show_absent_values_as_dashes() -> None:
    out = io.StringIO()
    print_table(
        [{"index": 3, "name": "X" * 40, "status": "ok", "reading": {"utilization_gpu_ratio": 0.123}}], out
    )
    header, row = out.getvalue().splitlines()
    assert row.startswith("3    " + "X" * 27 + "…")
    assert row.split()[2:] == ["ok", "12%", "-", "-", "-", "-", "-", "-"]
    assert header.index("STATUS") == row.index("ok")
