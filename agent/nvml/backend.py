"""The NVML backend: the only module that imports pynvml (lazily, in ``start()``).

``NvmlBackend(nvml=None, clock=None)`` implements ``agent.backends.GpuBackend``. It takes
an ``nvml`` object with pynvml's function names — the ``pynvml`` module on a GPU node,
``FakeNvml`` in tests and the demo — and turns its calls into ``GpuReading`` values in
base units. What a device does not support stays ``None``; see ``agent.nvml.calls`` for
the error policy and docs/nvml.md for the calls made per tick.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

from agent.clock import Clock, MonotonicClock
from agent.model import DeviceStatus, GpuIdentity, GpuProcess, GpuReading, XidEvent
from agent.nvml import consts as C
from agent.nvml.calls import Caller, DeviceCalls, DeviceError, DeviceLost
from agent.nvml.fields import FieldPlan, sample_value
from agent.nvml.gpm import GpmWindow

log = logging.getLogger("gpulse.nvml")

NO_DRIVER = "no NVIDIA driver (libnvidia-ml.so.1 not found): host-only"
MHZ = 1e6
_CLOCKS = (("sm", C.CLOCK_SM), ("memory", C.CLOCK_MEM), ("graphics", C.CLOCK_GRAPHICS))
_BRANDS = {
    0: "unknown",
    1: "quadro",
    2: "tesla",
    3: "nvs",
    4: "grid",
    5: "geforce",
    6: "titan",
    12: "quadro_rtx",
    13: "nvidia_rtx",
    14: "nvidia",
}


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def handle_key(handle: Any) -> Any:
    """A hashable key for a device handle: its address for ctypes pointers."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return id(handle)


class _Device(DeviceCalls):
    def __init__(self, index: int, handle: Any, identity: GpuIdentity) -> None:
        super().__init__(index)
        self.handle = handle
        self.identity = identity
        self.lost_error: str | None = None
        self.fields = FieldPlan()
        self.gpm: GpmWindow | None = None
        # lastSeenTimeStamp of the utilization buffer: None before a baseline, 0 when it started empty
        self.samples_seen: int | None = None
        self.process_seen = 0
        self.static: dict[str, Any] = {}
        self.static_t: float | None = None
        self.health_t: float | None = None  # when the health counters were last asked for
        # byte counters integrated from GPM rates where the counter fields are missing
        self.synthetic: dict[str, float] = {}


