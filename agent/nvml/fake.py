"""A fake NVML: pynvml's function names over modelled GPUs (``DeviceModel``).

``FakeNvml(models, clock)`` is passed to ``NvmlBackend`` instead of the ``pynvml``
module. Every function returns what pynvml would return — the real ctypes structs
(``c_nvmlMemory_v2_t``, ``c_nvmlFieldValue_t`` arrays, ``c_nvmlSample_t`` lists,
``c_nvmlGpmMetricsGet_t`` filled in place, ``c_nvmlEventData_t`` ...) and pynvml's
"friendly objects" for process lists — and raises the real ``pynvml.NVMLError(code)``
subclasses, so the backend code that runs here is the code that runs on a GPU node.
Attributes the fake does not define (constants, struct classes, error classes) come
from pynvml; a pynvml *function* it does not implement raises ``FunctionNotFound``,
like a driver that lacks it.

NVML semantics presented over a model (``agent.sim.device``):

* ``utilization.gpu`` = ``activity(t - 1/6 s, t).busy``; the ``GPU_UTILIZATION``
  sample buffer holds one sample per 1/6 s slot (timestamps in µs on ``clock.epoch()``),
  returns only slots newer than ``lastSeenTimeStamp`` and raises ``NotFound`` when none;
* GPM metrics = ``activity`` between the clock times of the two GPM samples;
* violation counters in ns, energy in mJ, power in mW, clocks in MHz, as NVML reports;
* XIDs from ``snapshot.xids`` are delivered once each through an event set;
  ``nvmlEventSetWait_v2`` blocks up to its timeout (clock milliseconds, so real time
  divided by ``clock.speed``) and then raises ``Timeout``. Like the driver's wait it
  sleeps until something happens: the next XID a model has scheduled, a model saying
  that its XIDs changed, ``nvmlShutdown`` or ``release()``. A model *publishes* its
  XIDs with an ``xids`` list ``[(clock time, xid), ...]``, past and scheduled, sorted
  (``snapshot(t).xids`` is the part up to ``t``), and may offer ``watch_xids(callback)``,
  calling ``callback()`` when that list changes (``SteadyDevice.add_xid`` does). Published
  lists are checked without building snapshots; a model that publishes nothing is
  asked for a snapshot every ``EVENT_POLL_S`` while a wait blocks;
* MIG: an identity with ``mig_uuids`` reports MIG mode enabled, 7 MIG slots, a handle per
  occupied slot (``NotFound`` for an empty one) whose ``nvmlDeviceGetUUID`` is the MIG
  device's UUID; other functions do not accept MIG handles (``InvalidArgument``);
* what the spec lacks raises ``NotSupported``: GPM without ``spec.has_gpm``, NVLink
  without ``has_nvlink``, remapped rows without ``has_row_remapping``, ECC without ``has_ecc``.

Calls on one device within ``snapshot_max_age_s`` of clock time share one model
snapshot (a read makes about fifteen calls); a model whose ``revision`` attribute changes
(``SteadyDevice`` bumps it on every toggle) gets a fresh snapshot at once. What the fake
derives from an ``Activity`` (percentages, GPM ratios) is kept while the model hands back
the very same object (a frozen dataclass: ``SteadyDevice`` returns one per revision), and
result arrays are written with one ``struct`` call each.

Faults: ``snapshot.lost`` makes every device call raise ``GpuIsLost`` (and the lookup
by index ``Unknown``, as seen on real nodes); ``snapshot.hang_until`` blocks a call until
the clock passes it. Test hooks: ``fail()``, ``fail_field()``, ``clear_faults()``, ``block()``,
``remove_function()``, ``release()``, ``library_missing=True``; ``calls[index][function]``
counts device calls and ``system_calls[function]`` the others (and calls of missing functions).
"""

from __future__ import annotations

import collections
import ctypes
import math
import struct
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pynvml

from agent.clock import Clock
from agent.nvml import consts as C
from agent.nvml.fake_fields import FIELDS, FieldFn, FieldUnsupported
from agent.nvml.layout import raw_bytes, struct_for
from agent.sim.device import Activity, DeviceModel, DeviceSnapshot

SAMPLE_PERIOD_S = 1.0 / 6.0  # the high-rate utilization buffer's slot length
SAMPLE_BUFFER_LEN = 120  # slots kept by the "driver" (20 s)
# real seconds between checks of models that do not publish their XIDs while an event wait blocks
# (the agent waits 0.5 s at a time and checks at the start of every wait anyway)
EVENT_POLL_S = 0.5
EVENT_MIN_SLEEP_S = 0.001  # real seconds: no event wait looks again sooner (snapshot_max_age_s may be 0)

_ALL_REASONS = 0x1FF
_PCI_DEVICE_IDS = {
    "hopper": 0x233010DE,
    "blackwell": 0x290110DE,
    "ampere": 0x20B210DE,
    "ada": 0x26B910DE,
    "turing": 0x1EB810DE,
    "volta": 0x1DB510DE,
}
_MIB = float(1 << 20)
_MIG_CAPABLE = ("A100", "H100", "H200", "B200")
_MIG_SLOTS = 7  # nvmlDeviceGetMaxMigDeviceCount on a MIG-enabled GPU

# The "driver" writes result arrays straight into their memory, as the C library does
# (attribute access on pynvml structs costs ~1 µs each); None = layout not as expected.
_FV_HEAD = (
    ("fieldId", "I"),
    ("scopeId", "I"),
    ("timestamp", "q"),
    ("latencyUsec", "q"),
    ("valueType", "I"),
    ("nvmlReturn", "I"),
)
_FV_ULL = struct_for(pynvml.c_nvmlFieldValue_t, (*_FV_HEAD, ("value", "Q")))
_FV_UINT = struct_for(pynvml.c_nvmlFieldValue_t, (*_FV_HEAD, ("value", "I4x")))
_SAMPLE = struct_for(pynvml.c_nvmlSample_t, (("timeStamp", "Q"), ("sampleValue", "I4x")))
_GPM_METRIC = struct_for(
    pynvml.c_nvmlGpmMetric_t, (("metricId", "I"), ("nvmlReturn", "I"), ("value", "d"), ("metricInfo", "3Q"))
)
_GPM_METRIC_ID = struct_for(pynvml.c_nvmlGpmMetric_t, (("metricId", "I"),))  # what a request asks for
# the request's head: its version, metric count and the two sample pointers (addresses)
_GPM_HEAD = struct_for(
    pynvml.c_nvmlGpmMetricsGet_t, (("version", "I"), ("numMetrics", "I"), ("sample1", "Q"), ("sample2", "Q"))
)
_GPM_METRICS_OFFSET = getattr(getattr(pynvml.c_nvmlGpmMetricsGet_t, "metrics", None), "offset", None)
# whole result structs are built from packed bytes: ctypes' keyword constructor goes through
# pynvml's Python-level __setattr__ once per field (several µs a struct)
_MEMORY = struct_for(pynvml.c_nvmlMemory_t, (("total", "Q"), ("free", "Q"), ("used", "Q")))
_MEMORY_V2 = struct_for(
    pynvml.c_nvmlMemory_v2_t,
    (("version", "I"), ("total", "Q"), ("reserved", "Q"), ("free", "Q"), ("used", "Q")),
)
_UTILIZATION = struct_for(pynvml.c_nvmlUtilization_t, (("gpu", "I"), ("memory", "I")))


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


