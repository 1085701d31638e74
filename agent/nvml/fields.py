"""The one ``nvmlDeviceGetFieldValues`` call per read: which fields, and what they become.

Each device starts with every field gpulse reads through the batch API. An entry whose
``nvmlReturn`` says the device (or driver) does not know the field is dropped for good;
any other per-entry error skips that value for one tick. NVLink traffic is read from
the KiB throughput counters summed over all links (138/139, scope ``UINT_MAX``); where
those are not supported (NVLink5 parts) the plan switches once to the per-link byte
counters (202/204) for every link the device reports.

The health counters (ECC, retired pages, remapped rows, PCIe replays) move rarely and are
among the costlier values for the driver to gather, so they join the call only on a
"health" read (every ``health_interval_seconds``, 5 s by default); the reads between carry
their last values, so their series neither flap nor go stale by more than that interval.
XIDs, which announce a new uncorrectable error at once, come through the event thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from agent.model import GpuReading
from agent.nvml import consts as C
from agent.nvml.calls import LOST_CODES, Caller, DeviceCalls, DeviceLost
from agent.nvml.layout import decode_value, raw_bytes, struct_for

Field = tuple[int, int]  # (field id, scope id)

# per-entry codes that mean "never ask this device again"
_DROP_CODES = frozenset({C.ERROR_NOT_SUPPORTED, C.ERROR_INVALID_ARGUMENT, C.ERROR_FUNCTION_NOT_FOUND})

_BASE_FIELDS: tuple[int, ...] = (
    *C.VIOLATION_FIELDS,
    C.FI_PERF_POLICY_THERMAL,  # fallback for 269 on older drivers; dropped once 269 answers
    C.FI_MEMORY_TEMP,
    C.FI_TOTAL_ENERGY_CONSUMPTION,
    C.FI_POWER_INSTANT,
    C.FI_PCIE_COUNT_TX_BYTES,
    C.FI_PCIE_COUNT_RX_BYTES,
)
HEALTH_FIELDS: tuple[int, ...] = (
    C.FI_PCIE_REPLAY_COUNTER,
    C.FI_ECC_SBE_VOL_TOTAL,
    C.FI_ECC_DBE_VOL_TOTAL,
    C.FI_ECC_SBE_AGG_TOTAL,
    C.FI_ECC_DBE_AGG_TOTAL,
    C.FI_RETIRED_SBE,
    C.FI_RETIRED_DBE,
    C.FI_RETIRED_PENDING,
    C.FI_REMAPPED_COR,
    C.FI_REMAPPED_UNC,
    C.FI_REMAPPED_PENDING,
    C.FI_REMAPPED_FAILURE,
)
_NVLINK_SUM = ((C.FI_NVLINK_THROUGHPUT_DATA_TX, C.UINT_MAX), (C.FI_NVLINK_THROUGHPUT_DATA_RX, C.UINT_MAX))

_ECC = {
    C.FI_ECC_SBE_VOL_TOTAL: ("volatile", "corrected"),
    C.FI_ECC_DBE_VOL_TOTAL: ("volatile", "uncorrected"),
    C.FI_ECC_SBE_AGG_TOTAL: ("aggregate", "corrected"),
    C.FI_ECC_DBE_AGG_TOTAL: ("aggregate", "uncorrected"),
}
_REMAPPED = {
    C.FI_REMAPPED_COR: "corrected",
    C.FI_REMAPPED_UNC: "uncorrected",
    C.FI_REMAPPED_PENDING: "pending",
    C.FI_REMAPPED_FAILURE: "failure",
}
_VALUE_ATTR = {
    C.VALUE_TYPE_DOUBLE: "dVal",
    C.VALUE_TYPE_UNSIGNED_INT: "uiVal",
    C.VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    C.VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    C.VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    C.VALUE_TYPE_SIGNED_INT: "siVal",
    C.VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}


_FV_LAYOUT = (("fieldId", "I"), ("scopeId", "I"), ("valueType", "I"), ("nvmlReturn", "I"), ("value", "8s"))


def field_value(fv: Any) -> float | int:
    """The value of one ``c_nvmlFieldValue_t`` by its value type."""
    return getattr(fv.value, _VALUE_ATTR.get(fv.valueType, "ullVal"))  # type: ignore[no-any-return]


def sample_value(value_type: int, union: Any) -> float | int:
    """The value of a ``c_nvmlValue_t`` union (e.g. a ``c_nvmlSample_t.sampleValue``)."""
    return getattr(union, _VALUE_ATTR.get(value_type, "uiVal"))  # type: ignore[no-any-return]


def entries(values: Any) -> Iterator[tuple[int, int, int, float | int | None]]:
    """(field id, scope id, nvmlReturn, value or None) for each entry of a field-value array."""
    layout = struct_for(getattr(type(values), "_type_", None), _FV_LAYOUT)
    view = raw_bytes(values) if layout is not None else None
    if layout is not None and view is not None:
        for fid, scope, vtype, ret, raw in layout.iter_unpack(view):
            yield fid, scope, ret, decode_value(vtype, raw) if ret == C.SUCCESS else None
        return
    for fv in values:  # not a ctypes array (or an unexpected layout): plain attribute access
        ret = fv.nvmlReturn
        yield fv.fieldId, fv.scopeId, ret, field_value(fv) if ret == C.SUCCESS else None


class FieldPlan:
    """The fields one device is asked for, pruned as the device answers."""

    def __init__(self) -> None:
        self.request: list[Field] = [(fid, 0) for fid in _BASE_FIELDS] + list(_NVLINK_SUM)
        self.health: list[Field] = [(fid, 0) for fid in HEALTH_FIELDS]
        self._health_values: dict[int, float | int] = {}  # the last health read's values, carried
        self._nvlink_mode = "sum"  # "sum" (138/139) -> "probe" -> "links" (202/204) or "none"
        self._nvlink_links: list[int] = []

    def read(self, caller: Caller, dev: DeviceCalls, handle: Any, reading: GpuReading, *,
             health: bool = True) -> None:
        """One field-value call; with ``health`` it asks for the health counters too, else carries them."""
        request = self.request + self.health if health else self.request
        if not request:
            return
        values = caller.call(dev, "field_values", "nvmlDeviceGetFieldValues", handle, request)
        if values is None:
            return
        got: dict[int, float | int] = {}
        nvlink_bytes = {C.FI_NVLINK_COUNT_XMIT_BYTES: 0, C.FI_NVLINK_COUNT_RCV_BYTES: 0}
        nvlink_seen = False
        dropped: set[Field] = set()
        for fid, scope, ret, value in entries(values):
            if ret != C.SUCCESS or value is None:
                if ret in LOST_CODES:
                    raise DeviceLost(f"nvmlDeviceGetFieldValues field {fid}: GPU is lost (code {ret})")
                if ret in _DROP_CODES:
                    dropped.add((fid, scope))
                else:
                    caller.log_once(
                        ("field", dev.index, fid, ret),
                        logging.WARNING,
                        "GPU %d: field %d failed with NVML code %d; skipped while it fails",
                        dev.index,
                        fid,
                        ret,
                    )
                continue
            if fid in nvlink_bytes:
                nvlink_bytes[fid] += int(value)
                nvlink_seen = True
            else:
                got[fid] = value
        if dropped:
            self._drop(dropped, dev)
        if (
            C.FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN in got
            and (C.FI_PERF_POLICY_THERMAL, 0) in self.request
        ):
            self.request.remove((C.FI_PERF_POLICY_THERMAL, 0))
        if health:
            self._health_values = {fid: got[fid] for fid in HEALTH_FIELDS if fid in got}
        else:
            got.update(self._health_values)
        _apply(got, reading)
        if nvlink_seen:
            reading.nvlink_tx_bytes = nvlink_bytes[C.FI_NVLINK_COUNT_XMIT_BYTES]
            reading.nvlink_rx_bytes = nvlink_bytes[C.FI_NVLINK_COUNT_RCV_BYTES]
        if self._nvlink_mode == "probe":
            self._probe_links(caller, dev, handle)

    def _drop(self, dropped: set[Field], dev: DeviceCalls) -> None:
        self.request = [f for f in self.request if f not in dropped]
        self.health = [f for f in self.health if f not in dropped]
        dev.unsupported.update(f"field:{fid}:{scope}" for fid, scope in dropped)
        if self._nvlink_mode == "sum" and all(f in dropped for f in _NVLINK_SUM):
            self._nvlink_mode = "probe"
        elif self._nvlink_mode == "links" and not any(
            f[0] in (C.FI_NVLINK_COUNT_XMIT_BYTES, C.FI_NVLINK_COUNT_RCV_BYTES) for f in self.request
        ):
            self._nvlink_mode = "none"

    def _probe_links(self, caller: Caller, dev: DeviceCalls, handle: Any) -> None:
        """Once: how many NVLinks, then ask for their NVLink5 byte counters from the next read on."""
        self._nvlink_mode = "none"
        values = caller.call(
            dev, "nvlink_link_count", "nvmlDeviceGetFieldValues", handle, [(C.FI_NVLINK_LINK_COUNT, 0)]
        )
        if not values or values[0].nvmlReturn != C.SUCCESS:
            return
        links = int(field_value(values[0]))
        if links <= 0:
            return
        self._nvlink_mode = "links"
        for link in range(links):
            self.request += [(C.FI_NVLINK_COUNT_XMIT_BYTES, link), (C.FI_NVLINK_COUNT_RCV_BYTES, link)]


def _apply(got: dict[int, float | int], r: GpuReading) -> None:
    for fid, reason in C.VIOLATION_FIELDS.items():
        if fid in got:
            r.violation_ns[reason] = int(got[fid])
    if "sw_thermal_slowdown" not in r.violation_ns and C.FI_PERF_POLICY_THERMAL in got:
        r.violation_ns["sw_thermal_slowdown"] = int(got[C.FI_PERF_POLICY_THERMAL])
    memory_temp = got.get(C.FI_MEMORY_TEMP)
    if memory_temp:  # GDDR parts answer 0: no sensor, not 0 °C
        r.temperatures_celsius["memory"] = float(memory_temp)
    if C.FI_TOTAL_ENERGY_CONSUMPTION in got:
        r.energy_joules = got[C.FI_TOTAL_ENERGY_CONSUMPTION] / 1000.0
    if C.FI_POWER_INSTANT in got:
        r.power_instant_watts = got[C.FI_POWER_INSTANT] / 1000.0
    if C.FI_PCIE_COUNT_TX_BYTES in got:
        r.pcie_tx_bytes = int(got[C.FI_PCIE_COUNT_TX_BYTES])
    if C.FI_PCIE_COUNT_RX_BYTES in got:
        r.pcie_rx_bytes = int(got[C.FI_PCIE_COUNT_RX_BYTES])
    if C.FI_PCIE_REPLAY_COUNTER in got:
        r.pcie_replay_count = int(got[C.FI_PCIE_REPLAY_COUNTER])
    if C.FI_NVLINK_THROUGHPUT_DATA_TX in got:
        r.nvlink_tx_bytes = int(got[C.FI_NVLINK_THROUGHPUT_DATA_TX]) * 1024  # KiB counter
    if C.FI_NVLINK_THROUGHPUT_DATA_RX in got:
        r.nvlink_rx_bytes = int(got[C.FI_NVLINK_THROUGHPUT_DATA_RX]) * 1024
    for fid, key in _ECC.items():
        if fid in got:
            r.ecc_errors[key] = int(got[fid])
    if C.FI_RETIRED_SBE in got:
        r.retired_pages["single_bit_ecc"] = int(got[C.FI_RETIRED_SBE])
    if C.FI_RETIRED_DBE in got:
        r.retired_pages["double_bit_ecc"] = int(got[C.FI_RETIRED_DBE])
    if C.FI_RETIRED_PENDING in got:
        r.retired_pages_pending = bool(got[C.FI_RETIRED_PENDING])
    for fid, name in _REMAPPED.items():
        if fid in got:
            r.remapped_rows[name] = int(got[fid])
