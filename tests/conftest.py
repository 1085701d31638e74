"""Fixtures shared across the test tree.

- ``live_server``: serve an ASGI app with a real uvicorn server on a loopback port in a
  thread (the httpx test-suite pattern) and hand back its base URL.
- ``scripted_gpu`` / ``static_host``: small in-process backends for the agent core's
  tests, whose devices can be told to block, fail, vanish and come back.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from agent.clock import Clock, MonotonicClock
from agent.model import DeviceStatus, GpuIdentity, GpuProcess, GpuReading, HostReading, XidEvent


class ThreadedServer(uvicorn.Server):
    """uvicorn without signal handlers, stoppable from the test thread."""

    def capture_signals(self) -> Any:  # type: ignore[override]
        import contextlib

        return contextlib.nullcontext()

    def base_url(self) -> str:
        port = self.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


@pytest.fixture
def live_server() -> Iterator[Callable[[Any], str]]:
    servers: list[tuple[ThreadedServer, threading.Thread]] = []

    def start(app: Any) -> str:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, log_level="warning", lifespan="off"
        )
        server = ThreadedServer(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        servers.append((server, thread))
        return server.base_url()

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(5)


class ScriptedGpu:
    """A ``GpuBackend`` with scripted devices: steady readings, plus block / fail / lose / restore."""

    def __init__(self, count: int = 2, clock: Clock | None = None, available: bool = True) -> None:
        self.clock = clock or MonotonicClock()
        self.count = count
        self.driver = available
        self._lock = threading.Lock()
        self._gates: dict[int, threading.Event] = {}
        self._lost: set[int] = set()
        self._errors: dict[int, Exception] = {}
        self._unsupported: set[str] = set()
        self._events: queue.Queue[XidEvent] = queue.Queue()
        self.energy: dict[int, float] = dict.fromkeys(range(count), 1000.0)
        self.reads: dict[int, int] = dict.fromkeys(range(count), 0)
        self.process_reads: dict[int, int] = dict.fromkeys(range(count), 0)
        self.start_calls = 0
        self.start_gate: threading.Event | None = None  # start() blocks until it is set
        self.closed = False
        self.util = 0.5
        self.processes: dict[int, list[GpuProcess]] = {}

    # --- scripting ---
    def block(self, index: int) -> threading.Event:
        """Reads of ``index`` block until the returned event is set (or ``unblock``)."""
        gate = threading.Event()
        with self._lock:
            self._gates[index] = gate
        return gate

    def unblock(self, index: int | None = None) -> None:
        with self._lock:
            for i in list(self._gates) if index is None else [index]:
                self._gates.pop(i).set()

    def lose(self, index: int) -> None:
        with self._lock:
            self._lost.add(index)

    def restore(self, index: int) -> None:
        with self._lock:
            self._lost.discard(index)
            self._errors.pop(index, None)

    def fail(self, index: int, error: Exception) -> None:
        with self._lock:
            self._errors[index] = error

    def unsupported(self, *fields: str) -> None:
        self._unsupported.update(fields)

    def emit_xid(self, index: int, xid: int) -> None:
        self._events.put(XidEvent(index, f"GPU-{index:04d}", xid, self.clock.now()))

    # --- GpuBackend ---
    @property
    def available(self) -> bool:
        return self.driver and self.start_calls > 0

    @property
    def status_message(self) -> str:
        return f"scripted driver, {self.count} GPUs" if self.driver else "no NVIDIA driver: host-only"

    def start(self) -> bool:
        self.start_calls += 1
        if self.start_gate is not None:
            self.start_gate.wait(60)
        return self.driver

    def close(self) -> None:
        self.closed = True

    def identities(self) -> list[GpuIdentity]:
        return [
            GpuIdentity(i, f"GPU-{i:04d}", "NVIDIA H100 80GB HBM3", f"00000000:{0x18 + i:02X}:00.0")
            for i in range(self.count)
        ]

    def read(self, index: int, *, processes: bool) -> GpuReading:
        with self._lock:
            gate = self._gates.get(index)
            lost = index in self._lost
            error = self._errors.get(index)
        if gate is not None:
            gate.wait(60)
        if error is not None:
            raise error
        now = self.clock.now()
        with self._lock:
            self.reads[index] += 1
            if processes:
                self.process_reads[index] += 1
            self.energy[index] += 100.0
        if lost:
            return GpuReading(index, f"GPU-{index:04d}", now, DeviceStatus.LOST, "GPU is lost")
        reading = GpuReading(
            index,
            f"GPU-{index:04d}",
            now,
            memory_total_bytes=80 * 2**30,
            memory_used_bytes=10 * 2**30,
            utilization_gpu_ratio=self.util,
            sm_active_ratio=self.util / 2,
            power_watts=300.0,
            power_limit_watts=700.0,
            energy_joules=self.energy[index],
            sm_clock_hz=1.98e9,
            temperatures_celsius={"gpu": 50.0},
        )
        for name in self._unsupported:
            setattr(reading, name, None)
        if processes:
            reading.processes = list(self.processes.get(index, []))
            reading.processes_timestamp = now
        return reading

    def wait_events(self, timeout_s: float) -> list[XidEvent]:
        try:
            first = self._events.get(timeout=timeout_s)
        except queue.Empty:
            return []
        events = [first]
        while not self._events.empty():
            events.append(self._events.get_nowait())
        return events


class StaticHost:
    """A ``HostSource`` with cumulative CPU seconds that grow by one per read."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or MonotonicClock()
        self.reads = 0
        self.last_gpu_pids: dict[int, tuple[int, ...]] = {}

    def read(self, gpu_pids: dict[int, tuple[int, ...]]) -> HostReading:
        self.reads += 1
        self.last_gpu_pids = gpu_pids
        return HostReading(
            self.clock.now(), cpu_count=2, cpu_seconds={"user": float(self.reads), "idle": 1.0}
        )


@pytest.fixture
def scripted_gpu() -> Iterator[type[ScriptedGpu]]:
    made: list[ScriptedGpu] = []

    class Tracked(ScriptedGpu):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    yield Tracked
    for gpu in made:
        gpu.unblock()  # release parked worker threads
        if gpu.start_gate is not None:
            gpu.start_gate.set()


@pytest.fixture
def static_host() -> type[StaticHost]:
    return StaticHost
