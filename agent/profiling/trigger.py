"""Profile a GPU's owning process tree when the GPU stays starved by host CPU.

A tick listener: it runs on the sampler thread after each snapshot, so it only does
arithmetic and, at most once per cooldown, hands a capture to the profile manager's
worker threads. A GPU whose interval is *predominantly* ``starved_host`` (at least
``trigger.min_share`` of it) extends its streak; any other interval, or a missing one,
ends the streak. When a streak reaches ``trigger.starved_host_seconds`` of clock time,
the tree is profiled for ``trigger.seconds`` — unless any capture is already running on
the node, or this GPU was profiled within ``trigger.cooldown_seconds``.

When the capture is done its summary becomes evidence for the diagnosis, e.g.
"62 % of worker samples in decode (PIL/Image.py:812)".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass

from agent.clock import Clock
from agent.profiling.errors import NoGpuOwner, ProcessGone, ProfilingError
from agent.profiling.manager import CaptureRequest, Profile, ProfileManager
from agent.profiling.settings import ProfilingSettings
from agent.profiling.summary import evidence as evidence_from_summary
from agent.snapshot import Snapshot

log = logging.getLogger(__name__)

STATE = "starved_host"
RETRY_SECONDS = 60.0  # after a capture could not start (no process yet, py-spy missing): try again later


@dataclass(frozen=True)
class Evidence:
    gpu: int
    text: str
    profile_id: str
    at: float  # clock seconds when the profile finished


class StarvationTrigger:
    def __init__(
        self,
        settings: ProfilingSettings,
        manager: ProfileManager,
        clock: Clock,
        *,
        evidence_sink: MutableMapping[int, str] | None = None,
    ) -> None:
        self.settings = settings.trigger
        self.manager = manager
        self.clock = clock
        self.evidence_sink = evidence_sink
        self._lock = threading.Lock()
        self._streak_start: dict[int, float] = {}
        self._last_fired: dict[int, float] = {}
        self._retry_after: dict[int, float] = {}
        self._running: dict[int, str] = {}  # gpu -> profile id of its triggered capture
        self._evidence: dict[int, Evidence] = {}

    # --- the tick listener ---------------------------------------------------------------

    def __call__(self, snapshot: Snapshot) -> None:
        self.on_tick(snapshot)

    def on_tick(self, snapshot: Snapshot) -> None:
        if not self.settings.enabled:
            return
        now = snapshot.timestamp
        due: list[int] = []
        with self._lock:
            self._expire_evidence(now)
            for index in list(self._streak_start):
                if index not in snapshot.signals:
                    del self._streak_start[index]
            for index, signals in snapshot.signals.items():
                dt = signals.dt
                share = signals.state_seconds.get(STATE, 0.0) / dt if dt > 0 else 0.0
                if share < self.settings.min_share:
                    self._streak_start.pop(index, None)
                    continue
                start = self._streak_start.setdefault(index, now - dt)
                if now - start >= self.settings.starved_host_seconds and self._may_fire(index, now):
                    due.append(index)
        if due and self.manager.active_count() == 0:
            self._fire(due[0], snapshot)  # one capture at a time on the node; the others wait a tick

    def _may_fire(self, index: int, now: float) -> bool:
        if index in self._running:
            return False
        last = self._last_fired.get(index)
        if last is not None and now - last < self.settings.cooldown_seconds:
            return False
        return now >= self._retry_after.get(index, float("-inf"))

    def _fire(self, index: int, snapshot: Snapshot) -> None:
        request = CaptureRequest(
            gpu=index,
            seconds=self.settings.seconds,
            rate_hz=self.settings.rate_hz,
            subprocesses=True,
            format=self.settings.format,
        )
        now = snapshot.timestamp
        try:
            profile = self.manager.submit(
                request, trigger="starvation", snapshot=snapshot, on_done=self._done
            )
        except (NoGpuOwner, ProcessGone) as exc:
            with self._lock:
                self._retry_after[index] = now + RETRY_SECONDS
            log.info("starvation trigger for GPU %d: not profiling now: %s", index, exc.message)
            return
        except ProfilingError as exc:
            with self._lock:
                self._retry_after[index] = now + RETRY_SECONDS
            log.warning("starvation trigger for GPU %d could not start a capture: %s", index, exc.message)
            return
        with self._lock:
            self._last_fired[index] = now
            self._running[index] = profile.id
        log.info(
            "GPU %d starved by host CPU for %.0f s: profiling pid %d for %d s (profile %s)",
            index,
            now - self._streak_start.get(index, now),
            profile.pid,
            profile.seconds,
            profile.id,
        )

    def _done(self, profile: Profile) -> None:
        gpu = profile.gpu
        if gpu is None:
            return
        with self._lock:
            self._running.pop(gpu, None)
        if profile.status != "done" or profile.summary is None:
            return
        text = evidence_from_summary(profile.summary)
        if text is None:
            return
        record = Evidence(gpu=gpu, text=text, profile_id=profile.id, at=self.clock.now())
        with self._lock:
            self._evidence[gpu] = record
        if self.evidence_sink is not None:
            self.evidence_sink[gpu] = text

    # --- what the diagnosis reads --------------------------------------------------------

    def evidence(self, index: int, window_seconds: float | None = None) -> str | None:
        """The latest triggered profile's finding for GPU ``index``.

        Also the diagnosis' evidence provider ``(gpu index, window seconds) -> text``: a finding
        is quoted while it is newer than the window or the cooldown, whichever is longer (no
        fresher profile can exist within the cooldown).
        """
        record = self.evidence_detail(index, window_seconds)
        return record.text if record is not None else None

    def evidence_detail(self, index: int, window_seconds: float | None = None) -> Evidence | None:
        with self._lock:
            record = self._evidence.get(index)
        if record is None:
            return None
        max_age = max(self._evidence_max_age(), window_seconds or 0.0)
        if self.clock.now() - record.at > max_age:
            return None
        return record

    def _evidence_max_age(self) -> float:
        return max(self.settings.cooldown_seconds, self.settings.starved_host_seconds)

    def _expire_evidence(self, now: float) -> None:
        for index, record in list(self._evidence.items()):
            if now - record.at > self._evidence_max_age():
                del self._evidence[index]
                if self.evidence_sink is not None and self.evidence_sink.get(index) == record.text:
                    self.evidence_sink.pop(index, None)

    def status(self) -> dict[str, object]:
        now = self.clock.now()
        with self._lock:
            return {
                "enabled": self.settings.enabled,
                "starved_for_seconds": {str(i): round(now - s, 1) for i, s in self._streak_start.items()},
                "last_fired": {str(i): t for i, t in self._last_fired.items()},
                "running": {str(i): pid for i, pid in self._running.items()},
                "evidence": {str(i): e.text for i, e in self._evidence.items()},
            }
