"""Map the PIDs NVML reports to host PIDs, through each process's ``NSpid`` line.

With the host's PID namespace (``hostPID``) the driver reports host PIDs; some drivers
and set-ups report the PID as seen inside the process's container instead. A PID that
names no process on the host, or that is also the innermost PID of a containerised
process, is looked up in an index of innermost namespace PID -> host PIDs (built from
``/proc/*/status`` only when needed, at most every ``rescan_seconds``). When more than one
process could be meant, the one holding an ``/dev/nvidia*`` file open wins.

Resolutions are cached while the host process lives; the host pid is what the rest
of the host reading is keyed by, and ``ProcessStats.nspids`` keeps every namespace's view.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable

from agent.host.procfs import parse_status, read_text

log = logging.getLogger(__name__)


class PidResolver:
    def __init__(
        self, procfs: str, rescan_seconds: float = 30.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.procfs = procfs
        self.rescan_seconds = rescan_seconds
        self._monotonic = monotonic
        self._resolved: dict[int, int] = {}  # reported pid -> host pid
        self._index: dict[int, list[int]] = {}  # innermost ns pid -> host pids (containerised processes only)
        self._index_time: float | None = None

    def resolve(self, pids: Iterable[int], alive: Callable[[int], bool]) -> dict[int, int]:
        """Reported pid -> host pid for those that could be resolved."""
        out: dict[int, int] = {}
        for pid in pids:
            host = self._resolved.get(pid)
            if host is not None and alive(host):
                out[pid] = host
                continue
            host = self._resolve_one(pid, alive)
            if host is None:
                self._resolved.pop(pid, None)
                continue
            self._resolved[pid] = host
            out[pid] = host
        for stale in [p for p in self._resolved if p not in out]:
            del self._resolved[stale]
        return out

    def _resolve_one(self, pid: int, alive: Callable[[int], bool]) -> int | None:
        exists = alive(pid)
        candidates = [h for h in self._candidates(pid, refresh=not exists) if h != pid and alive(h)]
        if exists and not candidates:
            return pid
        if not exists and len(candidates) == 1:
            return candidates[0]
        options = ([pid] if exists else []) + candidates
        users = [h for h in options if self._uses_nvidia(h)]
        if len(users) == 1:
            return users[0]
        if exists:
            log.debug("pid %d: also the namespace pid of %s; taking the host process", pid, candidates)
            return pid
        return None

    def _candidates(self, pid: int, refresh: bool) -> list[int]:
        now = self._monotonic()
        stale = self._index_time is None or now - self._index_time >= self.rescan_seconds
        # A pid that names no host process may belong to a container started since the last
        # scan: rescan then too, but not more often than every few seconds.
        if stale or (refresh and pid not in self._index and now - (self._index_time or 0.0) >= 5.0):
            self._index = self._build_index()
            self._index_time = now
        return self._index.get(pid, [])

    def _build_index(self) -> dict[int, list[int]]:
        index: dict[int, list[int]] = {}
        for name in os.listdir(self.procfs):
            if not name.isdigit():
                continue
            try:
                nspids = parse_status(read_text(os.path.join(self.procfs, name, "status"))).nspids
            except (OSError, ValueError):
                continue
            if len(nspids) > 1:
                index.setdefault(nspids[-1], []).append(int(name))
        return index

    def _uses_nvidia(self, pid: int) -> bool:
        fd_dir = os.path.join(self.procfs, str(pid), "fd")
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(os.path.join(fd_dir, fd)).startswith("/dev/nvidia"):
                        return True
                except OSError:
                    continue
        except OSError:
            return False
        return False
