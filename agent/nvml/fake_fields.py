"""What the fake NVML answers for each field id of ``nvmlDeviceGetFieldValues``.

One function per field family turns a device model's ``DeviceSnapshot`` (and its
``GpuSpec``) into ``(valueType, value)`` in NVML's own units, or raises
``FieldUnsupported`` when the modelled GPU has no such counter, so that the entry
comes back with ``nvmlReturn = NVML_ERROR_NOT_SUPPORTED`` as on a real driver.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.nvml import consts as C
from agent.sim.device import DeviceSnapshot
from agent.specs import GpuSpec


class FieldUnsupported(Exception):
    def __init__(self, code: int = C.ERROR_NOT_SUPPORTED) -> None:
        super().__init__(code)
        self.code = code


ULL = C.VALUE_TYPE_UNSIGNED_LONG_LONG
UINT = C.VALUE_TYPE_UNSIGNED_INT

# NVLink links per GPU generation (all links of an HGX board)
_NVLINK_LINKS = {"volta": 6, "ampere": 12, "hopper": 18, "blackwell": 18}

FieldFn = Callable[[GpuSpec, DeviceSnapshot, int], tuple[int, int]]


def nvlink_links(spec: GpuSpec) -> int:
    return _NVLINK_LINKS.get(spec.architecture, 4) if spec.has_nvlink else 0


def _nvlink5(spec: GpuSpec) -> bool:
    return spec.has_nvlink and spec.architecture == "blackwell"


def _ecc(attr: str) -> FieldFn:
    def get(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
        if not spec.has_ecc:
            raise FieldUnsupported
        return ULL, int(getattr(snap, attr))

    return get


def _retired(attr: str, vtype: int = ULL) -> FieldFn:
    # Ampere and newer data-centre parts remap rows instead of retiring pages.
    def get(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
        if not spec.has_ecc or spec.has_row_remapping:
            raise FieldUnsupported
        return vtype, int(getattr(snap, attr))

    return get


def _remapped(attr: str) -> FieldFn:
    def get(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
        if not spec.has_row_remapping:
            raise FieldUnsupported
        return UINT, int(getattr(snap, attr))

    return get


def _violation(fid: int) -> FieldFn:
    def get(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
        value = snap.violation_ns.get(fid)
        if value is None and fid == C.FI_PERF_POLICY_THERMAL:
            # the old thermal policy counter tracks what 269 reports on newer drivers
            value = snap.violation_ns.get(C.FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN)
        return ULL, int(value or 0)

    return get


def _memory_temp(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
    if snap.temperature_memory_c is None:
        raise FieldUnsupported
    return UINT, round(snap.temperature_memory_c)


def _energy(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
    return ULL, int(snap.energy_mj)


def _power(attr: str, since_ampere: bool = False) -> FieldFn:
    def get(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
        if since_ampere and spec.architecture in ("volta", "turing"):
            raise FieldUnsupported
        if scope not in (0, C.UINT_MAX):  # only the GPU scope is modelled
            raise FieldUnsupported
        return UINT, round(getattr(snap, attr))

    return get


def _tlimit(threshold: int) -> FieldFn:
    def get(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
        value = snap.thresholds_c.get(threshold)
        if value is None or spec.architecture not in ("ada", "hopper", "blackwell"):
            raise FieldUnsupported
        return UINT, round(value)

    return get


def _counter(attr: str, vtype: int = ULL) -> FieldFn:
    def get(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
        return vtype, int(getattr(snap, attr))

    return get


def _nvlink_link_count(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
    if not spec.has_nvlink:
        raise FieldUnsupported
    return UINT, nvlink_links(spec)


def _nvlink_throughput(attr: str) -> FieldFn:
    # KiB counters summed over all links (scope UINT_MAX); NVLink5 parts dropped them.
    def get(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
        if not spec.has_nvlink or _nvlink5(spec):
            raise FieldUnsupported
        total = int(getattr(snap, attr))
        links = nvlink_links(spec)
        if scope == C.UINT_MAX:
            return ULL, total // 1024
        if scope >= links:
            raise FieldUnsupported(C.ERROR_INVALID_ARGUMENT)
        return ULL, _link_share(total, links, scope) // 1024

    return get


def _nvlink_bytes(attr: str) -> FieldFn:
    # NVLink5 byte counters, one per link (scopeId = link id).
    def get(spec: GpuSpec, snap: DeviceSnapshot, scope: int) -> tuple[int, int]:
        if not _nvlink5(spec):
            raise FieldUnsupported
        links = nvlink_links(spec)
        if scope >= links:
            raise FieldUnsupported(C.ERROR_INVALID_ARGUMENT)
        return ULL, _link_share(int(getattr(snap, attr)), links, scope)

    return get


def _link_share(total: int, links: int, link: int) -> int:
    """Traffic spread evenly over the links; link 0 carries the remainder, so the links sum to the total."""
    share = total // links
    return share + (total - share * links if link == 0 else 0)


FIELDS: dict[int, FieldFn] = {
    C.FI_ECC_SBE_VOL_TOTAL: _ecc("ecc_volatile_corrected"),
    C.FI_ECC_DBE_VOL_TOTAL: _ecc("ecc_volatile_uncorrected"),
    C.FI_ECC_SBE_AGG_TOTAL: _ecc("ecc_aggregate_corrected"),
    C.FI_ECC_DBE_AGG_TOTAL: _ecc("ecc_aggregate_uncorrected"),
    C.FI_RETIRED_SBE: _retired("retired_pages_sbe"),
    C.FI_RETIRED_DBE: _retired("retired_pages_dbe"),
    C.FI_RETIRED_PENDING: _retired("retired_pages_pending", UINT),
    **{fid: _violation(fid) for fid in range(C.FI_PERF_POLICY_POWER, C.FI_PERF_POLICY_TOTAL_BASE_CLOCKS + 1)},
    C.FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN: _violation(C.FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN),
    C.FI_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN: _violation(C.FI_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN),
    C.FI_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN: _violation(
        C.FI_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN
    ),
    C.FI_MEMORY_TEMP: _memory_temp,
    C.FI_TOTAL_ENERGY_CONSUMPTION: _energy,
    191: _energy,  # NVML_FI_DEV_ENERGY
    C.FI_NVLINK_LINK_COUNT: _nvlink_link_count,
    C.FI_PCIE_REPLAY_COUNTER: _counter("pcie_replay_count", UINT),
    C.FI_NVLINK_THROUGHPUT_DATA_TX: _nvlink_throughput("nvlink_tx_bytes"),
    C.FI_NVLINK_THROUGHPUT_DATA_RX: _nvlink_throughput("nvlink_rx_bytes"),
    C.FI_REMAPPED_COR: _remapped("remapped_rows_corrected"),
    C.FI_REMAPPED_UNC: _remapped("remapped_rows_uncorrected"),
    C.FI_REMAPPED_PENDING: _remapped("remapped_rows_pending"),
    C.FI_REMAPPED_FAILURE: _remapped("remapped_rows_failure"),
    185: _power("power_average_mw", since_ampere=True),  # NVML_FI_DEV_POWER_AVERAGE
    C.FI_POWER_INSTANT: _power("power_instant_mw", since_ampere=True),
    187: _power("power_min_limit_mw"),
    188: _power("power_max_limit_mw"),
    189: _power("power_default_limit_mw"),
    190: _power("power_limit_mw"),
    193: _tlimit(C.THRESHOLD_SHUTDOWN),
    194: _tlimit(C.THRESHOLD_SLOWDOWN),
    195: _tlimit(C.THRESHOLD_MEM_MAX),
    196: _tlimit(C.THRESHOLD_GPU_MAX),
    C.FI_PCIE_COUNT_TX_BYTES: _counter("pcie_tx_bytes"),
    C.FI_PCIE_COUNT_RX_BYTES: _counter("pcie_rx_bytes"),
    C.FI_NVLINK_COUNT_XMIT_BYTES: _nvlink_bytes("nvlink_tx_bytes"),
    C.FI_NVLINK_COUNT_RCV_BYTES: _nvlink_bytes("nvlink_rx_bytes"),
}
