"""The processes behind each GPU: the GPU pids, their descendants, and per-process stats.

Descendants are found with a ppid scan of ``/proc``. The scan is incremental: every
read lists ``/proc`` (one directory read) but parses ``stat`` only for pids it has not
seen, with a full rescan every ``full_rescan_every`` reads to pick up reparenting.
Tracked processes have their ``stat`` read on every call anyway, which refreshes their ppid.

What does not change while a process lives (command line, uid, NSpid, cgroup) is cached per
``(pid, start time)``, so a reused pid never inherits another process's identity.

On a live procfs the files read every second (``stat``, ``io``, ``task/<tid>/stat``) are kept
open between reads (see ``OpenFiles``), and a process's ``task`` directory is listed again
only when its thread count or one of its known threads says the set of threads changed.
"""

from __future__ import annotations

import logging
import os
import pwd
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from agent.host.cgroups import CgroupReader, process_cgroup_path
from agent.host.openfiles import OpenFiles, default_fd_budget, is_kernel_fs
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
    """pid -> ppid for every process on the host.

    ``version`` changes whenever the map does, so that what is derived from it (the process
    trees under the GPU pids) can be kept until it changes.
    """

    def __init__(self, procfs: str, full_rescan_every: int = 60) -> None:
        self.procfs = procfs
        self.full_rescan_every = max(1, full_rescan_every)
        self.version = 0
        self._ppid: dict[int, int] = {}
        self._reads = 0
        self._listing: list[str] = []
        self._all_read = False  # every pid in _listing is in _ppid

    def refresh(self) -> dict[int, int]:
        listing = os.listdir(self.procfs)
        rescan = self._reads % self.full_rescan_every == 0
        self._reads += 1
        if not rescan and self._all_read and listing == self._listing:
            # No pid came or went, and known pids are not read again anyway (but by update()
            # or a full rescan): the map stands as it is.
            return self._ppid
        self._listing = listing
        self.version += 1
        pids = {int(name) for name in listing if name.isdigit()}
        if rescan:
            self._ppid = {}
        known = self._ppid
        for pid in known.keys() - pids:
            del known[pid]
        if len(known) < len(pids):  # some pids are new (or could not be read last time)
            for pid in pids:
                if pid in known:
                    continue
                try:
                    known[pid] = parse_ppid(read_text(f"{self.procfs}/{pid}/stat"))
                except (*_GONE, ValueError, IndexError):
                    continue
        self._all_read = len(known) == len(pids)
        return known

    def update(self, pid: int, ppid: int) -> None:
        if self._ppid.get(pid) != ppid:
            self._ppid[pid] = ppid
            self.version += 1


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
    def __init__(
        self,
        procfs: str,
        cgroups: CgroupReader,
        max_processes: int = 512,
        files: OpenFiles | None = None,
    ) -> None:
        self.procfs = procfs
        self.cgroups = cgroups
        self.max_processes = max_processes
        # Groups: the pid (closed when the process is no longer tracked); host-wide files use None.
        self.files = files if files is not None else OpenFiles(is_kernel_fs(procfs), default_fd_budget(4))
        self.table = ProcessTable(procfs)
        self.resolver = PidResolver(procfs)
        self._identities: dict[tuple[int, int], _Identity] = {}
        self._threads: dict[int, _ThreadState] = {}
        self._users: dict[int, str] = {}
        self._cap_logged = False
        self._tracked: dict[int, tuple[int, ...]] = {}
        self._tracked_key: tuple[int, int, tuple[tuple[int, tuple[int, ...]], ...]] | None = None

    def read(self, gpu_pids: dict[int, tuple[int, ...]], boot_time: float | None) -> dict[int, ProcessStats]:
        ppids = self.table.refresh()
        # NVML may report a PID as its container sees it: key everything by host PID.
        resolved = self.resolver.resolve(gpu_pids, ppids.__contains__)
        roots: dict[int, tuple[int, ...]] = {}
        for pid, indices in gpu_pids.items():
            host = resolved.get(pid)
            if host is not None:
                roots[host] = tuple(sorted({*roots.get(host, ()), *indices}))
        key = (self.table.version, self.max_processes, tuple(roots.items()))
        if key != self._tracked_key:  # the trees change only with the roots or the ppid map
            self._tracked = descendants(roots, ppids, self.max_processes)
            self._tracked_key = key
        tracked = self._tracked
        if len(tracked) >= self.max_processes and not self._cap_logged:
            log.warning(
                "host: tracking at most %d GPU processes and descendants; the rest are left out",
                self.max_processes,
            )
            self._cap_logged = True
        delayacct = self._delayacct_enabled() if tracked else True
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
        stat = parse_stat(self.files.read_text(f"{base}/stat", pid))
        self.table.update(pid, stat.ppid)
        ident = self._identity(base, stat)
        total, running, blocked, busiest = self._threads_of(base, stat)
        io_read, io_write = self._read_io(base, pid)
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
        pid = stat.pid
        task = f"{base}/task"
        last = self._threads.get(pid)
        prev = last if last is not None and last.starttime == stat.starttime_ticks else None
        threads = None
        if prev is not None and self.files.hold and stat.num_threads == len(prev.ticks):
            # The kernel's thread count (read just before) matches the threads known from the
            # last read, and each is still there: then none ended and none started, so the
            # listing would be the same. (A fixture tree need not keep the two in step.)
            threads = self._read_threads(pid, task, prev.ticks, complete=True)
        if threads is None:
            try:
                names = os.listdir(task)
            except OSError:  # not permitted (or just ended): keep the count from stat, without states
                return stat.num_threads, 0, 0, None
            listed = self._read_threads(pid, task, names, complete=False)
            assert listed is not None  # only a complete read gives up
            if last is not None:
                for tid in last.ticks.keys() - listed[0].keys():
                    self.files.release(f"{task}/{tid}/stat")  # the thread ended
            threads = listed
        ticks, running, blocked = threads
        if not ticks:
            return stat.num_threads, 0, 0, None
        if prev is None:
            busiest = max(ticks.values()) / CLK_TCK
        else:
            delta = max(max(t - prev.ticks.get(tid, 0), 0) for tid, t in ticks.items())
            busiest = prev.busiest_seconds + delta / CLK_TCK
        self._threads[pid] = _ThreadState(stat.starttime_ticks, ticks, busiest)
        return len(ticks), running, blocked, busiest

    def _read_threads(
        self, pid: int, task: str, tids: Iterable[int | str], complete: bool
    ) -> tuple[dict[int, int], int, int] | None:
        """tid -> utime + stime ticks, and how many run and wait on I/O.

        A thread that has ended is skipped, or, with ``complete``, makes the answer None.
        """
        ticks: dict[int, int] = {}
        running = blocked = 0
        read = self.files.read
        for tid in tids:
            try:
                raw = read(f"{task}/{tid}/stat", pid)
            except OSError:
                if complete:
                    return None
                continue  # the thread ended
            # Bytes, not text: comm may hold anything, but the fields after its ")" are ASCII.
            rest = raw[raw.rindex(b")") + 2 :].split(maxsplit=14)
            state = rest[0]
            if state == b"R":
                running += 1
            elif state == b"D":
                blocked += 1
            ticks[int(tid)] = int(rest[11]) + int(rest[12])
        return ticks, running, blocked

    def _delayacct_enabled(self) -> bool:
        # Since Linux 5.14 delay accounting is off unless kernel.task_delayacct=1; then field
        # 42 stays 0, which would read as "no I/O delay" rather than "not measured".
        try:
            return self.files.read_text(f"{self.procfs}/sys/kernel/task_delayacct").strip() != "0"
        except OSError:
            return True  # older kernels have no switch and account by default

    def _read_io(self, base: str, pid: int) -> tuple[int | None, int | None]:
        try:
            return parse_proc_io(self.files.read_text(f"{base}/io", pid))
        except (OSError, ValueError):  # needs ptrace access: unreadable for other users' processes
            return None, None

    def _forget(self, live_pids: set[int]) -> None:
        for pid in [p for p in self._threads if p not in live_pids]:
            del self._threads[pid]
        for key in [k for k in self._identities if k[0] not in live_pids]:
            del self._identities[key]
        for group in self.files.groups():
            if isinstance(group, int) and group not in live_pids:
                self.files.release_group(group)  # no longer tracked: close its files

    def close(self) -> None:
        self.files.close()