def _address(ptr: Any) -> int | None:
    try:
        return ctypes.cast(ptr, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return None


def _new_pointer(ptr_type: Any) -> tuple[Any, ctypes.Array[ctypes.c_char], int]:
    """A distinct non-NULL pointer of ``ptr_type`` (a handle) and the buffer that keeps it valid."""
    buf = ctypes.create_string_buffer(16)
    return ctypes.cast(buf, ptr_type), buf, ctypes.addressof(buf)


class _Slot(NamedTuple):
    """One sample-buffer slot, with its ``c_nvmlSample_t`` bytes for the busy samples ready."""

    stamp: int  # µs since the epoch
    busy: int  # %
    memory: int  # %
    busy_sample: bytes  # what the driver writes into the array


class _Percentages(NamedTuple):
    """An ``Activity`` in NVML's integer percentages (kept while a model returns the same object)."""

    activity: Activity
    busy: int
    memory: int
    utilization: bytes  # a packed c_nvmlUtilization_t (empty when its layout is unexpected)


class _FieldPlanEntry(NamedTuple):
    """One entry of a field-value request: what it asks for and which getter answers it."""

    fid: int
    scope: int
    getter: FieldFn | None


class _GpmMetricPlan(NamedTuple):
    """How to answer one requested GPM metric on one kind of device."""

    metric_id: int
    attr: str | None  # an activity fraction, reported in %
    rate: int | None  # or an index into (pcie tx, pcie rx, nvlink tx, nvlink rx) byte rates
    info: tuple[int, int, int]  # metricInfo pointers (shortName, longName, unit)


class _GpmResults(NamedTuple):
    """A GPM request's results over one ``Activity`` object, as the values of its packed entries."""

    activity: Activity
    plan: tuple[_GpmMetricPlan, ...]
    flat: list[Any]  # (metricId, nvmlReturn, value, shortName, longName, unit) per metric
    rates: tuple[tuple[int, int], ...]  # (index in flat, rate index): the values that move with counters


@dataclass
class _GpmRecord:
    index: int | None = None
    t: float | None = None
    counters: tuple[int, int, int, int] = (0, 0, 0, 0)  # pcie tx/rx, nvlink tx/rx bytes at sample time


@dataclass
class _EventSet:
    masks: dict[int, int] = field(default_factory=dict)  # device index -> registered event mask
    delivered: dict[int, int] = field(default_factory=dict)  # device index -> xids delivered so far


class _Device:
    def __init__(self, index: int, model: DeviceModel) -> None:
        self.index = index
        self.model = model
        self.spec = model.spec
        self.identity = model.identity
        self.handle, self._buf, self.address = _new_pointer(pynvml.c_nvmlDevice_t)
        self.lock = threading.Lock()
        self.snap: DeviceSnapshot | None = None
        self.snap_t = -math.inf
        self.snap_revision: Any = None
        self.last_t = -math.inf
        # sample-buffer slot -> _Slot: each slot is asked of the model once
        self.slots: dict[int, _Slot] = {}
        self.seen_slot: tuple[int, int] = (-1, 0)  # (timestamp, slot) of the newest sample handed out
        # what was derived from the last Activity object the model returned: a steady model hands
        # back the same (frozen) object every time, and then nothing is computed again
        self.percentages: _Percentages | None = None
        self.gpm_results: _GpmResults | None = None
        self.block_until: float | None = None
        self.calls: collections.Counter[str] = collections.Counter()
        # one handle per occupied MIG slot, made once: NVML hands out the same handle each time
        self.mig: dict[int, _MigDevice] = {}
        for slot, uuid in enumerate(getattr(self.identity, "mig_uuids", ())):
            if uuid:
                self.mig[slot] = _MigDevice(self, slot, uuid)


class _MigDevice:
    """A MIG device (one slot of a MIG-enabled GPU): its own handle and UUID."""

    def __init__(self, parent: _Device, slot: int, uuid: str) -> None:
        self.parent = parent
        self.slot = slot
        self.uuid = uuid
        self.handle, self._buf, self.address = _new_pointer(pynvml.c_nvmlDevice_t)


class FakeNvml:
    """pynvml's surface over ``DeviceModel`` objects. See the module docstring."""

    def __init__(
        self,
        models: Sequence[DeviceModel],
        clock: Clock,
        *,
        driver_version: str = "550.54.15",
        cuda_driver_version: int = 12040,
        library_missing: bool = False,
        snapshot_max_age_s: float = 0.02,
    ) -> None:
        self.clock = clock
        self.models = list(models)
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self.library_missing = library_missing
        self._max_age = snapshot_max_age_s
        self._devices = [_Device(i, m) for i, m in enumerate(self.models)]
        # handles and buffers are looked up by the id of the very object handed out (kept alive here,
        # so the id cannot be reused); by address only when a caller passes a copy
        self._by_id = {id(d.handle): d for d in self._devices}
        self._by_address = {d.address: d for d in self._devices}
        self._mig_by_address = {m.address: m for d in self._devices for m in d.mig.values()}
        # clock seconds -> epoch µs, fixed once so that sample timestamps never jitter between calls
        self._epoch_offset = clock.epoch() - clock.now()
        self._created = clock.now()
        # the first sample-buffer slot that ends after the "driver" was loaded
        self._first_slot = math.ceil(self._created / SAMPLE_PERIOD_S - 1e-9) + 1
        self._lock = threading.Lock()
        self._init_count = 0
        self._released = threading.Event()  # set by release(): wakes blocked calls
        self._faults: dict[tuple[int | None, str | None], int] = {}
        self._field_faults: dict[tuple[int | None, int], int] = {}
        self._field_plans: dict[tuple[Any, ...], tuple[_FieldPlanEntry, ...]] = {}
        self._removed: set[str] = set()
        self._gpm: dict[int, _GpmRecord] = {}  # by address
        self._gpm_bufs: dict[int, Any] = {}
        self._gpm_by_id: dict[int, tuple[Any, _GpmRecord]] = {}  # id(pointer) -> (pointer, record)
        self._event_sets: dict[int, _EventSet] = {}
        self._event_bufs: dict[int, Any] = {}
        # event waits sleep on this; a model's XID change, release() and nvmlShutdown notify it
        self._event_cond = threading.Condition()
        self._event_generation = 0
        for model in self.models:
            watch = getattr(model, "watch_xids", None)
            if callable(watch):
                watch(_weak_callback(self._wake_event_waits))
        # calls[index][function name]: how often each device function was called
        self.calls: dict[int, collections.Counter[str]] = {d.index: d.calls for d in self._devices}
        self.system_calls: collections.Counter[str] = collections.Counter()

    # ----------------------------------------------------------------- test hooks
    def fail(self, index: int | None, function_name: str | None, code: int) -> None:
        """Make ``function_name`` (any if None) on GPU ``index`` (any if None) raise NVMLError(code)."""
        self._faults[(index, function_name)] = code

    def fail_field(self, index: int | None, field_id: int, code: int) -> None:
        """Make entry ``field_id`` of the field-value batch on GPU ``index`` (any if None) return ``code``."""
        self._field_faults[(index, field_id)] = code

    def clear_faults(self) -> None:
        self._faults.clear()
        self._field_faults.clear()
        self._removed.clear()
        for d in self._devices:
            d.block_until = None

    def block(self, index: int, seconds: float) -> None:
        """Calls on device ``index`` block until ``seconds`` of clock time have passed."""
        self._devices[index].block_until = self.clock.now() + seconds

    def remove_function(self, name: str) -> None:
        """Behave like an older driver without ``name``: calling it raises ``FunctionNotFound``."""
        self._removed.add(name)

    def release(self) -> None:
        """Wake every blocked call (hangs and event waits) for a quick shutdown."""
        self._released.set()
        self._wake_event_waits()

    def snapshot(self, index: int) -> DeviceSnapshot:
        """The snapshot the fake presents for device ``index`` now (for tests comparing values)."""
        return self._snapshot(self._devices[index])

    def __getattr__(self, name: str) -> Any:
        # constants, struct and error classes come from pynvml; functions we lack are "not in this driver"
        value = getattr(pynvml, name)
        if callable(value) and not isinstance(value, type) and name.startswith("nvml"):

            def missing(*args: Any, **kwargs: Any) -> Any:
                self.system_calls[name] += 1  # counted, so tests can tell it was called
                raise _err(C.ERROR_FUNCTION_NOT_FOUND)

            missing.__name__ = name
            return missing
        return value

    # ----------------------------------------------------------------- plumbing
    def _system(self, name: str) -> None:
        self.system_calls[name] += 1
        if name in self._removed:
            raise _err(C.ERROR_FUNCTION_NOT_FOUND)
        if self._init_count <= 0:
            raise _err(C.ERROR_UNINITIALIZED)

    def _resolve(self, handle: Any) -> _Device:
        dev = self._by_id.get(id(handle))
        if dev is None:
            dev = self._by_address.get(_address(handle) or 0)
            if dev is None:
                raise _err(C.ERROR_INVALID_ARGUMENT)
        return dev

    def _device(self, handle: Any, name: str) -> tuple[_Device, DeviceSnapshot]:
        dev = self._by_id.get(id(handle))
        if dev is None:
            dev = self._resolve(handle)
        dev.calls[name] += 1
        if self._init_count <= 0:
            raise _err(C.ERROR_UNINITIALIZED)
        if self._removed and name in self._removed:
            raise _err(C.ERROR_FUNCTION_NOT_FOUND)
        if self._faults:
            self._check_faults(dev.index, name)
        snap = dev.snap
        # _snapshot's common case inline (a read makes ~15 calls that share one snapshot)
        if (
            snap is None
            or self.clock.now() - dev.snap_t > self._max_age
            or getattr(dev.model, "revision", None) != dev.snap_revision
        ):
            snap = self._snapshot(dev)
        if snap.hang_until is not None or dev.block_until is not None:
            until = max(snap.hang_until or -math.inf, dev.block_until or -math.inf)
            if until > self.clock.now():
                self._hang(until)
                snap = self._snapshot(dev)
        if snap.lost:
            raise _err(C.ERROR_GPU_IS_LOST)
        return dev, snap

    def _check_faults(self, index: int, name: str) -> None:
        if self._faults:
            for key in ((index, name), (index, None), (None, name), (None, None)):
                code = self._faults.get(key)
                if code is not None:
                    raise _err(code)

    def _hang(self, until: float) -> None:
        # a wedged driver: block in real time until the (possibly scaled) clock passes `until`
        while not self._released.is_set():
            remaining = until - self.clock.now()
            if remaining <= 0:
                return
            self.clock.wait(self._released, min(remaining, 1.0))

    def _snapshot(self, dev: _Device) -> DeviceSnapshot:
        now = self.clock.now()
        revision = getattr(dev.model, "revision", None)
        snap = dev.snap
        if snap is not None and now - dev.snap_t <= self._max_age and revision == dev.snap_revision:
            return snap  # the common case, without the lock: a read's calls share one snapshot
        with dev.lock:
            t = max(now, dev.last_t)  # models see non-decreasing time per device
            if dev.snap is None or t - dev.snap_t > self._max_age or revision != dev.snap_revision:
                dev.snap = dev.model.snapshot(t)
                dev.snap_t = t
                dev.snap_revision = revision
            dev.last_t = t
            return dev.snap

    def _now(self) -> float:
        return self.clock.now()

    def _epoch_us(self, t: float) -> int:
        return round((self._epoch_offset + t) * 1e6)

    # slot k covers clock time [(k-1)·P, k·P]; its sample carries the timestamp of its end
    def _slot_now(self) -> int:
        return math.floor(self._now() / SAMPLE_PERIOD_S + 1e-9)

    def _slot(self, dev: _Device, k: int) -> _Slot:
        """Slot ``k``'s sample (asked of the model the first time, then kept)."""
        slot = dev.slots.get(k)
        if slot is not None:
            return slot
        pcts = _percentages(dev, dev.model.activity((k - 1) * SAMPLE_PERIOD_S, k * SAMPLE_PERIOD_S))
        stamp = self._epoch_us(k * SAMPLE_PERIOD_S)
        sample = _SAMPLE.pack(stamp, pcts.busy) if _SAMPLE is not None else b""
        slot = dev.slots[k] = _Slot(stamp, pcts.busy, pcts.memory, sample)
        if len(dev.slots) > 2 * SAMPLE_BUFFER_LEN:
            with dev.lock:
                for old in sorted(dev.slots)[: len(dev.slots) - SAMPLE_BUFFER_LEN]:
                    dev.slots.pop(old, None)
        return slot

    # ----------------------------------------------------------------- init / system
    def nvmlInit(self) -> None:
        self.nvmlInitWithFlags(0)

    def nvmlInitWithFlags(self, flags: int) -> None:
        self.system_calls["nvmlInitWithFlags"] += 1
        if self.library_missing:
            raise _err(C.ERROR_LIBRARY_NOT_FOUND)
        with self._lock:
            self._init_count += 1
            self._released.clear()

    def nvmlShutdown(self) -> None:
        self._system("nvmlShutdown")
        with self._lock:
            self._init_count -= 1
            if self._init_count <= 0:
                self._released.set()  # calls still hung in the "driver" return
        if self._released.is_set():
            self._wake_event_waits()

    def nvmlSystemGetDriverVersion(self) -> str:
        self._system("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._system("nvmlSystemGetNVMLVersion")
        return f"{self.cuda_driver_version // 1000}.{self.driver_version}"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion")
        return self.cuda_driver_version

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._system("nvmlDeviceGetCount")
        return len(self._devices)

    # ----------------------------------------------------------------- handles and identity
    def _lookup(self, dev: _Device, name: str, lost_code: int) -> Any:
        self.calls[dev.index][name] += 1
        if name in self._removed:
            raise _err(C.ERROR_FUNCTION_NOT_FOUND)
        self._check_faults(dev.index, name)
        if self._snapshot(dev).lost:
            raise _err(lost_code)
        return dev.handle

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._system("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self._devices):
            raise _err(C.ERROR_INVALID_ARGUMENT)
        # a GPU that fell off the bus leaves its index unusable ("Unknown Error")
        return self._lookup(self._devices[index], "nvmlDeviceGetHandleByIndex", C.ERROR_UNKNOWN)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> Any:
        self._system("nvmlDeviceGetHandleByUUID")
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for dev in self._devices:
            if dev.identity.uuid == text:
                return self._lookup(dev, "nvmlDeviceGetHandleByUUID", C.ERROR_GPU_IS_LOST)
        raise _err(C.ERROR_NOT_FOUND)

    def nvmlDeviceGetHandleByPciBusId(self, pciBusId: str | bytes) -> Any:
        self._system("nvmlDeviceGetHandleByPciBusId")
        wanted = _pci_key(pciBusId.decode() if isinstance(pciBusId, bytes) else pciBusId)
        for dev in self._devices:
            if wanted is not None and _pci_key(dev.identity.pci_bus_id) == wanted:
                return self._lookup(dev, "nvmlDeviceGetHandleByPciBusId", C.ERROR_GPU_IS_LOST)
        raise _err(C.ERROR_NOT_FOUND)

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        return self._device(handle, "nvmlDeviceGetIndex")[0].index

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        dev, _ = self._device(handle, "nvmlDeviceGetMinorNumber")
        return dev.identity.minor_number or dev.index

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        mig = self._mig_by_address.get(_address(handle) or 0) if self._mig_by_address else None
        if mig is not None:  # a MIG device handle: its own "MIG-..." UUID; faults are its parent's
            self._device(mig.parent.handle, "nvmlDeviceGetUUID")
            return mig.uuid
        return self._device(handle, "nvmlDeviceGetUUID")[0].identity.uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._device(handle, "nvmlDeviceGetName")[0].identity.name

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        return self._device(handle, "nvmlDeviceGetSerial")[0].identity.serial

    def nvmlDeviceGetVbiosVersion(self, handle: Any) -> str:
        return self._device(handle, "nvmlDeviceGetVbiosVersion")[0].identity.vbios_version

    def nvmlDeviceGetBrand(self, handle: Any) -> int:
        dev, _ = self._device(handle, "nvmlDeviceGetBrand")
        return (
            14 if dev.spec.architecture in ("hopper", "blackwell", "ada") else 2
        )  # NVML_BRAND_NVIDIA / _TESLA

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        return self._pci_info(handle, "nvmlDeviceGetPciInfo")

    def nvmlDeviceGetPciInfo_v3(self, handle: Any) -> Any:
        return self._pci_info(handle, "nvmlDeviceGetPciInfo_v3")

    def _pci_info(self, handle: Any, name: str) -> Any:
        dev, _ = self._device(handle, name)
        bus_id = dev.identity.pci_bus_id
        info = pynvml.nvmlPciInfo_t()
        info.busId = bus_id.encode()
        info.busIdLegacy = bus_id[-12:].encode()
        domain, bus, devfn = bus_id.split(":")
        info.domain, info.bus, info.device = int(domain, 16), int(bus, 16), int(devfn.split(".")[0], 16)
        info.pciDeviceId = _PCI_DEVICE_IDS.get(dev.spec.architecture, 0x10DE)
        info.pciSubSystemId = 0x16C110DE
        return info

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        dev, _ = self._device(handle, "nvmlDeviceGetCudaComputeCapability")
        major, minor = dev.identity.compute_capability
        return (major, minor)

    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]:
        dev, _ = self._device(device, "nvmlDeviceGetMigMode")
        if dev.identity.mig_uuids:
            return [C.DEVICE_MIG_ENABLE, C.DEVICE_MIG_ENABLE]  # current, pending
        if not dev.spec.key.startswith(_MIG_CAPABLE):
            raise _err(C.ERROR_NOT_SUPPORTED)
        return [0, 0]  # MIG capable, disabled

    def nvmlDeviceGetMaxMigDeviceCount(self, device: Any) -> int:
        dev, _ = self._device(device, "nvmlDeviceGetMaxMigDeviceCount")
        if not dev.identity.mig_uuids:
            raise _err(C.ERROR_NOT_SUPPORTED)
        return _MIG_SLOTS

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Any, index: int) -> Any:
        dev, _ = self._device(device, "nvmlDeviceGetMigDeviceHandleByIndex")
        if not dev.identity.mig_uuids:
            raise _err(C.ERROR_NOT_SUPPORTED)
        if not 0 <= index < _MIG_SLOTS:
            raise _err(C.ERROR_INVALID_ARGUMENT)
        mig = dev.mig.get(index)
        if mig is None:
            raise _err(C.ERROR_NOT_FOUND)  # an empty slot
        return mig.handle

    # ----------------------------------------------------------------- memory and activity
    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any:
        _, snap = self._device(handle, "nvmlDeviceGetMemoryInfo")
        if version and "nvmlDeviceGetMemoryInfo_v2" in self._removed:
            raise _err(C.ERROR_FUNCTION_NOT_FOUND)
        total, used, reserved = snap.memory_total_bytes, snap.memory_used_bytes, snap.memory_reserved_bytes
        free = max(0, total - used - reserved)
        if not version:
            # the v1 struct counts reserved memory as used
            if _MEMORY is not None:
                return pynvml.c_nvmlMemory_t.from_buffer_copy(_MEMORY.pack(total, free, used + reserved))
            return pynvml.c_nvmlMemory_t(total=total, free=free, used=used + reserved)
        if version != C.MEMORY_V2_VERSION:
            raise _err(C.ERROR_ARGUMENT_VERSION_MISMATCH)
        if _MEMORY_V2 is not None:
            packed = _MEMORY_V2.pack(version, total, reserved, free, used)
            return pynvml.c_nvmlMemory_v2_t.from_buffer_copy(packed)
        return pynvml.c_nvmlMemory_v2_t(version=version, total=total, reserved=reserved, free=free, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        dev, _ = self._device(handle, "nvmlDeviceGetUtilizationRates")
        now = self._now()
        pcts = _percentages(dev, dev.model.activity(now - SAMPLE_PERIOD_S, now))
        if pcts.utilization:
            return pynvml.c_nvmlUtilization_t.from_buffer_copy(pcts.utilization)
        return pynvml.c_nvmlUtilization_t(gpu=pcts.busy, memory=pcts.memory)

    def nvmlDeviceGetSamples(self, device: Any, sampling_type: int, timeStamp: int) -> tuple[int, list[Any]]:
        dev, _ = self._device(device, "nvmlDeviceGetSamples")
        if sampling_type == C.SAMPLING_GPU_UTILIZATION:
            memory = False
        elif sampling_type == 2:  # NVML_MEMORY_UTILIZATION_SAMPLES
            memory = True
        else:
            raise _err(C.ERROR_NOT_SUPPORTED)
        newest = self._slot_now()
        first = max(newest - SAMPLE_BUFFER_LEN + 1, self._first_slot)
        if timeStamp:
            first = max(first, self._slot_after(dev, timeStamp))
        if first > newest:
            raise _err(C.ERROR_NOT_FOUND)
        count = newest + 1 - first
        cached = dev.slots
        slots = [cached.get(k) or self._slot(dev, k) for k in range(first, newest + 1)]
        dev.seen_slot = (slots[-1].stamp, newest)
        if _SAMPLE is not None:
            if memory:
                flat = [x for slot in slots for x in (slot.stamp, slot.memory)]
                packed = _repeated(_SAMPLE, count).pack(*flat)
            else:
                packed = b"".join([slot.busy_sample for slot in slots])
            array = (pynvml.c_nvmlSample_t * count).from_buffer_copy(packed)
        else:
            array = (pynvml.c_nvmlSample_t * count)()
            for i, slot in enumerate(slots):
                array[i].timeStamp = slot.stamp
                array[i].sampleValue.uiVal = slot.memory if memory else slot.busy
        return C.VALUE_TYPE_UNSIGNED_INT, array[0:count]  # a list of structs over one array, like pynvml

    def _slot_after(self, dev: _Device, stamp: int) -> int:
        """The first slot whose timestamp is newer than ``stamp`` (lastSeenTimeStamp)."""
        seen_stamp, seen = dev.seen_slot
        if stamp == seen_stamp:  # the usual case: the caller passes the newest timestamp it got
            return seen + 1
        k = math.floor((stamp / 1e6 - self._epoch_offset) / SAMPLE_PERIOD_S) - 1
        while self._epoch_us(k * SAMPLE_PERIOD_S) <= stamp:
            k += 1
        return k

    # ----------------------------------------------------------------- clocks
    def _clock_mhz(self, dev: _Device, snap: DeviceSnapshot, clock_type: int, clock_id: int) -> int:
        spec = dev.spec
        if clock_type not in (C.CLOCK_GRAPHICS, C.CLOCK_SM, C.CLOCK_MEM):
            raise _err(C.ERROR_NOT_SUPPORTED)
        mem = clock_type == C.CLOCK_MEM
        if clock_id == C.CLOCK_ID_CURRENT:
            value = (
                snap.memory_clock_mhz
                if mem
                else (
                    snap.sm_clock_mhz
                    if clock_type == C.CLOCK_SM
                    else snap.graphics_clock_mhz or snap.sm_clock_mhz
                )
            )
        elif clock_id == C.CLOCK_ID_APP_CLOCK_TARGET:
            value = (
                (snap.app_memory_clock_mhz or spec.max_memory_clock_mhz)
                if mem
                else (snap.app_sm_clock_mhz or spec.max_sm_clock_mhz)
            )
        elif clock_id in (C.CLOCK_ID_APP_CLOCK_DEFAULT, C.CLOCK_ID_CUSTOMER_BOOST_MAX):
            value = spec.max_memory_clock_mhz if mem else spec.max_sm_clock_mhz
        else:
            raise _err(C.ERROR_INVALID_ARGUMENT)
        return round(value)

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:
        dev, snap = self._device(handle, "nvmlDeviceGetClockInfo")
        return self._clock_mhz(dev, snap, type, C.CLOCK_ID_CURRENT)

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, type: int) -> int:
        dev, snap = self._device(handle, "nvmlDeviceGetMaxClockInfo")
        return self._clock_mhz(dev, snap, type, C.CLOCK_ID_CUSTOMER_BOOST_MAX)

    def nvmlDeviceGetClock(self, handle: Any, type: int, id: int) -> int:
        dev, snap = self._device(handle, "nvmlDeviceGetClock")
        return self._clock_mhz(dev, snap, type, id)

    def nvmlDeviceGetApplicationsClock(self, handle: Any, type: int) -> int:
        dev, snap = self._device(handle, "nvmlDeviceGetApplicationsClock")
        return self._clock_mhz(dev, snap, type, C.CLOCK_ID_APP_CLOCK_TARGET)

    # ----------------------------------------------------------------- power
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return round(self._device(handle, "nvmlDeviceGetPowerUsage")[1].power_average_mw)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        return int(self._device(handle, "nvmlDeviceGetTotalEnergyConsumption")[1].energy_mj)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return round(self._device(handle, "nvmlDeviceGetEnforcedPowerLimit")[1].power_limit_mw)

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return round(self._device(handle, "nvmlDeviceGetPowerManagementLimit")[1].power_limit_mw)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:
        return round(
            self._device(handle, "nvmlDeviceGetPowerManagementDefaultLimit")[1].power_default_limit_mw
        )

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:
        _, snap = self._device(handle, "nvmlDeviceGetPowerManagementLimitConstraints")
        return [round(snap.power_min_limit_mw), round(snap.power_max_limit_mw)]

    # ----------------------------------------------------------------- thermals
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        _, snap = self._device(handle, "nvmlDeviceGetTemperature")
        if sensor != C.TEMPERATURE_GPU:
            raise _err(C.ERROR_INVALID_ARGUMENT)
        return round(snap.temperature_gpu_c)

    def nvmlDeviceGetTemperatureThreshold(self, handle: Any, threshold: int) -> int:
        _, snap = self._device(handle, "nvmlDeviceGetTemperatureThreshold")
        value = snap.thresholds_c.get(threshold)
        if value is None:
            raise _err(C.ERROR_NOT_SUPPORTED)
        return round(value)

    def nvmlDeviceGetMarginTemperature(self, handle: Any) -> int:
        _, snap = self._device(handle, "nvmlDeviceGetMarginTemperature")
        limits = [
            snap.thresholds_c[t]
            for t in (C.THRESHOLD_SLOWDOWN, C.THRESHOLD_GPU_MAX)
            if t in snap.thresholds_c
        ]
        if not limits:
            raise _err(C.ERROR_NOT_SUPPORTED)
        return round(min(limits) - snap.temperature_gpu_c)

    def nvmlDeviceGetNumFans(self, device: Any) -> int:
        return len(self._device(device, "nvmlDeviceGetNumFans")[1].fan_speeds_pct)

    def nvmlDeviceGetFanSpeed(self, handle: Any) -> int:
        return self._fan(handle, "nvmlDeviceGetFanSpeed", 0)

    def nvmlDeviceGetFanSpeed_v2(self, handle: Any, fan: int) -> int:
        return self._fan(handle, "nvmlDeviceGetFanSpeed_v2", fan)

    def _fan(self, handle: Any, name: str, fan: int) -> int:
        _, snap = self._device(handle, name)
        if not snap.fan_speeds_pct:
            raise _err(C.ERROR_NOT_SUPPORTED)
        if not 0 <= fan < len(snap.fan_speeds_pct):
            raise _err(C.ERROR_INVALID_ARGUMENT)
        return round(snap.fan_speeds_pct[fan])

    def nvmlDeviceGetPerformanceState(self, handle: Any) -> int:
        return int(self._device(handle, "nvmlDeviceGetPerformanceState")[1].performance_state)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return int(self._device(handle, "nvmlDeviceGetCurrentClocksEventReasons")[1].clock_event_reasons)

    def nvmlDeviceGetSupportedClocksEventReasons(self, handle: Any) -> int:
        snap = self._device(handle, "nvmlDeviceGetSupportedClocksEventReasons")[1]
        return int(snap.supported_clock_event_reasons or _ALL_REASONS)

    # ----------------------------------------------------------------- field values and health
    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: Sequence[int | tuple[int, int]]) -> Any:
        dev, snap = self._device(handle, "nvmlDeviceGetFieldValues")
        stamp = self._epoch_us(self._now())
        if _FV_ULL is not None and _FV_UINT is not None and len(fieldIds):
            return self._field_values_packed(dev, snap, fieldIds, stamp)
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        view = raw_bytes(values) if _FV_ULL is not None and _FV_UINT is not None else None
        for i, item in enumerate(fieldIds):
            fid, scope = item if isinstance(item, tuple) else (item, 0)
            vtype, ret, value = self._field_entry(dev, snap, fid, scope, FIELDS.get(fid))
            if view is not None:
                layout = _FV_UINT if vtype == C.VALUE_TYPE_UNSIGNED_INT else _FV_ULL
                layout.pack_into(view, i * layout.size, fid, scope, stamp, 0, vtype, ret, value)  # type: ignore[union-attr]
                continue
            fv = values[i]
            fv.fieldId, fv.scopeId, fv.timestamp, fv.valueType, fv.nvmlReturn = fid, scope, stamp, vtype, ret
            if vtype == C.VALUE_TYPE_UNSIGNED_INT:
                fv.value.uiVal = value
            else:
                fv.value.ullVal = value
        return values

    def _field_entry(
        self, dev: _Device, snap: DeviceSnapshot, fid: int, scope: int, getter: Any
    ) -> tuple[int, int, int]:
        """(value type, nvmlReturn, value) of one requested field: a forced fault wins."""
        faults = self._field_faults
        forced = faults and (faults.get((dev.index, fid)) or faults.get((None, fid)))
        if forced:
            return C.VALUE_TYPE_UNSIGNED_LONG_LONG, forced, 0
        if getter is None:
            return C.VALUE_TYPE_UNSIGNED_LONG_LONG, C.ERROR_NOT_SUPPORTED, 0
        try:
            vtype, value = getter(dev.spec, snap, scope)
        except FieldUnsupported as e:
            return C.VALUE_TYPE_UNSIGNED_LONG_LONG, e.code, 0
        return vtype, C.SUCCESS, value

    def _field_values_packed(
        self, dev: _Device, snap: DeviceSnapshot, fieldIds: Sequence[int | tuple[int, int]], stamp: int
    ) -> Any:
        """The field-value array built from one ``struct`` pack of all its entries."""
        flat: list[int] = []
        uint = bytearray()  # per entry: 1 = the value is a 4-byte unsigned int
        for fid, scope, getter in self._field_plan(fieldIds):
            vtype, ret, value = self._field_entry(dev, snap, fid, scope, getter)
            uint.append(vtype == C.VALUE_TYPE_UNSIGNED_INT)
            flat += (fid, scope, stamp, 0, vtype, ret, value)
        packed = _field_values_layout(bytes(uint)).pack(*flat)
        return (pynvml.c_nvmlFieldValue_t * len(uint)).from_buffer_copy(packed)

    def _field_plan(self, fieldIds: Sequence[int | tuple[int, int]]) -> Sequence[_FieldPlanEntry]:
        """(field id, scope, getter) per entry, made once per request (the backend repeats its own)."""
        try:
            key = tuple(fieldIds)
            plan = self._field_plans.get(key)
        except TypeError:  # an unhashable entry: no caching, and the same errors as ever below
            key, plan = None, None
        if plan is None:
            entries = []
            for item in fieldIds if key is None else key:
                fid, scope = item if isinstance(item, tuple) else (item, 0)
                entries.append(_FieldPlanEntry(fid, scope, FIELDS.get(fid)))
            plan = tuple(entries)
            if key is not None:
                if len(self._field_plans) >= _PACKER_CACHE_MAX:
                    self._field_plans.clear()
                self._field_plans[key] = plan
        return plan

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        dev, snap = self._device(handle, "nvmlDeviceGetTotalEccErrors")
        if not dev.spec.has_ecc:
            raise _err(C.ERROR_NOT_SUPPORTED)
        kind = "volatile" if counterType == C.VOLATILE_ECC else "aggregate"
        which = "corrected" if errorType == C.MEMORY_ERROR_CORRECTED else "uncorrected"
        return int(getattr(snap, f"ecc_{kind}_{which}"))

    def nvmlDeviceGetRetiredPagesPendingStatus(self, device: Any) -> int:
        dev, snap = self._device(device, "nvmlDeviceGetRetiredPagesPendingStatus")
        if not dev.spec.has_ecc or dev.spec.has_row_remapping:
            raise _err(C.ERROR_NOT_SUPPORTED)
        return int(snap.retired_pages_pending)

    def nvmlDeviceGetRemappedRows(self, device: Any) -> tuple[int, int, int, int]:
        dev, snap = self._device(device, "nvmlDeviceGetRemappedRows")
        if not dev.spec.has_row_remapping:
            raise _err(C.ERROR_NOT_SUPPORTED)
        return (
            int(snap.remapped_rows_corrected),
            int(snap.remapped_rows_uncorrected),
            int(snap.remapped_rows_pending),
            int(snap.remapped_rows_failure),
        )

    # ----------------------------------------------------------------- processes
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        try:
            return self._processes(
                handle, "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v3"
            )
        except pynvml.NVMLError_FunctionNotFound:
            # pynvml's unversioned wrapper turns a missing _v3 into NVMLLibraryMismatchError
            raise pynvml.NVMLLibraryMismatchError(
                "Unversioned function called and the pyNVML version does not match the NVML lib version."
            ) from None

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: Any) -> list[Any]:
        return self._processes(handle, "nvmlDeviceGetComputeRunningProcesses_v2")

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any) -> list[Any]:
        return self._processes(handle, "nvmlDeviceGetComputeRunningProcesses_v3")

    def _processes(self, handle: Any, name: str, versioned: str | None = None) -> list[Any]:
        _, snap = self._device(handle, name)
        if versioned in self._removed:
            raise _err(C.ERROR_FUNCTION_NOT_FOUND)
        result = []
        for pid, used in snap.processes:
            info = pynvml.c_nvmlProcessInfo_v3_t(
                pid=pid,
                usedGpuMemory=used if used is not None else 2**64 - 1,
                gpuInstanceId=C.UINT_MAX,
                computeInstanceId=C.UINT_MAX,
            )
            obj = pynvml.nvmlStructToFriendlyObject(info)
            if obj.usedGpuMemory == C.VALUE_NOT_AVAILABLE_ULL:
                obj.usedGpuMemory = None
            result.append(obj)
        return result

    def nvmlDeviceGetProcessUtilization(self, handle: Any, timeStamp: int) -> list[Any]:
        dev, snap = self._device(handle, "nvmlDeviceGetProcessUtilization")
        if not snap.processes:
            # the sizing call succeeds with no entries, which pynvml turns into a base NVMLError(0)
            raise _err(C.SUCCESS)
        newest = self._slot_now()
        stamp = self._epoch_us(newest * SAMPLE_PERIOD_S)
        busy = {pid: pct for pid, pct in snap.process_sm_pct.items() if pct > 0}
        if stamp <= timeStamp or not busy:
            raise _err(C.ERROR_NOT_FOUND)
        memory_pct = self._slot(dev, newest).memory
        total = sum(busy.values())
        return [
            pynvml.c_nvmlProcessUtilizationSample_t(
                pid=pid,
                timeStamp=stamp,
                smUtil=round(pct),
                memUtil=round(memory_pct * pct / total),
                encUtil=0,
                decUtil=0,
            )
            for pid, pct in busy.items()
        ]

    # ----------------------------------------------------------------- GPM
    def nvmlGpmQueryDeviceSupport(self, device: Any) -> Any:
        dev, _ = self._device(device, "nvmlGpmQueryDeviceSupport")
        return pynvml.c_nvmlGpmSupport_t(
            version=C.GPM_SUPPORT_VERSION, isSupportedDevice=int(dev.spec.has_gpm)
        )

    def nvmlGpmSampleAlloc(self) -> Any:
        self._system("nvmlGpmSampleAlloc")
        ptr, buf, address = _new_pointer(pynvml.c_nvmlGpmSample_t)
        record = _GpmRecord()
        self._gpm[address] = record
        self._gpm_bufs[address] = buf
        self._gpm_by_id[id(ptr)] = (ptr, record)
        return ptr

    def nvmlGpmSampleFree(self, gpmSample: Any) -> None:
        self._system("nvmlGpmSampleFree")
        address = _address(gpmSample)
        if address not in self._gpm:
            raise _err(C.ERROR_INVALID_ARGUMENT)
        record = self._gpm.pop(address)
        del self._gpm_bufs[address]
        for key, (_, held) in list(self._gpm_by_id.items()):
            if held is record:
                del self._gpm_by_id[key]

    def _gpm_record(self, gpmSample: Any) -> _GpmRecord | None:
        held = self._gpm_by_id.get(id(gpmSample))
        if held is not None and held[0] is gpmSample:
            return held[1]
        return self._gpm.get(_address(gpmSample) or 0)

    def nvmlGpmSampleGet(self, device: Any, gpmSample: Any) -> Any:
        dev, snap = self._device(device, "nvmlGpmSampleGet")
        if not dev.spec.has_gpm:
            raise _err(C.ERROR_NOT_SUPPORTED)
        record = self._gpm_record(gpmSample)
        if record is None:
            raise _err(C.ERROR_INVALID_ARGUMENT)
        record.index, record.t = dev.index, self._now()
        record.counters = (snap.pcie_tx_bytes, snap.pcie_rx_bytes, snap.nvlink_tx_bytes, snap.nvlink_rx_bytes)
        return gpmSample

    def nvmlGpmMetricsGet(self, metricsGet: Any) -> Any:
        self._system("nvmlGpmMetricsGet")
        if (
            type(metricsGet) is pynvml.c_nvmlGpmMetricsGet_t
            and _GPM_HEAD is not None
            and _GPM_METRIC is not None
            and _GPM_METRIC_ID is not None
            and _GPM_METRICS_OFFSET is not None
        ):
            return self._gpm_metrics_packed(metricsGet, memoryview(metricsGet).cast("B"))
        if metricsGet.version != C.GPM_METRICS_GET_VERSION:
            raise _err(C.ERROR_ARGUMENT_VERSION_MISMATCH)
        first, second, dt, dev = self._gpm_pair(
            _address(metricsGet.sample1) or 0, _address(metricsGet.sample2) or 0
        )
        act = dev.model.activity(first.t, second.t)
        rates = [(b - a) / dt / _MIB for a, b in zip(first.counters, second.counters, strict=True)]
        metrics = metricsGet.metrics
        count = min(metricsGet.numMetrics, len(metrics))
        view = raw_bytes(metrics, count) if _GPM_METRIC is not None else None
        for i in range(count):
            if view is not None:
                metric_id = _GPM_METRIC.unpack_from(view, i * _GPM_METRIC.size)[0]  # type: ignore[union-attr]
            else:
                metric_id = metrics[i].metricId
            value = _gpm_value(metric_id, act, rates, dev.spec.has_nvlink)
            ret = C.SUCCESS if value is not None else C.ERROR_NOT_SUPPORTED
            info = _GPM_INFO_POINTERS.get(metric_id, (0, 0, 0)) if value is not None else (0, 0, 0)
            if view is not None:
                _GPM_METRIC.pack_into(view, i * _GPM_METRIC.size, metric_id, ret, value or 0.0, *info)  # type: ignore[union-attr]
                continue
            metric = metrics[i]
            metric.nvmlReturn, metric.value = ret, value or 0.0
            if value is not None and metric_id in _GPM_INFO:
                metric.metricInfo.shortName, metric.metricInfo.longName, metric.metricInfo.unit = _GPM_INFO[
                    metric_id
                ]
        return metricsGet

    def _gpm_pair(self, address1: int, address2: int) -> tuple[Any, Any, float, _Device]:
        """The two GPM samples of one device a metrics request names, their interval and device."""
        first, second = self._gpm.get(address1), self._gpm.get(address2)
        if first is None or second is None or first.index is None or first.index != second.index:
            raise _err(C.ERROR_INVALID_ARGUMENT)
        assert first.t is not None and second.t is not None
        dt = second.t - first.t
        if dt <= 0:
            raise _err(C.ERROR_INVALID_ARGUMENT)
        dev = self._devices[first.index]
        dev.calls["nvmlGpmMetricsGet"] += 1
        return first, second, dt, dev

    def _gpm_metrics_packed(self, metricsGet: Any, view: memoryview) -> Any:
        """``nvmlGpmMetricsGet`` reading and writing the request's memory in a few ``struct`` calls."""
        assert _GPM_HEAD is not None and _GPM_METRIC is not None and _GPM_METRIC_ID is not None
        assert _GPM_METRICS_OFFSET is not None
        version, num, address1, address2 = _GPM_HEAD.unpack_from(view)
        if version != C.GPM_METRICS_GET_VERSION:
            raise _err(C.ERROR_ARGUMENT_VERSION_MISMATCH)
        first, second, dt, dev = self._gpm_pair(address1, address2)
        act = dev.model.activity(first.t, second.t)
        count = min(num, (len(view) - _GPM_METRICS_OFFSET) // _GPM_METRIC.size)
        if count <= 0:
            return metricsGet
        metric_ids = _repeated(_GPM_METRIC_ID, count).unpack_from(view, _GPM_METRICS_OFFSET)
        plan = _gpm_plan(metric_ids, dev.spec.has_nvlink)
        results = dev.gpm_results
        if results is None or results.activity is not act or results.plan is not plan:
            results = dev.gpm_results = _gpm_results(act, plan)
        flat = results.flat.copy()
        if results.rates:
            rates = [(b - a) / dt / _MIB for a, b in zip(first.counters, second.counters, strict=True)]
            for position, rate in results.rates:
                flat[position] = max(0.0, rates[rate])
        _repeated(_GPM_METRIC, count).pack_into(view, _GPM_METRICS_OFFSET, *flat)
        return metricsGet

    # ----------------------------------------------------------------- events
    def nvmlEventSetCreate(self) -> Any:
        self._system("nvmlEventSetCreate")
        ptr, buf, address = _new_pointer(pynvml.c_nvmlEventSet_t)
        self._event_sets[address] = _EventSet()
        self._event_bufs[address] = buf
        return ptr

    def nvmlEventSetFree(self, eventSet: Any) -> None:
        self._system("nvmlEventSetFree")
        address = _address(eventSet)
        if address not in self._event_sets:
            raise _err(C.ERROR_INVALID_ARGUMENT)
        del self._event_sets[address]
        del self._event_bufs[address]

    def _supported_events(self, dev: _Device) -> int:
        mask = C.EVENT_XID_CRITICAL | C.EVENT_PSTATE | C.EVENT_CLOCK
        return mask | (C.EVENT_SINGLE_BIT_ECC | C.EVENT_DOUBLE_BIT_ECC if dev.spec.has_ecc else 0)

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        return self._supported_events(self._device(handle, "nvmlDeviceGetSupportedEventTypes")[0])

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: Any) -> None:
        dev, snap = self._device(handle, "nvmlDeviceRegisterEvents")
        es = self._event_sets.get(_address(eventSet) or 0)
        if es is None:
            raise _err(C.ERROR_INVALID_ARGUMENT)
        if eventTypes & ~self._supported_events(dev):
            raise _err(C.ERROR_NOT_SUPPORTED)
        with self._lock:
            es.masks[dev.index] = es.masks.get(dev.index, 0) | eventTypes
            # events from before the registration are not delivered
            es.delivered.setdefault(dev.index, sum(1 for t, _ in snap.xids if t <= snap.t))

    def nvmlEventSetWait(self, eventSet: Any, timeoutms: int) -> Any:
        return self.nvmlEventSetWait_v2(eventSet, timeoutms)

    def nvmlEventSetWait_v2(self, eventSet: Any, timeoutms: int) -> Any:
        self._system("nvmlEventSetWait_v2")
        es = self._event_sets.get(_address(eventSet) or 0)
        if es is None:
            raise _err(C.ERROR_INVALID_ARGUMENT)
        deadline = time.monotonic() + max(0, timeoutms) / 1000.0 / self.clock.speed
        while True:
            # read before looking: a change notified after this point cuts the sleep below short
            generation = self._event_generation
            data = self._next_event(es)
            if data is not None:
                return data
            if self._init_count <= 0:
                raise _err(C.ERROR_UNINITIALIZED)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._released.is_set():
                raise _err(C.ERROR_TIMEOUT)
            with self._event_cond:
                if self._event_generation == generation and not self._released.is_set():
                    self._event_cond.wait(min(remaining, self._wake_in(es)))

    def _wake_event_waits(self) -> None:
        """Cut every event wait's sleep short: an XID list changed, or the library is going away."""
        with self._event_cond:
            self._event_generation += 1
            self._event_cond.notify_all()

    def _wake_in(self, es: _EventSet) -> float:
        """Real seconds an event wait may sleep before it must look again (inf: until woken)."""
        now = self.clock.now()
        soonest = math.inf  # clock seconds until the next undelivered XID a model has published
        poll = math.inf
        for index, mask in list(es.masks.items()):
            if not mask & C.EVENT_XID_CRITICAL:
                continue
            schedule = _xid_schedule(self._devices[index].model)
            if schedule is None:
                poll = EVENT_POLL_S  # only a snapshot tells: look again in a while
                continue
            done = es.delivered.get(index, 0)
            if len(schedule) > done:
                # not before the snapshot cached for this instant has expired: one built just
                # before the XID's time does not show it, and looking sooner would spin
                soonest = min(soonest, max(schedule[done][0] - now, self._max_age))
        return min(poll, max(soonest / self.clock.speed, EVENT_MIN_SLEEP_S))

    def _next_event(self, es: _EventSet) -> Any:
        best: tuple[float, int, int] | None = None  # (time, device index, xid)
        now = self.clock.now()
        for index, mask in list(es.masks.items()):
            if not mask & C.EVENT_XID_CRITICAL:
                continue
            dev = self._devices[index]
            done = es.delivered.get(index, 0)
            schedule = _xid_schedule(dev.model)
            # a model that publishes its XID list is checked without building a snapshot
            # while its next XID is not due (sorted: the first undelivered one is the next)
            if schedule is not None and (len(schedule) <= done or schedule[done][0] > now):
                continue
            snap = self._snapshot(dev)
            pending = [(t, xid) for t, xid in snap.xids[done:] if t <= snap.t]
            if pending and (best is None or pending[0][0] < best[0]):
                best = (pending[0][0], index, pending[0][1])
        if best is None:
            return None
        _, index, xid = best
        with self._lock:
            es.delivered[index] = es.delivered.get(index, 0) + 1
        data = pynvml.c_nvmlEventData_t()
        data.device = self._devices[index].handle
        data.eventType = C.EVENT_XID_CRITICAL
        data.eventData = xid
        data.gpuInstanceId = C.UINT_MAX
        data.computeInstanceId = C.UINT_MAX
        return data


