"""``gpulse profile``: profile a GPU process from the terminal.

Through the local agent's API (it applies the PID rule, the limits and the token, and
keeps the profile), or directly with py-spy when asked (``--direct``) or when no agent
answers. Prints the summary on stdout, a progress bar on stderr, and writes ``--output``.

    gpulse profile --gpu 3 --seconds 20 --output gpu3.svg
    gpulse profile --pid 4121 --direct --output train.speedscope.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from agent.profiling import policy
from agent.profiling.capture import run_capture
from agent.profiling.errors import ProfilingError
from agent.profiling.procinfo import ProcInfo
from agent.profiling.pyspy import PySpy, RecordOptions
from agent.profiling.render import render
from agent.profiling.summary import format_text
from agent.snapshot import Snapshot

DEFAULT_URL = "http://127.0.0.1:10835"
FORMATS = ("speedscope", "flamegraph", "raw")
POLL_SECONDS = 0.25


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class AgentUnreachable(Exception):
    pass


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "profile",
        help="profile a GPU process (or a GPU's owning process tree) with py-spy",
        description=(
            "Profile a Python process with py-spy: through the local agent (which checks the PID rule and "
            "the limits, needs the profiling token, and keeps the profile), or directly (--direct, or when "
            "no agent answers)."
        ),
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid", type=int, help="the process to profile")
    target.add_argument("--gpu", type=int, help="profile the process tree that owns this GPU (index)")
    parser.add_argument("--seconds", type=int, default=10, help="capture length (default 10)")
    parser.add_argument(
        "--rate", type=int, default=100, dest="rate_hz", help="samples per second (default 100)"
    )
    parser.add_argument(
        "--output", "-o", help="write the profile here (format from the extension unless --format)"
    )
    parser.add_argument("--format", choices=FORMATS, help="speedscope (default), flamegraph (SVG) or raw")
    parser.add_argument(
        "--url", default=os.environ.get("GPULSE_URL", DEFAULT_URL), help=f"the agent (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("GPULSE_PROFILING_TOKEN"),
        help="the profiling token (default: $GPULSE_PROFILING_TOKEN)",
    )
    parser.add_argument("--token-file", help="read the profiling token from this file")
    parser.add_argument("--direct", action="store_true", help="run py-spy here instead of asking the agent")
    parser.add_argument(
        "--no-subprocesses", action="store_false", dest="subprocesses", help="leave child processes out"
    )
    parser.add_argument("--native", action="store_true", help="include native (C/C++) frames")
    parser.add_argument("--idle", action="store_true", help="include idle threads' stacks")
    parser.add_argument(
        "--nonblocking",
        action="store_true",
        help="sample without pausing the process (less overhead, less exact)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)
    return parser


def format_for(output: str | None, explicit: str | None) -> str:
    if explicit:
        return explicit
    name = (output or "").lower()
    if name.endswith(".svg"):
        return "flamegraph"
    if name.endswith((".txt", ".raw", ".folded", ".collapsed")):
        return "raw"
    return "speedscope"


def run(args: argparse.Namespace) -> int:
    try:
        if not 1 <= args.seconds <= 3600:
            raise CliError(f"--seconds: {args.seconds} is out of range (1 to 3600)", code=2)
        fmt = format_for(args.output, args.format)
        summary = None
        if not args.direct:
            try:
                summary = _through_agent(args, fmt)
            except AgentUnreachable as exc:
                print(
                    f"gpulse profile: no agent answers at {args.url} ({exc}); running py-spy directly",
                    file=sys.stderr,
                )
        if summary is None:
            summary = _direct(args, fmt)
    except CliError as exc:
        print(f"gpulse profile: {exc.message}", file=sys.stderr)
        return exc.code
    except ProfilingError as exc:
        print(f"gpulse profile: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ngpulse profile: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_text(summary))
    if args.output:
        print(f"\nwrote {args.output} ({fmt})", file=sys.stderr)
    return 0


# --- through the agent --------------------------------------------------------------------


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"--token-file {args.token_file}: {exc.strerror}", code=2) from exc
    return args.token


def _request(
    method: str, url: str, token: str | None, body: dict[str, object] | None = None, timeout: float = 10.0
) -> tuple[int, bytes, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers or {})
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise AgentUnreachable(str(getattr(exc, "reason", exc))) from exc


def _message(status: int, payload: bytes) -> str:
    try:
        data = json.loads(payload)
    except ValueError:
        return f"HTTP {status}: {payload[:200].decode(errors='replace')}"
    if isinstance(data, dict) and "message" in data:
        return f"{data['message']} (HTTP {status})"
    return f"HTTP {status}: {data}"


def _through_agent(args: argparse.Namespace, fmt: str) -> dict[str, object]:
    base = args.url.rstrip("/")
    token = _token(args)
    body: dict[str, object] = {
        "seconds": args.seconds,
        "rate_hz": args.rate_hz,
        "subprocesses": args.subprocesses,
        "native": args.native,
        "idle": args.idle,
        "nonblocking": args.nonblocking,
        "format": fmt,
    }
    body["pid" if args.pid is not None else "gpu"] = args.pid if args.pid is not None else args.gpu
    status, payload, _ = _request("POST", f"{base}/api/v1/profiles", token, body)
    if status == 404 and b"profiling_disabled" in payload:
        raise CliError(_message(status, payload) + "; or profile without the agent: --direct --pid PID")
    if status == 401:
        raise CliError(_message(status, payload) + ": pass --token, --token-file or $GPULSE_PROFILING_TOKEN")
    if status != 202:
        raise CliError(_message(status, payload))
    profile_id = json.loads(payload)["id"]
    bar = ProgressBar(args.seconds)
    try:
        while True:
            status, payload, _ = _request("GET", f"{base}/api/v1/profiles/{profile_id}", token)
            if status != 200:
                raise CliError(_message(status, payload))
            profile = json.loads(payload)
            bar.update(float(profile.get("progress") or 0.0), profile.get("status", ""))
            if profile["status"] == "failed":
                bar.close()
                error = profile.get("error") or {}
                raise CliError(f"the capture failed: {error.get('message', 'unknown error')}")
            if profile["status"] == "done":
                bar.update(1.0, "done")
                bar.close()
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        bar.close()
        _request("DELETE", f"{base}/api/v1/profiles/{profile_id}", token)
        raise
    for warning in profile.get("warnings") or []:
        print(f"gpulse profile: warning: {warning}", file=sys.stderr)
    if args.output:
        status, payload, _ = _request(
            "GET", f"{base}/api/v1/profiles/{profile_id}/download?format={fmt}", token, timeout=60
        )
        if status != 200:
            raise CliError(_message(status, payload))
        Path(args.output).write_bytes(payload)
    print(f"profile {profile_id} kept by the agent: {base}/api/v1/profiles/{profile_id}", file=sys.stderr)
    summary = profile.get("summary")
    if not isinstance(summary, dict):
        raise CliError("the agent returned no summary")
    return summary


# --- directly -----------------------------------------------------------------------------


def gpu_owner(gpu: int, procinfo: ProcInfo) -> int:
    """The owning process of GPU ``gpu``, asked of NVML here (``--direct --gpu``)."""
    from agent.nvml.backend import NvmlBackend  # loads pynvml: only on this path

    backend = NvmlBackend()
    if not backend.start():
        raise CliError(f"--gpu {gpu}: {backend.status_message}; use --pid", code=1)
    try:
        identities = {identity.index: identity for identity in backend.identities()}
        if gpu not in identities:
            known = ", ".join(str(i) for i in sorted(identities)) or "none"
            raise CliError(f"--gpu {gpu}: no such GPU (GPUs: {known})", code=2)
        reading = backend.read(gpu, processes=True)
    finally:
        backend.close()
    snapshot = Snapshot(
        timestamp=reading.timestamp,
        epoch=time.time(),
        interval_seconds=0.0,
        nvml_up=True,
        nvml_message=backend.status_message,
        identities=identities,
        readings={gpu: reading},
    )
    return policy.owner_pid(gpu, snapshot, procinfo)


def _direct(args: argparse.Namespace, fmt: str) -> dict[str, object]:
    procinfo = ProcInfo()
    pyspy = PySpy(procinfo=procinfo)
    pid = args.pid if args.pid is not None else gpu_owner(args.gpu, procinfo)
    options = RecordOptions(
        pid=pid,
        seconds=args.seconds,
        rate_hz=args.rate_hz,
        subprocesses=args.subprocesses,
        native=args.native,
        idle=args.idle,
        nonblocking=args.nonblocking,
    )
    stop = threading.Event()
    bar = ProgressBar(args.seconds)
    ticker = threading.Thread(target=_tick, args=(bar, args.seconds, stop), daemon=True)
    with tempfile.TemporaryDirectory(prefix="gpulse-profile-") as tmp:
        raw_path = Path(tmp) / "stacks.txt"
        try:
            ticker.start()
            capture = run_capture(pyspy, procinfo, options, raw_path, cmdline=procinfo.cmdline(pid) or "")
        finally:
            stop.set()
            ticker.join(timeout=1)
            bar.close()
        if args.output:
            title = f"gpulse profile: pid {pid}"
            Path(args.output).write_text(
                render(fmt, capture.stacks, rate_hz=args.rate_hz, title=title), encoding="utf-8"
            )
    for warning in capture.warnings():
        print(f"gpulse profile: warning: {warning}", file=sys.stderr)
    return capture.summary


def _tick(bar: ProgressBar, seconds: int, stop: threading.Event) -> None:
    start = time.monotonic()
    while not stop.wait(POLL_SECONDS):
        bar.update(min((time.monotonic() - start) / seconds, 0.99), "running")


class ProgressBar:
    """A one-line bar on stderr; silent when stderr is not a terminal (logs stay clean)."""

    def __init__(self, seconds: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.seconds = seconds
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = self.stream.isatty()
        self._drawn = False

    def update(self, fraction: float, status: str) -> None:
        if not self.enabled:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {fraction * 100:3.0f} % of {self.seconds} s  {status:<8}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
