"""Kernel files kept open between host reads and re-read with one ``pread``.

The host backend reads some thirty small files from /proc and the cgroup filesystem every
second. Opening, reading and closing each costs three syscalls; a descriptor kept open
and read from offset 0 costs one, and procfs, sysfs and cgroupfs build the contents afresh
on such a read. That holds only on those filesystems: in a fixture tree of plain files a
replaced file would keep its old contents behind a held descriptor, so there every read
opens the path (``is_kernel_fs`` tells which).
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import weakref
from collections.abc import Hashable

from agent.host.procfs import read_bytes

_CHUNK = 65536


def pread_all(fd: int) -> bytes:
    """The whole file from offset 0: procfs, sysfs and cgroupfs build it afresh on such a read."""
    chunk = os.pread(fd, _CHUNK, 0)
    if len(chunk) < _CHUNK:
        return chunk
    chunks = [chunk]
    offset = len(chunk)
    while chunk:
        chunk = os.pread(fd, _CHUNK, offset)
        offset += len(chunk)
        chunks.append(chunk)
    return b"".join(chunks)


# statfs(2) magic numbers: proc, sysfs, cgroup (v1), cgroup2.
_KERNEL_FS_MAGIC = frozenset({0x9FA0, 0x62656572, 0x0027E0EB, 0x63677270})


def is_kernel_fs(path: str) -> bool:
    """Whether ``path`` lies on procfs, sysfs or a cgroup filesystem (not a tree of plain files)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        statfs = ctypes.CDLL(None, use_errno=True).statfs
    except (OSError, AttributeError):
        return False
    buf = ctypes.create_string_buffer(256)  # struct statfs: 120 bytes on 64-bit Linux; f_type comes first
    if statfs(os.fsencode(path), buf) != 0:
        return False
    return ctypes.c_long.from_buffer(buf).value in _KERNEL_FS_MAGIC


def default_fd_budget(share: int) -> int:
    """How many descriptors one pool may keep open: ``1/share`` of the soft limit, at most 1024."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(0, min(1024, soft // share))


class OpenFiles:
    """Files kept open between reads, re-read with one ``pread`` at offset 0.

    A descriptor stays bound to the object it was opened on: a held ``/proc/<pid>/stat``
    fails with ESRCH once that process ends, even if the pid is reused, and a removed
    cgroup's files fail with ENODEV. Then the descriptor is dropped and the path opened
    afresh, so the answer is always what a fresh open would give. With ``hold=False``
    (a tree of plain files) every read opens the path.

    Descriptors are grouped (a pid, a cgroup directory) so that a group is released at once,
    and capped at ``limit``; past it, reads open the path as usual.
    """

    def __init__(self, hold: bool, limit: int) -> None:
        self.hold = hold
        self.limit = limit
        self._fds: dict[str, int] = {}
        self._group_of: dict[str, Hashable] = {}
        self._groups: dict[Hashable, set[str]] = {}
        # A backend dropped without close() must not leak its descriptors.
        self._finalizer = weakref.finalize(self, _close_fds, self._fds)

    def __len__(self) -> int:
        return len(self._fds)

    def read(self, path: str, group: Hashable = None) -> bytes:
        fd = self._fds.get(path)
        if fd is not None:
            try:
                data = os.pread(fd, _CHUNK, 0)  # pread_all's first step, inlined: this is the hot path
                return data if len(data) < _CHUNK else pread_all(fd)
            except OSError:  # the process, thread or cgroup it was opened on has ended
                self.release(path)
        if not self.hold or len(self._fds) >= self.limit:
            return read_bytes(path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = pread_all(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fds[path] = fd
        self._group_of[path] = group
        self._groups.setdefault(group, set()).add(path)
        return data

    def read_text(self, path: str, group: Hashable = None) -> str:
        return self.read(path, group).decode("utf-8", errors="replace")

    def release(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is None:
            return
        group = self._group_of.pop(path)
        paths = self._groups[group]
        paths.discard(path)
        if not paths:
            del self._groups[group]
        os.close(fd)

    def groups(self) -> list[Hashable]:
        """The groups that hold at least one descriptor."""
        return list(self._groups)

    def release_group(self, group: Hashable) -> None:
        for path in list(self._groups.get(group, ())):
            self.release(path)

    def close(self) -> None:
        self._group_of.clear()
        self._groups.clear()
        _close_fds(self._fds)


def _close_fds(fds: dict[str, int]) -> None:
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()
