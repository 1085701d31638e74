"""OpenFiles: kernel files kept open and re-read with pread, and never a stale answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.host.openfiles import OpenFiles, is_kernel_fs
from agent.host.procfs import parse_net_dev, parse_stat

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "host"


def burn_cpu(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@linux_only
def test_kernel_filesystems_are_told_from_plain_trees() -> None:
    assert is_kernel_fs("/proc")
    assert not is_kernel_fs(str(FIXTURES / "proc"))
    assert not is_kernel_fs(str(FIXTURES / "nowhere"))


@linux_only
def test_a_held_proc_file_gives_fresh_contents_on_every_read() -> None:
    files = OpenFiles(hold=True, limit=8)
    path = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/stat"
    before = parse_stat(files.read_text(path))
    burn_cpu(0.05)
    after = parse_stat(files.read_text(path))
    assert len(files) == 1  # the same descriptor, read twice
    assert after.utime_ticks + after.stime_ticks > before.utime_ticks + before.stime_ticks
    files.close()
    assert len(files) == 0


@linux_only
def test_a_held_net_dev_counts_new_traffic() -> None:
    files = OpenFiles(hold=True, limit=8)
    path = f"/proc/{os.getpid()}/net/dev"
    lo = parse_net_dev(files.read_text(path)).get("lo")
    if lo is None:
        pytest.skip("no loopback interface in this network namespace")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"x" * 1000, rx.getsockname())
        rx.recv(2000)
    assert parse_net_dev(files.read_text(path))["lo"][0] >= lo[0] + 1000
    assert len(files) == 1
    files.close()


@linux_only
def test_a_held_file_of_an_ended_process_is_closed_and_not_read_stale() -> None:
    child = subprocess.Popen(["sleep", "30"])
    files = OpenFiles(hold=True, limit=8)
    path = f"/proc/{child.pid}/stat"
    assert parse_stat(files.read_text(path, child.pid)).comm == "sleep"
    child.kill()
    child.wait()
    with pytest.raises((FileNotFoundError, ProcessLookupError)):
        files.read(path, child.pid)
    assert len(files) == 0  # the dead descriptor was dropped
    files.close()


@linux_only
def test_after_the_held_process_ends_the_path_is_read_afresh(tmp_path: Path) -> None:
    # A pid reused by a new process: the held descriptor still names the old one (and fails);
    # the answer must come from what the path names now. A symlink stands in for the reused pid.
    first = subprocess.Popen(["sleep", "30"])
    second = subprocess.Popen(["sleep", "31"])
    link = tmp_path / "stat"
    try:
        link.symlink_to(f"/proc/{first.pid}/stat")
        files = OpenFiles(hold=True, limit=8)
        assert parse_stat(files.read_text(str(link))).pid == first.pid
        first.kill()
        first.wait()
        link.unlink()
        link.symlink_to(f"/proc/{second.pid}/stat")
        assert parse_stat(files.read_text(str(link))).pid == second.pid
        assert len(files) == 1  # now holding the second process's file
        files.close()
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()


def test_plain_files_are_not_held_so_a_replaced_file_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "stat"
    path.write_text("one")
    files = OpenFiles(hold=False, limit=8)
    assert files.read_text(str(path)) == "one"
    replacement = tmp_path / "stat.new"
    replacement.write_text("two")
    os.replace(replacement, path)  # a new inode: a held descriptor would still read "one"
    assert files.read_text(str(path)) == "two"
    assert len(files) == 0


@linux_only
def test_the_limit_caps_held_descriptors_and_reads_past_it_still_work() -> None:
    files = OpenFiles(hold=True, limit=2)
    texts = [files.read_text(p) for p in ("/proc/stat", "/proc/loadavg", "/proc/meminfo")]
    assert len(files) == 2
    assert texts[2].startswith("MemTotal:")
    files.close()


@linux_only
def test_releasing_a_group_closes_only_its_descriptors() -> None:
    files = OpenFiles(hold=True, limit=8)
    files.read(f"/proc/{os.getpid()}/stat", os.getpid())
    files.read(f"/proc/{os.getpid()}/io", os.getpid())
    files.read("/proc/stat")
    assert len(files) == 3 and set(files.groups()) == {os.getpid(), None}
    files.release_group(os.getpid())
    assert len(files) == 1 and files.groups() == [None]
    files.close()


@linux_only
def test_dropping_the_pool_closes_its_descriptors() -> None:
    before = set(os.listdir("/proc/self/fd"))
    files = OpenFiles(hold=True, limit=8)
    files.read("/proc/stat")
    assert len(set(os.listdir("/proc/self/fd")) - before) == 1
    del files
    assert set(os.listdir("/proc/self/fd")) - before == set()
