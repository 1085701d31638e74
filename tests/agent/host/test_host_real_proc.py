"""HostBackend on this machine's real /proc: the test process and a child of it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from agent.host.backend import HostBackend


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")
def test_real_proc_for_this_test_process() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        b = HostBackend()
        sum(i * i for i in range(200_000))  # some CPU of our own
        r = b.read({os.getpid(): (0,)})
    finally:
        child.kill()
        child.wait()
    for part in ("cpu", "load", "memory", "disk", "network", "processes"):
        assert part not in r.errors, r.errors
    assert r.cpu_count == psutil.cpu_count(logical=True)
    assert r.memory_total_bytes == psutil.virtual_memory().total
    assert r.memory_available_bytes is not None
    assert 0 < r.memory_available_bytes <= psutil.virtual_memory().total
    assert sum(r.cpu_seconds.values()) > 0
    me = r.processes[os.getpid()]
    ps = psutil.Process()
    assert me.comm == ps.name()[:15]
    assert me.ppid == os.getppid()
    assert me.create_time is not None
    assert me.create_time == pytest.approx(ps.create_time(), abs=0.05)
    assert 0 < me.create_time <= time.time()
    assert me.cpu_user_seconds + me.cpu_system_seconds > 0
    assert me.threads_total == ps.num_threads()
    assert me.threads_running >= 1  # this thread is running the read
    assert me.max_thread_cpu_seconds is not None and me.max_thread_cpu_seconds > 0
    assert me.rss_bytes is not None and me.rss_bytes > 10 * 2**20
    assert me.nspids[0] == os.getpid()
    assert me.cgroup_path is not None
    assert child.pid in r.processes and r.processes[child.pid].gpu_indices == (0,)
    assert r.processes[child.pid].comm == "sleep"
