"""Which processes may be profiled, and which process owns a GPU.

The rule: a process that uses a GPU (it is in a GPU's compute-process list, or attribution
names it as an owner), or a descendant of one, may be profiled; nothing else, unless
``profiling.allow_any_pid``. Descendants come first from the host backend's view of the
GPU process trees (``Snapshot.host.processes``), then, for a process spawned since the last
sample, from the parent chain in /proc.
"""

from __future__ import annotations

from agent.profiling.errors import NoGpuOwner, PidNotAllowed, ProfilingError, UnknownGpu
from agent.profiling.procinfo import ProcInfo
from agent.snapshot import Snapshot

RULE = (
    "only processes that use a GPU, and their descendants, may be profiled "
    "(set profiling.allow_any_pid: true to lift this)"
)


def _owner_pids(owner: dict[str, object]) -> list[int]:
    out: list[int] = []
    processes = owner.get("processes")
    if isinstance(processes, list | tuple):
        for item in processes:
            pid = item.get("pid") if isinstance(item, dict) else item
            if isinstance(pid, int) and not isinstance(pid, bool):
                out.append(pid)
    return out


def gpu_processes(snapshot: Snapshot) -> dict[int, set[int]]:
    """pid -> indices of the GPUs whose compute-process list (or owner record) names it."""
    out: dict[int, set[int]] = {}
    for index, reading in snapshot.readings.items():
        for process in reading.processes or ():
            out.setdefault(process.pid, set()).add(index)
    for index, owner in snapshot.owners.items():
        if isinstance(owner, dict):
            for pid in _owner_pids(owner):
                out.setdefault(pid, set()).add(index)
    return out


def _require_snapshot(snapshot: Snapshot | None) -> Snapshot:
    if snapshot is None:
        raise ProfilingError(
            "the agent has not sampled the GPUs yet, so it does not know which processes use them: "
            "retry in a few seconds",
            status=503,
            code="not_ready",
        )
    return snapshot


def check_pid(pid: int, snapshot: Snapshot | None, procinfo: ProcInfo) -> str:
    """Why ``pid`` may be profiled (a short phrase); raises ``PidNotAllowed`` naming the rule."""
    snap = _require_snapshot(snapshot)
    users = gpu_processes(snap)
    if pid in users:
        return "uses GPU " + ", ".join(str(i) for i in sorted(users[pid]))
    host = snap.host
    if host is not None:
        stats = host.processes.get(pid)
        if stats is not None and stats.gpu_indices:
            return "descends from a process on GPU " + ", ".join(str(i) for i in stats.gpu_indices)
        # Walk the host backend's parent links first: they were read together, in one tick.
        seen: set[int] = set()
        current = stats.ppid if stats is not None else None
        while current is not None and current > 0 and current not in seen:
            seen.add(current)
            if current in users:
                return f"descends from pid {current}, which uses a GPU"
            parent = host.processes.get(current)
            current = parent.ppid if parent is not None else None
    for ancestor in procinfo.ancestors(pid):
        if ancestor in users:
            return f"descends from pid {ancestor}, which uses a GPU"
    raise PidNotAllowed(f"pid {pid} is not allowed: {RULE}")


def owner_pid(gpu: int, snapshot: Snapshot | None, procinfo: ProcInfo) -> int:
    """The main process of the tree that owns GPU ``gpu``: the outermost of its GPU processes.

    With several unrelated processes on one GPU, the one holding the most GPU memory.
    """
    snap = _require_snapshot(snapshot)
    if gpu not in snap.readings and gpu not in snap.identities:
        known = ", ".join(str(i) for i in sorted(set(snap.readings) | set(snap.identities))) or "none"
        raise UnknownGpu(f"no GPU {gpu} on this node (GPUs: {known})")
    memory: dict[int, int] = {}
    reading = snap.readings.get(gpu)
    for process in (reading.processes if reading is not None else None) or ():
        memory[process.pid] = process.used_memory_bytes or 0
    owner = snap.owners.get(gpu)
    if isinstance(owner, dict):
        for pid in _owner_pids(owner):
            memory.setdefault(pid, 0)
    if not memory:
        raise NoGpuOwner(f"GPU {gpu} has no compute process to profile")
    live = [pid for pid in memory if procinfo.exists(pid)] or list(memory)
    roots = [pid for pid in live if not any(a in memory for a in _ancestors(pid, snap, procinfo))]
    candidates = roots or live
    return sorted(candidates, key=lambda pid: (-memory[pid], pid))[0]


def _ancestors(pid: int, snapshot: Snapshot, procinfo: ProcInfo) -> list[int]:
    host = snapshot.host
    if host is not None and pid in host.processes:
        chain: list[int] = []
        current = host.processes[pid].ppid
        while current > 0 and current not in chain and len(chain) < 64:
            chain.append(current)
            parent = host.processes.get(current)
            if parent is None:
                chain.extend(a for a in procinfo.ancestors(current) if a not in chain)
                break
            current = parent.ppid
        return chain
    return procinfo.ancestors(pid)
