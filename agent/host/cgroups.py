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
from dataclasses import dataclass

from agent.host.procfs import CgroupLine, parse_key_values, read_text


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


class CgroupReader:
    """Reads CPU limits under one cgroupfs root; memoises per cgroup within one host read."""

    def __init__(self, cgroupfs: str) -> None:
        self.root = cgroupfs
        self._memo: dict[str, CgroupCpu] = {}
        self._unified: bool | None = None

    @property
    def unified(self) -> bool:
        if self._unified is None:
            # A pure v2 host has cgroup.controllers at the root; a v1 or hybrid host does not.
            self._unified = os.path.exists(os.path.join(self.root, "cgroup.controllers"))
        return self._unified

    def begin(self) -> None:
        """Forget the previous read's values (call once per host read)."""
        self._memo.clear()
        self._unified = None

    def cpu(self, path: str) -> CgroupCpu:
        cached = self._memo.get(path)
        if cached is None:
            cached = self._read_v2(path) if self.unified else self._read_v1(path)
            self._memo[path] = cached
        return cached

    def _ancestors(self, base: str, path: str) -> list[str]:
        """Directories from the cgroup itself up to the hierarchy root."""
        rel = host_relative(path).strip("/")
        parts = rel.split("/") if rel else []
        return [os.path.join(base, *parts[:n]) for n in range(len(parts), -1, -1)]

    def _read_v2(self, path: str) -> CgroupCpu:
        dirs = self._ancestors(self.root, path)
        if not os.path.isdir(dirs[0]):
            return NO_LIMIT
        binding = dirs[0]
        best: float | None = None
        for d in dirs:
            quota = _v2_quota(d)
            if quota is not None and (best is None or quota < best):
                best, binding = quota, d
        stat = _key_values(os.path.join(binding, "cpu.stat"))
        throttled = stat.get("throttled_usec")
        usage = stat.get("usage_usec")
        return CgroupCpu(
            quota_cores=best,
            throttled_seconds=throttled / 1e6 if throttled is not None else None,
            usage_seconds=usage / 1e6 if usage is not None else None,
        )

    def _read_v1(self, path: str) -> CgroupCpu:
        cpu_base = _first_dir(self.root, ("cpu,cpuacct", "cpu", "cpuacct,cpu"))
        if cpu_base is None:
            return NO_LIMIT
        dirs = self._ancestors(cpu_base, path)
        if not os.path.isdir(dirs[0]):
            return NO_LIMIT
        binding = dirs[0]
        best: float | None = None
        for d in dirs:
            quota = _v1_quota(d)
            if quota is not None and (best is None or quota < best):
                best, binding = quota, d
        stat = _key_values(os.path.join(binding, "cpu.stat"))
        throttled_ns = stat.get("throttled_time")
        usage: float | None = None
        acct_base = _first_dir(self.root, ("cpu,cpuacct", "cpuacct", "cpuacct,cpu"))
        if acct_base is not None:
            rel = os.path.relpath(binding, cpu_base)
            try:
                usage = int(read_text(os.path.join(acct_base, rel, "cpuacct.usage"))) / 1e9
            except (OSError, ValueError):
                usage = None
        return CgroupCpu(
            quota_cores=best,
            throttled_seconds=throttled_ns / 1e9 if throttled_ns is not None else None,
            usage_seconds=usage,
        )


def _first_dir(root: str, names: tuple[str, ...]) -> str | None:
    for name in names:
        d = os.path.join(root, name)
        if os.path.isdir(d):
            return d
    return None


def _key_values(path: str) -> dict[str, int]:
    try:
        return parse_key_values(read_text(path))
    except OSError:
        return {}


def _v2_quota(directory: str) -> float | None:
    try:
        quota, period = read_text(os.path.join(directory, "cpu.max")).split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or int(period) <= 0:
        return None
    return int(quota) / int(period)


def _v1_quota(directory: str) -> float | None:
    try:
        quota = int(read_text(os.path.join(directory, "cpu.cfs_quota_us")))
        period = int(read_text(os.path.join(directory, "cpu.cfs_period_us")))
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:  # -1 means unlimited
        return None
    return quota / period
