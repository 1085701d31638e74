"""The profile manager: checks before accepting, captures on workers, limits, eviction, storage."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import Proc
from profiling_fixtures import STACKS, FakeNodeMetrics, ScriptedPySpy, make_settings, make_snapshot, wait_done

from agent.profiling.errors import (
    InvalidRequest,
    NoGpuOwner,
    PidBusy,
    PidNotAllowed,
    ProcessGone,
    ProfileNotFound,
    ProfileNotReady,
    TooManyCaptures,
    UnknownGpu,
)
from agent.profiling.manager import CaptureRequest, ProfileManager
from agent.profiling.pyspy import PySpy
from agent.snapshot import Snapshot


def manager_for(
    tmp_path: Path, snapshot: Snapshot | None, pyspy: PySpy | None = None, **settings: object
) -> tuple[ProfileManager, FakeNodeMetrics]:
    metrics = FakeNodeMetrics()
    manager = ProfileManager(
        make_settings(tmp_path, **settings), latest=lambda: snapshot, count=metrics.inc, pyspy=pyspy
    )
    return manager, metrics


# --- real py-spy --------------------------------------------------------------------------------

pytestmark = pytest.mark.e2e


def test_capture_of_a_gpu_process(hot_process: Proc, pyspy_attach: None, tmp_path: Path) -> None:
    manager, metrics = manager_for(tmp_path, make_snapshot({0: [hot_process.pid]}))
    try:
        profile = manager.submit(CaptureRequest(pid=hot_process.pid, seconds=1, format="flamegraph"))
        assert profile.status in ("queued", "running")
        assert profile.reason == "uses GPU 0"
        done = wait_done(manager, profile.id)
        assert done.status == "done", done.error
        assert done.summary is not None
        assert done.summary["top_self"][0]["function"] == "burn_cpu_hot_loop"  # type: ignore[index]
        assert metrics.counts == {("gpulse_profiles_total", (("trigger", "manual"),)): 1.0}
        download = manager.download(done.id)
        assert download.content_type == "image/svg+xml" and download.path is not None
        assert download.path.parent == manager.files.root
        assert "burn_cpu_hot_loop" in download.path.read_text()
        other = manager.download(done.id, "speedscope")
        assert other.content is not None and json.loads(other.content)["exporter"] == "gpulse"
        assert done.bytes == sum(p.stat().st_size for p in manager.files.files(done.id))
    finally:
        manager.close()


def test_gpu_target_profiles_the_owning_tree(worker_tree: Proc, pyspy_attach: None, tmp_path: Path) -> None:
    manager, _ = manager_for(tmp_path, make_snapshot({3: [worker_tree.pid]}))
    try:
        profile = manager.submit(CaptureRequest(gpu=3, seconds=1, format="raw"))
        assert profile.pid == worker_tree.pid and profile.gpu == 3 and profile.subprocesses
        done = wait_done(manager, profile.id)
        assert done.status == "done", done.error
        assert done.summary["workers"]["top_self"][0]["function"] == "decode_batch_hot"  # type: ignore[index]
        download = manager.download(done.id)
        assert download.content_type.startswith("text/plain")
        assert f'process {worker_tree.child_pid()}:"' in download.path.read_text()  # type: ignore[union-attr]
    finally:
        manager.close()


def test_capture_that_fails_keeps_the_reason(pyspy_attach: None, tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    manager, metrics = manager_for(tmp_path, make_snapshot({0: [sleeper.pid]}))
    try:
        profile = manager.submit(CaptureRequest(pid=sleeper.pid, seconds=1))
        done = wait_done(manager, profile.id)
        assert done.status == "failed"
        assert done.error is not None and done.error["error"] == "not_python"
        assert "is not a Python process" in done.error["message"]
        assert metrics.counts == {}
        with pytest.raises(ProfileNotReady, match="is not a Python process"):
            manager.download(done.id)
    finally:
        sleeper.kill()
        sleeper.wait()
        manager.close()


# --- refusals before a capture starts ---------------------------------------------------------------


def test_refusals_name_the_rule_or_limit(tmp_path: Path) -> None:
    me = os.getpid()
    manager, _ = manager_for(tmp_path, make_snapshot({0: [999_999], 1: []}), pyspy=ScriptedPySpy())
    with pytest.raises(PidNotAllowed, match="may be profiled"):
        manager.submit(CaptureRequest(pid=me))
    with pytest.raises(InvalidRequest, match=r"seconds: 301 is out of range: a capture lasts 1 to 300 s"):
        manager.submit(CaptureRequest(pid=999_999, seconds=301))
    with pytest.raises(InvalidRequest, match=r"rate_hz: 0 is out of range"):
        manager.submit(CaptureRequest(pid=999_999, rate_hz=0))
    with pytest.raises(InvalidRequest, match="exactly one"):
        manager.submit(CaptureRequest(pid=1, gpu=0))
    with pytest.raises(InvalidRequest, match="format"):
        manager.submit(CaptureRequest(pid=999_999, format="pprof"))
    with pytest.raises(UnknownGpu):
        manager.submit(CaptureRequest(gpu=5))
    with pytest.raises(NoGpuOwner):
        manager.submit(CaptureRequest(gpu=1))
    # allowed by the rule, but gone
    with pytest.raises(ProcessGone, match="process 999999 does not exist"):
        manager.submit(CaptureRequest(pid=999_999))
    assert manager.list() == []


def test_allow_any_pid_lifts_the_rule(tmp_path: Path) -> None:
    manager, _ = manager_for(tmp_path, make_snapshot({}), pyspy=ScriptedPySpy(), allow_any_pid=True)
    profile = manager.submit(CaptureRequest(pid=os.getpid()))
    assert profile.reason == "profiling.allow_any_pid is true"
    assert wait_done(manager, profile.id).status == "done"


def test_concurrency_limit_and_busy_pid(tmp_path: Path) -> None:
    hold = threading.Event()
    me, parent = os.getpid(), os.getppid()
    manager, _ = manager_for(
        tmp_path, make_snapshot({0: [me, parent]}), pyspy=ScriptedPySpy(hold=hold), max_concurrent=2
    )
    try:
        first = manager.submit(CaptureRequest(pid=parent, subprocesses=False))
        with pytest.raises(PidBusy, match=f"already being profiled by profile {first.id}"):
            manager.submit(CaptureRequest(pid=parent))
        second = manager.submit(CaptureRequest(pid=me))
        with pytest.raises(TooManyCaptures) as err:
            manager.submit(CaptureRequest(pid=me))
        assert err.value.status == 429
        assert "profiling.max_concurrent (2)" in err.value.message
        assert manager.active_count() == 2
    finally:
        hold.set()
    assert wait_done(manager, first.id).status == "done"
    assert wait_done(manager, second.id).status == "done"
    manager.submit(CaptureRequest(pid=me))  # room again


def test_a_child_of_a_tree_being_profiled_is_busy(tmp_path: Path) -> None:
    hold = threading.Event()
    manager, _ = manager_for(tmp_path, make_snapshot({0: [os.getppid()]}), pyspy=ScriptedPySpy(hold=hold))
    try:
        tree = manager.submit(CaptureRequest(pid=os.getppid(), subprocesses=True))
        with pytest.raises(PidBusy, match=tree.id):
            manager.submit(CaptureRequest(pid=os.getpid()))
    finally:
        hold.set()


# --- storage, eviction, deletion --------------------------------------------------------------------


def test_oldest_evicted_by_count(tmp_path: Path) -> None:
    manager, _ = manager_for(
        tmp_path, make_snapshot({0: [os.getpid()]}), pyspy=ScriptedPySpy(), max_profiles=3
    )
    ids = []
    for _ in range(5):
        profile = manager.submit(CaptureRequest(pid=os.getpid()))
        wait_done(manager, profile.id)
        ids.append(profile.id)
    assert [p.id for p in manager.list()] == list(reversed(ids[2:]))
    for gone in ids[:2]:
        assert manager.files.files(gone) == []
        with pytest.raises(ProfileNotFound):
            manager.get(gone)


def test_oldest_evicted_by_bytes(tmp_path: Path) -> None:
    big = STACKS.format(n=1) * 300  # about 12 kB per profile with its rendering and metadata
    manager, _ = manager_for(
        tmp_path, make_snapshot({0: [os.getpid()]}), pyspy=ScriptedPySpy(big), max_bytes=30_000
    )
    ids = []
    for _ in range(4):
        profile = manager.submit(CaptureRequest(pid=os.getpid(), format="raw"))
        wait_done(manager, profile.id)
        ids.append(profile.id)
    kept = [p.id for p in manager.list()]
    assert ids[-1] in kept and ids[0] not in kept
    assert sum(p.bytes for p in manager.list()) <= 30_000
    on_disk = sum(f.stat().st_size for f in manager.files.root.iterdir())
    assert on_disk <= 30_000


def test_a_profile_larger_than_the_byte_limit_is_refused(tmp_path: Path) -> None:
    huge = "".join(f"thread (1): M;f{i} (a.py:{i}) 1\n" for i in range(3000))
    manager, _ = manager_for(
        tmp_path, make_snapshot({0: [os.getpid()]}), pyspy=ScriptedPySpy(huge), max_bytes=4096
    )
    done = wait_done(manager, manager.submit(CaptureRequest(pid=os.getpid())).id)
    assert done.status == "failed"
    assert done.error is not None and "profiling.max_bytes (4096 bytes)" in done.error["message"]
    assert [f.name for f in manager.files.files(done.id)] == [f"{done.id}.meta.json"]


def test_delete_and_reload_after_restart(tmp_path: Path) -> None:
    snapshot = make_snapshot({0: [os.getpid()]})
    manager, _ = manager_for(tmp_path, snapshot, pyspy=ScriptedPySpy())
    keep = wait_done(manager, manager.submit(CaptureRequest(pid=os.getpid())).id)
    drop = wait_done(manager, manager.submit(CaptureRequest(pid=os.getpid())).id)
    manager.delete(drop.id)
    assert manager.files.files(drop.id) == []
    with pytest.raises(ProfileNotFound):
        manager.get(drop.id)
    (manager.files.root / "README.notes.svg").write_text("x")  # not an id we made: untouched
    (manager.files.root / f"{'A' * 22}.svg").write_text("x")  # ours but without metadata: removed
    manager.close()

    again, _ = manager_for(tmp_path, snapshot, pyspy=ScriptedPySpy())
    reloaded = again.get(keep.id)
    assert reloaded.status == "done" and reloaded.summary == keep.summary
    assert again.download(keep.id).path is not None
    assert (again.files.root / "README.notes.svg").exists()
    assert not (again.files.root / f"{'A' * 22}.svg").exists()


def test_unknown_ids(tmp_path: Path) -> None:
    manager, _ = manager_for(tmp_path, make_snapshot({}), pyspy=ScriptedPySpy())
    for bad in ("../../etc/passwd", "nope", "A" * 22):
        with pytest.raises(ProfileNotFound):
            manager.get(bad)
        with pytest.raises(ProfileNotFound):
            manager.delete(bad)
