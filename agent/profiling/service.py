"""Wire profiling into a running agent: the manager, the starvation trigger, the token.

``attach(runtime)`` is called once when the agent starts (and lazily by the API if it was
not): it builds the ``ProfileManager`` over the runtime's store and node metrics, and,
when profiling and its trigger are enabled, adds the trigger to ``runtime.tick_listeners``
and its ``evidence`` to the diagnosis' ``runtime.signals.evidence_providers``.
With profiling off it builds nothing that touches the disk or py-spy.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from agent.profiling.errors import ProfilingError
from agent.profiling.manager import ProfileManager
from agent.profiling.settings import ProfilingSettings
from agent.profiling.trigger import StarvationTrigger

log = logging.getLogger(__name__)


class ProfilingService:
    def __init__(
        self,
        settings: ProfilingSettings,
        manager: ProfileManager | None = None,
        trigger: StarvationTrigger | None = None,
        error: str | None = None,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.trigger = trigger
        self.error = error  # why profiling is enabled but unusable (e.g. its directory)

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def token(self) -> str:
        """The bearer token, re-read from profiling.token_file each time so it can be rotated."""
        if self.settings.token is not None:
            return self.settings.token.get_secret_value()
        path = self.settings.token_file
        if not path:
            raise ProfilingError(
                "profiling has no token: set profiling.token or profiling.token_file",
                status=503,
                code="no_token",
            )
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().strip()
        except OSError as exc:
            raise ProfilingError(
                f"profiling.token_file {path} cannot be read ({exc.strerror}): fix its path or permissions",
                status=503,
                code="no_token",
            ) from exc
        if not value:
            raise ProfilingError(f"profiling.token_file {path} is empty", status=503, code="no_token")
        return value

    def evidence(self, index: int) -> str | None:
        return self.trigger.evidence(index) if self.trigger is not None else None

    def close(self) -> None:
        if self.manager is not None:
            self.manager.close()


def attach(runtime: Any, *, evidence_sink: MutableMapping[int, str] | None = None) -> ProfilingService:
    """The runtime's profiling service, built on first use: one trigger and one manager per runtime."""
    existing = getattr(runtime, "profiling_service", None)
    if isinstance(existing, ProfilingService):
        return existing
    service = _build(runtime, evidence_sink)
    try:
        runtime.profiling_service = service
    except AttributeError:  # a runtime stand-in that takes no attributes: nothing to remember it on
        pass
    return service


def _build(runtime: Any, evidence_sink: MutableMapping[int, str] | None) -> ProfilingService:
    settings: ProfilingSettings = runtime.settings.profiling
    if not settings.enabled:
        return ProfilingService(settings)
    node_metrics = getattr(runtime, "node_metrics", None)
    try:
        manager = ProfileManager(
            settings,
            latest=runtime.store.latest,
            count=node_metrics.inc if node_metrics is not None else None,
        )
    except ProfilingError as exc:
        # A bad profiling.directory must not stop the agent: profiling reports it instead.
        log.error("profiling is enabled but unusable: %s", exc.message)
        return ProfilingService(settings, error=exc.message)
    try:
        manager.pyspy.binary()
    except ProfilingError as exc:
        log.warning("profiling is enabled but captures will fail: %s", exc.message)
    trigger = None
    if settings.trigger.enabled:
        trigger = StarvationTrigger(settings, manager, runtime.clock, evidence_sink=evidence_sink)
        runtime.tick_listeners.append(trigger)
        # The diagnosis asks each provider (gpu index, window seconds) -> text, per request.
        providers = getattr(getattr(runtime, "signals", None), "evidence_providers", None)
        if isinstance(providers, list):
            providers.append(trigger.evidence)
    log.info(
        "profiling enabled: directory %s, starvation trigger %s",
        manager.files.root,
        "on" if trigger is not None else "off",
    )
    return ProfilingService(settings, manager, trigger)