def _xid_schedule(model: DeviceModel) -> list[tuple[float, int]] | None:
    """The model's XIDs ``(clock time, xid)``, past and scheduled, if it publishes them (``SteadyDevice``)."""
    xids = getattr(model, "xids", None)
    return xids if isinstance(xids, list) else None


def _weak_callback(method: Callable[[], None]) -> Callable[[], None]:
    """``method`` for a model to call back, without the model keeping the fake alive."""
    ref = weakref.WeakMethod(method)

    def call() -> None:
        bound = ref()
        if bound is not None:
            bound()

    return call


# whole-array packers, made once per shape (array lengths and field lists vary little; the
# caches are bounded all the same)
_REPEATED: dict[tuple[str, int], struct.Struct] = {}
_FIELD_ARRAYS: dict[bytes, struct.Struct] = {}
_PACKER_CACHE_MAX = 512


def _repeated(layout: struct.Struct, count: int) -> struct.Struct:
    """``layout`` ``count`` times over: a whole array of structs in one pack or unpack."""
    key = (layout.format, count)
    packer = _REPEATED.get(key)
    if packer is None:
        if len(_REPEATED) >= _PACKER_CACHE_MAX:
            _REPEATED.clear()
        packer = _REPEATED[key] = struct.Struct("=" + layout.format[1:] * count)
    return packer


