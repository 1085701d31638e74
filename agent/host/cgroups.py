"""A process's cgroup and its CPU limits: quota, throttled time and usage.

cgroup v2 (unified): ``cpu.max`` ("<quota> <period>" or "max <period>") and ``cpu.stat``
(``usage_usec``, ``throttled_usec``, ``nr_throttled``). cgroup v1: the ``cpu``
controller's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` and ``cpu.stat``
(``throttled_time`` in ns), and ``cpuacct.usage`` (ns).

A limit can sit on any ancestor (Kubernetes sets it on the container and on the pod;
Slurm and systemd on a slice), so the effective quota is the tightest one on the way
to the root, and throttled time and usage are read from the cgroup that holds it:
that is the budget the process tree competes for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from agent.host.openfiles import OpenFiles, default_fd_budget, is_kernel_fs
from agent.host.procfs import CgroupLine, parse_key_values


@dataclass(frozen=True)
class CgroupCpu:
    quota_cores: float | None
    throttled_seconds: float | None
    usage_seconds: float | None


NO_LIMIT = CgroupCpu(None, None, None)


def process_cgroup_path(lines: list[CgroupLine], unified: bool) -> str | None:
    """The path that names the process's cgroup: the v2 one on a unified host, else the v1 ``cpu`` one."""
    if unified:
        for line in lines:
            if line.hierarchy == 0 and not line.controllers:
                return line.path
        return None
    for line in lines:
        if "cpu" in line.controllers:
            return line.path
    for line in lines:  # hybrid host without a v1 cpu hierarchy: the unified path still names it
        if line.hierarchy == 0 and not line.controllers:
            return line.path
    return None


def host_relative(path: str) -> str:
    """Turn a path seen from inside a cgroup namespace into one under the host's cgroupfs root.

    A reader in its own cgroup namespace sees other processes' paths as ``/../../x.slice/...``.
    The leading ``..`` are dropped; a systemd slice name encodes its parents
    (``a-b-c.slice`` lives in ``a.slice/a-b.slice/``), which restores the rest.
    """
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] != "..":
        return "/" + "/".join(parts)
    while parts and parts[0] == "..":
        parts.pop(0)
    if parts and parts[0].endswith(".slice") and parts[0] != "-.slice":
        stem = parts[0][: -len(".slice")].split("-")
        parents = ["-".join(stem[: i + 1]) + ".slice" for i in range(len(stem) - 1)]
        parts = parents + parts
    return "/" + "/".join(parts)


@dataclass(frozen=True)
class _Layout:
    unified: bool
    cpu_base: str | None  # where the cpu controller's hierarchy starts (v2: the root)
    acct_base: str | None  # v1: where cpuacct's starts
    live: bool  # a cgroup filesystem, not a fixture tree: files may be held open


