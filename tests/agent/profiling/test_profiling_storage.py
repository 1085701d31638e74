"""Profile files: unguessable ids, confined to the directory, private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.profiling.errors import ProfileNotFound, StorageError
from agent.profiling.storage import ID_PATTERN, ProfileFiles, new_id


def test_ids_are_random_urlsafe_and_not_paths() -> None:
    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200
    for profile_id in ids:
        assert ID_PATTERN.match(profile_id)
        assert "/" not in profile_id and "." not in profile_id
        assert len(profile_id) >= 22  # 128 bits


def test_directory_is_created_private(tmp_path: Path) -> None:
    files = ProfileFiles(str(tmp_path / "p"))
    assert stat.S_IMODE(os.stat(files.root).st_mode) == 0o700


def test_open_directory_is_tightened(tmp_path: Path) -> None:
    target = tmp_path / "open"
    target.mkdir(mode=0o777)
    os.chmod(target, 0o777)
    ProfileFiles(str(target))
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700


def test_symlinked_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(StorageError, match="symlink"):
        ProfileFiles(str(tmp_path / "link"))


@pytest.mark.parametrize("bad", ["../../etc/passwd", "..", "a/b", "", "x" * 10, "abc%2e%2e" + "x" * 20])
def test_paths_only_from_well_formed_ids(tmp_path: Path, bad: str) -> None:
    files = ProfileFiles(str(tmp_path / "p"))
    with pytest.raises(ProfileNotFound):
        files.path(bad, "svg")


def test_write_read_size_delete(tmp_path: Path) -> None:
    files = ProfileFiles(str(tmp_path / "p"))
    profile_id = new_id()
    path = files.write_text(profile_id, "svg", "<svg/>")
    assert path.parent == files.root
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    files.write_meta(profile_id, {"id": profile_id, "created_at": 1.0})
    assert files.size(profile_id) == path.stat().st_size + files.path(profile_id, "meta.json").stat().st_size
    assert [m["id"] for m in files.load_metas()] == [profile_id]
    files.delete(profile_id)
    assert files.files(profile_id) == []


def test_metadata_with_a_mismatched_id_is_ignored(tmp_path: Path) -> None:
    files = ProfileFiles(str(tmp_path / "p"))
    profile_id = new_id()
    files.write_meta(profile_id, {"id": "someone-elses-id-123456", "created_at": 1.0})
    assert files.load_metas() == []