class NvmlBackend:
    """Reads NVIDIA GPUs through NVML. See the module docstring and docs/nvml.md."""

    def __init__(
        self,
        nvml: Any | None = None,
        clock: Clock | None = None,
        *,
        static_refresh_s: float = 300.0,
        health_refresh_s: float = 5.0,
    ) -> None:
        self._nvml: Any = nvml  # the pynvml module once start() has imported it
        self._clock: Clock = clock or MonotonicClock()
        self._static_refresh_s = static_refresh_s
        self._health_refresh_s = health_refresh_s  # ECC, retired pages, remapped rows, PCIe replays
        self._available = False
        self._message = "NVML not started"
        self._caller: Caller | None = None
        self._devices: dict[int, _Device] = {}
        self._by_handle: dict[Any, int] = {}
        self._event_set: Any = None
        self._event_lock = threading.Lock()
        self._closing = threading.Event()
        self._started = False
        self._driver_version: str | None = None
        self._cuda_version: str | None = None

    # ------------------------------------------------------------------ protocol
    @property
    def available(self) -> bool:
        return self._available

    @property
    def status_message(self) -> str:
        return self._message

    def identities(self) -> list[GpuIdentity]:
        return [d.identity for d in sorted(self._devices.values(), key=lambda d: d.index)]

    def start(self) -> bool:
        if self._started:
            return self._available
        self._closing.clear()
        if self._nvml is None:
            try:
                import pynvml  # the one import of pynvml on the real path
            except ImportError:
                return self._unavailable("nvidia-ml-py is not installed: host-only")
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
        except OSError:
            return self._unavailable(NO_DRIVER)
        except Exception as e:
            code = getattr(e, "value", None)
            if code in (C.ERROR_LIBRARY_NOT_FOUND, C.ERROR_DRIVER_NOT_LOADED):
                return self._unavailable(NO_DRIVER)
            return self._unavailable(f"NVML initialisation failed ({e}): host-only")
        self._started = True
        caller = self._caller = Caller(self._nvml)
        try:
            count = int(self._nvml.nvmlDeviceGetCount())
            self._driver_version = self._system_text("nvmlSystemGetDriverVersion")
            cuda = self._system_value("nvmlSystemGetCudaDriverVersion")
            self._cuda_version = (
                f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) and cuda else None
            )
        except Exception as e:
            self._started = False
            self._shutdown_quietly()
            return self._unavailable(f"NVML initialisation failed ({e}): host-only")
        for index in range(count):
            self._enumerate(caller, index)
        self._create_event_set(caller)
        self._available = True
        readable = len(self._devices)
        gpus = f"{readable} GPU{'s' if readable != 1 else ''}" + (f" of {count}" if readable != count else "")
        self._message = (
            f"NVML driver {self._driver_version or '?'} (CUDA {self._cuda_version or '?'}), {gpus}"
        )
        log.info("%s", self._message)
        return True

    def read(self, index: int, *, processes: bool) -> GpuReading:
        now = self._clock.now()
        dev = self._devices.get(index)
        if dev is None or self._caller is None:
            return GpuReading(
                index=index,
                uuid="",
                timestamp=now,
                status=DeviceStatus.ERROR,
                error=f"no GPU with index {index}" if self._available else self._message,
            )
        if dev.lost_error is not None and not self._reacquire(dev):
            return GpuReading(
                index=index,
                uuid=dev.identity.uuid,
                timestamp=now,
                status=DeviceStatus.LOST,
                error=dev.lost_error,
            )
        reading = GpuReading(index=index, uuid=dev.identity.uuid, timestamp=now)
        try:
            self._read_into(self._caller, dev, reading, processes, now)
        except DeviceLost as e:
            if dev.lost_error is None:
                log.warning("GPU %d (%s) is lost: %s", index, dev.identity.uuid, e)
            dev.lost_error = str(e)
            if dev.gpm is not None:
                dev.gpm.reset()
            return GpuReading(
                index=index, uuid=dev.identity.uuid, timestamp=now, status=DeviceStatus.LOST, error=str(e)
            )
        except DeviceError as e:
            reading.status = DeviceStatus.ERROR
            reading.error = str(e)
        return reading

    def wait_events(self, timeout_s: float) -> list[XidEvent]:
        if self._event_set is None or self._closing.is_set():
            self._clock.wait(self._closing, timeout_s)
            return []
        events: list[XidEvent] = []
        failed = False
        with self._event_lock:
            es = self._event_set
            timeout_ms = max(0, int(timeout_s * 1000))
            while es is not None and len(events) < 1000:
                try:
                    data = self._nvml.nvmlEventSetWait_v2(es, timeout_ms)
                except Exception as e:
                    code = getattr(e, "value", None)
                    if code != C.ERROR_TIMEOUT and not self._closing.is_set():
                        failed = not events
                        assert self._caller is not None
                        self._caller.log_once(
                            ("event_wait", code), logging.WARNING, "waiting for NVML events failed (%s)", e
                        )
                    break
                event = self._event(data)
                if event is not None:
                    events.append(event)
                timeout_ms = 0  # drain what is queued, without waiting again
        if failed:
            self._clock.wait(self._closing, timeout_s)  # no busy loop on a failing event set
        return events

    def close(self) -> None:
        self._closing.set()
        if not self._started:
            return
        self._started = False
        self._available = False
        caller = self._caller
        for dev in self._devices.values():
            if dev.gpm is not None and caller is not None:
                dev.gpm.free(caller, dev)
        if self._event_set is not None and self._event_lock.acquire(timeout=1.0):
            try:
                self._nvml.nvmlEventSetFree(self._event_set)
            except Exception:
                pass
            finally:
                self._event_set = None
                self._event_lock.release()
        self._shutdown_quietly()
        self._message = "NVML shut down"

    # ------------------------------------------------------------------ start-up
    def _unavailable(self, message: str) -> bool:
        if message != self._message:  # the sampler retries start(): say it once, not every retry
            log.warning("%s", message)
        self._available = False
        self._message = message
        return False

    def _shutdown_quietly(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def _system_value(self, name: str) -> Any:
        fn = getattr(self._nvml, name, None)
        if fn is None:
            return None
        try:
            return fn()
        except Exception:
            return None

    def _system_text(self, name: str) -> str | None:
        value = self._system_value(name)
        return None if value is None else _text(value)

    def _enumerate(self, caller: Caller, index: int) -> None:
        probe = DeviceCalls(index)
        try:
            handle = caller.call(probe, "handle", "nvmlDeviceGetHandleByIndex", index, mandatory=True)
            if handle is None:
                raise DeviceError("nvmlDeviceGetHandleByIndex is not available")
            identity = self._identity(caller, probe, index, handle)
        except (DeviceLost, DeviceError) as e:
            log.warning("GPU %d cannot be read at start (%s): it is left out", index, e)
            return
        dev = _Device(index, handle, identity)
        dev.unsupported = probe.unsupported
        self._devices[index] = dev
        self._by_handle[handle_key(handle)] = index
        try:
            self._setup_gpm(caller, dev)
        except (DeviceLost, DeviceError) as e:
            log.warning("GPU %d: GPM not set up (%s)", index, e)

    def _identity(self, caller: Caller, dev: DeviceCalls, index: int, handle: Any) -> GpuIdentity:
        uuid = caller.call(dev, "uuid", "nvmlDeviceGetUUID", handle, mandatory=True)
        if uuid is None:
            raise DeviceError("nvmlDeviceGetUUID gave no UUID")
        name = caller.call(dev, "name", "nvmlDeviceGetName", handle)
        pci = caller.call(dev, "pci", "nvmlDeviceGetPciInfo", handle)
        serial = caller.call(dev, "serial", "nvmlDeviceGetSerial", handle)
        vbios = caller.call(dev, "vbios", "nvmlDeviceGetVbiosVersion", handle)
        cc = caller.call(dev, "compute_capability", "nvmlDeviceGetCudaComputeCapability", handle)
        mig = caller.call(dev, "mig_mode", "nvmlDeviceGetMigMode", handle)
        brand = caller.call(dev, "brand", "nvmlDeviceGetBrand", handle)
        mig_mode = bool(mig[0] == C.DEVICE_MIG_ENABLE) if mig is not None else None
        return GpuIdentity(
            index=index,
            uuid=_text(uuid),
            name=_text(name) if name is not None else "unknown",
            pci_bus_id=_text(pci.busId) if pci is not None else "",
            serial=_text(serial) if serial is not None else None,
            vbios_version=_text(vbios) if vbios is not None else None,
            driver_version=self._driver_version,
            cuda_driver_version=self._cuda_version,
            compute_capability=f"{cc[0]}.{cc[1]}" if cc is not None else None,
            mig_mode=mig_mode,
            brand=_BRANDS.get(int(brand), str(brand)) if brand is not None else None,
            mig_devices=self._mig_devices(caller, dev, handle) if mig_mode else (),
        )

    def _mig_devices(self, caller: Caller, dev: DeviceCalls, handle: Any) -> tuple[str, ...]:
        """The UUIDs of the MIG devices on a MIG-enabled GPU, in slot order (empty slots skipped).

        The kubelet names MIG devices by these UUIDs; attribution maps them to this GPU.
        NotSupported or a driver without the functions gives an empty tuple, never an error.
        """
        count = caller.call(dev, "mig_count", "nvmlDeviceGetMaxMigDeviceCount", handle)
        if not count:
            return ()
        uuids: list[str] = []
        for slot in range(int(count)):
            mig = caller.call(
                dev,
                "mig_handle",
                "nvmlDeviceGetMigDeviceHandleByIndex",
                handle,
                slot,
                quiet=(C.ERROR_NOT_FOUND,),  # an empty slot
            )
            if mig is None:
                if "mig_handle" in dev.unsupported or "nvmlDeviceGetMigDeviceHandleByIndex" in caller.missing:
                    break
                continue
            uuid = caller.call(dev, "mig_uuid", "nvmlDeviceGetUUID", mig)
            if uuid is not None:
                uuids.append(_text(uuid))
        return tuple(uuids)

    def _setup_gpm(self, caller: Caller, dev: _Device) -> None:
        if dev.identity.mig_mode:  # MIG instances need nvmlGpmMigSampleGet; not read here
            return
        if GpmWindow.supported(caller, dev, dev.handle):
            window = GpmWindow(caller, self._nvml)
            if window.allocate(caller, dev):
                dev.gpm = window

    def _create_event_set(self, caller: Caller) -> None:
        es = caller.call(DeviceCalls(-1), "event_set", "nvmlEventSetCreate")
        if es is None:
            return
        registered = 0
        for dev in self._devices.values():
            registered += self._register_xid(caller, dev, es)
        if registered:
            self._event_set = es
        else:
            try:
                self._nvml.nvmlEventSetFree(es)
            except Exception:
                pass

    def _register_xid(self, caller: Caller, dev: _Device, es: Any) -> int:
        try:
            supported = caller.call(dev, "events", "nvmlDeviceGetSupportedEventTypes", dev.handle)
            if supported is None or not int(supported) & C.EVENT_XID_CRITICAL:
                return 0
            done = caller.call(
                dev, "events", "nvmlDeviceRegisterEvents", dev.handle, C.EVENT_XID_CRITICAL, es, on_none=True
            )
        except (DeviceLost, DeviceError) as e:
            log.warning("GPU %d: XID events not registered (%s)", dev.index, e)
            return 0
        return 1 if done is True else 0

    def _event(self, data: Any) -> XidEvent | None:
        if not int(data.eventType) & C.EVENT_XID_CRITICAL:
            return None
        index = self._by_handle.get(handle_key(data.device))
        if index is None:
            assert self._caller is not None
            self._caller.log_once(("event_device",), logging.WARNING, "an XID event named an unknown device")
            return None
        dev = self._devices[index]
        return XidEvent(
            index=index, uuid=dev.identity.uuid, xid=int(data.eventData), timestamp=self._clock.now()
        )

    # ------------------------------------------------------------------ recovery
    def _reacquire(self, dev: _Device) -> bool:
        """Look the lost GPU up again by PCI bus id (its index may no longer resolve) and check it answers."""
        caller = self._caller
        assert caller is not None
        try:
            handle = None
            if dev.identity.pci_bus_id:
                handle = caller.call(
                    dev,
                    "handle_by_pci",
                    "nvmlDeviceGetHandleByPciBusId",
                    dev.identity.pci_bus_id,
                    mandatory=True,
                )
            if handle is None:  # no bus id or no lookup by bus id in this driver: fall back to the index
                handle = caller.call(dev, "handle", "nvmlDeviceGetHandleByIndex", dev.index, mandatory=True)
            if handle is None:
                return False
            identity = self._identity(caller, dev, dev.index, handle)
        except (DeviceLost, DeviceError):
            return False
        if identity.uuid != dev.identity.uuid:
            log.warning(
                "GPU %d at %s came back as %s (was %s)",
                dev.index,
                identity.pci_bus_id,
                identity.uuid,
                dev.identity.uuid,
            )
        log.info("GPU %d (%s) is back", dev.index, identity.uuid)
        self._by_handle.pop(handle_key(dev.handle), None)
        dev.handle = handle
        dev.identity = identity
        self._by_handle[handle_key(handle)] = dev.index
        dev.lost_error = None
        dev.static_t = None  # re-read limits and thresholds
        dev.health_t = None  # and the health counters, at once
        if self._event_set is not None:
            self._register_xid(caller, dev, self._event_set)
        return True

    # ------------------------------------------------------------------ one read
    def _read_into(self, caller: Caller, dev: _Device, r: GpuReading, processes: bool, now: float) -> None:
        h = dev.handle
        self._memory(caller, dev, h, r)
        util = caller.call(dev, "utilization", "nvmlDeviceGetUtilizationRates", h, mandatory=True)
        if util is not None:
            r.utilization_gpu_ratio = util.gpu / 100.0
            r.utilization_memory_ratio = util.memory / 100.0
        self._samples(caller, dev, h, r)
        rates = dev.gpm.read(dev, h, self._clock, r) if dev.gpm is not None else {}
        for name, ctype in _CLOCKS:
            mhz = caller.call(
                dev, f"clock:{name}", "nvmlDeviceGetClockInfo", h, ctype, mandatory=name == "sm"
            )
            if mhz is not None:
                setattr(r, f"{name}_clock_hz", mhz * MHZ)
        power = caller.call(dev, "power", "nvmlDeviceGetPowerUsage", h, mandatory=True)
        if power is not None:
            r.power_watts = power / 1000.0
        limit = caller.call(dev, "power_limit", "nvmlDeviceGetEnforcedPowerLimit", h)
        if limit is not None:
            r.power_limit_watts = limit / 1000.0
        temp = caller.call(
            dev, "temperature", "nvmlDeviceGetTemperature", h, C.TEMPERATURE_GPU, mandatory=True
        )
        if temp is not None:
            r.temperatures_celsius["gpu"] = float(temp)
        margin = caller.call(dev, "margin", "nvmlDeviceGetMarginTemperature", h)
        if margin is not None:
            r.temperature_margin_celsius = float(margin)
        pstate = caller.call(dev, "pstate", "nvmlDeviceGetPerformanceState", h)
        if pstate is not None and pstate != 32:  # 32 = unknown
            r.performance_state = int(pstate)
        reasons = caller.call(dev, "reasons", "nvmlDeviceGetCurrentClocksEventReasons", h)
        if reasons is not None:
            r.clock_event_reasons = int(reasons)
        # 5% slack: reads a whole interval apart come due on the intended one despite jitter
        health = dev.health_t is None or now - dev.health_t >= 0.95 * self._health_refresh_s
        dev.fields.read(caller, dev, h, r, health=health)
        if health:
            dev.health_t = now
        self._integrate_rates(dev, r, rates)
        if dev.static_t is None or now - dev.static_t >= self._static_refresh_s:
            self._read_static(caller, dev, h)
            dev.static_t = now
        self._apply_static(dev, r)
        self._fans(caller, dev, h, r)
        if processes:
            self._processes(caller, dev, h, r, now)

    def _memory(self, caller: Caller, dev: _Device, h: Any, r: GpuReading) -> None:
        mem = caller.call(
            dev,
            "memory_v2",
            "nvmlDeviceGetMemoryInfo",
            h,
            mandatory=True,
            absent=(C.ERROR_ARGUMENT_VERSION_MISMATCH,),
            missing_name="nvmlDeviceGetMemoryInfo_v2",
            version=C.MEMORY_V2_VERSION,
        )
        if mem is not None:
            r.memory_reserved_bytes = int(mem.reserved)
        else:
            mem = caller.call(dev, "memory", "nvmlDeviceGetMemoryInfo", h, mandatory=True)
        if mem is not None:
            r.memory_total_bytes = int(mem.total)
            r.memory_used_bytes = int(mem.used)
            r.memory_free_bytes = int(mem.free)

    def _samples(self, caller: Caller, dev: _Device, h: Any, r: GpuReading) -> None:
        """Mean of the high-rate utilization samples newer than the last ones seen."""
        result = caller.call(
            dev,
            "samples",
            "nvmlDeviceGetSamples",
            h,
            C.SAMPLING_GPU_UTILIZATION,
            dev.samples_seen or 0,
            quiet=(C.ERROR_NOT_FOUND,),
            quiet_value=(),
        )
        if result == ():
            # NotFound: nothing new (an idle GPU's buffer runs dry); utilization.gpu stands in. On the
            # first call it means the buffer is empty, so whatever arrives later is new.
            if dev.samples_seen is None:
                dev.samples_seen = 0
            return
        if not result:
            return
        value_type, samples = result
        if not samples:
            return
        first = dev.samples_seen is None
        dev.samples_seen = max(int(s.timeStamp) for s in samples)
        if first:
            return  # lastSeenTimeStamp 0 returns the whole buffer: only a baseline, not "since the last read"
        r.utilization_samples_ratio = sum(sample_value(value_type, s.sampleValue) for s in samples) / (
            100.0 * len(samples)
        )
        r.utilization_samples_count = len(samples)

    def _integrate_rates(self, dev: _Device, r: GpuReading, rates: dict[str, float]) -> None:
        """GPM byte rates stand in for PCIe/NVLink counters only where the counter fields are missing."""
        window = r.gpm_window_seconds
        for name, rate in rates.items():
            if getattr(r, name) is None and window:
                dev.synthetic[name] = dev.synthetic.get(name, 0.0) + rate * window
                setattr(r, name, int(dev.synthetic[name]))

    def _read_static(self, caller: Caller, dev: _Device, h: Any) -> None:
        s: dict[str, Any] = {}
        for name, ctype in _CLOCKS:
            s[f"{name}_max"] = caller.call(dev, f"max_clock:{name}", "nvmlDeviceGetMaxClockInfo", h, ctype)
        for name, ctype in _CLOCKS[:2]:
            s[f"{name}_app"] = caller.call(
                dev, f"app_clock:{name}", "nvmlDeviceGetClock", h, ctype, C.CLOCK_ID_APP_CLOCK_TARGET
            )
        s["thresholds"] = {
            label: value
            for threshold, label in C.THRESHOLD_NAMES.items()
            if (
                value := caller.call(
                    dev, f"threshold:{label}", "nvmlDeviceGetTemperatureThreshold", h, threshold
                )
            )
            is not None
        }
        s["constraints"] = caller.call(
            dev, "power_constraints", "nvmlDeviceGetPowerManagementLimitConstraints", h
        )
        s["default_limit"] = caller.call(dev, "power_default", "nvmlDeviceGetPowerManagementDefaultLimit", h)
        s["supported_reasons"] = caller.call(
            dev, "supported_reasons", "nvmlDeviceGetSupportedClocksEventReasons", h
        )
        s["fans"] = caller.call(dev, "fans", "nvmlDeviceGetNumFans", h)
        dev.static = s

    @staticmethod
    def _apply_static(dev: _Device, r: GpuReading) -> None:
        s = dev.static
        for name, _ in _CLOCKS:
            if s.get(f"{name}_max") is not None:
                setattr(r, f"{name}_clock_max_hz", s[f"{name}_max"] * MHZ)
        if s.get("sm_app") is not None:
            r.sm_clock_app_hz = s["sm_app"] * MHZ
        if s.get("memory_app") is not None:
            r.memory_clock_app_hz = s["memory_app"] * MHZ
        r.temperature_thresholds_celsius = {k: float(v) for k, v in s.get("thresholds", {}).items()}
        if s.get("constraints") is not None:
            r.power_min_limit_watts = s["constraints"][0] / 1000.0
            r.power_max_limit_watts = s["constraints"][1] / 1000.0
        if s.get("default_limit") is not None:
            r.power_default_limit_watts = s["default_limit"] / 1000.0
        if s.get("supported_reasons") is not None:
            r.supported_clock_event_reasons = int(s["supported_reasons"])

    def _fans(self, caller: Caller, dev: _Device, h: Any, r: GpuReading) -> None:
        for fan in range(int(dev.static.get("fans") or 0)):
            pct = caller.call(dev, f"fan:{fan}", "nvmlDeviceGetFanSpeed_v2", h, fan)
            if pct is not None:
                r.fan_speed_ratios[fan] = pct / 100.0

    def _processes(self, caller: Caller, dev: _Device, h: Any, r: GpuReading, now: float) -> None:
        procs = None
        for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2"):
            if name in caller.missing:
                continue  # an old driver without _v3: pynvml's unversioned call fails, try _v2
            procs = caller.call(dev, "processes", name, h)
            if name not in caller.missing:
                break
        if procs is None:
            return
        util = self._process_utilization(caller, dev, h)
        result = []
        for p in procs:
            pid = int(p.pid)
            used = p.usedGpuMemory
            sm, memory = util.get(pid, (0.0, 0.0)) if util is not None else (None, None)
            result.append(
                GpuProcess(
                    pid=pid,
                    used_memory_bytes=int(used) if used is not None else None,
                    sm_ratio=sm,
                    memory_util_ratio=memory,
                )
            )
        r.processes = result
        r.processes_timestamp = now

    def _process_utilization(
        self, caller: Caller, dev: _Device, h: Any
    ) -> dict[int, tuple[float, float]] | None:
        """pid -> (SM share, memory share) since the last poll; None where the device cannot say."""
        if not dev.process_seen and dev.samples_seen:
            dev.process_seen = max(0, dev.samples_seen - 1_000_000)  # 0 would average the whole stale buffer
        # NotFound = no new samples; a base NVMLError with value 0 = pynvml's sizing-call quirk, also "none"
        samples = caller.call(
            dev,
            "process_utilization",
            "nvmlDeviceGetProcessUtilization",
            h,
            dev.process_seen,
            quiet=(C.ERROR_NOT_FOUND, C.SUCCESS),
            quiet_value=[],
        )
        if samples is None:
            return None
        sums: dict[int, list[float]] = {}
        for s in samples:
            acc = sums.setdefault(int(s.pid), [0.0, 0.0, 0.0])
            acc[0] += s.smUtil
            acc[1] += s.memUtil
            acc[2] += 1
            dev.process_seen = max(dev.process_seen, int(s.timeStamp))
        return {pid: (sm / n / 100.0, mem / n / 100.0) for pid, (sm, mem, n) in sums.items()}