class CgroupReader:
    """Reads CPU limits under one cgroupfs root; memoises per cgroup within one host read.

    The layout (v2 or v1, and where the v1 ``cpu`` and ``cpuacct`` hierarchies are mounted)
    is looked up once and again every ``relayout_every`` reads: it changes only when the
    cgroup filesystems are remounted. On a real cgroupfs the ``cpu.*`` files of the cgroups
    in use are kept open between reads (see ``OpenFiles``); those of a cgroup no longer
    read are closed at the next read.
    """

    def __init__(self, cgroupfs: str, relayout_every: int = 60, fd_limit: int | None = None) -> None:
        self.root = cgroupfs
        self.relayout_every = max(1, relayout_every)
        self._fd_limit = fd_limit if fd_limit is not None else default_fd_budget(16)
        self._memo: dict[str, CgroupCpu] = {}
        self._layout: _Layout | None = None
        self._layout_held: _Layout | None = None  # the layout self._files was made for
        self._files = OpenFiles(hold=False, limit=0)
        self._used: set[str] = set()  # directories read since begin()
        self._reads = 0

    @property
    def unified(self) -> bool:
        return self._current_layout().unified

    def begin(self) -> None:
        """Forget the previous read's values (call once per host read)."""
        self._memo.clear()
        if self._reads % self.relayout_every == 0:
            self._layout = None
        self._reads += 1
        used = self._used
        for group in self._files.groups():
            if group not in used:
                self._files.release_group(group)
        self._used = set()

    def close(self) -> None:
        self._files.close()

    def cpu(self, path: str) -> CgroupCpu:
        cached = self._memo.get(path)
        if cached is None:
            layout = self._current_layout()
            cached = self._read_v2(layout, path) if layout.unified else self._read_v1(layout, path)
            self._memo[path] = cached
        return cached

    def _current_layout(self) -> _Layout:
        if self._layout is None:
            layout = self._find_layout()
            if layout != self._layout_held:
                self._files.close()
                self._files = OpenFiles(hold=layout.live, limit=self._fd_limit)
                self._layout_held = layout
            self._layout = layout
        return self._layout

    def _find_layout(self) -> _Layout:
        # A pure v2 host has cgroup.controllers at the root; a v1 or hybrid host does not.
        if os.path.exists(os.path.join(self.root, "cgroup.controllers")):
            return _Layout(True, self.root, None, is_kernel_fs(self.root))
        cpu_base = _first_dir(self.root, ("cpu,cpuacct", "cpu", "cpuacct,cpu"))
        acct_base = _first_dir(self.root, ("cpu,cpuacct", "cpuacct", "cpuacct,cpu"))
        bases = [b for b in (cpu_base, acct_base) if b is not None]
        return _Layout(False, cpu_base, acct_base, bool(bases) and all(is_kernel_fs(b) for b in bases))

    def _read(self, directory: str, name: str) -> str:
        self._used.add(directory)
        return self._files.read_text(f"{directory}/{name}", directory)

    def _read_v2(self, layout: _Layout, path: str) -> CgroupCpu:
        dirs = _ancestors(self.root, _parts(path))
        tightest = self._tightest(dirs, self._v2_quota)
        if tightest is None:
            return NO_LIMIT
        bound, best = tightest
        stat = self._key_values(dirs[bound], "cpu.stat")
        throttled = stat.get("throttled_usec")
        usage = stat.get("usage_usec")
        return CgroupCpu(
            quota_cores=best,
            throttled_seconds=throttled / 1e6 if throttled is not None else None,
            usage_seconds=usage / 1e6 if usage is not None else None,
        )

    def _read_v1(self, layout: _Layout, path: str) -> CgroupCpu:
        cpu_base = layout.cpu_base
        if cpu_base is None:
            return NO_LIMIT
        parts = _parts(path)
        dirs = _ancestors(cpu_base, parts)
        tightest = self._tightest(dirs, self._v1_quota)
        if tightest is None:
            return NO_LIMIT
        bound, best = tightest
        stat = self._key_values(dirs[bound], "cpu.stat")
        throttled_ns = stat.get("throttled_time")
        usage: float | None = None
        if layout.acct_base is not None:
            # The same cgroup in the cpuacct hierarchy (the same directory when they share a mount).
            acct_dir = os.path.join(layout.acct_base, *parts[: len(parts) - bound])
            try:
                usage = int(self._read(acct_dir, "cpuacct.usage")) / 1e9
            except (OSError, ValueError):
                usage = None
        return CgroupCpu(
            quota_cores=best,
            throttled_seconds=throttled_ns / 1e9 if throttled_ns is not None else None,
            usage_seconds=usage,
        )

    @staticmethod
    def _tightest(
        dirs: list[str], quota_of: Callable[[str], float | None]
    ) -> tuple[int, float | None] | None:
        """Index into ``dirs`` of the cgroup with the tightest quota, and that quota.

        None when the cgroup itself (``dirs[0]``) does not exist. Its quota file is read
        first, so only a failed read costs the extra look at the directory.
        """
        bound = 0
        best: float | None = None
        for i, d in enumerate(dirs):
            try:
                quota = quota_of(d)
            except OSError:
                if i == 0 and not os.path.isdir(d):
                    return None
                continue
            if quota is not None and (best is None or quota < best):
                best, bound = quota, i
        return bound, best

    def _key_values(self, directory: str, name: str) -> dict[str, int]:
        try:
            return parse_key_values(self._read(directory, name))
        except OSError:
            return {}

    def _v2_quota(self, directory: str) -> float | None:
        """Cores allowed by ``cpu.max``; None for no limit. Raises OSError when unreadable."""
        try:
            quota, period = self._read(directory, "cpu.max").split()[:2]
        except ValueError:
            return None
        if quota == "max" or int(period) <= 0:
            return None
        return int(quota) / int(period)

    def _v1_quota(self, directory: str) -> float | None:
        """Cores allowed by the CFS quota; None for no limit. Raises OSError when the quota is unreadable."""
        try:
            quota = int(self._read(directory, "cpu.cfs_quota_us"))
        except ValueError:
            return None
        if quota <= 0:  # -1 means unlimited; the period does not matter then
            return None
        try:
            period = int(self._read(directory, "cpu.cfs_period_us"))
        except (OSError, ValueError):
            return None
        if period <= 0:
            return None
        return quota / period


def _parts(path: str) -> list[str]:
    rel = host_relative(path).strip("/")
    return rel.split("/") if rel else []


def _ancestors(base: str, parts: list[str]) -> list[str]:
    """Directories from the cgroup itself up to the hierarchy root."""
    return [os.path.join(base, *parts[:n]) for n in range(len(parts), -1, -1)]


def _first_dir(root: str, names: tuple[str, ...]) -> str | None:
    for name in names:
        d = os.path.join(root, name)
        if os.path.isdir(d):
            return d
    return None
