"""Process tracking across reads: the busiest-thread counter, new and vanished processes, pid reuse."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.host.cgroups import CgroupReader
from agent.host.processes import ProcessReader, descendants
from agent.host.procfs import CLK_TCK

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "host"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    dest = tmp_path / "host"
    shutil.copytree(FIXTURES, dest, symlinks=True)
    return dest


def reader(root: Path) -> ProcessReader:
    return ProcessReader(str(root / "proc"), CgroupReader(str(root / "cgroup")))


def bump_thread(root: Path, pid: int, tid: int, ticks: int) -> None:
    path = root / "proc" / str(pid) / "task" / str(tid) / "stat"
    text = path.read_text()
    close = text.rindex(")")
    rest = text[close + 2 :].split(" ")
    rest[11] = str(int(rest[11]) + ticks)  # utime
    path.write_text(text[: close + 2] + " ".join(rest))


def test_busiest_thread_counter_follows_the_thread_busy_now(root: Path) -> None:
    r = reader(root)
    first = r.read({4121: (0,)}, 1.7e9)[4121].max_thread_cpu_seconds
    assert first == pytest.approx(550.0)  # the main thread, busy at start-up
    # Now the loader thread 4122 (95 s so far) runs a whole second; the main thread barely moves.
    bump_thread(root, 4121, 4122, CLK_TCK)
    bump_thread(root, 4121, 4121, CLK_TCK // 10)
    second = r.read({4121: (0,)}, 1.7e9)[4121].max_thread_cpu_seconds
    assert second is not None and first is not None
    assert second - first == pytest.approx(1.0)  # a plain max of cumulative times would have moved 0.1 s


def test_new_child_is_found_and_ended_one_dropped(root: Path) -> None:
    r = reader(root)
    assert 4133 in r.read({4121: (0,)}, None)
    shutil.rmtree(root / "proc" / "4133")
    new = root / "proc" / "4150"
    shutil.copytree(root / "proc" / "4132", new)
    stat = new / "stat"
    stat.write_text(stat.read_text().replace("4132 (pt_data_worker)", "4150 (pt_data_worker)", 1))
    seen = r.read({4121: (0,)}, None)
    assert 4133 not in seen
    assert seen[4150].ppid == 4121


def test_reused_pid_gets_its_new_identity(root: Path) -> None:
    r = reader(root)
    assert r.read({5120: (0,)}, None)[5120].cmdline == "python serve.py --port 8000"
    (root / "proc" / "5120" / "cmdline").write_bytes(b"python\0other.py\0")
    assert r.read({5120: (0,)}, None)[5120].cmdline == "python serve.py --port 8000"  # cached while it lives
    stat = root / "proc" / "5120" / "stat"
    stat.write_text(stat.read_text().replace(" 200000 ", " 200500 ", 1))  # a new start time: a new process
    assert r.read({5120: (0,)}, None)[5120].cmdline == "python other.py"


def test_descendants_union_gpu_indices_and_respect_the_cap() -> None:
    ppids = {1: 0, 10: 1, 11: 10, 12: 11, 20: 1, 21: 20}
    found = descendants({10: (0,), 11: (1,), 20: (2,), 99: (3,)}, ppids, limit=100)
    assert found == {10: (0,), 11: (0, 1), 12: (0, 1), 20: (2,), 21: (2,)}
    assert len(descendants({1: (0,)}, ppids, limit=3)) == 3


def test_a_reparented_process_leaves_the_tree_on_the_next_read(root: Path) -> None:
    r = reader(root)
    assert 4130 in r.read({4121: (0,)}, None)
    stat = root / "proc" / "4130" / "stat"
    stat.write_text(stat.read_text().replace("(pt_data_worker) R 4121 ", "(pt_data_worker) R 1 ", 1))
    seen = r.read({4121: (0,)}, None)  # the scan does not re-read known pids: still in, with its new ppid
    assert seen[4130].ppid == 1
    assert 4130 not in r.read({4121: (0,)}, None)  # the trees under the GPU pids were rebuilt


def test_a_pid_unreadable_at_first_is_read_once_it_can_be(root: Path) -> None:
    new = root / "proc" / "4150"
    shutil.copytree(root / "proc" / "4132", new)
    good = (new / "stat").read_text().replace("4132 (pt_data_worker)", "4150 (pt_data_worker)", 1)
    (new / "stat").write_text("garbage")
    r = reader(root)
    assert 4150 not in r.read({4121: (0,)}, None)
    (new / "stat").write_text(good)  # the /proc listing is the same as before
    assert r.read({4121: (0,)}, None)[4150].ppid == 4121


def test_other_roots_give_other_trees(root: Path) -> None:
    r = reader(root)
    assert set(r.read({4121: (0,)}, None)) == {4121, 4130, 4131, 4132, 4133, 4140}
    assert set(r.read({5120: (1,)}, None)) == {5120}
    assert r.read({4130: (2,)}, None)[4140].gpu_indices == (2,)
