"""Real-process mode: real OS processes behind the simulated GPUs.

``RealProcesses(fleet, clock)`` starts, for every GPU whose timeline runs a workload,
a real process tree (``agent.sim.realproc_worker``): a main process, reported by the
fake NVML as the GPU's compute process with its real PID, and its data-loader
workers as children, which really burn CPU in ``decode_sample`` (wait cause
``host_cpu``), really block on the disk in ``read_shard`` (``io``) or sleep
(``other``). The real host backend and py-spy then see real processes whose
behaviour matches the scenario.

A supervisor thread follows the timeline (workload switches, process exits, GPUs
that fall off the bus stop or replace the trees). ``stop()`` kills every tree by
process group; each process also dies with its parent, so none outlives the demo.

Workers that burn CPU or hammer the disk are capped (``max_busy_workers``, default 1
per tree) so that the mode stays usable on a small machine; sleeping workers are not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from agent.clock import Clock
from agent.sim.fleet import Fleet
from agent.sim.workload import Segment

log = logging.getLogger(__name__)
SUPERVISE_EVERY_S = 0.2  # real seconds


@dataclass
class Tree:
    gpu: int
    segment: int
    process: subprocess.Popen[bytes]
    workers: list[int]  # PIDs of the data-loader workers, as the main process reported them

    @property
    def pid(self) -> int:
        return self.process.pid


class RealProcesses:
    def __init__(
        self,
        fleet: Fleet,
        clock: Clock,
        *,
        python: str = sys.executable,
        max_busy_workers: int = 1,
        io_dir: str | None = None,
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.python = python
        self.max_busy_workers = max_busy_workers
        self._own_dir = io_dir is None
        self.io_dir = io_dir or tempfile.mkdtemp(prefix="gpulse-realproc-")
        self.trees: dict[int, Tree] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> dict[int, int]:
        """Start the trees for the workloads running now and the supervisor; returns GPU -> main PID."""
        self._sync()
        self._thread = threading.Thread(target=self._supervise, name="gpulse-realproc", daemon=True)
        self._thread.start()
        return self.pids()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            trees = list(self.trees.values())
            self.trees.clear()
        for tree in trees:
            _kill_group(tree.process, timeout)
        if self._own_dir:
            shutil.rmtree(self.io_dir, ignore_errors=True)

    def __enter__(self) -> RealProcesses:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def pids(self) -> dict[int, int]:
        with self._lock:
            return {gpu: tree.pid for gpu, tree in self.trees.items()}

    def worker_pids(self, gpu: int) -> list[int]:
        """PIDs of a tree's workers (children of its main process)."""
        with self._lock:
            tree = self.trees.get(gpu)
        return list(tree.workers) if tree is not None else []

    # -- following the timeline ---------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.wait(SUPERVISE_EVERY_S):
            try:
                self._sync()
            except Exception:  # never let the supervisor die: the demo keeps running
                log.exception("real-process supervisor failed")

    def _sync(self) -> None:
        now = self.clock.now() - self.fleet.start
        for gpu, model in enumerate(self.fleet.models):
            seg = model.timeline.segment_at(now)
            wanted = seg.workload is not None and not model.timeline.is_lost(now)
            with self._lock:
                tree = self.trees.get(gpu)
            if tree is not None and (not wanted or tree.segment != seg.number):
                with self._lock:
                    self.trees.pop(gpu, None)
                _kill_group(tree.process, 1.0)
                tree = None
            if wanted and tree is None and not self._stop.is_set():
                tree = self._spawn(gpu, seg)
                with self._lock:
                    self.trees[gpu] = tree
                self.fleet.set_real_pid(gpu, seg.number, tree.pid, tree.workers)

    def _spawn(self, gpu: int, seg: Segment) -> Tree:
        wl = seg.workload
        assert wl is not None
        cause = wl.spec.wait_cause if wl.spec.waits else "none"
        workers = wl.spec.workers if wl.spec.workers is not None else (4 if wl.spec.kind == "training" else 0)
        if cause in ("host_cpu", "io"):
            workers = max(1, min(workers, self.max_busy_workers))
        cmd = [
            self.python,
            "-m",
            "agent.sim.realproc_worker",
            "main",
            "--cause",
            cause,
            "--workers",
            str(workers),
            "--io-dir",
            self.io_dir,
            "--parent",
            str(os.getpid()),
        ]
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        process = subprocess.Popen(
            cmd,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        worker_pids = _read_workers(process)
        log.info(
            "GPU %d: started real process %d (%s, %d workers, cause %s)",
            gpu,
            process.pid,
            wl.spec.kind,
            workers,
            cause,
        )
        return Tree(gpu, seg.number, process, worker_pids)


def _kill_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the tree's process group, then SIGKILL what is left; reap the main process."""
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None and pgid == process.pid:  # its own group (start_new_session): never ours
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    else:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout
    while pgid is not None and pgid == process.pid and time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    if pgid is not None and pgid == process.pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)


def _read_workers(process: subprocess.Popen[bytes], timeout: float = 30.0) -> list[int]:
    """The one line ``workers PID ...`` the main process prints once its workers are started."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:  # it exited before saying
            break
        buf += chunk
    words = buf.split(b"\n", 1)[0].split()
    if not words or words[0] != b"workers":
        log.warning("real process %d did not report its workers", process.pid)
        return []
    return [int(w) for w in words[1:]]