def _field_values_layout(uint: bytes) -> struct.Struct:
    """A field-value array whose entry ``i`` holds a 4-byte value if ``uint[i]``, else an 8-byte one."""
    assert _FV_UINT is not None and _FV_ULL is not None
    packer = _FIELD_ARRAYS.get(uint)
    if packer is None:
        if len(_FIELD_ARRAYS) >= _PACKER_CACHE_MAX:
            _FIELD_ARRAYS.clear()
        body = "".join(_FV_UINT.format[1:] if flag else _FV_ULL.format[1:] for flag in uint)
        packer = _FIELD_ARRAYS[uint] = struct.Struct("=" + body)
    return packer


def _pci_key(bus_id: str) -> tuple[int, int, int, int] | None:
    """(domain, bus, device, function) from "00000000:18:00.0" or the short "0000:18:00.0"."""
    try:
        *domain, bus, devfn = bus_id.strip().split(":")
        device, function = devfn.split(".")
        return int(domain[0] if domain else "0", 16), int(bus, 16), int(device, 16), int(function, 16)
    except (ValueError, IndexError):
        return None


def _pct(ratio: float) -> int:
    return max(0, min(100, round(ratio * 100)))


_GPM_ACTIVITY = {
    1: "busy",
    C.GPM_SM_UTIL: "sm_active",
    C.GPM_SM_OCCUPANCY: "sm_occupancy",
    C.GPM_ANY_TENSOR_UTIL: "tensor",
    C.GPM_DFMA_TENSOR_UTIL: "dfma",
    C.GPM_HMMA_TENSOR_UTIL: "hmma",
    C.GPM_IMMA_TENSOR_UTIL: "imma",
    C.GPM_DRAM_BW_UTIL: "dram",
    C.GPM_FP64_UTIL: "fp64",
    C.GPM_FP32_UTIL: "fp32",
    C.GPM_FP16_UTIL: "fp16",
}
_GPM_RATES = {
    C.GPM_PCIE_TX_PER_SEC: 0,
    C.GPM_PCIE_RX_PER_SEC: 1,
    C.GPM_NVLINK_TOTAL_TX_PER_SEC: 2,
    C.GPM_NVLINK_TOTAL_RX_PER_SEC: 3,
}
_GPM_INFO = {  # metric -> (shortName, longName, unit) as the driver fills them in
    1: (b"GR_UTIL", b"graphics utilization", b"%"),
    C.GPM_SM_UTIL: (b"SM_UTIL", b"SM utilization", b"%"),
    C.GPM_SM_OCCUPANCY: (b"SM_OCCUP", b"SM occupancy", b"%"),
    C.GPM_ANY_TENSOR_UTIL: (b"ANY_TENSOR", b"any tensor utilization", b"%"),
    C.GPM_DFMA_TENSOR_UTIL: (b"DFMA_TENSOR", b"DFMA tensor utilization", b"%"),
    C.GPM_HMMA_TENSOR_UTIL: (b"HMMA_TENSOR", b"HMMA tensor utilization", b"%"),
    C.GPM_IMMA_TENSOR_UTIL: (b"IMMA_TENSOR", b"IMMA tensor utilization", b"%"),
    C.GPM_DRAM_BW_UTIL: (b"DRAM_BW", b"DRAM bandwidth utilization", b"%"),
    C.GPM_FP64_UTIL: (b"FP64", b"FP64 utilization", b"%"),
    C.GPM_FP32_UTIL: (b"FP32", b"FP32 utilization", b"%"),
    C.GPM_FP16_UTIL: (b"FP16", b"FP16 utilization", b"%"),
    C.GPM_PCIE_TX_PER_SEC: (b"PCIE_TX", b"PCIe TX", b"MiB/sec"),
    C.GPM_PCIE_RX_PER_SEC: (b"PCIE_RX", b"PCIe RX", b"MiB/sec"),
    C.GPM_NVLINK_TOTAL_TX_PER_SEC: (b"NVLINK_TX", b"NVLink TX", b"MiB/sec"),
    C.GPM_NVLINK_TOTAL_RX_PER_SEC: (b"NVLINK_RX", b"NVLink RX", b"MiB/sec"),
}


