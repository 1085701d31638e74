"""One capture, start to summary: thread CPU before, py-spy record, thread CPU after, summarise.

Shared by the agent's profile manager and ``gpulse profile --direct``, so both report
the same summary for the same process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.profiling.errors import StorageError
from agent.profiling.procinfo import ProcInfo, ThreadCpu
from agent.profiling.pyspy import PySpy, RecordOptions, RecordResult
from agent.profiling.stacks import Stack, parse_text
from agent.profiling.summary import ThreadActivity, summarize


@dataclass
class Capture:
    stacks: list[Stack]
    summary: dict[str, object]
    result: RecordResult

    def warnings(self) -> list[str]:
        out = []
        if self.result.process_exited:
            out.append("the process exited during the capture: the profile covers less time")
        if self.result.stopped_early:
            out.append("the capture was stopped early")
        out.extend(self.result.warnings)
        return out


def thread_cpu(procinfo: ProcInfo, pid: int, subprocesses: bool) -> dict[tuple[int, int], ThreadCpu]:
    pids = procinfo.tree(pid) if subprocesses else [pid]
    out: dict[tuple[int, int], ThreadCpu] = {}
    for member in pids:
        for tid, thread in procinfo.threads(member).items():
            out[(member, tid)] = thread
    return out


def activity(
    before: dict[tuple[int, int], ThreadCpu], after: dict[tuple[int, int], ThreadCpu], wall: float
) -> list[ThreadActivity]:
    out = []
    for key, end in after.items():
        start = before.get(key)
        if start is not None:
            cpu, observed = end.cpu_seconds - start.cpu_seconds, wall
        else:
            # Started during the capture (a respawned worker): all its CPU time falls inside it.
            cpu = end.cpu_seconds
            observed = min(wall, end.age_seconds) if end.age_seconds is not None else wall
        if observed > 0:
            out.append(ThreadActivity(key[0], key[1], end.name, max(cpu, 0.0), observed))
    return out


def run_capture(
    pyspy: PySpy,
    procinfo: ProcInfo,
    options: RecordOptions,
    raw_path: Path,
    *,
    stop: threading.Event | None = None,
    cmdline: str = "",
) -> Capture:
    marks: dict[str, float] = {}
    before: dict[tuple[int, int], ThreadCpu] = {}

    def started() -> None:
        # Read right after py-spy starts, so the CPU window matches the sampling window.
        before.update(thread_cpu(procinfo, options.pid, options.subprocesses))
        marks["t0"] = time.monotonic()

    result = pyspy.record(options, raw_path, stop=stop, on_start=started)
    after = thread_cpu(procinfo, options.pid, options.subprocesses)
    wall = time.monotonic() - marks.get("t0", time.monotonic() - result.wall_seconds)
    try:
        text = raw_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise StorageError(f"cannot read the capture back from {raw_path.parent}: {exc.strerror}") from exc
    stacks = parse_text(text)
    summary = summarize(
        stacks,
        root_pid=options.pid,
        rate_hz=options.rate_hz,
        duration_seconds=result.wall_seconds,
        includes_idle=options.idle,
        activity=activity(before, after, wall),
        cmdlines={options.pid: cmdline} if cmdline else None,
    )
    return Capture(stacks, summary, result)
