"""The running agent: settings, backends, clock, store, signal engine and the sampling threads.

``Runtime`` wires the parts together and is what every feature module reaches through
``request.app.state.runtime``; ``run_agent`` serves it over HTTP until SIGTERM/SIGINT,
then stops the sampler and shuts NVML down within two seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

import uvicorn

from agent.backends import GpuBackend, HostSource
from agent.clock import Clock
from agent.config import Settings, load_web_config, parse_listen
from agent.device_worker import name_os_thread
from agent.host.openfiles import OpenFiles, is_kernel_fs
from agent.sampler import NullSignalEngine, Sampler, SignalEngineLike
from agent.snapshot import CollectorStatus, CounterKey, Labels, Snapshot
from agent.specs import SpecTable
from agent.store import Store

log = logging.getLogger(__name__)

XID_WAIT_SECONDS = 0.5  # also bounds how long stop() waits for this thread (exit budget: 2 s)
HEALTHY_INTERVALS = 5.0  # /healthz fails when the loop has not ticked for this many intervals
STARTUP_GRACE_SECONDS = 120.0  # ... or, before the first tick, for this long (NVML init can be slow)


class NodeMetrics:
    """Node-level series other modules set (profiles taken, per-process series); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[CounterKey, float] = {}
        self._gauges: dict[CounterKey, float] = {}

    def inc(self, name: str, labels: Mapping[str, str] | Labels = (), value: float = 1.0) -> None:
        key = (name, _labels(labels))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def set(self, name: str, labels: Mapping[str, str] | Labels, value: float) -> None:
        key = (name, _labels(labels))
        with self._lock:
            self._gauges[key] = value

    def set_total(self, name: str, labels: Mapping[str, str] | Labels, value: float) -> None:
        """Set a counter to a total kept elsewhere (e.g. the kernel's CPU seconds of this process)."""
        key = (name, _labels(labels))
        with self._lock:
            self._counters[key] = value

    def remove(self, name: str, labels: Mapping[str, str] | Labels) -> None:
        """Drop a gauge series (e.g. a process that ended)."""
        key = (name, _labels(labels))
        with self._lock:
            self._gauges.pop(key, None)

    def replace(self, name: str, series: Mapping[Labels, float]) -> None:
        """Replace every gauge series of ``name`` at once: series not given expire."""
        with self._lock:
            for key in [k for k in self._gauges if k[0] == name]:
                del self._gauges[key]
            for labels, value in series.items():
                self._gauges[(name, labels)] = value

    def counters(self) -> dict[CounterKey, float]:
        with self._lock:
            return dict(self._counters)

    def gauges(self) -> dict[CounterKey, float]:
        with self._lock:
            return dict(self._gauges)


AGENT_RSS = "gpulse_agent_resident_memory_bytes"
AGENT_CPU = "gpulse_agent_cpu_seconds_total"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class SelfUsage:
    """The agent's own CPU seconds and resident memory, read once per tick into node metrics.

    CPU is ``os.times()`` (user + system of this process, all threads). Memory is the current
    resident set from ``/proc/self/statm`` (the agent's own /proc, whatever ``procfs`` names:
    that may be the host's, where "self" is not this process). ``getrusage``'s ``ru_maxrss``
    is the peak, not the current size, so where statm cannot be read no memory series is set.
    """

    def __init__(self, metrics: NodeMetrics, statm: str = "/proc/self/statm") -> None:
        self._metrics = metrics
        self._statm: str | None = statm
        self._files = OpenFiles(hold=is_kernel_fs(statm), limit=1)  # one pread per tick

    def update(self) -> None:
        times = os.times()
        self._metrics.set_total(AGENT_CPU, (), times.user + times.system)
        if self._statm is None:
            return
        try:
            resident_pages = int(self._files.read(self._statm).split()[1])
        except (OSError, ValueError, IndexError) as exc:
            log.info("no gpulse_agent_resident_memory_bytes: cannot read %s (%s)", self._statm, exc)
            self.close()
            self._statm = None  # not Linux, or /proc not mounted: do not try every tick
            return
        self._metrics.set(AGENT_RSS, (), float(resident_pages * _PAGE_SIZE))

    def close(self) -> None:
        self._files.close()


