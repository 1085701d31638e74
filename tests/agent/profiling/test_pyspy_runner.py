"""Real py-spy on real processes: the hot function, worker processes, and every failure's message."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Proc

from agent.profiling.capture import run_capture
from agent.profiling.errors import NotPython, ProcessGone, PtraceDenied, PySpyMissing
from agent.profiling.procinfo import ProcInfo
from agent.profiling.pyspy import PySpy, RecordOptions
from agent.profiling.summary import evidence

pytestmark = pytest.mark.e2e


def test_hot_function_is_the_top_self_function(hot_process: Proc, pyspy_attach: None, tmp_path: Path) -> None:
    procinfo = ProcInfo()
    capture = run_capture(
        PySpy(procinfo=procinfo),
        procinfo,
        RecordOptions(pid=hot_process.pid, seconds=1, rate_hz=100),
        tmp_path / "stacks.txt",
    )
    summary = capture.summary
    assert summary["samples"] > 20  # type: ignore[operator]
    top = summary["top_self"][0]  # type: ignore[index]
    assert top["function"] == "burn_cpu_hot_loop"
    assert top["file"].endswith(".py") and top["line"] in (7, 8)
    assert top["share"] > 0.9
    main = summary["processes"][0]  # type: ignore[index]
    assert main["pid"] == hot_process.pid and main["role"] == "main"
    assert main["threads"][0]["name"] == "MainThread"
    # the burning thread used CPU during the capture (the kernel's count, beside py-spy's samples)
    assert main["active_seconds"] > 0.05


def test_worker_processes_are_included(worker_tree: Proc, pyspy_attach: None, tmp_path: Path) -> None:
    procinfo = ProcInfo()
    capture = run_capture(
        PySpy(procinfo=procinfo),
        procinfo,
        RecordOptions(pid=worker_tree.pid, seconds=1, rate_hz=100, subprocesses=True),
        tmp_path / "stacks.txt",
    )
    summary = capture.summary
    workers = summary["workers"]
    assert workers["pids"] == [worker_tree.child_pid()]  # type: ignore[index]
    assert workers["top_self"][0]["function"] == "decode_batch_hot"  # type: ignore[index]
    sentence = evidence(summary)
    assert sentence is not None and "of worker samples in decode_batch_hot (" in sentence
    roles = {p["pid"]: p["role"] for p in summary["processes"]}  # type: ignore[union-attr]
    assert roles == {worker_tree.pid: "main", worker_tree.child_pid(): "worker"}


def test_stop_ends_early_and_keeps_the_samples(hot_process: Proc, pyspy_attach: None, tmp_path: Path) -> None:
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    result = PySpy().record(RecordOptions(pid=hot_process.pid, seconds=60), tmp_path / "s.txt", stop=stop)
    timer.cancel()
    assert result.stopped_early
    assert result.wall_seconds < 30
    assert "burn_cpu_hot_loop" in (tmp_path / "s.txt").read_text()


def test_instant_stacks(hot_process: Proc, pyspy_attach: None) -> None:
    threads = PySpy().dump(hot_process.pid)
    assert len(threads) == 1
    frames = threads[0]["frames"]
    assert frames[0]["function"] == "burn_cpu_hot_loop"  # type: ignore[index]
    assert threads[0]["thread_name"] == "MainThread"


def test_not_a_python_process(pyspy_attach: None, tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(NotPython) as err:
            PySpy().record(RecordOptions(pid=sleeper.pid, seconds=1), tmp_path / "s.txt")
        assert err.value.status == 422
        assert (
            f"pid {sleeper.pid} (sleep) is not a Python process, and none of its children"
            in err.value.message
        )
        with pytest.raises(NotPython, match=f"pid {sleeper.pid} \\(sleep\\) is not a Python process: py-spy"):
            PySpy().record(RecordOptions(pid=sleeper.pid, seconds=1, subprocesses=False), tmp_path / "s.txt")
        with pytest.raises(NotPython):
            PySpy().dump(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_process_gone(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(ProcessGone) as err:
        PySpy().record(RecordOptions(pid=gone.pid, seconds=1), tmp_path / "s.txt")
    assert err.value.status == 404
    assert f"process {gone.pid} does not exist" in err.value.message
    assert "hostPID: true" in err.value.message  # the other reason a GPU pid can be invisible


def test_process_exits_during_the_capture(
    spawn: Callable[[str], Proc], pyspy_attach: None, tmp_path: Path
) -> None:
    short = spawn(
        "import time\nprint('ready', flush=True)\nt = time.time()\nwhile time.time() - t < 1.0:\n    pass\n"
    )
    result = PySpy().record(RecordOptions(pid=short.pid, seconds=10), tmp_path / "s.txt")
    assert result.process_exited
    assert result.wall_seconds < 9


def test_pyspy_missing() -> None:
    with pytest.raises(PySpyMissing) as err:
        PySpy(path="/nonexistent/bin/py-spy").binary()
    assert err.value.status == 503
    assert "pip install py-spy" in err.value.message and "profiling.pyspy_path" in err.value.message
    with pytest.raises(PySpyMissing, match="not installed or not on PATH"):
        PySpy(path="no-such-py-spy-here").binary()


def _fake_proc(tmp_path: Path, cap_eff: str, scope: str | None) -> ProcInfo:
    root = tmp_path / "proc"
    (root / "self").mkdir(parents=True)
    (root / "self" / "status").write_text(f"Name:\tgpulse\nCapEff:\t{cap_eff}\n")
    if scope is not None:
        (root / "sys" / "kernel" / "yama").mkdir(parents=True)
        (root / "sys" / "kernel" / "yama" / "ptrace_scope").write_text(scope + "\n")
    return ProcInfo(str(root))


def test_ptrace_denied_explains_capability_and_yama(tmp_path: Path) -> None:
    spy = PySpy(procinfo=_fake_proc(tmp_path, "0000000000000000", "1"))
    error = spy.classify(
        4121, 1, "Permission Denied: Try running again with elevated permissions by going 'sudo'"
    )
    assert isinstance(error, PtraceDenied)
    assert error.status == 503
    assert "ptrace not permitted" in error.message
    assert "lacks CAP_SYS_PTRACE" in error.message and "SYS_PTRACE" in error.message
    assert "kernel.yama.ptrace_scope is 1" in error.message


def test_ptrace_denied_with_the_capability_points_elsewhere(tmp_path: Path) -> None:
    spy = PySpy(procinfo=_fake_proc(tmp_path, "000001ffffffffff", None))
    error = spy.classify(4121, 1, "Error: Operation not permitted (os error 1)")
    assert isinstance(error, PtraceDenied)
    assert "seccomp" in error.message and "hostPID" in error.message


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_real_permission_denial_is_classified(hot_process: Proc, pyspy_attach: None) -> None:
    """py-spy run as an unprivileged user against a root process: the kernel refuses ptrace."""
    real = shutil.which("py-spy")
    assert real is not None
    resolved = subprocess.run(
        [real, "--version"], capture_output=True, text=True
    ).stdout  # resolves pyenv shims
    assert resolved
    binary = _resolve_pyspy_binary(real)
    workdir = Path(tempfile.mkdtemp(prefix="gpulse-ptrace-"))
    try:
        os.chmod(workdir, 0o755)
        copy = workdir / "py-spy-real"
        shutil.copy(binary, copy)
        os.chmod(copy, 0o755)
        wrapper = workdir / "py-spy"
        wrapper.write_text(
            f'#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups "{copy}" "$@"\n'
        )
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        with pytest.raises(PtraceDenied) as err:
            PySpy(path=str(wrapper)).dump(hot_process.pid)
        assert err.value.code == "ptrace_not_permitted"
        assert f"py-spy may not attach to pid {hot_process.pid}" in err.value.message
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _resolve_pyspy_binary(path: str) -> str:
    """The ELF binary behind a pyenv shim (a shell script that the unprivileged user cannot read)."""
    with open(path, "rb") as f:
        if f.read(4) == b"\x7fELF":
            return path
    out = subprocess.run(["pyenv", "which", "py-spy"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("cannot find the py-spy binary behind its shim")
    return out.stdout.strip()
