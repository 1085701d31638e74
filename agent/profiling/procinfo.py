"""The few /proc facts profiling needs: does a pid exist, its parent chain, its threads' CPU time,
and why ptrace might be refused.

The file formats are parsed by ``agent.host.procfs`` (one place knows them); this module
only chooses which files to read. ``root`` can point at a fixture tree in tests. Every
read tolerates a process vanishing between two calls: a gone process reads as ``None``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agent.host.procfs import CLK_TCK, parse_cmdline, parse_stat, read_bytes, read_text

CAP_SYS_PTRACE = 19  # bit in CapEff (linux/capability.h)


@dataclass(frozen=True)
class ThreadCpu:
    tid: int
    name: str
    cpu_seconds: float  # user + system, cumulative
    age_seconds: float | None  # since the thread started, when /proc/uptime is readable


class ProcInfo:
    def __init__(self, root: str = "/proc") -> None:
        self.root = root

    def _path(self, *parts: object) -> str:
        return os.path.join(self.root, *(str(p) for p in parts))

    def exists(self, pid: int) -> bool:
        if pid <= 0:
            return False
        try:
            stat = parse_stat(read_text(self._path(pid, "stat")))
        except (OSError, ValueError, IndexError):
            return False
        return stat.state not in ("Z", "X")  # a zombie has no memory left to read

    def ppid(self, pid: int) -> int | None:
        try:
            return parse_stat(read_text(self._path(pid, "stat"))).ppid
        except (OSError, ValueError, IndexError):
            return None

    def comm(self, pid: int) -> str | None:
        try:
            return parse_stat(read_text(self._path(pid, "stat"))).comm
        except (OSError, ValueError, IndexError):
            return None

    def cmdline(self, pid: int) -> str | None:
        try:
            return parse_cmdline(read_bytes(self._path(pid, "cmdline")))
        except OSError:
            return None

    def ancestors(self, pid: int, limit: int = 64) -> list[int]:
        """Parent, grandparent, ... up to (not including) pid 0; stops at ``limit`` or a loop."""
        chain: list[int] = []
        current = pid
        for _ in range(limit):
            parent = self.ppid(current)
            if parent is None or parent <= 0 or parent in chain or parent == pid:
                break
            chain.append(parent)
            current = parent
        return chain

    def ppid_map(self) -> dict[int, int]:
        """pid -> ppid for every process visible in this PID namespace."""
        out: dict[int, int] = {}
        try:
            names = os.listdir(self.root)
        except OSError:
            return out
        for name in names:
            if not name.isdigit():
                continue
            parent = self.ppid(int(name))
            if parent is not None:
                out[int(name)] = parent
        return out

    def tree(self, pid: int, ppids: dict[int, int] | None = None) -> list[int]:
        """``pid`` and all its descendants (breadth first)."""
        ppids = self.ppid_map() if ppids is None else ppids
        children: dict[int, list[int]] = {}
        for child, parent in ppids.items():
            children.setdefault(parent, []).append(child)
        out = [pid]
        queue = [pid]
        while queue:
            for child in sorted(children.get(queue.pop(0), [])):
                if child not in out:
                    out.append(child)
                    queue.append(child)
        return out

    def threads(self, pid: int) -> dict[int, ThreadCpu]:
        uptime = self._uptime()
        out: dict[int, ThreadCpu] = {}
        try:
            tids = os.listdir(self._path(pid, "task"))
        except OSError:
            return out
        for name in tids:
            if not name.isdigit():
                continue
            try:
                stat = parse_stat(read_text(self._path(pid, "task", name, "stat")))
            except (OSError, ValueError, IndexError):
                continue
            age = uptime - stat.starttime_ticks / CLK_TCK if uptime is not None else None
            out[int(name)] = ThreadCpu(
                tid=int(name),
                name=stat.comm,
                cpu_seconds=(stat.utime_ticks + stat.stime_ticks) / CLK_TCK,
                age_seconds=age,
            )
        return out

    def _uptime(self) -> float | None:
        try:
            return float(read_text(self._path("uptime")).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    # --- why ptrace may be refused -------------------------------------------------------

    def ptrace_scope(self) -> int | None:
        """kernel.yama.ptrace_scope: 0 classic, 1 restricted to descendants, 2 admin only, 3 none."""
        try:
            return int(read_text(self._path("sys", "kernel", "yama", "ptrace_scope")).strip())
        except (OSError, ValueError):
            return None

    def has_cap_sys_ptrace(self) -> bool | None:
        try:
            text = read_text(self._path("self", "status"))
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("CapEff:"):
                try:
                    return bool(int(line.split()[1], 16) >> CAP_SYS_PTRACE & 1)
                except (IndexError, ValueError):
                    return None
        return None

    def uid(self, pid: int) -> int | None:
        try:
            text = read_text(self._path(pid, "status"))
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("Uid:"):
                try:
                    return int(line.split()[1])
                except (IndexError, ValueError):
                    return None
        return None
