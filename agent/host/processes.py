"""The processes behind each GPU: the GPU pids, their descendants, and per-process stats.

Descendants are found with a ppid scan of ``/proc``. The scan is incremental: every
read lists ``/proc`` (one directory read) but parses ``stat`` only for pids it has not
seen, with a full rescan every ``full_rescan_every`` reads to pick up reparenting.
Tracked processes have their ``stat`` read on every call anyway, which refreshes their ppid.

What does not change while a process lives (command line, uid, NSpid, cgroup) is cached per
``(pid, start time)``, so a reused pid never inherits another process's identity.
"""

from __future__ import annotations

import logging
import os
import pwd
from collections import deque
from dataclasses import dataclass

from agent.host.cgroups import CgroupReader, process_cgroup_path
from agent.host.pidns import PidResolver
from agent.host.procfs import (
    CLK_TCK,
    PAGE_SIZE,
    ProcStat,
    parse_cgroup,
    parse_cmdline,
    parse_ppid,
    parse_proc_io,
    parse_stat,
    parse_status,
    read_bytes,
    read_text,
)
from agent.model import ProcessStats

log = logging.getLogger(__name__)

# A process vanishing between listing and reading is normal; these are how it shows.
_GONE = (FileNotFoundError, ProcessLookupError)


@dataclass(frozen=True)
class _Identity:
    cmdline: str
    uid: int | None
    user: str | None
    nspids: tuple[int, ...]
    cgroup_path: str | None


@dataclass
class _ThreadState:
    starttime: int
    ticks: dict[int, int]  # tid -> cumulative utime + stime
    busiest_seconds: float  # the synthetic counter reported as max_thread_cpu_seconds


class ProcessTable:
    """pid -> ppid for every process on the host."""

    def __init__(self, procfs: str, full_rescan_every: int = 60) -> None:
        self.procfs = procfs
        self.full_rescan_every = max(1, full_rescan_every)
        self._ppid: dict[int, int] = {}
        self._reads = 0

    def refresh(self) -> dict[int, int]:
        pids = {int(name) for name in os.listdir(self.procfs) if name.isdigit()}
        if self._reads % self.full_rescan_every == 0:
            self._ppid = {}
        self._reads += 1
        for pid in list(self._ppid):
            if pid not in pids:
                del self._ppid[pid]
        for pid in pids:
            if pid in self._ppid:
                continue
            try:
                self._ppid[pid] = parse_ppid(read_text(f"{self.procfs}/{pid}/stat"))
            except (*_GONE, ValueError, IndexError):
                continue
        return self._ppid

    def update(self, pid: int, ppid: int) -> None:
        self._ppid[pid] = ppid


def descendants(
    roots: dict[int, tuple[int, ...]], ppids: dict[int, int], limit: int
) -> dict[int, tuple[int, ...]]:
    """Every live root and its descendants -> the GPU indices of itself and its GPU-using ancestors."""
    children: dict[int, list[int]] = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, set[int]] = {}
    for root, indices in sorted(roots.items()):
        if root not in ppids:
            continue  # vanished, or never existed on this host
        queue = deque([root])
        seen: set[int] = set()
        while queue:
            pid = queue.popleft()
            if pid in seen:
                continue
            seen.add(pid)
            if pid not in found:
                if len(found) >= limit:
                    break
                found[pid] = set()
            found[pid].update(indices)
            queue.extend(children.get(pid, ()))
    return {pid: tuple(sorted(indices)) for pid, indices in found.items()}


