"""The program behind the simulated fleet's real processes (``python -m agent.sim.realproc_worker``).

``main`` stands for a training or inference process: it starts its data-loader
workers as child processes and then mostly waits, as a process whose GPU does the
work would. A ``worker`` does what its wait cause says, for real:

* ``host_cpu``: burns CPU in ``decode_sample`` (a pure-Python loop, so py-spy shows it
  as the hot function) — one thread at 100 % of a core;
* ``io``: writes, fsyncs and re-reads a file with its page cache dropped in
  ``read_shard``, so the thread spends its time blocked on the disk (D state);
* ``other``: sleeps in ``wait_for_peers``, like a worker waiting on the network.

Each process dies with its parent (``PR_SET_PDEATHSIG`` plus a parent check), so no
process outlives the demo even if it is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1
_PARENT = os.getppid()


def _die_with_parent(parent: int | None) -> None:
    global _PARENT
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent is not None:
        _PARENT = parent
    if os.getppid() != _PARENT:  # the parent died before prctl took effect (we were reparented)
        sys.exit(0)


def _parent_alive() -> bool:
    return os.getppid() == _PARENT


def decode_sample(size: int = 20000) -> int:
    """A stand-in for JPEG decoding and augmentation: pure CPU work in Python."""
    acc = 0
    for i in range(size):
        acc = (acc * 31 + i * i) % 1_000_003
    return acc


def read_shard(path: str, block: bytes) -> int:
    """A stand-in for reading a training shard from slow storage: every read goes to the disk."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, block, 0)
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return len(os.pread(fd, len(block), 0))
    finally:
        os.close(fd)


def wait_for_peers(seconds: float = 0.5) -> None:
    """A stand-in for a collective waiting on other nodes: nothing on this host is busy."""
    time.sleep(seconds)


def train_step(seconds: float = 0.2) -> None:
    """The main process while its (simulated) GPU computes: it waits on the device."""
    time.sleep(seconds)


def worker(cause: str, io_dir: str) -> None:
    if cause == "host_cpu":
        while _parent_alive():
            decode_sample()
    elif cause == "io":
        path = os.path.join(io_dir, f"shard-{os.getpid()}.bin")
        block = os.urandom(1 << 20)
        try:
            while _parent_alive():
                read_shard(path, block)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
    else:
        while _parent_alive():
            wait_for_peers()


def main(cause: str, workers: int, io_dir: str) -> None:
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.sim.realproc_worker",
                "worker",
                "--cause",
                cause,
                "--io-dir",
                io_dir,
                "--parent",
                str(os.getpid()),
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]

    def stop(signum: int, frame: object) -> None:
        # reap the workers here, so that none is left as a zombie for the caller to wait on
        for child in children:
            with contextlib.suppress(OSError):
                child.terminate()
        for child in children:
            try:
                child.wait(1.0)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(1.0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("workers", *(child.pid for child in children), flush=True)  # the launcher reads this one line
    while _parent_alive():
        train_step()
    stop(signal.SIGTERM, None)


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="realproc_worker")
    parser.add_argument("role", choices=["main", "worker"])
    parser.add_argument("--cause", choices=["host_cpu", "io", "other", "none"], default="none")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--io-dir", default=".")
    parser.add_argument("--parent", type=int, help="the PID this process must die with")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    if args.role == "main":
        main(args.cause, args.workers, args.io_dir)
    else:
        worker(args.cause, args.io_dir)


if __name__ == "__main__":
    cli()
