"""Run py-spy as a subprocess, and say clearly why it failed.

Only ever called from profiling worker threads or an API request's thread, never from
the sampler or a scrape. ``record`` always writes collapsed stacks (``--format raw``,
with ``--threads`` so each stack names its thread, and ``--subprocesses`` so data-loader
workers are included); ``render`` makes speedscope and SVG from them, because py-spy
writes one format per run and a process takes one ptrace sampler at a time.

Idle threads are left out by default (no ``--idle``): py-spy then keeps a sample only when
the kernel says the thread was running, so the stacks show where CPU time went. The
idle/active split is measured from the threads' CPU time instead (see summary.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.profiling.errors import (
    CaptureFailed,
    CaptureTimeout,
    NotPython,
    ProcessGone,
    ProfilingError,
    PtraceDenied,
    PySpyMissing,
)
from agent.profiling.procinfo import ProcInfo

GRACE_SECONDS = 20.0  # py-spy attach + write on top of the capture before it counts as hung
_SAMPLES = re.compile(r"Samples: (\d+) Errors: (\d+)")
_QUIET_ENV = {"RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0", "NO_COLOR": "1", "TERM": "dumb"}


@dataclass(frozen=True)
class RecordOptions:
    pid: int
    seconds: int
    rate_hz: int = 100
    subprocesses: bool = True
    native: bool = False
    idle: bool = False
    nonblocking: bool = False


@dataclass
class RecordResult:
    output: Path
    samples: int | None
    errors: int | None
    process_exited: bool
    stopped_early: bool
    wall_seconds: float
    warnings: list[str] = field(default_factory=list)


def hostpid_hint() -> str:
    return (
        "if the agent runs in a container it needs the host PID namespace to see GPU processes "
        "(Kubernetes: hostPID: true, as in deploy/kubernetes/overlays/profiling; Docker: --pid=host)"
    )


class PySpy:
    def __init__(self, path: str = "py-spy", procinfo: ProcInfo | None = None) -> None:
        self.path = path
        self.procinfo = procinfo or ProcInfo()

    # --- locating the binary -------------------------------------------------------------

    def binary(self) -> str:
        if os.sep in self.path:
            if os.path.isfile(self.path) and os.access(self.path, os.X_OK):
                return self.path
            raise PySpyMissing(
                f"py-spy not found at {self.path} (profiling.pyspy_path): install it with "
                "`pip install py-spy` (gpulse depends on it) or fix the path"
            )
        found = shutil.which(self.path)
        if found is None:
            raise PySpyMissing(
                f"py-spy is not installed or not on PATH (looked for {self.path!r}): install it with "
                "`pip install py-spy` (gpulse depends on it) or set profiling.pyspy_path to its full path"
            )
        return found

    def version(self) -> str | None:
        try:
            out = subprocess.run(
                [self.binary(), "--version"], capture_output=True, text=True, timeout=10, check=False
            )
        except (ProfilingError, OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None

    # --- checks before attaching ---------------------------------------------------------

    def require_process(self, pid: int) -> None:
        if not self.procinfo.exists(pid):
            raise ProcessGone(f"process {pid} does not exist (it may have exited); {hostpid_hint()}")

    # --- record ----------------------------------------------------------------------------

    def record_command(self, options: RecordOptions, output: Path) -> list[str]:
        cmd = [
            self.binary(),
            "record",
            "--pid",
            str(options.pid),
            "--duration",
            str(options.seconds),
            "--rate",
            str(options.rate_hz),
            "--format",
            "raw",
            "--threads",
            "--output",
            str(output),
        ]
        if options.subprocesses:
            cmd.append("--subprocesses")
        if options.native:
            cmd.append("--native")
        if options.idle:
            cmd.append("--idle")
        if options.nonblocking:
            cmd.append("--nonblocking")
        return cmd

    def record(
        self,
        options: RecordOptions,
        output: Path,
        *,
        stop: threading.Event | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> RecordResult:
        """Capture for ``options.seconds``. Setting ``stop`` ends it early and keeps what was sampled."""
        self.require_process(options.pid)
        cmd = self.record_command(options, output)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, **_QUIET_ENV},
                start_new_session=True,  # a Ctrl-C at the agent's terminal must not reach py-spy
            )
        except OSError as exc:
            raise PySpyMissing(
                f"could not run py-spy ({cmd[0]}): {exc}; reinstall it with `pip install py-spy`"
            ) from exc
        if on_start is not None:
            on_start()
        deadline = started + options.seconds + GRACE_SECONDS
        stopped_early = False
        interrupted = False
        stdout = stderr = ""
        try:
            while True:
                try:
                    stdout, stderr = proc.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if stop is not None and stop.is_set() and not interrupted:
                    # SIGINT is py-spy's Ctrl-C: it stops sampling and still writes the file.
                    proc.send_signal(signal.SIGINT)
                    interrupted = stopped_early = True
                    deadline = min(deadline, time.monotonic() + GRACE_SECONDS)
                if time.monotonic() > deadline:
                    raise CaptureTimeout(
                        f"py-spy did not finish within {options.seconds + GRACE_SECONDS:.0f} s for pid "
                        f"{options.pid} and was stopped; the process may be hung in the kernel or the "
                        "node overloaded"
                    )
        except BaseException:
            # A timeout, or Ctrl-C in `gpulse profile --direct`: py-spy runs in its own session
            # and would outlive us, still attached to the target.
            proc.kill()
            proc.communicate()
            raise
        wall = time.monotonic() - started
        if proc.returncode != 0 or not output.exists():
            raise self.classify(options.pid, proc.returncode, stderr, stdout)
        match = _SAMPLES.search(stdout)
        warnings = [
            line.split(">", 1)[-1].strip()
            for line in stdout.splitlines()
            if "behind in sampling" in line or "Failed to get stack trace" in line
        ]
        return RecordResult(
            output=output,
            samples=int(match.group(1)) if match else None,
            errors=int(match.group(2)) if match else None,
            process_exited="process exited" in stdout,
            stopped_early=stopped_early,
            wall_seconds=wall,
            warnings=warnings[:5],
        )

    # --- dump ----------------------------------------------------------------------------

    def dump(self, pid: int, *, native: bool = False, timeout: float = 10.0) -> list[dict[str, object]]:
        """The instant stacks of every thread of ``pid`` (py-spy dump --json), leaf frame first."""
        self.require_process(pid)
        cmd = [self.binary(), "dump", "--pid", str(pid), "--json"]
        if native:
            cmd.append("--native")
        try:
            out = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={**os.environ, **_QUIET_ENV},
            )
        except subprocess.TimeoutExpired as exc:
            raise CaptureTimeout(f"py-spy dump of pid {pid} did not answer within {timeout:.0f} s") from exc
        except OSError as exc:
            raise PySpyMissing(
                f"could not run py-spy ({cmd[0]}): {exc}; reinstall it with `pip install py-spy`"
            ) from exc
        if out.returncode != 0:
            raise self.classify(pid, out.returncode, out.stderr, out.stdout)
        try:
            threads = json.loads(out.stdout)
        except ValueError as exc:
            raise CaptureFailed(f"py-spy dump of pid {pid} printed no JSON: {out.stdout[:200]!r}") from exc
        return [_thread_entry(pid, thread) for thread in threads if isinstance(thread, dict)]

    # --- errors --------------------------------------------------------------------------

    def classify(self, pid: int, returncode: int | None, stderr: str, stdout: str = "") -> ProfilingError:
        text = f"{stderr}\n{stdout}"
        lowered = text.lower()
        detail = _error_lines(stderr) or _error_lines(stdout) or f"exit status {returncode}"
        if (
            "permission denied" in lowered
            or "operation not permitted" in lowered
            or "(os error 1)" in lowered
        ):
            return PtraceDenied(self.ptrace_explanation(pid))
        if not self.procinfo.exists(pid) or "no such process" in lowered or "(os error 3)" in lowered:
            return ProcessGone(f"process {pid} has exited or is not visible to the agent; {hostpid_hint()}")
        if "no python processes found" in lowered:
            comm = self.procinfo.comm(pid)
            name = f" ({comm})" if comm else ""
            return NotPython(
                f"pid {pid}{name} is not a Python process, and none of its children is: py-spy found no "
                "Python interpreter in the tree. Profile a Python process"
            )
        if "failed to find python version" in lowered or "failed to find a python interpreter" in lowered:
            comm = self.procinfo.comm(pid)
            name = f" ({comm})" if comm else ""
            return NotPython(
                f"pid {pid}{name} is not a Python process: py-spy found no Python interpreter in it. "
                "Profile the Python process itself (or its parent with subprocesses on)"
            )
        if "failed to get process executable name" in lowered:
            return ProcessGone(f"process {pid} has exited or is not visible to the agent; {hostpid_hint()}")
        if "unsupported version of python" in lowered or "unsupported python version" in lowered:
            return CaptureFailed(
                f"py-spy does not support the Python version of pid {pid}: upgrade py-spy ({detail})"
            )
        return CaptureFailed(f"py-spy failed on pid {pid}: {detail}")

    def ptrace_explanation(self, pid: int) -> str:
        reasons: list[str] = []
        cap = self.procinfo.has_cap_sys_ptrace()
        scope = self.procinfo.ptrace_scope()
        if cap is False:
            reasons.append(
                "the agent lacks CAP_SYS_PTRACE: add it (Kubernetes: securityContext.capabilities.add: "
                "[SYS_PTRACE], as the profiling overlay does; Docker: --cap-add SYS_PTRACE)"
            )
        if scope is not None and scope >= 1:
            meaning = {
                1: "only a process's ancestors may trace it, unless the tracer has CAP_SYS_PTRACE",
                2: "only tracers with CAP_SYS_PTRACE may attach",
                3: "ptrace is disabled until reboot",
            }.get(scope, "ptrace is restricted")
            fix = (
                "nothing short of a reboot re-enables it"
                if scope >= 3
                else "give the agent CAP_SYS_PTRACE, or lower it with `sysctl kernel.yama.ptrace_scope=0`"
            )
            reasons.append(f"kernel.yama.ptrace_scope is {scope} ({meaning}): {fix}")
        target_uid = self.procinfo.uid(pid)
        own_uid = os.getuid()
        if target_uid is not None and own_uid != 0 and target_uid != own_uid and not cap:
            reasons.append(
                f"pid {pid} belongs to uid {target_uid} and the agent runs as uid {own_uid}: "
                "run the agent as "
                "root or as the same user"
            )
        if not reasons:
            reasons.append(
                "the capability and kernel.yama.ptrace_scope look fine, so a seccomp profile or an LSM "
                "(AppArmor, SELinux) is likely blocking ptrace: allow ptrace for the agent's container; "
                f"and {hostpid_hint()}"
            )
        return f"py-spy may not attach to pid {pid} (ptrace not permitted): " + "; ".join(reasons)


def _error_lines(text: str) -> str:
    """py-spy's own error message without the Rust backtrace."""
    keep: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Stack backtrace"):
            break
        if stripped and not stripped.startswith("py-spy>"):
            keep.append(stripped)
    return " ".join(keep)[:500]


def _thread_entry(pid: int, thread: dict[str, object]) -> dict[str, object]:
    frames = thread.get("frames")
    frame_list = frames if isinstance(frames, list) else []
    return {
        "pid": thread.get("pid", pid),
        "thread_id": thread.get("thread_id"),
        "os_thread_id": thread.get("os_thread_id"),
        "thread_name": thread.get("thread_name"),
        "active": thread.get("active"),
        "owns_gil": thread.get("owns_gil"),
        "frames": [
            {
                "function": frame.get("name"),
                "file": frame.get("short_filename") or frame.get("filename"),
                "line": frame.get("line"),
            }
            for frame in frame_list
            if isinstance(frame, dict)
        ],
    }
