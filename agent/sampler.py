"""The sampling loop: a fixed cadence, every device time-boxed and isolated.

Each tick (every ``interval_seconds`` of clock time, on a fixed grid: the next tick is
the previous one plus the interval, and ticks missed by a slow machine are skipped,
never bunched up):

1. every GPU whose previous call has finished gets a new ``read``, run by a small pool
   of reader threads (``agent.device_worker.WorkerPool``: a hung call parks one thread
   and the pool starts another); the host reader runs on its own thread; the
   compute-process list is asked for every ``process_interval_seconds``;
2. results are collected until the tick's deadline (half an interval);
3. a device whose call is still running yields nothing new this tick (its previous
   reading stands); once that call has been outstanding for ``device_timeout_intervals``
   intervals the device is reported ``unresponsive`` each tick until it answers again.
   A call that was declared unresponsive and then returns is discarded (its data is
   stale) and the next call starts afresh;
4. each new reading is stored and integrated into counters; the signal engine books
   the interval; the tick's ``Snapshot`` is built, rendered once for /metrics, and
   handed to the tick listeners.

Nothing on this path logs per tick: only changes (a device lost, back, unresponsive)
are logged. A failing part shows in ``Snapshot.collectors``; the loop never dies.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Protocol

from agent.device_worker import Batch, CallResult, DeviceWorker, WorkerPool, name_os_thread
from agent.heap import HeapFreezer
from agent.model import DeviceStatus, GpuIdentity, GpuProcess, GpuReading, HostReading, IntervalSignals
from agent.snapshot import CollectorStatus, CounterKey, Snapshot

if TYPE_CHECKING:
    from agent.runtime import Runtime

log = logging.getLogger(__name__)

COLLECT_FRACTION = 0.5  # results are awaited for this fraction of the interval
GPU_READER_THREADS = 4  # threads that read the GPUs (fewer when there are fewer GPUs); see WorkerPool
NVML_RETRY_SECONDS = 60.0  # without a driver, try again this often (a driver container may come up later)


class SignalEngineLike(Protocol):
    def interval(
        self, index: int, prev: GpuReading | None, cur: GpuReading, host: HostReading | None, dt: float
    ) -> IntervalSignals: ...

    def gauges(self, index: int, reading: GpuReading) -> dict[CounterKey, float]: ...


class NullSignalEngine:
    """The fallback when no signal engine is configured: books nothing, derives no gauges."""

    def interval(
        self, index: int, prev: GpuReading | None, cur: GpuReading, host: HostReading | None, dt: float
    ) -> IntervalSignals:
        return IntervalSignals(dt=dt)

    def gauges(self, index: int, reading: GpuReading) -> dict[CounterKey, float]:
        return {}


class _Slot:
    """What the sampler keeps per GPU between ticks."""

    __slots__ = (
        "declared",
        "gauges",
        "identity",
        "index",
        "last_error",
        "last_reading",
        "last_status",
        "last_success",
        "misses",
        "processes",
        "processes_at",
        "processes_requested",
        "signals",
        "status",
        "uuid",
        "worker",
    )

    def __init__(self, identity: GpuIdentity, worker: DeviceWorker) -> None:
        self.identity = identity
        self.index = identity.index
        self.uuid = identity.uuid
        self.worker = worker
        self.misses = 0  # consecutive collects that ended with this GPU's call still outstanding
        self.declared = False  # the outstanding call was declared unresponsive
        self.last_reading: GpuReading | None = None
        self.last_status: DeviceStatus | None = None
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.processes: list[GpuProcess] | None = None
        self.processes_at: float | None = None
        self.processes_requested = -math.inf
        self.signals: IntervalSignals | None = None
        self.gauges: dict[CounterKey, float] = {}
        self.status = CollectorStatus(False, 0.0, None, "not read yet")


MIN_UNRESPONSIVE_REAL_SECONDS = 1.0
MIN_MISSED_COLLECTS = 2  # a call must miss this many of the sampler's collects to count as hung


class Sampler:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._clock = runtime.clock
        self.interval = runtime.settings.interval_seconds
        self._timeout = runtime.settings.device_timeout_intervals * self.interval
        if self._clock.speed > 1:
            # A clock faster than real time (the demo's --speed) would turn a thread descheduled
            # for a moment on a busy machine into "unresponsive": keep at least this much real time.
            self._timeout = max(self._timeout, MIN_UNRESPONSIVE_REAL_SECONDS * self._clock.speed)
        self._process_interval = runtime.settings.process_interval_seconds
        self.stop_event = threading.Event()
        self.gpu_ready = threading.Event()  # set once NVML is up (the XID thread waits for it)
        self._batch = Batch()  # the calls handed out in this round of the tick
        self._nvml_worker = DeviceWorker("gpulse-nvml-init", self._clock)
        self._host_worker = DeviceWorker("gpulse-host", self._clock)
        self._slots: dict[int, _Slot] = {}
        self._gpu_pool: WorkerPool | None = None  # made when NVML comes up with GPUs to read
        self._identities: dict[int, GpuIdentity] = {}
        self._nvml_state = "pending"  # pending | up | down
        self._nvml_message = "initialising NVML"
        self._nvml_tried = -math.inf
        self._nvml_status = CollectorStatus(False, 0.0, None, "initialising")
        self._host_reading: HostReading | None = None
        self._host_status = CollectorStatus(False, 0.0, None, "not read yet")
        self._gpu_pids: dict[int, tuple[int, ...]] = {}
        self._render_status = CollectorStatus(False, 0.0, None, "not rendered yet")
        self._signals_failed = False
        self._warned: set[str] = set()
        self.ticks = 0
        self.last_tick: float | None = None  # clock time the last tick finished
        self.first_complete = False  # a tick has run with the NVML outcome known
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpulse-sampler", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self.stop_event.set()
        self._batch.cancel()

    @property
    def running(self) -> bool:
        """The sampling thread is alive (started and not yet stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        for worker in (self._nvml_worker, self._host_worker, *(s.worker for s in self._slots.values())):
            worker.stop()  # a worker blocked in a call stays parked; it is a daemon thread
        if self._gpu_pool is not None:
            self._gpu_pool.stop()
        return True

    def _run(self) -> None:
        name_os_thread("gpulse-sampler")
        clock = self._clock
        heap = HeapFreezer()
        next_tick = clock.now()
        while not self.stop_event.is_set():
            started = clock.now()
            try:
                self.tick()
            except Exception:  # a bug in one part must not stop sampling; healthz shows a stalled loop
                self._warn_once("tick", "sampling tick failed", exc_info=True)
            heap.maybe_run()  # between ticks, never inside one
            next_tick += self.interval
            if started >= next_tick:  # after a stall, the grid points it covered are skipped, not bunched
                next_tick += (math.floor((started - next_tick) / self.interval) + 1) * self.interval
            # a grid point that came due during this tick runs at once: it is late, not missed
            if clock.wait(self.stop_event, next_tick - clock.now()):
                break

    # --- one tick --------------------------------------------------------------------

    def tick(self) -> Snapshot:
        rt = self._rt
        clock = self._clock
        now = clock.now()
        self._batch = Batch()
        self._submit_nvml(now)
        host_late = self._host_worker.take()
        if host_late is not None:
            self._accept_host(host_late, late=True)
        self._host_worker.submit_in(self._batch, rt.host.read, self._gpu_pids)
        signals_cost = 0.0
        for slot in self._slots.values():
            late = slot.worker.take()  # answered after an earlier tick's deadline
            if late is not None:
                signals_cost += self._accept_result(slot, late)
            self._submit_read(slot, now)

        # The deadline is real time: the tick must end on time whatever the clock speed.
        deadline = time.monotonic() + COLLECT_FRACTION * self.interval / self._clock.speed
        self._collect(deadline)
        if self._take_nvml():  # NVML just came up: read the GPUs in this same tick
            self._batch = Batch()
            for slot in self._slots.values():
                self._submit_read(slot, now)
            self._collect(deadline)

        end = clock.now()
        result = self._host_worker.take()
        if result is not None:
            self._accept_host(result, late=False)
        elif self._host_worker.outstanding:
            self._host_status = CollectorStatus(
                False,
                self._host_status.duration_seconds,
                self._host_status.last_success,
                "host read missed its deadline",
            )
        for slot in self._slots.values():
            result = slot.worker.take()
            if result is not None:
                slot.misses = 0
                signals_cost += self._accept_result(slot, result)
            else:
                waited = slot.worker.outstanding_for(end)
                slot.misses = slot.misses + 1 if waited is not None else 0
                # Both: long enough on the clock, and missed by more than one of our own collects.
                # After the whole process was paused (a busy machine), the clock jumped for every
                # call alike; the first collect after the pause is no evidence against a GPU.
                if (waited is not None and waited >= self._timeout - 1e-6 * self.interval
                        and slot.misses >= MIN_MISSED_COLLECTS):
                    signals_cost += self._unresponsive(slot, end, waited)

        snapshot = self._build(now, signals_cost)
        self._publish(snapshot)
        self.ticks += 1
        self.last_tick = clock.now()
        if not self.first_complete and self._nvml_state != "pending":
            self.first_complete = all(slot.last_reading is not None for slot in self._slots.values())
        for listener in list(rt.tick_listeners):
            try:
                listener(snapshot)
            except Exception:
                self._warn_once(
                    f"listener:{id(listener)}", f"tick listener {listener!r} failed", exc_info=True
                )
        return snapshot

    # --- NVML start (time-boxed like every other call) --------------------------------

    @property
    def nvml_pending_for(self) -> float | None:
        """Clock seconds the first NVML initialisation has been running, None once it answered."""
        if self._nvml_state != "pending":
            return None
        return self._nvml_worker.outstanding_for(self._clock.now())

    def _submit_nvml(self, now: float) -> None:
        if self._nvml_state == "up" or now - self._nvml_tried < NVML_RETRY_SECONDS:
            return
        if self._nvml_worker.submit_in(self._batch, self._start_backend):
            self._nvml_tried = now

    def _start_backend(self) -> tuple[bool, str, list[GpuIdentity]]:
        gpu = self._rt.gpu
        available = bool(gpu.start())
        identities = gpu.identities() if available else []
        return available, gpu.status_message, identities

    def _take_nvml(self) -> bool:
        """Take the NVML start's outcome, if it came; True when the GPUs just became readable."""
        result = self._nvml_worker.take()
        if result is None:
            if self._nvml_worker.outstanding and self._nvml_state == "pending":
                self._nvml_status = CollectorStatus(False, 0.0, None, "NVML initialisation still running")
            return False
        if result.error is not None:
            available, message, identities = False, f"NVML start failed: {result.error}", []
        else:
            available, message, identities = result.value
        last_ok = self._clock.now() if available else self._nvml_status.last_success
        self._nvml_status = CollectorStatus(available, result.duration_seconds, last_ok, message)
        self._nvml_message = message
        if not available:
            if self._nvml_state != "down":  # the backend itself warns about the cause
                log.info("GPU sampling off (%s); trying again every %.0f s", message, NVML_RETRY_SECONDS)
            self._nvml_state = "down"
            return False
        self._nvml_state = "up"
        log.info("%s", message)
        set_identity = getattr(self._rt.signals, "set_identity", None)
        if identities and self._gpu_pool is None:
            # a call that has made no progress for a tenth of an interval (real time) counts as stuck
            stall = max(0.002, min(0.05, 0.1 * self.interval / self._clock.speed))
            self._gpu_pool = WorkerPool("gpulse-gpu", min(len(identities), GPU_READER_THREADS), stall)
        for identity in identities:
            worker = DeviceWorker(f"gpulse-gpu-{identity.index}", self._clock, self._gpu_pool)
            self._slots[identity.index] = _Slot(identity, worker)
            if set_identity is not None:
                set_identity(identity.index, identity)
        self._identities = {i.index: i for i in identities}
        self.gpu_ready.set()
        return True

    # --- GPUs -------------------------------------------------------------------------

    def _submit_read(self, slot: _Slot, now: float) -> None:
        processes = now - slot.processes_requested >= self._process_interval - 0.5 * self.interval
        if slot.worker.submit_in(self._batch, self._rt.gpu.read, slot.index, processes=processes):
            slot.declared = False
            if processes:
                slot.processes_requested = now

    def _accept_result(self, slot: _Slot, result: CallResult) -> float:
        """Turn a finished call into a stored reading; returns the real seconds spent on signals."""
        if slot.declared:
            slot.declared = False
            log.warning("GPU %d answered again after %.1f s", slot.index, result.duration_seconds)
            return 0.0  # stale: the device was reported unresponsive meanwhile
        if result.error is not None:
            message = f"{type(result.error).__name__}: {result.error}"
            reading = GpuReading(slot.index, slot.uuid, result.submitted, DeviceStatus.ERROR, message)
        else:
            reading = result.value
        ok = reading.status is DeviceStatus.OK
        slot.status = CollectorStatus(
            ok, result.duration_seconds, result.submitted if ok else slot.status.last_success, reading.error
        )
        return self._store(slot, reading)

    def _unresponsive(self, slot: _Slot, now: float, waited: float) -> float:
        slot.declared = True
        message = f"no answer for {waited:.1f} s"
        slot.status = CollectorStatus(False, waited / self._clock.speed, slot.status.last_success, message)
        return self._store(slot, GpuReading(slot.index, slot.uuid, now, DeviceStatus.UNRESPONSIVE, message))

    def _store(self, slot: _Slot, reading: GpuReading) -> float:
        prev = slot.last_reading
        if prev is not None and reading.timestamp <= prev.timestamp:
            return 0.0  # out of order (a late answer overtaken): never integrate backwards
        self._log_transition(slot, reading)
        if reading.status is DeviceStatus.OK:
            if reading.processes is not None:
                if _pids(slot.processes) != _pids(reading.processes):
                    self._gpu_pids_dirty(slot, reading.processes)
                slot.processes = reading.processes
                slot.processes_at = reading.processes_timestamp or reading.timestamp
            elif slot.processes is not None:  # carried between polls
                reading.processes = slot.processes
                reading.processes_timestamp = slot.processes_at
        elif slot.processes is not None:
            self._gpu_pids_dirty(slot, None)
            slot.processes = None
            slot.processes_requested = -math.inf  # ask again as soon as it answers
        prev = self._rt.store.add_reading(reading)
        slot.last_reading = reading
        if prev is None:
            return 0.0
        engine = self._rt.signals
        start = time.perf_counter()
        try:
            signals = engine.interval(
                slot.index, prev, reading, self._host_reading, reading.timestamp - prev.timestamp
            )
            self._rt.store.add_signals(slot.index, reading.timestamp, signals)
            slot.signals = signals
            slot.gauges = engine.gauges(slot.index, reading)
        except Exception:
            self._warn_once("signals", "signal engine failed", exc_info=True)
            self._signals_failed = True
        return time.perf_counter() - start

    def _log_transition(self, slot: _Slot, reading: GpuReading) -> None:
        """Log a change of a GPU's state once (never per tick: the unresponsive text counts seconds)."""
        if reading.status is slot.last_status and (
            reading.status is DeviceStatus.UNRESPONSIVE or reading.error == slot.last_error
        ):
            return
        if reading.status is DeviceStatus.OK:
            if slot.last_status is not None:
                log.warning("GPU %d (%s) is back", slot.index, slot.uuid)
        else:
            log.warning("GPU %d (%s) %s: %s", slot.index, slot.uuid, reading.status.value, reading.error)
        slot.last_status = reading.status
        slot.last_error = reading.error

    def _gpu_pids_dirty(self, slot: _Slot, processes: list[GpuProcess] | None) -> None:
        slot.processes = processes
        pids: dict[int, list[int]] = {}
        for other in self._slots.values():
            for proc in other.processes or ():
                pids.setdefault(proc.pid, []).append(other.index)
        self._gpu_pids = {
            pid: tuple(indices) for pid, indices in pids.items()
        }  # a new dict: the host thread reads the old

    # --- host -------------------------------------------------------------------------

    def _accept_host(self, result: CallResult, late: bool) -> None:
        if result.error is not None:
            message = f"{type(result.error).__name__}: {result.error}"
            self._warn_once(f"host:{message}", f"host read failed: {message}")
            self._host_status = CollectorStatus(
                False, result.duration_seconds, self._host_status.last_success, message
            )
            return
        reading: HostReading = result.value
        prev = self._host_reading
        if prev is not None and reading.timestamp <= prev.timestamp:
            return
        self._host_reading = reading
        self._rt.store.add_host(reading)
        problems = "; ".join(f"{part}: {err}" for part, err in reading.errors.items()) or None
        self._host_status = CollectorStatus(not late, result.duration_seconds, reading.timestamp, problems)

    # --- collection -------------------------------------------------------------------

    def _collect(self, deadline: float) -> None:
        """Wait until every call handed out this round has answered, or until ``deadline`` (monotonic)."""
        batch = self._batch
        batch.close()
        pool = self._gpu_pool
        # With GPUs, in slices: between them the pool may start a thread for calls stuck behind
        # hung ones. When every call answers within the first slice (the usual case) this is one wait.
        while not self.stop_event.is_set():
            if pool is not None:
                pool.rebalance()
            remaining = deadline - time.monotonic()
            wait = remaining if pool is None else min(remaining, pool.stall_seconds)
            if remaining <= 0 or batch.wait(wait):
                return

    # --- snapshot ---------------------------------------------------------------------

    def _build(self, now: float, signals_cost: float) -> Snapshot:
        rt = self._rt
        collectors: dict[str, CollectorStatus] = {"nvml": self._nvml_status, "host": self._host_status}
        readings: dict[int, GpuReading] = {}
        signals: dict[int, IntervalSignals] = {}
        counters: dict[int, dict[CounterKey, float]] = {}
        gauges: dict[int, dict[CounterKey, float]] = {}
        accumulator = rt.store.accumulator
        for index, slot in self._slots.items():
            collectors[f"gpu:{index}"] = slot.status
            if slot.last_reading is not None:
                readings[index] = slot.last_reading
            if slot.signals is not None:
                signals[index] = slot.signals
            counters[index] = accumulator.counters(index)
            gauges[index] = slot.gauges
        failed, self._signals_failed = self._signals_failed, False
        collectors["signals"] = CollectorStatus(not failed, signals_cost, None if failed else now)
        collectors["render"] = self._render_status
        rt.self_usage.update()  # the agent's own CPU and memory, before node metrics are copied
        xid_counts, xid_last_seen = rt.store.xids()
        events = rt.xid_status()
        if events is not None:
            collectors["events"] = events
        snapshot = Snapshot(
            timestamp=now,
            epoch=self._clock.epoch(),
            interval_seconds=self.interval,
            nvml_up=self._nvml_state == "up",
            nvml_message=self._nvml_message,
            identities=self._identities,
            readings=readings,
            signals=signals,
            gpu_counters=counters,
            gpu_gauges=gauges,
            node_counters=rt.node_metrics.counters(),
            node_gauges=rt.node_metrics.gauges(),
            xid_counts=xid_counts,
            xid_last_seen=xid_last_seen,
            host=self._host_reading,
            collectors=collectors,
            ticks=self.ticks + 1,
        )
        provider = rt.owners_provider
        if provider is not None:
            start = time.perf_counter()
            try:
                snapshot.owners.update(provider(snapshot))
                collectors["owners"] = CollectorStatus(True, time.perf_counter() - start, now)
            except Exception as exc:
                self._warn_once("owners", "owners provider failed", exc_info=True)
                collectors["owners"] = CollectorStatus(False, time.perf_counter() - start, None, str(exc))
        return snapshot

    def _publish(self, snapshot: Snapshot) -> None:
        rt = self._rt
        exposition = None
        if rt.renderer is not None:
            start = time.perf_counter()
            try:
                exposition = rt.renderer(snapshot)
                self._render_status = CollectorStatus(True, time.perf_counter() - start, snapshot.timestamp)
            except Exception as exc:
                self._warn_once("render", "rendering /metrics failed", exc_info=True)
                self._render_status = CollectorStatus(
                    False,
                    time.perf_counter() - start,
                    self._render_status.last_success,
                    f"{type(exc).__name__}: {exc}",
                )
            snapshot.collectors["render"] = self._render_status  # the API sees this tick's; /metrics the last
        rt.store.publish(snapshot, exposition)

    def _warn_once(self, key: str, message: str, exc_info: bool = False) -> None:
        if key in self._warned:
            return
        if len(self._warned) < 1000:
            self._warned.add(key)
        log.warning("%s (further occurrences are not logged)", message, exc_info=exc_info)


def _pids(processes: list[GpuProcess] | None) -> set[int]:
    return {p.pid for p in processes} if processes else set()
