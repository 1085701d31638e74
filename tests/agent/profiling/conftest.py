"""Fixtures for the profiling tests: real Python processes to profile, and a small runtime.

The processes are real (py-spy attaches to them with ptrace); each is killed at teardown.
Tests that need py-spy to attach are skipped, with the reason, where it cannot (no py-spy,
or ptrace not permitted in this sandbox).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.profiling.procinfo import ProcInfo

HOT_SCRIPT = """
import sys

def burn_cpu_hot_loop():
    x = 0
    while True:
        for i in range(20000):
            x += i * i

if __name__ == "__main__":
    print("ready", flush=True)
    burn_cpu_hot_loop()
"""

# A trainer whose data-loader worker (a child process) burns CPU in a known function while the
# main process waits for its batches, as a CPU-starved input pipeline does.
TREE_SCRIPT = """
import multiprocessing as mp
import os
import time

def decode_batch_hot(n):
    parent = os.getppid()
    x = 0
    while os.getppid() == parent:  # never outlive the trainer
        for i in range(n):
            x += (i * 7) % 13

def wait_for_batches():
    while True:
        time.sleep(0.05)

if __name__ == "__main__":
    mp.set_start_method("fork")
    worker = mp.Process(target=decode_batch_hot, args=(20000,), daemon=True)
    worker.start()
    print("ready", worker.pid, flush=True)
    wait_for_batches()
"""

SLEEPER_SCRIPT = """
import time
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    ready_line: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def child_pid(self) -> int:
        return int(self.ready_line.split()[1])


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[str], Proc]]:
    procs: list[subprocess.Popen[str]] = []

    def start(script: str) -> Proc:
        path = tmp_path / f"script_{len(procs)}.py"
        path.write_text(textwrap.dedent(script))
        popen = subprocess.Popen(
            [sys.executable, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=tmp_path,
        )
        procs.append(popen)
        assert popen.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(popen.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(15)
        if not line or not line[0].startswith("ready"):
            raise RuntimeError(f"{path.name} did not start")
        return Proc(popen, line[0].strip())

    yield start
    for popen in procs:
        # Children first (a data-loader worker would otherwise outlive its killed parent).
        for pid in reversed(ProcInfo().tree(popen.pid)[1:]):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        popen.kill()
        popen.wait(5)


@pytest.fixture
def hot_process(spawn: Callable[[str], Proc]) -> Proc:
    return spawn(HOT_SCRIPT)


@pytest.fixture
def worker_tree(spawn: Callable[[str], Proc]) -> Proc:
    return spawn(TREE_SCRIPT)


@pytest.fixture
def sleeper(spawn: Callable[[str], Proc]) -> Proc:
    return spawn(SLEEPER_SCRIPT)


_attach_probe: dict[str, str | None] = {}


@pytest.fixture
def pyspy_attach(sleeper: Proc) -> None:
    """Skip unless py-spy is installed and may attach to a process here."""
    if "reason" not in _attach_probe:
        binary = shutil.which("py-spy")
        if binary is None:
            _attach_probe["reason"] = "py-spy is not installed"
        else:
            out = subprocess.run(
                [binary, "dump", "--pid", str(sleeper.pid)], capture_output=True, text=True, timeout=30
            )
            _attach_probe["reason"] = (
                None if out.returncode == 0 else f"py-spy cannot attach here: {out.stderr.strip()[:200]}"
            )
    if _attach_probe["reason"]:
        pytest.skip(_attach_probe["reason"])
