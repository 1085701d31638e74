"""HostBackend on this machine's real /proc: the test process and a child of it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
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


def live_threads() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def threads_read(backend: HostBackend) -> tuple[int, int]:
    """(threads_total as read, the live count), the live count steady around the read."""
    before = live_threads()
    total = backend.read({os.getpid(): (0,)}).processes[os.getpid()].threads_total
    assert live_threads() == before, "a thread of the test run came or went during the read"
    return total, before


def end_thread(stop: threading.Event, thread: threading.Thread, tid: int) -> None:
    stop.set()
    thread.join()
    deadline = time.monotonic() + 5.0
    while os.path.exists(f"/proc/{os.getpid()}/task/{tid}") and time.monotonic() < deadline:
        time.sleep(0.001)  # join() returns just before the OS thread is gone


def start_thread() -> tuple[threading.Event, threading.Thread, int]:
    stop = threading.Event()
    started = threading.Event()
    tids: list[int] = []

    def run() -> None:
        tids.append(threading.get_native_id())
        started.set()
        stop.wait()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait()
    return stop, thread, tids[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")
def test_threads_that_start_and_end_between_reads_are_counted() -> None:
    b = HostBackend()
    total, live = threads_read(b)
    assert total == live
    first = start_thread()
    total, live = threads_read(b)
    assert total == live  # one more
    end_thread(*first)
    second = start_thread()  # one ended, one started: the same count as before
    try:
        total, live = threads_read(b)
        assert total == live
        total, live = threads_read(b)
        assert total == live
    finally:
        end_thread(*second)
    total, live = threads_read(b)
    assert total == live
    b.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")
def test_readings_through_held_files_move_on() -> None:
    b = HostBackend()
    me = os.getpid()
    first = b.read({me: (0,)})
    end = time.thread_time() + 0.1
    while time.thread_time() < end:
        pass
    second = b.read({me: (0,)})
    cpu = [r.processes[me].cpu_user_seconds + r.processes[me].cpu_system_seconds for r in (first, second)]
    assert cpu[1] > cpu[0]
    assert sum(second.cpu_seconds.values()) > sum(first.cpu_seconds.values())
    busiest = [r.processes[me].max_thread_cpu_seconds for r in (first, second)]
    assert busiest[0] is not None and busiest[1] is not None and busiest[1] > busiest[0]
    b.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")
def test_files_of_a_process_no_longer_tracked_are_closed() -> None:
    child = subprocess.Popen(["sleep", "30"])
    b = HostBackend()
    try:
        assert child.pid in b.read({os.getpid(): (0,)}).processes
        assert fds_into(f"/proc/{child.pid}/") >= 1  # its stat, kept open
    finally:
        child.kill()
        child.wait()
    assert child.pid not in b.read({os.getpid(): (0,)}).processes
    assert fds_into(f"/proc/{child.pid}/") == 0
    b.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")
def test_close_closes_every_held_file_and_a_later_read_still_works() -> None:
    before = set(os.listdir("/proc/self/fd"))
    b = HostBackend()
    b.read({os.getpid(): (0,)})
    assert len(set(os.listdir("/proc/self/fd")) - before) > 0
    b.close()
    assert set(os.listdir("/proc/self/fd")) - before == set()
    assert os.getpid() in b.read({os.getpid(): (0,)}).processes
    b.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")
def test_the_file_of_an_ended_thread_is_closed() -> None:
    b = HostBackend()
    stop, thread, tid = start_thread()
    threads_read(b)
    assert fds_into(f"/proc/{os.getpid()}/task/{tid}/") == 1
    end_thread(stop, thread, tid)
    threads_read(b)
    assert fds_into(f"/proc/{os.getpid()}/task/{tid}/") == 0
    b.close()


def fds_into(prefix: str) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(prefix)
        except OSError:
            continue
    return count