def _labels(labels: Mapping[str, str] | Labels) -> Labels:
    if isinstance(labels, Mapping):
        return tuple((str(k), str(v)) for k, v in labels.items())
    return tuple(labels)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        gpu: GpuBackend,
        host: HostSource,
        clock: Clock,
        signals: SignalEngineLike | None = None,
        renderer: Callable[[Snapshot], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.gpu = gpu
        self.host = host
        self.clock = clock
        self.spec_table = SpecTable(settings.spec_overrides())
        self.store = Store(settings.interval_seconds, settings.history_seconds)
        self.signals: SignalEngineLike = (
            signals if signals is not None else default_signal_engine(settings, self.spec_table)
        )
        # renders a Snapshot into an object with .negotiate(accept, accept_encoding) -> (bytes, headers)
        self.renderer = renderer if renderer is not None else default_renderer()
        self.node_metrics = NodeMetrics()
        self.self_usage = SelfUsage(self.node_metrics)
        self.tick_listeners: list[Callable[[Snapshot], None]] = []
        self.owners_provider: Callable[[Snapshot], dict[int, dict[str, object]]] | None = None
        # Parts with start() and close() that live as long as the runtime (the attributor);
        # profiling's attach() sets profiling_service. Both are closed by stop().
        self.parts: list[Any] = []
        self.profiling_service: Any = None
        self.started_at = clock.now()
        self.sampler = Sampler(self)
        self._xid_thread: threading.Thread | None = None
        self._xid_status: CollectorStatus | None = None
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------

    def add_part(self, part: Any) -> None:
        """Start ``part`` (anything with ``start()`` and ``close()``) with the runtime; close it on stop."""
        self.parts.append(part)

    def start(self) -> None:
        for part in self.parts:
            try:
                part.start()
            except Exception:  # a part that cannot start must not keep the agent from sampling
                log.warning("starting %s failed", type(part).__name__, exc_info=True)
        self.sampler.start()
        self._xid_thread = threading.Thread(target=self._xid_loop, name="gpulse-xid", daemon=True)
        self._xid_thread.start()

    def request_stop(self) -> None:
        """Tell every thread to stop; returns at once (safe from a signal handler)."""
        self.sampler.request_stop()

    def stop(self, timeout: float = 1.5) -> None:
        """Stop the threads, close the parts and profiling, shut NVML down, in about ``timeout`` seconds."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        self.request_stop()
        # Parts may wait on their own threads (the kubelet refresh, a py-spy writing its
        # profile): close them alongside the rest, time-boxed by the same deadline.
        closers = [_closer(part.close, type(part).__name__) for part in self.parts]
        if self.profiling_service is not None:
            closers.append(_closer(self.profiling_service.close, "profiling"))
        self.sampler.join(max(0.0, deadline - time.monotonic()) * 0.5)
        if self._xid_thread is not None:
            self._xid_thread.join(max(0.0, deadline - time.monotonic()) * 0.7)
        # nvmlShutdown may block like any call on a wedged driver: time-box it too.
        closers.append(_closer(self.gpu.close, "NVML"))
        host_close = getattr(self.host, "close", None)  # the host backend keeps /proc files open
        if callable(host_close):
            closers.append(_closer(host_close, "host"))
        if not self.sampler.running:
            self.self_usage.close()  # read on the sampler thread: only once that has stopped
        for name, thread in closers:
            thread.join(max(0.05, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("closing %s did not finish in time; exiting anyway", name)

    # --- XID events --------------------------------------------------------------------

    def _xid_loop(self) -> None:
        name_os_thread("gpulse-xid")
        stop = self.sampler.stop_event
        while not stop.is_set():
            if not self.sampler.gpu_ready.wait(0.2):
                continue
            start = time.monotonic()
            try:
                events = self.gpu.wait_events(XID_WAIT_SECONDS)
            except Exception as exc:
                if self._xid_status is None or self._xid_status.success:
                    log.warning("waiting for XID events failed: %s", exc)
                self._xid_status = CollectorStatus(False, 0.0, None, f"{type(exc).__name__}: {exc}")
                stop.wait(XID_WAIT_SECONDS)
                continue
            if self._xid_status is None or not self._xid_status.success:
                self._xid_status = CollectorStatus(True, 0.0, None)
            for event in events:
                age = max(0.0, self.clock.now() - event.timestamp)
                self.store.add_xid(event, self.clock.epoch() - age)
                log.warning("XID %d on GPU %d (%s)", event.xid, event.index, event.uuid)
            if not events and time.monotonic() - start < 0.05 * XID_WAIT_SECONDS:
                stop.wait(XID_WAIT_SECONDS)  # a backend without event support returns at once: do not spin

    def xid_status(self) -> CollectorStatus | None:
        return self._xid_status

    # --- health ------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """(healthy, why): healthy while the sampling loop keeps ticking."""
        now = self.clock.now()
        last = self.sampler.last_tick
        if last is None:
            waited = now - self.started_at
            if waited <= STARTUP_GRACE_SECONDS:
                return True, "starting: no tick yet"
            return False, f"sampling loop has not ticked since start {waited:.1f} s ago"
        age = now - last
        if age > HEALTHY_INTERVALS * self.settings.interval_seconds:
            return False, f"sampling loop has not ticked for {age:.1f} s"
        return True, f"last tick {age:.2f} s ago"

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """(ready, body): ready after the first complete sample; says host-only when there is no driver."""
        snapshot = self.store.latest()
        if not self.sampler.first_complete or snapshot is None:
            detail = "waiting for the first complete sample"
            if self.sampler.nvml_pending_for is not None:
                detail += f" (NVML initialisation running for {self.sampler.nvml_pending_for:.1f} s)"
            return False, {"status": "starting", "detail": detail}
        if not snapshot.nvml_up:
            return True, {"status": "ready", "mode": "host-only", "detail": snapshot.nvml_message, "gpus": 0}
        return True, {
            "status": "ready",
            "mode": "gpu",
            "detail": snapshot.nvml_message,
            "gpus": len(snapshot.identities),
        }


def _closer(close: Callable[[], Any], name: str) -> tuple[str, threading.Thread]:
    """Run ``close`` on a daemon thread of its own (a wedged one must not hold up the exit)."""

    def run() -> None:
        try:
            close()
        except Exception:
            log.warning("closing %s failed", name, exc_info=True)

    thread = threading.Thread(target=run, name=f"gpulse-close-{name.lower()}", daemon=True)
    thread.start()
    return name, thread


def default_signal_engine(settings: Settings, specs: SpecTable) -> SignalEngineLike:
    """The signals package's engine when it is installed, else the null engine."""
    try:
        from agent.signals.engine import SignalEngine
    except ModuleNotFoundError as exc:
        if exc.name != "agent.signals.engine":
            raise
        log.info("no signal engine: state seconds, throttle seconds and MFU are not booked")
        return NullSignalEngine()
    engine: SignalEngineLike = SignalEngine(settings.signals, specs)
    return engine


def default_renderer() -> Callable[[Snapshot], Any] | None:
    """The exporter's ``Renderer``: renders each tick and, on the sampler thread, also builds the
    bodies (gzip, OpenMetrics) scrapers recently asked for, so a scrape only looks up bytes."""
    try:
        from exporters.prometheus import Renderer
    except ModuleNotFoundError as exc:
        if exc.name != "exporters.prometheus":
            raise
        log.warning("exporters.prometheus is not installed: /metrics is unavailable")
        return None
    renderer: Callable[[Snapshot], Any] = Renderer()
    return renderer


# --- serving -------------------------------------------------------------------------------


def run_agent(runtime: Runtime, listen: str) -> int:
    """Serve ``runtime`` on ``listen`` (HOST:PORT) until SIGTERM/SIGINT; returns the exit status."""
    from agent.api.app import create_app

    host, port = parse_listen(listen)
    web = load_web_config(runtime.settings.web_config_file) if runtime.settings.web_config_file else None
    ssl: dict[str, Any] = {}
    if web is not None and web.tls:
        import ssl as ssl_module

        ssl = {"ssl_certfile": web.cert_file, "ssl_keyfile": web.key_file}
        if web.client_ca_file:
            ssl["ssl_ca_certs"] = web.client_ca_file
            ssl["ssl_cert_reqs"] = (
                ssl_module.CERT_REQUIRED if web.client_auth == "required" else ssl_module.CERT_OPTIONAL
            )
    config = uvicorn.Config(
        create_app(runtime),
        host=host,
        port=port,
        workers=1,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        server_header=False,
        **ssl,
    )
    scheme = "https" if ssl else "http"
    # Everything built so far (modules, the app, the runtime) lives as long as the process:
    # move it out of the garbage collector's sight so full collections stay short.
    gc.collect()
    gc.freeze()
    server = AgentServer(config, runtime, scheme)
    runtime.start()
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind
        return int(exc.code) if isinstance(exc.code, int) else 1
    finally:
        runtime.stop()
    return 0 if server.started else 1


class AgentServer(uvicorn.Server):
    """uvicorn's server with our signal handling: stop sampling at once, then exit 0 (no re-raise)."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, scheme: str = "http") -> None:
        super().__init__(config)
        self._runtime = runtime
        self._scheme = scheme
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        # uvicorn polls ten times a second for shutdown; an idle agent should not. Wake once a
        # second (the Date header's resolution) or at once when a signal arrives.
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # one pass = ten of uvicorn's 0.1 s ticks
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            should_exit = await self.on_tick(counter)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: Any) -> None:
        self._runtime.request_stop()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: do not wait for open connections
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # The address first (scripts take the word after "listening on"), then what is there.
            url = listening_url(self, self._scheme)
            where = "live page; metrics at /metrics, API docs at /docs"
            print(f"gpulse listening on {url} ({where})", flush=True)


def listening_url(server: Any, scheme: str) -> str:
    host, port = server.config.host, server.config.port
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            port = sock.getsockname()[1]
            break
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/"
