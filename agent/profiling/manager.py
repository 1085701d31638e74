"""Profiles: accepted, captured on worker threads, summarised, stored, listed, evicted.

A request is checked in full before it is accepted (limits, the PID rule, the process
exists, room for another capture), so most refusals are immediate and synchronous; what
can only fail during the capture (py-spy's own errors) ends as ``failed`` with the same
error code and message. Captures run on a pool of ``profiling.max_concurrent`` threads and
are refused beyond it (429), never queued without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agent.profiling import policy
from agent.profiling.capture import run_capture
from agent.profiling.errors import (
    InvalidRequest,
    PidBusy,
    ProfileNotFound,
    ProfileNotReady,
    ProfilingError,
    StorageError,
    TooManyCaptures,
)
from agent.profiling.procinfo import ProcInfo
from agent.profiling.pyspy import PySpy, RecordOptions
from agent.profiling.render import CONTENT_TYPES, EXTENSIONS, render
from agent.profiling.settings import ProfilingSettings
from agent.profiling.stacks import parse_text
from agent.profiling.storage import ID_PATTERN, META_SUFFIX, ProfileFiles, new_id
from agent.snapshot import Labels, Snapshot

log = logging.getLogger(__name__)

FORMATS = ("speedscope", "flamegraph", "raw")
RAW_SUFFIX = "collapsed.txt"
PROFILES_TOTAL = "gpulse_profiles_total"


@dataclass(frozen=True)
class CaptureRequest:
    pid: int | None = None
    gpu: int | None = None
    seconds: int | None = None  # None: profiling.default_seconds
    rate_hz: int | None = None  # None: profiling.default_rate_hz
    subprocesses: bool = True
    native: bool = False
    idle: bool = False
    nonblocking: bool = False
    format: str = "speedscope"


@dataclass
class Profile:
    id: str
    trigger: str
    pid: int
    gpu: int | None
    reason: str
    cmdline: str
    seconds: int
    rate_hz: int
    subprocesses: bool
    native: bool
    idle: bool
    format: str
    created_at: float  # wall-clock seconds since the epoch
    nonblocking: bool = False
    status: str = "queued"  # queued -> running -> done | failed
    started_at: float | None = None
    finished_at: float | None = None
    error: dict[str, str] | None = None
    summary: dict[str, object] | None = None
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    deleted: bool = False

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def progress(self, now: float | None = None) -> float:
        if self.status in ("done", "failed"):
            return 1.0
        if self.status != "running" or self.started_at is None:
            return 0.0
        elapsed = (now if now is not None else time.time()) - self.started_at
        return round(min(max(elapsed / self.seconds, 0.0), 0.99), 3)

    def to_dict(self, *, summary: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "status": self.status,
            "trigger": self.trigger,
            "target": {
                "pid": self.pid,
                "gpu": self.gpu,
                "cmdline": self.cmdline,
                "allowed_because": self.reason,
            },
            "seconds": self.seconds,
            "rate_hz": self.rate_hz,
            "subprocesses": self.subprocesses,
            "native": self.native,
            "idle": self.idle,
            "nonblocking": self.nonblocking,
            "format": self.format,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": self.progress(),
            "error": self.error,
            "bytes": self.bytes,
            "warnings": self.warnings,
            "download": f"/api/v1/profiles/{self.id}/download" if self.status == "done" else None,
        }
        if summary:
            out["summary"] = self.summary
        elif self.summary is not None:
            top = self.summary.get("top_self")
            out["top_function"] = top[0] if isinstance(top, list) and top else None
        return out

    def meta(self) -> dict[str, object]:
        out = self.to_dict(summary=True)
        out.pop("progress", None)
        out.pop("download", None)
        return out


@dataclass(frozen=True)
class Download:
    content_type: str
    filename: str
    path: Path | None = None
    content: str | None = None


CountFn = Callable[[str, Labels, float], None]


class ProfileManager:
    def __init__(
        self,
        settings: ProfilingSettings,
        *,
        latest: Callable[[], Snapshot | None] = lambda: None,
        count: CountFn | None = None,
        procinfo: ProcInfo | None = None,
        pyspy: PySpy | None = None,
        files: ProfileFiles | None = None,
    ) -> None:
        self.settings = settings
        self.latest = latest
        self._count = count
        self.procinfo = procinfo or ProcInfo()
        self.pyspy = pyspy or PySpy(settings.pyspy_path, self.procinfo)
        self.files = files or ProfileFiles(settings.directory)
        self._lock = threading.Lock()
        self._profiles: dict[str, Profile] = {}  # insertion order = creation order
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_concurrent, thread_name_prefix="gpulse-profile"
        )
        self._dump_slots = threading.BoundedSemaphore(settings.max_concurrent)
        self._closed = False
        self._load()

    # --- requests ------------------------------------------------------------------------

    def validate(self, request: CaptureRequest) -> tuple[int, int]:
        s = self.settings
        seconds = s.default_seconds if request.seconds is None else request.seconds
        rate = s.default_rate_hz if request.rate_hz is None else request.rate_hz
        if (request.pid is None) == (request.gpu is None):
            raise InvalidRequest('give exactly one of "pid" or "gpu"')
        if not 1 <= seconds <= s.max_seconds:
            raise InvalidRequest(
                f"seconds: {seconds} is out of range: a capture lasts 1 to {s.max_seconds} s "
                "(profiling.max_seconds)"
            )
        if not 1 <= rate <= s.max_rate_hz:
            raise InvalidRequest(
                f"rate_hz: {rate} is out of range: 1 to {s.max_rate_hz} (profiling.max_rate_hz)"
            )
        if request.format not in FORMATS:
            raise InvalidRequest(f"format: {request.format!r} is not one of {', '.join(FORMATS)}")
        return seconds, rate

    def resolve_target(self, request: CaptureRequest, snapshot: Snapshot | None) -> tuple[int, str]:
        if request.gpu is not None:
            pid = policy.owner_pid(request.gpu, snapshot, self.procinfo)
            reason = f"owns GPU {request.gpu}"
        else:
            assert request.pid is not None
            pid = request.pid
            if pid <= 0:
                raise InvalidRequest(f"pid: {pid} is not a process id")
            reason = (
                "profiling.allow_any_pid is true"
                if self.settings.allow_any_pid
                else policy.check_pid(pid, snapshot, self.procinfo)
            )
        self.pyspy.require_process(pid)
        return pid, reason

    def submit(
        self,
        request: CaptureRequest,
        *,
        trigger: str = "manual",
        snapshot: Snapshot | None = None,
        on_done: Callable[[Profile], None] | None = None,
    ) -> Profile:
        seconds, rate = self.validate(request)
        snap = snapshot if snapshot is not None else self.latest()
        pid, reason = self.resolve_target(request, snap)
        self.pyspy.binary()  # py-spy missing: say so now, not after a 202
        with self._lock:
            if self._closed:
                raise ProfilingError("the agent is shutting down", status=503, code="shutting_down")
            active = [p for p in self._profiles.values() if p.active]
            if len(active) >= self.settings.max_concurrent:
                raise TooManyCaptures(
                    f"{len(active)} captures are already queued or running, the most "
                    "profiling.max_concurrent "
                    f"({self.settings.max_concurrent}) allows: wait for one to finish (GET /api/v1/profiles)"
                )
            busy = self._overlapping(pid, request.subprocesses, active)
            if busy is not None:
                raise PidBusy(
                    f"pid {pid} is already being profiled by profile {busy.id} (a process takes one sampler "
                    "at a time): wait for it to finish"
                )
            profile = Profile(
                id=new_id(),
                trigger=trigger,
                pid=pid,
                gpu=request.gpu,
                reason=reason,
                cmdline=self.procinfo.cmdline(pid) or "",
                seconds=seconds,
                rate_hz=rate,
                subprocesses=request.subprocesses,
                native=request.native,
                idle=request.idle,
                nonblocking=request.nonblocking,
                format=request.format,
                created_at=time.time(),
            )
            self._profiles[profile.id] = profile
            self._executor.submit(self._run, profile, on_done)
        log.info("profile %s: %s s of pid %d (%s), trigger %s", profile.id, seconds, pid, reason, trigger)
        return profile

    def _overlapping(self, pid: int, subprocesses: bool, active: list[Profile]) -> Profile | None:
        ancestors: list[int] | None = None
        for other in active:
            if other.pid == pid:
                return other
            if other.subprocesses:
                ancestors = self.procinfo.ancestors(pid) if ancestors is None else ancestors
                if other.pid in ancestors:
                    return other
            if subprocesses and pid in self.procinfo.ancestors(other.pid):
                return other
        return None

    # --- the capture (worker thread) -----------------------------------------------------

    def _run(self, profile: Profile, on_done: Callable[[Profile], None] | None) -> None:
        with self._lock:
            if profile.deleted or self._closed:
                return
            profile.status = "running"
            profile.started_at = time.time()
        try:
            self._capture(profile)
            profile.status = "done"
            if self._count is not None and not profile.deleted:
                try:
                    self._count(PROFILES_TOTAL, (("trigger", profile.trigger),), 1.0)
                except Exception:  # a metrics hiccup must not lose the profile
                    log.exception("counting profile %s failed", profile.id)
        except ProfilingError as exc:
            profile.status = "failed"
            profile.error = exc.to_dict()
            log.warning("profile %s failed: %s", profile.id, exc.message)
        except Exception as exc:  # never let a worker die silently; the API reports it
            profile.status = "failed"
            message = f"unexpected error during the capture: {exc}"
            profile.error = {"error": "internal_error", "message": message, "detail": message}
            log.exception("profile %s failed", profile.id)
        finally:
            profile.finished_at = time.time()
            self._finish(profile)
        if on_done is not None:
            try:
                on_done(profile)
            except Exception:
                log.exception("profile %s: completion callback failed", profile.id)

    def _capture(self, profile: Profile) -> None:
        options = RecordOptions(
            pid=profile.pid,
            seconds=profile.seconds,
            rate_hz=profile.rate_hz,
            subprocesses=profile.subprocesses,
            native=profile.native,
            idle=profile.idle,
            nonblocking=profile.nonblocking,
        )
        raw_path = self.files.path(profile.id, RAW_SUFFIX)
        capture = run_capture(
            self.pyspy, self.procinfo, options, raw_path, stop=profile.stop, cmdline=profile.cmdline
        )
        profile.summary = capture.summary
        profile.warnings.extend(capture.warnings())
        if profile.format != "raw":
            text = render(profile.format, capture.stacks, rate_hz=profile.rate_hz, title=_title(profile))
            self.files.write_text(profile.id, EXTENSIONS[profile.format], text)

    def _finish(self, profile: Profile) -> None:
        with self._lock:
            if profile.deleted:
                self.files.delete(profile.id)
                return
            profile.bytes = self.files.size(profile.id)
            try:
                self.files.write_meta(profile.id, profile.meta())
            except OSError as exc:
                log.warning("profile %s: cannot write its metadata: %s", profile.id, exc)
            profile.bytes = self.files.size(profile.id)
            self._evict_locked(newest=profile)

    def _evict_locked(self, newest: Profile | None = None) -> None:
        s = self.settings
        stored = [p for p in self._profiles.values() if not p.active]
        total_bytes = sum(p.bytes for p in self._profiles.values())
        count = len(self._profiles)
        for victim in stored:  # oldest first
            if count <= s.max_profiles and total_bytes <= s.max_bytes:
                break
            if victim is newest:
                continue
            self._drop_locked(victim)
            count -= 1
            total_bytes -= victim.bytes
        if newest is not None and total_bytes > s.max_bytes and newest.bytes > s.max_bytes:
            # It cannot fit even alone: keep the record and the reason, not the files.
            self.files.delete(newest.id)
            total_bytes -= newest.bytes
            newest.bytes = 0
            newest.status = "failed"
            newest.error = StorageError(
                f"the profile took more than profiling.max_bytes ({s.max_bytes} bytes): "
                "capture for less time, at a lower rate, or raise the limit"
            ).to_dict()
            self.files.write_meta(newest.id, newest.meta())

    def _drop_locked(self, profile: Profile) -> None:
        profile.deleted = True
        self._profiles.pop(profile.id, None)
        self.files.delete(profile.id)
        log.info("profile %s evicted (profiling.max_profiles / max_bytes)", profile.id)

    # --- reading -------------------------------------------------------------------------

    def get(self, profile_id: str) -> Profile:
        with self._lock:
            profile = self._profiles.get(profile_id) if ID_PATTERN.match(profile_id) else None
        if profile is None:
            raise ProfileNotFound(f"no profile {profile_id!r} (it may have been deleted or evicted)")
        return profile

    def list(self) -> list[Profile]:
        with self._lock:
            return list(reversed(self._profiles.values()))  # newest first

    def active_count(self) -> int:
        with self._lock:
            return sum(1 for p in self._profiles.values() if p.active)

    def delete(self, profile_id: str) -> None:
        profile = self.get(profile_id)
        with self._lock:
            profile.deleted = True
            profile.stop.set()  # a running capture ends; the worker removes its files
            self._profiles.pop(profile.id, None)
            if not profile.active:
                self.files.delete(profile.id)

    def download(self, profile_id: str, fmt: str | None = None) -> Download:
        profile = self.get(profile_id)
        if profile.status != "done":
            detail = f": {profile.error['message']}" if profile.error else f" ({profile.status})"
            raise ProfileNotReady(f"profile {profile_id} has no file to download yet{detail}")
        fmt = fmt or profile.format
        if fmt not in FORMATS:
            raise InvalidRequest(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
        filename = f"gpulse-profile-{profile.id}.{EXTENSIONS[fmt]}"
        suffix = RAW_SUFFIX if fmt == "raw" else EXTENSIONS[fmt]
        path = self.files.path(profile.id, suffix)
        if path.is_file():
            return Download(CONTENT_TYPES[fmt], filename, path=path)
        raw = self.files.path(profile.id, RAW_SUFFIX)
        try:
            stacks = parse_text(raw.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            raise ProfileNotFound(
                f"profile {profile_id}'s files are gone from the profile directory"
            ) from exc
        content = render(fmt, stacks, rate_hz=profile.rate_hz, title=_title(profile))
        return Download(CONTENT_TYPES[fmt], filename, content=content)

    # --- instant stacks ------------------------------------------------------------------

    def stacks(self, pid: int, *, subprocesses: bool = False, native: bool = False) -> dict[str, object]:
        reason = (
            "profiling.allow_any_pid is true"
            if self.settings.allow_any_pid
            else policy.check_pid(pid, self.latest(), self.procinfo)
        )
        self.pyspy.require_process(pid)
        self.pyspy.binary()
        with self._lock:
            busy = self._overlapping(pid, subprocesses, [p for p in self._profiles.values() if p.active])
        if busy is not None:
            raise PidBusy(f"pid {pid} is being profiled by profile {busy.id}: its stacks are in that profile")
        if not self._dump_slots.acquire(blocking=False):
            raise TooManyCaptures(
                f"{self.settings.max_concurrent} stack dumps are already running "
                "(profiling.max_concurrent): retry"
            )
        try:
            pids = self.procinfo.tree(pid)[:32] if subprocesses else [pid]
            processes = []
            for target in pids:
                entry: dict[str, object] = {"pid": target, "cmdline": self.procinfo.cmdline(target) or ""}
                try:
                    entry["threads"] = self.pyspy.dump(
                        target, native=native, timeout=self.settings.dump_timeout_seconds
                    )
                except ProfilingError as exc:
                    if target == pid:
                        raise
                    entry["error"] = exc.to_dict()  # a child that is not Python (a shell, a compiler)
                processes.append(entry)
        finally:
            self._dump_slots.release()
        return {"pid": pid, "allowed_because": reason, "taken_at": time.time(), "processes": processes}

    # --- lifecycle -----------------------------------------------------------------------

    def _load(self) -> None:
        known: set[str] = set()
        for meta in self.files.load_metas():
            try:
                profile = _from_meta(meta)
            except (KeyError, TypeError, ValueError):
                continue
            if profile.active:
                profile.status = "failed"
                profile.error = {"error": "interrupted", "message": "the agent stopped during the capture"}
            profile.bytes = self.files.size(profile.id)
            self._profiles[profile.id] = profile
            known.add(profile.id)
        # Files a crashed run left without metadata are unreachable: remove them (ours only, by name).
        for path in self.files.root.iterdir():
            name = path.name
            profile_id = name.split(".", 1)[0]
            if ID_PATTERN.match(profile_id) and profile_id not in known and path.is_file():
                suffix = name[len(profile_id) :]
                if suffix in _OUR_SUFFIXES or suffix.endswith(".tmp"):
                    try:
                        path.unlink()
                    except OSError:
                        continue
        with self._lock:
            self._evict_locked()

    def close(self, timeout: float = 5.0) -> None:
        """Stop running captures (py-spy gets Ctrl-C and writes what it has) and the workers."""
        with self._lock:
            self._closed = True
            for profile in self._profiles.values():
                if profile.active:
                    profile.stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        while self.active_count() and time.monotonic() < deadline:
            time.sleep(0.05)


def _title(profile: Profile) -> str:
    return f"gpulse profile {profile.id}: pid {profile.pid} {profile.cmdline[:80]}".rstrip()


_OUR_SUFFIXES = {f".{RAW_SUFFIX}", ".speedscope.json", ".svg", META_SUFFIX}


def _from_meta(meta: dict[str, object]) -> Profile:
    target = meta["target"]
    assert isinstance(target, dict)
    return Profile(
        id=str(meta["id"]),
        trigger=str(meta.get("trigger", "manual")),
        pid=int(target["pid"]),
        gpu=None if target.get("gpu") is None else int(target["gpu"]),
        reason=str(target.get("allowed_because", "")),
        cmdline=str(target.get("cmdline", "")),
        seconds=int(meta["seconds"]),  # type: ignore[call-overload]
        rate_hz=int(meta["rate_hz"]),  # type: ignore[call-overload]
        subprocesses=bool(meta.get("subprocesses", True)),
        native=bool(meta.get("native", False)),
        idle=bool(meta.get("idle", False)),
        nonblocking=bool(meta.get("nonblocking", False)),
        format=str(meta.get("format", "speedscope")),
        created_at=float(meta["created_at"]),  # type: ignore[arg-type]
        status=str(meta.get("status", "failed")),
        started_at=meta.get("started_at"),  # type: ignore[arg-type]
        finished_at=meta.get("finished_at"),  # type: ignore[arg-type]
        error=meta.get("error"),  # type: ignore[arg-type]
        summary=meta.get("summary"),  # type: ignore[arg-type]
        warnings=list(meta.get("warnings") or []),  # type: ignore[call-overload]
    )
