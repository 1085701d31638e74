"""Summarise collapsed stacks: where the samples went, per function, process and thread.

- *Self* samples of a function: samples whose leaf frame is that function (the CPU was in it).
- *Total* samples: samples with the function anywhere on the stack (counted once per sample,
  so recursion does not inflate it).
- Functions are keyed by name and file; the line shown is the one that collected the most
  samples, so ``decode (PIL/Image.py:812)`` points at the hot line of the hot function.
- *Workers* are the processes below the profiled one (data-loader workers, above all).
- The idle/active split comes from the kernel's per-thread CPU time over the capture
  (``ThreadActivity``): a thread that used 0.3 s of CPU in a 1 s capture was active (on a
  CPU) 30 % of it. py-spy's output does not mark idle samples, so the split is measured
  beside it rather than guessed from frame names (a ``time.sleep`` in user code looks
  like any other line). ``sampled_active_ratio`` is py-spy's view: the share of sampling
  ticks at which the thread was running *or runnable*. A thread high on that and low on
  CPU time was waiting for a CPU: the mark of a CPU-starved (throttled, oversubscribed)
  process.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from agent.profiling.stacks import Frame, Stack

NO_FRAMES = Frame("(no Python frames)", "", 0)  # a sample taken while the thread ran no Python code
TOP_N = 10
TOP_PER_THREAD = 3


@dataclass(frozen=True)
class ThreadActivity:
    pid: int
    tid: int
    name: str
    cpu_seconds: float  # CPU the thread used during the capture
    wall_seconds: float  # how long it was observed (the capture, or less if it started or ended within it)


FunctionKey = tuple[str, str]  # (function, file)


class _Tally:
    def __init__(self) -> None:
        self.samples = 0
        self.self_counts: Counter[FunctionKey] = Counter()
        self.total_counts: Counter[FunctionKey] = Counter()
        self.self_lines: dict[FunctionKey, Counter[int]] = defaultdict(Counter)
        self.total_lines: dict[FunctionKey, Counter[int]] = defaultdict(Counter)

    def add(self, stack: Stack) -> None:
        frames = stack.frames or (NO_FRAMES,)
        self.samples += stack.count
        leaf = frames[-1]
        self.self_counts[(leaf.function, leaf.file)] += stack.count
        self.self_lines[(leaf.function, leaf.file)][leaf.line] += stack.count
        seen: set[FunctionKey] = set()
        for frame in frames:
            key = (frame.function, frame.file)
            self.total_lines[key][frame.line] += stack.count
            if key not in seen:
                seen.add(key)
                self.total_counts[key] += stack.count

    def _row(self, key: FunctionKey, samples: int) -> dict[str, object]:
        # The hottest line where the function itself ran; for a function that only ever called
        # others, the line it called from most.
        lines = self.self_lines.get(key) or self.total_lines.get(key)
        line = lines.most_common(1)[0][0] if lines else 0
        frame = Frame(key[0], key[1], line)
        return {
            "function": key[0],
            "file": key[1],
            "line": line,
            "label": frame.label(),
            "samples": samples,
            "share": round(samples / self.samples, 4) if self.samples else 0.0,
        }

    def top_self(self, n: int) -> list[dict[str, object]]:
        return [self._row(key, count) for key, count in _ranked(self.self_counts, n)]

    def top_total(self, n: int) -> list[dict[str, object]]:
        return [self._row(key, count) for key, count in _ranked(self.total_counts, n)]


def _ranked(counts: Counter[FunctionKey], n: int) -> list[tuple[FunctionKey, int]]:
    # Ties broken by name so the same profile always summarises the same way.
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def _activity_fields(items: Iterable[ThreadActivity]) -> dict[str, object]:
    """On-CPU (active) and off-CPU (idle) thread-seconds, and the CPU cores the threads used."""
    active = idle = 0.0
    longest = 0.0
    count = 0
    for item in items:
        used = min(max(item.cpu_seconds, 0.0), item.wall_seconds)
        active += used
        idle += max(item.wall_seconds - used, 0.0)
        longest = max(longest, item.wall_seconds)
        count += 1
    total = active + idle
    return {
        "active_seconds": round(active, 3),
        "idle_seconds": round(idle, 3),
        "active_ratio": round(active / total, 4) if total > 0 else None,
        "cpu_cores": round(active / longest, 3) if longest > 0 else None,
        "threads": count,
    }


def summarize(
    stacks: Iterable[Stack],
    *,
    root_pid: int,
    rate_hz: int,
    duration_seconds: float,
    includes_idle: bool = False,
    activity: Iterable[ThreadActivity] = (),
    cmdlines: dict[int, str] | None = None,
) -> dict[str, object]:
    overall = _Tally()
    # Without --idle py-spy keeps a thread's sample only when the kernel shows it running or
    # runnable, so samples over sampling ticks is the share of time it wanted a CPU.
    ticks = rate_hz * duration_seconds
    workers = _Tally()
    per_process: dict[int, _Tally] = defaultdict(_Tally)
    per_thread: dict[tuple[int, int | None], _Tally] = defaultdict(_Tally)
    thread_names: dict[tuple[int, int | None], str] = {}
    names = dict(cmdlines or {})
    parents: dict[int, int] = {}

    for stack in stacks:
        process = stack.process
        pid = process.pid if process is not None else root_pid
        for outer, inner in zip(stack.processes, stack.processes[1:], strict=False):
            parents[inner.pid] = outer.pid
        for ref in stack.processes:
            names.setdefault(ref.pid, ref.cmdline)
        overall.add(stack)
        per_process[pid].add(stack)
        per_thread[(pid, stack.tid)].add(stack)
        thread_names.setdefault((pid, stack.tid), stack.thread_name)
        if pid != root_pid:
            workers.add(stack)

    activity_list = list(activity)
    activity_by_thread = {(a.pid, a.tid): a for a in activity_list}
    for a in activity_list:
        thread_names.setdefault((a.pid, a.tid), a.name)

    pids = sorted(
        set(per_process) | {a.pid for a in activity_list},
        key=lambda p: (p != root_pid, -per_process[p].samples if p in per_process else 0, p),
    )
    processes = []
    for pid in pids:
        tally = per_process.get(pid) or _Tally()
        tids = sorted(
            {tid for (p, tid) in per_thread if p == pid} | {a.tid for a in activity_list if a.pid == pid},
            key=lambda t: (-(per_thread[(pid, t)].samples if (pid, t) in per_thread else 0), t or 0),
        )
        threads = []
        for tid in tids:
            thread_tally = per_thread.get((pid, tid)) or _Tally()
            thread_activity = activity_by_thread.get((pid, tid)) if tid is not None else None
            threads.append(
                {
                    "tid": tid,
                    "name": thread_names.get((pid, tid), ""),
                    "samples": thread_tally.samples,
                    "share": round(thread_tally.samples / overall.samples, 4) if overall.samples else 0.0,
                    **(_activity_fields([thread_activity]) if thread_activity else {}),
                    "sampled_active_ratio": (
                        round(min(thread_tally.samples / ticks, 1.0), 4)
                        if ticks > 0 and not includes_idle
                        else None
                    ),
                    "top_self": thread_tally.top_self(TOP_PER_THREAD),
                }
            )
        process_activity = [a for a in activity_list if a.pid == pid]
        processes.append(
            {
                "pid": pid,
                "parent_pid": parents.get(pid),
                "cmdline": names.get(pid, ""),
                "role": "main" if pid == root_pid else "worker",
                "samples": tally.samples,
                "share": round(tally.samples / overall.samples, 4) if overall.samples else 0.0,
                **(_activity_fields(process_activity) if process_activity else {}),
                "top_self": tally.top_self(TOP_PER_THREAD),
                "threads": threads,
            }
        )

    return {
        "samples": overall.samples,
        "rate_hz": rate_hz,
        "duration_seconds": round(duration_seconds, 3),
        "includes_idle": includes_idle,
        "root_pid": root_pid,
        "top_self": overall.top_self(TOP_N),
        "top_total": overall.top_total(TOP_N),
        "workers": {
            "pids": sorted(p for p in per_process if p != root_pid),
            "samples": workers.samples,
            "share": round(workers.samples / overall.samples, 4) if overall.samples else 0.0,
            "top_self": workers.top_self(TOP_N),
        },
        "activity": {
            "source": "kernel CPU time of each thread during the capture",
            **_activity_fields(activity_list),
        },
        "processes": processes,
    }


def evidence(summary: dict[str, object], *, min_samples: int = 10) -> str | None:
    """One clause for the diagnosis: where the profiled tree's CPU went.

    Worker samples are quoted when there are any (starvation is usually the input pipeline),
    else the whole tree's. None when the capture holds too few samples to say anything.
    """
    workers = summary.get("workers")
    if (
        isinstance(workers, dict)
        and int(workers.get("samples", 0)) >= min_samples
        and workers.get("top_self")
    ):
        top = workers["top_self"][0]
        return f"{float(top['share']) * 100:.0f} % of worker samples in {top['label']}"
    samples = summary.get("samples")
    top_self = summary.get("top_self")
    if isinstance(samples, int) and samples >= min_samples and isinstance(top_self, list) and top_self:
        top = top_self[0]
        return (
            f"{float(top['share']) * 100:.0f} % of samples of pid {summary.get('root_pid')} in {top['label']}"
        )
    return None


def format_text(summary: dict[str, object], *, top: int = 10) -> str:
    """The summary as a few lines for a terminal."""
    lines: list[str] = []
    samples = summary.get("samples", 0)
    lines.append(
        f"{samples} samples at {summary.get('rate_hz')} Hz over {summary.get('duration_seconds')} s"
        + (" (idle stacks included)" if summary.get("includes_idle") else " (active threads only)")
    )
    activity = summary.get("activity")
    if isinstance(activity, dict) and activity.get("active_ratio") is not None:
        lines.append(
            f"threads active {float(activity['active_ratio']) * 100:.0f} % of the time "
            f"({activity['active_seconds']} s CPU, {activity['idle_seconds']} s idle "
            f"over {activity['threads']} threads)"
        )
    for title, key in (
        ("Top functions by self samples", "top_self"),
        ("Top functions by total samples", "top_total"),
    ):
        rows = summary.get(key)
        if isinstance(rows, list) and rows:
            lines.append("")
            lines.append(title + ":")
            for row in rows[:top]:
                lines.append(f"  {float(row['share']) * 100:5.1f} %  {row['samples']:>7}  {row['label']}")
    processes = summary.get("processes")
    if isinstance(processes, list) and processes:
        lines.append("")
        lines.append("Per process:")
        for proc in processes:
            ratio = proc.get("active_ratio")
            active = f", active {float(ratio) * 100:.0f} %" if ratio is not None else ""
            lines.append(
                f"  pid {proc['pid']} ({proc['role']}) {float(proc['share']) * 100:.1f} % of samples{active}"
                f"  {str(proc.get('cmdline', ''))[:80]}"
            )
            for thread in proc.get("threads", []):
                top_rows = thread.get("top_self") or []
                hot = f" — {top_rows[0]['label']}" if top_rows else ""
                t_ratio = thread.get("active_ratio")
                t_active = f", active {float(t_ratio) * 100:.0f} %" if t_ratio is not None else ""
                lines.append(
                    f"    thread {thread['tid']} {thread['name']}: {thread['samples']} samples{t_active}{hot}"
                )
    sentence = evidence(summary)
    if sentence:
        lines.append("")
        lines.append("In short: " + sentence)
    return "\n".join(lines)