class ProcessReader:
    def __init__(self, procfs: str, cgroups: CgroupReader, max_processes: int = 512) -> None:
        self.procfs = procfs
        self.cgroups = cgroups
        self.max_processes = max_processes
        self.table = ProcessTable(procfs)
        self.resolver = PidResolver(procfs)
        self._identities: dict[tuple[int, int], _Identity] = {}
        self._threads: dict[int, _ThreadState] = {}
        self._users: dict[int, str] = {}
        self._cap_logged = False

    def read(self, gpu_pids: dict[int, tuple[int, ...]], boot_time: float | None) -> dict[int, ProcessStats]:
        ppids = self.table.refresh()
        # NVML may report a PID as its container sees it: key everything by host PID.
        resolved = self.resolver.resolve(gpu_pids, ppids.__contains__)
        roots: dict[int, tuple[int, ...]] = {}
        for pid, indices in gpu_pids.items():
            host = resolved.get(pid)
            if host is not None:
                roots[host] = tuple(sorted({*roots.get(host, ()), *indices}))
        tracked = descendants(roots, ppids, self.max_processes)
        if len(tracked) >= self.max_processes and not self._cap_logged:
            log.warning(
                "host: tracking at most %d GPU processes and descendants; the rest are left out",
                self.max_processes,
            )
            self._cap_logged = True
        delayacct = self._delayacct_enabled()
        out: dict[int, ProcessStats] = {}
        for pid, indices in tracked.items():
            try:
                stats = self._read_one(pid, indices, boot_time, delayacct)
            except _GONE:
                continue  # ended since the scan
            except (OSError, ValueError, IndexError) as exc:
                log.debug("host: skipping pid %d: %s", pid, exc)
                continue
            out[pid] = stats
        self._forget(set(out))
        return out

    def _read_one(
        self, pid: int, indices: tuple[int, ...], boot_time: float | None, delayacct: bool
    ) -> ProcessStats:
        base = f"{self.procfs}/{pid}"  # plain formatting: this runs for every tracked thread each second
        stat = parse_stat(read_text(f"{base}/stat"))
        self.table.update(pid, stat.ppid)
        ident = self._identity(base, stat)
        total, running, blocked, busiest = self._threads_of(base, stat)
        io_read, io_write = _read_io(base)
        cgroup_path = ident.cgroup_path
        cpu = self.cgroups.cpu(cgroup_path) if cgroup_path is not None else None
        return ProcessStats(
            pid=pid,
            ppid=stat.ppid,
            comm=stat.comm,
            cmdline=ident.cmdline,
            user=ident.user,
            create_time=boot_time + stat.starttime_ticks / CLK_TCK if boot_time is not None else None,
            cpu_user_seconds=stat.utime_ticks / CLK_TCK,
            cpu_system_seconds=stat.stime_ticks / CLK_TCK,
            threads_total=total,
            threads_running=running,
            threads_blocked_io=blocked,
            max_thread_cpu_seconds=busiest,
            rss_bytes=stat.rss_pages * PAGE_SIZE,
            io_read_bytes=io_read,
            io_write_bytes=io_write,
            io_delay_seconds=stat.blkio_ticks / CLK_TCK
            if delayacct and stat.blkio_ticks is not None
            else None,
            cgroup_path=cgroup_path,
            cgroup_cpu_quota_cores=cpu.quota_cores if cpu else None,
            cgroup_cpu_throttled_seconds=cpu.throttled_seconds if cpu else None,
            cgroup_cpu_usage_seconds=cpu.usage_seconds if cpu else None,
            nspids=ident.nspids or (pid,),
            gpu_indices=indices,
        )

    def _identity(self, base: str, stat: ProcStat) -> _Identity:
        key = (stat.pid, stat.starttime_ticks)
        ident = self._identities.get(key)
        if ident is not None:
            return ident
        cmdline = parse_cmdline(read_bytes(os.path.join(base, "cmdline")))
        status = parse_status(read_text(os.path.join(base, "status")))
        # Runtimes (runc, slurmstepd, systemd-run) place a process in its cgroup before it
        # execs, so the cgroup seen first is the one it keeps.
        try:
            cgroup_path = process_cgroup_path(
                parse_cgroup(read_text(os.path.join(base, "cgroup"))), self.cgroups.unified
            )
        except OSError:
            cgroup_path = None
        ident = _Identity(cmdline, status.uid, self._user(status.uid), status.nspids, cgroup_path)
        self._identities[key] = ident
        return ident

    def _user(self, uid: int | None) -> str | None:
        if uid is None:
            return None
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:  # a uid from a container image that the host does not know
                name = str(uid)
            self._users[uid] = name
        return name

    def _threads_of(self, base: str, stat: ProcStat) -> tuple[int, int, int, float | None]:
        """Threads total / running / in D state, and the busiest-thread CPU counter.

        ``max_thread_cpu_seconds`` is a counter whose increase between two reads is the
        CPU time of the thread that was busiest *in that interval*: a plain maximum of
        cumulative per-thread times would stay stuck on a thread that was busy at start-up
        and miss a loader thread pinned at one core now.
        """
        task = f"{base}/task"
        try:
            tids = os.listdir(task)
        except OSError:  # not permitted (or just ended): keep the count from stat, without states
            return stat.num_threads, 0, 0, None
        ticks: dict[int, int] = {}
        running = blocked = 0
        for name in tids:
            try:
                text = read_text(f"{task}/{name}/stat")
            except OSError:
                continue  # the thread ended
            close = text.rindex(")")
            rest = text[close + 2 :].split(maxsplit=14)
            state = rest[0]
            if state == "R":
                running += 1
            elif state == "D":
                blocked += 1
            ticks[int(name)] = int(rest[11]) + int(rest[12])
        if not ticks:
            return stat.num_threads, 0, 0, None
        prev = self._threads.get(stat.pid)
        if prev is None or prev.starttime != stat.starttime_ticks:
            busiest = max(ticks.values()) / CLK_TCK
        else:
            delta = max(max(t - prev.ticks.get(tid, 0), 0) for tid, t in ticks.items())
            busiest = prev.busiest_seconds + delta / CLK_TCK
        self._threads[stat.pid] = _ThreadState(stat.starttime_ticks, ticks, busiest)
        return len(ticks), running, blocked, busiest

    def _delayacct_enabled(self) -> bool:
        # Since Linux 5.14 delay accounting is off unless kernel.task_delayacct=1; then field
        # 42 stays 0, which would read as "no I/O delay" rather than "not measured".
        try:
            return read_text(os.path.join(self.procfs, "sys", "kernel", "task_delayacct")).strip() != "0"
        except OSError:
            return True  # older kernels have no switch and account by default

    def _forget(self, live_pids: set[int]) -> None:
        for pid in [p for p in self._threads if p not in live_pids]:
            del self._threads[pid]
        for key in [k for k in self._identities if k[0] not in live_pids]:
            del self._identities[key]


def _read_io(base: str) -> tuple[int | None, int | None]:
    try:
        return parse_proc_io(read_text(f"{base}/io"))
    except (OSError, ValueError):  # /proc/<pid>/io needs ptrace access: unreadable for other users' processes
        return None, None