# The driver points metricInfo at its own static strings; these objects live as long as the module.
_GPM_INFO_STRINGS = {
    metric: tuple(ctypes.c_char_p(text) for text in texts) for metric, texts in _GPM_INFO.items()
}


def _text_address(text: ctypes.c_char_p) -> int:
    return ctypes.cast(text, ctypes.c_void_p).value or 0


_GPM_INFO_POINTERS: dict[int, tuple[int, int, int]] = {
    metric: (_text_address(short), _text_address(long), _text_address(unit))
    for metric, (short, long, unit) in _GPM_INFO_STRINGS.items()
}


def _ratio_pct(fraction: float) -> float:
    return 100.0 * max(0.0, min(1.0, float(fraction)))


def _gpm_value(metric: int, act: Activity, rates: list[float], has_nvlink: bool) -> float | None:
    attr = _GPM_ACTIVITY.get(metric)
    if attr is not None:
        return _ratio_pct(getattr(act, attr))
    slot = _GPM_RATES.get(metric)
    if slot is None or (slot >= 2 and not has_nvlink):
        return None
    return max(0.0, rates[slot])


_GPM_PLANS: dict[tuple[tuple[int, ...], bool], tuple[_GpmMetricPlan, ...]] = {}


def _gpm_plan(metric_ids: tuple[int, ...], has_nvlink: bool) -> tuple[_GpmMetricPlan, ...]:
    """How to answer each of ``metric_ids`` (what ``_gpm_value`` decides), made once per request shape."""
    key = (metric_ids, has_nvlink)
    plan = _GPM_PLANS.get(key)
    if plan is None:
        entries = []
        for metric in metric_ids:
            attr = _GPM_ACTIVITY.get(metric)
            rate = _GPM_RATES.get(metric) if attr is None else None
            if rate is not None and rate >= 2 and not has_nvlink:
                rate = None
            supported = attr is not None or rate is not None
            info = _GPM_INFO_POINTERS.get(metric, (0, 0, 0)) if supported else (0, 0, 0)
            entries.append(_GpmMetricPlan(metric, attr, rate, info))
        if len(_GPM_PLANS) >= _PACKER_CACHE_MAX:
            _GPM_PLANS.clear()
        plan = _GPM_PLANS[key] = tuple(entries)
    return plan


def _gpm_results(act: Activity, plan: tuple[_GpmMetricPlan, ...]) -> _GpmResults:
    flat: list[Any] = []
    rates: list[tuple[int, int]] = []
    for m in plan:
        if m.attr is not None:
            flat += (m.metric_id, C.SUCCESS, _ratio_pct(getattr(act, m.attr)), *m.info)
        elif m.rate is not None:
            rates.append((len(flat) + 2, m.rate))  # the value, filled in per call
            flat += (m.metric_id, C.SUCCESS, 0.0, *m.info)
        else:
            flat += (m.metric_id, C.ERROR_NOT_SUPPORTED, 0.0, 0, 0, 0)
    return _GpmResults(act, plan, flat, tuple(rates))


def _percentages(dev: _Device, act: Activity) -> _Percentages:
    """``act`` in integer percentages, reused while the model returns the very same object."""
    pcts = dev.percentages
    if pcts is None or pcts.activity is not act:
        busy, memory = _pct(act.busy), _pct(act.memory_controller)
        packed = _UTILIZATION.pack(busy, memory) if _UTILIZATION is not None else b""
        pcts = dev.percentages = _Percentages(act, busy, memory, packed)
    return pcts
