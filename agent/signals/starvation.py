"""Why an assigned GPU is not executing: the host side of its owning process tree.

The tree of GPU ``i`` is every host process whose ``gpu_indices`` names ``i`` plus their
descendants (by ``ppid``). Rates are deltas of cumulative figures between two host readings.
Rules are checked in this order, first match wins (thresholds in SignalSettings):

1. CPU, the tree's own figures → ``starved_host``: the tree (its cgroup) using its whole CPU
   quota; cgroup CPU throttling; the tree using all host CPUs; a thread pinned at one core.
   Limits of the whole tree come first: they bind before any single thread does.
2. I/O, the tree's own figures → ``starved_io``: threads in D state; block-I/O delay.
3. Host-wide pressure, counted only with the tree's own corroboration (host PSI is shared by
   every GPU on the node): CPU pressure while several of the tree's threads are runnable →
   ``starved_host``; I/O pressure while the tree's block-I/O delay grew → ``starved_io``.
4. Otherwise ``starved_other`` (network, collectives, a sleeping program, a person).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from agent.model import HostReading, ProcessStats
from agent.signals.settings import SignalSettings

STARVED_HOST = "starved_host"
STARVED_IO = "starved_io"
STARVED_OTHER = "starved_other"


@dataclass(frozen=True)
class Verdict:
    state: str
    evidence: str | None = None


def owner_trees(host: HostReading) -> dict[int, dict[int, ProcessStats]]:
    """Per GPU index, the processes that use it and all their descendants (one pass for every GPU)."""
    children: dict[int, list[int]] = {}
    for pid, p in host.processes.items():
        children.setdefault(p.ppid, []).append(pid)
    trees: dict[int, dict[int, ProcessStats]] = {}
    for pid, p in host.processes.items():
        for index in p.gpu_indices:
            tree = trees.setdefault(index, {})
            stack = [pid]
            while stack:  # the process and its descendants by ppid
                q = stack.pop()
                if q not in tree:
                    tree[q] = host.processes[q]
                    stack.extend(children.get(q, ()))
    return trees


def owner_tree(host: HostReading, index: int) -> dict[int, ProcessStats]:
    """The processes that use GPU ``index`` and all their descendants."""
    return owner_trees(host).get(index, {})


def process_label(p: ProcessStats) -> str:
    """``python train.py`` or ``python3 -m vllm.entrypoints.openai.api_server``; else the command name."""
    return _label(p.cmdline, p.comm)


@functools.lru_cache(maxsize=1024)  # a process keeps its command line: judged again every host reading
def _label(cmdline: str, comm: str) -> str:
    argv = cmdline.split()
    if not argv:
        return comm
    words = [os.path.basename(argv[0])]
    if len(argv) > 2 and argv[1] == "-m":
        words += argv[1:3]
    elif len(argv) > 1 and not argv[1].startswith("-"):
        words.append(os.path.basename(argv[1]))
    return " ".join(words)


def describe_tree(tree: dict[int, ProcessStats]) -> str:
    """``pid 4121 (python train.py) and 4 workers``: the root with the most descendants named."""
    roots = [p for p in tree.values() if p.ppid not in tree] or list(tree.values())
    root = min(roots, key=lambda p: p.pid)
    text = f"pid {root.pid} ({process_label(root)})"
    others = len(tree) - 1
    if others == 1:
        text += " and 1 worker"
    elif others > 1:
        text += f" and {others} workers"
    return text


def _cpu(p: ProcessStats) -> float:
    return p.cpu_user_seconds + p.cpu_system_seconds


def _rate(cur: float | None, prev: float | None, dt: float) -> float | None:
    if cur is None or prev is None or cur < prev:
        return None
    return (cur - prev) / dt


def _psi_rate(cur: HostReading, prev: HostReading, resource: str, dt: float) -> float | None:
    c = cur.pressure_stall_seconds.get(resource, {}).get("some")
    b = prev.pressure_stall_seconds.get(resource, {}).get("some")
    return _rate(c, b, dt)


@dataclass
class TreeRates:
    """Per-second figures of one tree over one host interval."""

    cpu_cores: float = 0.0
    pinned: tuple[float, ProcessStats] | None = None  # busiest thread's rate and its process
    quota: tuple[float, float] | None = None  # (cores used by the cgroup, quota) of the fullest cgroup
    throttled: float = 0.0  # cgroup throttled seconds per second, worst cgroup
    io_delay: float = 0.0
    blocked_threads: int = 0
    running_threads: int = 0


def tree_rates(tree: dict[int, ProcessStats], before: dict[int, ProcessStats], dt: float) -> TreeRates:
    r = _instant(tree)
    cgroups: dict[str, list[tuple[ProcessStats, ProcessStats]]] = {}
    for pid, p in tree.items():
        b = before.get(pid)
        if b is None or b.create_time != p.create_time:  # new process (or a reused pid): no delta yet
            continue
        cpu = _rate(_cpu(p), _cpu(b), dt)
        r.cpu_cores += cpu or 0.0
        thread = _rate(p.max_thread_cpu_seconds, b.max_thread_cpu_seconds, dt)
        if thread is not None and (r.pinned is None or thread > r.pinned[0]):
            r.pinned = (thread, p)
        r.io_delay += _rate(p.io_delay_seconds, b.io_delay_seconds, dt) or 0.0
        if p.cgroup_path is not None:
            cgroups.setdefault(p.cgroup_path, []).append((p, b))
    for pairs in cgroups.values():
        p, b = pairs[0]
        used = _rate(p.cgroup_cpu_usage_seconds, b.cgroup_cpu_usage_seconds, dt)
        if used is None:  # the cgroup's own counter is not readable: the tree's members in it
            used = sum(_rate(_cpu(q), _cpu(a), dt) or 0.0 for q, a in pairs)
        if p.cgroup_cpu_quota_cores and (r.quota is None or used / p.cgroup_cpu_quota_cores
                                         > r.quota[0] / r.quota[1]):
            r.quota = (used, p.cgroup_cpu_quota_cores)
        throttled = _rate(p.cgroup_cpu_throttled_seconds, b.cgroup_cpu_throttled_seconds, dt)
        r.throttled = max(r.throttled, throttled or 0.0)
    return r


def _instant(tree: dict[int, ProcessStats]) -> TreeRates:
    """What one reading shows without a previous one: thread states."""
    return TreeRates(blocked_threads=sum(p.threads_blocked_io for p in tree.values()),
                     running_threads=sum(p.threads_running for p in tree.values()))


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def classify(index: int, prev: HostReading | None, cur: HostReading | None, settings: SignalSettings,
             tree: dict[int, ProcessStats] | None = None) -> Verdict:
    """The cause of GPU ``index`` not executing between host readings ``prev`` and ``cur``.

    ``tree`` is GPU ``index``'s owner tree in ``cur`` where the caller has it already.
    """
    if cur is None:
        return Verdict(STARVED_OTHER, "no host reading")
    if tree is None:
        tree = owner_tree(cur, index)
    if not tree:
        return Verdict(STARVED_OTHER, "owner process not visible on the host")
    who = describe_tree(tree)
    dt = cur.timestamp - prev.timestamp if prev is not None else 0.0
    r = tree_rates(tree, prev.processes, dt) if prev is not None and dt > 0 else _instant(tree)
    s = settings

    if r.quota is not None and r.quota[0] >= s.host_quota_used_ratio * r.quota[1]:
        used, quota = r.quota
        amount = "their whole" if used >= 0.98 * quota else f"{used:.1f} of their"
        return Verdict(STARVED_HOST, f"{who} used {amount} {quota:g}-CPU quota")
    if r.throttled >= s.host_cgroup_throttled_ratio:
        return Verdict(STARVED_HOST, f"the cgroup of {who} was CPU-throttled {r.throttled:.2f} s per second")
    if cur.cpu_count and r.cpu_cores >= s.host_cores_used_ratio * cur.cpu_count:
        return Verdict(STARVED_HOST, f"{who} used {r.cpu_cores:.1f} of {cur.cpu_count} host CPUs")
    if r.pinned is not None and r.pinned[0] >= s.host_pinned_thread_ratio:
        p = r.pinned[1]
        return Verdict(STARVED_HOST, f"a thread of pid {p.pid} ({process_label(p)}) ran at "
                                     f"{_pct(r.pinned[0])} of one core")

    if r.blocked_threads >= s.io_blocked_threads:
        plural = "thread" if r.blocked_threads == 1 else "threads"
        return Verdict(STARVED_IO, f"{r.blocked_threads} {plural} of {who} in D state (waiting on I/O)")
    if r.io_delay >= s.io_delay_ratio:
        return Verdict(STARVED_IO, f"{who} waited on block I/O {r.io_delay:.2f} s per second")

    if prev is not None and dt > 0:
        cpu_psi = _psi_rate(cur, prev, "cpu", dt)
        if cpu_psi is not None and cpu_psi >= s.host_cpu_pressure_ratio \
                and r.running_threads >= s.host_pressure_min_running_threads:
            return Verdict(STARVED_HOST, f"host CPU pressure {_pct(cpu_psi)} while {r.running_threads} "
                                         f"threads of {who} waited to run")
        io_psi = _psi_rate(cur, prev, "io", dt)
        if io_psi is not None and io_psi >= s.io_pressure_ratio and r.io_delay > 0:
            return Verdict(STARVED_IO, f"host I/O pressure {_pct(io_psi)} while {who} waited on block I/O "
                                       f"{r.io_delay:.2f} s per second")
    return Verdict(STARVED_OTHER, f"{who} used {r.cpu_cores:.1f} CPUs")
