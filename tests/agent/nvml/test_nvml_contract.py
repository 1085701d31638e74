"""The fake NVML cannot drift from pynvml: same function names, signatures and return types.

Return types are checked against what the *real* pynvml wrappers return, by running them
over a stand-in for ``libnvidia-ml.so.1`` (a Python object whose "C functions" succeed and
report one element to sizing calls), side by side with the fake.
"""

from __future__ import annotations

import ctypes
import inspect
from collections.abc import Callable
from typing import Any, ClassVar, cast

import pynvml
import pytest

from agent.clock import ManualClock
from agent.nvml import consts as C
from agent.nvml.fake import FakeNvml
from agent.nvml.steady import SteadyDevice
from agent.specs import SPECS

INSUFFICIENT_SIZE = 7
MIG_UUID = "MIG-11111111-2222-4333-8444-555555555555"


def _sizing_one(count_arg: int, buffer_arg: int, first_ret: int) -> Callable[..., int]:
    def fn(*args: Any) -> int:
        if args[buffer_arg] is None:
            args[count_arg]._obj.value = 1
            return first_ret
        return 0

    return fn


class StubLib:
    """Stands in for libnvidia-ml.so.1 under the real pynvml wrappers."""

    _special: ClassVar[dict[str, Callable[..., int]]] = {
        "nvmlDeviceGetSamples": _sizing_one(4, 5, 0),
        "nvmlDeviceGetComputeRunningProcesses_v3": _sizing_one(1, 2, INSUFFICIENT_SIZE),
        "nvmlDeviceGetComputeRunningProcesses_v2": _sizing_one(1, 2, INSUFFICIENT_SIZE),
        "nvmlDeviceGetProcessUtilization": _sizing_one(2, 1, INSUFFICIENT_SIZE),
    }

    def __getattr__(self, name: str) -> Callable[..., int]:
        return self._special.get(name, lambda *args: 0)


@pytest.fixture
def real(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(pynvml, "nvmlLib", StubLib())
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    pynvml.nvmlInit()
    return pynvml


@pytest.fixture
def fake() -> FakeNvml:
    clock = ManualClock(100.0)
    nvml = FakeNvml([SteadyDevice(SPECS["H100-SXM"], 0)], clock)
    nvml.nvmlInit()
    clock.advance(2.0)  # the sample buffer has something to return
    return nvml


class Side:
    """What a call needs on one side: a device handle, GPM samples, an event set."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.handle = nvml.nvmlDeviceGetHandleByIndex(0)

    def gpm_request(self) -> Any:
        s1, s2 = self.nvml.nvmlGpmSampleAlloc(), self.nvml.nvmlGpmSampleAlloc()
        self.nvml.nvmlGpmSampleGet(self.handle, s1)
        if isinstance(self.nvml, FakeNvml):
            cast(ManualClock, self.nvml.clock).advance(1.0)
        self.nvml.nvmlGpmSampleGet(self.handle, s2)
        req = pynvml.c_nvmlGpmMetricsGet_t()
        req.version, req.numMetrics, req.sample1, req.sample2 = 1, 1, s1, s2
        req.metrics[0].metricId = C.GPM_SM_UTIL
        return req

    def event_wait_args(self) -> tuple[Any, int]:
        es = self.nvml.nvmlEventSetCreate()
        if isinstance(self.nvml, FakeNvml):
            self.nvml.nvmlDeviceRegisterEvents(self.handle, C.EVENT_XID_CRITICAL, es)
            cast(SteadyDevice, self.nvml.models[0]).add_xid(self.nvml.clock.now(), 79)
        return es, 10


H = lambda s: (s.handle,)  # noqa: E731
# function -> its arguments on one side. Every nvml* function FakeNvml defines must appear here.
CALLS: dict[str, Callable[[Side], tuple[Any, ...]]] = {
    "nvmlInit": lambda s: (),
    "nvmlInitWithFlags": lambda s: (0,),
    "nvmlShutdown": lambda s: (),
    "nvmlSystemGetDriverVersion": lambda s: (),
    "nvmlSystemGetNVMLVersion": lambda s: (),
    "nvmlSystemGetCudaDriverVersion": lambda s: (),
    "nvmlSystemGetCudaDriverVersion_v2": lambda s: (),
    "nvmlDeviceGetCount": lambda s: (),
    "nvmlDeviceGetHandleByIndex": lambda s: (0,),
    "nvmlDeviceGetHandleByUUID": lambda s: (s.nvml.nvmlDeviceGetUUID(s.handle),),
    "nvmlDeviceGetHandleByPciBusId": lambda s: ("00000000:18:00.0",),
    "nvmlDeviceGetIndex": H,
    "nvmlDeviceGetMinorNumber": H,
    "nvmlDeviceGetUUID": H,
    "nvmlDeviceGetName": H,
    "nvmlDeviceGetSerial": H,
    "nvmlDeviceGetVbiosVersion": H,
    "nvmlDeviceGetBrand": H,
    "nvmlDeviceGetPciInfo": H,
    "nvmlDeviceGetPciInfo_v3": H,
    "nvmlDeviceGetCudaComputeCapability": H,
    "nvmlDeviceGetMigMode": H,
    "nvmlDeviceGetMaxMigDeviceCount": H,
    "nvmlDeviceGetMigDeviceHandleByIndex": lambda s: (s.handle, 0),
    "nvmlDeviceGetMemoryInfo": lambda s: (s.handle, C.MEMORY_V2_VERSION),
    "nvmlDeviceGetUtilizationRates": H,
    "nvmlDeviceGetSamples": lambda s: (s.handle, C.SAMPLING_GPU_UTILIZATION, 0),
    "nvmlDeviceGetClockInfo": lambda s: (s.handle, C.CLOCK_SM),
    "nvmlDeviceGetMaxClockInfo": lambda s: (s.handle, C.CLOCK_SM),
    "nvmlDeviceGetClock": lambda s: (s.handle, C.CLOCK_SM, C.CLOCK_ID_APP_CLOCK_TARGET),
    "nvmlDeviceGetApplicationsClock": lambda s: (s.handle, C.CLOCK_SM),
    "nvmlDeviceGetPowerUsage": H,
    "nvmlDeviceGetTotalEnergyConsumption": H,
    "nvmlDeviceGetEnforcedPowerLimit": H,
    "nvmlDeviceGetPowerManagementLimit": H,
    "nvmlDeviceGetPowerManagementDefaultLimit": H,
    "nvmlDeviceGetPowerManagementLimitConstraints": H,
    "nvmlDeviceGetTemperature": lambda s: (s.handle, C.TEMPERATURE_GPU),
    "nvmlDeviceGetTemperatureThreshold": lambda s: (s.handle, C.THRESHOLD_SLOWDOWN),
    "nvmlDeviceGetMarginTemperature": H,
    "nvmlDeviceGetNumFans": H,
    "nvmlDeviceGetFanSpeed": H,
    "nvmlDeviceGetFanSpeed_v2": lambda s: (s.handle, 0),
    "nvmlDeviceGetPerformanceState": H,
    "nvmlDeviceGetCurrentClocksEventReasons": H,
    "nvmlDeviceGetSupportedClocksEventReasons": H,
    "nvmlDeviceGetFieldValues": lambda s: (
        s.handle,
        [C.FI_TOTAL_ENERGY_CONSUMPTION, (C.FI_NVLINK_THROUGHPUT_DATA_TX, C.UINT_MAX)],
    ),
    "nvmlDeviceGetTotalEccErrors": lambda s: (s.handle, C.MEMORY_ERROR_CORRECTED, C.VOLATILE_ECC),
    "nvmlDeviceGetRetiredPagesPendingStatus": H,
    "nvmlDeviceGetRemappedRows": H,
    "nvmlDeviceGetComputeRunningProcesses": H,
    "nvmlDeviceGetComputeRunningProcesses_v2": H,
    "nvmlDeviceGetComputeRunningProcesses_v3": H,
    "nvmlDeviceGetProcessUtilization": lambda s: (s.handle, 0),
    "nvmlGpmQueryDeviceSupport": H,
    "nvmlGpmSampleAlloc": lambda s: (),
    "nvmlGpmSampleFree": lambda s: (s.nvml.nvmlGpmSampleAlloc(),),
    "nvmlGpmSampleGet": lambda s: (s.handle, s.nvml.nvmlGpmSampleAlloc()),
    "nvmlGpmMetricsGet": lambda s: (s.gpm_request(),),
    "nvmlEventSetCreate": lambda s: (),
    "nvmlEventSetFree": lambda s: (s.nvml.nvmlEventSetCreate(),),
    "nvmlDeviceGetSupportedEventTypes": H,
    "nvmlDeviceRegisterEvents": lambda s: (s.handle, C.EVENT_XID_CRITICAL, s.nvml.nvmlEventSetCreate()),
    "nvmlEventSetWait_v2": lambda s: s.event_wait_args(),
    "nvmlEventSetWait": lambda s: s.event_wait_args(),
}
# What the fake GPU cannot answer although pynvml can call it: an H100 SXM has no fan and,
# with row remapping, no page retirement.
NOT_SUPPORTED_ON_H100_SXM = {
    "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetFanSpeed_v2",
    "nvmlDeviceGetRetiredPagesPendingStatus",
}


# Answered only by a MIG-enabled GPU: compared against a fake whose GPU has MIG devices.
NEEDS_MIG = {"nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex"}


def fake_functions() -> list[str]:
    return sorted(n for n, v in vars(FakeNvml).items() if n.startswith("nvml") and callable(v))


def test_every_fake_function_exists_in_pynvml_with_the_same_signature() -> None:
    names = fake_functions()
    assert len(names) >= 60
    for name in names:
        assert hasattr(pynvml, name), f"pynvml has no {name}"
        real = inspect.signature(getattr(pynvml, name))
        ours = inspect.signature(getattr(FakeNvml, name))
        ours = ours.replace(parameters=list(ours.parameters.values())[1:])  # drop self
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
            (p.name, p.kind, p.default) for p in real.parameters.values()
        ], name


def test_every_fake_function_has_a_contract_call() -> None:
    assert set(fake_functions()) == set(CALLS)


def _shape(value: Any) -> Any:
    """A comparable description of a return value's types, recursing into containers."""
    if isinstance(value, (list, tuple)):
        return (
            (type(value).__name__, _shape(value[0]) if value else None)
            if isinstance(value, list)
            else ("tuple", tuple(_shape(v) for v in value))
        )
    if isinstance(value, ctypes.Array):
        return ("array", type(value)._type_)
    if isinstance(value, pynvml.nvmlFriendlyObject):
        return ("friendly", tuple(sorted((k, type(v).__name__) for k, v in vars(value).items())))
    return type(value)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_fake_returns_what_pynvml_returns(name: str, real: Any, fake: FakeNvml) -> None:
    if name in NEEDS_MIG:
        with pytest.raises(pynvml.NVMLError_NotSupported):  # the fixture's GPU has MIG off
            getattr(fake, name)(*CALLS[name](Side(fake)))
        fake = FakeNvml([SteadyDevice(SPECS["H100-SXM"], 0, mig_uuids=(MIG_UUID,))], ManualClock(100.0))
        fake.nvmlInit()
    real_side, fake_side = Side(real), Side(fake)
    expected = getattr(real, name)(*CALLS[name](real_side))
    if name in NOT_SUPPORTED_ON_H100_SXM:
        with pytest.raises(pynvml.NVMLError_NotSupported):
            getattr(fake, name)(*CALLS[name](fake_side))
        return
    got = getattr(fake, name)(*CALLS[name](fake_side))
    assert _shape(got) == _shape(expected)
    if isinstance(got, list) and name != "nvmlDeviceGetSamples":
        assert got, f"{name}: the fake should have returned entries to compare"


def test_fake_raises_the_real_pynvml_error_classes(fake: FakeNvml) -> None:
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    fake.models[0].lost = True  # type: ignore[attr-defined]
    with pytest.raises(pynvml.NVMLError_GpuIsLost) as info:
        fake.nvmlDeviceGetPowerUsage(handle)
    assert type(info.value) is pynvml.NVMLError_GpuIsLost and info.value.value == C.ERROR_GPU_IS_LOST
    with pytest.raises(pynvml.NVMLError_Unknown):
        fake.nvmlDeviceGetHandleByIndex(0)


def test_unimplemented_functions_behave_like_an_older_driver(fake: FakeNvml) -> None:
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        fake.nvmlDeviceGetEncoderUtilization(fake.nvmlDeviceGetHandleByIndex(0))
    assert fake.NVML_FI_DEV_POWER_INSTANT == 186  # constants and structs come from pynvml
    assert fake.c_nvmlGpmMetricsGet_t is pynvml.c_nvmlGpmMetricsGet_t


CONSTS = {
    "ERROR_NOT_SUPPORTED": "NVML_ERROR_NOT_SUPPORTED",
    "ERROR_NOT_FOUND": "NVML_ERROR_NOT_FOUND",
    "ERROR_GPU_IS_LOST": "NVML_ERROR_GPU_IS_LOST",
    "ERROR_RESET_REQUIRED": "NVML_ERROR_RESET_REQUIRED",
    "ERROR_FUNCTION_NOT_FOUND": "NVML_ERROR_FUNCTION_NOT_FOUND",
    "ERROR_TIMEOUT": "NVML_ERROR_TIMEOUT",
    "ERROR_LIBRARY_NOT_FOUND": "NVML_ERROR_LIBRARY_NOT_FOUND",
    "ERROR_DRIVER_NOT_LOADED": "NVML_ERROR_DRIVER_NOT_LOADED",
    "ERROR_UNINITIALIZED": "NVML_ERROR_UNINITIALIZED",
    "ERROR_INVALID_ARGUMENT": "NVML_ERROR_INVALID_ARGUMENT",
    "ERROR_ARGUMENT_VERSION_MISMATCH": "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
    "ERROR_UNKNOWN": "NVML_ERROR_UNKNOWN",
    "CLOCK_GRAPHICS": "NVML_CLOCK_GRAPHICS",
    "CLOCK_SM": "NVML_CLOCK_SM",
    "CLOCK_MEM": "NVML_CLOCK_MEM",
    "CLOCK_ID_APP_CLOCK_TARGET": "NVML_CLOCK_ID_APP_CLOCK_TARGET",
    "TEMPERATURE_GPU": "NVML_TEMPERATURE_GPU",
    "THRESHOLD_SHUTDOWN": "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN",
    "THRESHOLD_SLOWDOWN": "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN",
    "THRESHOLD_MEM_MAX": "NVML_TEMPERATURE_THRESHOLD_MEM_MAX",
    "THRESHOLD_GPU_MAX": "NVML_TEMPERATURE_THRESHOLD_GPU_MAX",
    "SAMPLING_GPU_UTILIZATION": "NVML_GPU_UTILIZATION_SAMPLES",
    "MEMORY_V2_VERSION": "nvmlMemory_v2",
    "GPM_METRICS_GET_VERSION": "NVML_GPM_METRICS_GET_VERSION",
    "DEVICE_MIG_ENABLE": "NVML_DEVICE_MIG_ENABLE",
    "EVENT_XID_CRITICAL": "nvmlEventTypeXidCriticalError",
    "REASON_GPU_IDLE": "nvmlClocksEventReasonGpuIdle",
    "REASON_SW_POWER_CAP": "nvmlClocksEventReasonSwPowerCap",
    "REASON_HW_SLOWDOWN": "nvmlClocksEventReasonHwSlowdown",
    "REASON_SYNC_BOOST": "nvmlClocksEventReasonSyncBoost",
    "REASON_SW_THERMAL_SLOWDOWN": "nvmlClocksEventReasonSwThermalSlowdown",
    "REASON_HW_THERMAL_SLOWDOWN": "nvmlClocksEventReasonHwThermalSlowdown",
    "REASON_HW_POWER_BRAKE_SLOWDOWN": "nvmlClocksEventReasonHwPowerBrakeSlowdown",
    "REASON_DISPLAY_CLOCK_SETTING": "nvmlClocksEventReasonDisplayClockSetting",
    "REASON_APPLICATIONS_CLOCKS_SETTING": "nvmlClocksEventReasonApplicationsClocksSetting",
    "VALUE_TYPE_UNSIGNED_INT": "NVML_VALUE_TYPE_UNSIGNED_INT",
    "VALUE_TYPE_UNSIGNED_LONG_LONG": "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG",
    "VALUE_TYPE_DOUBLE": "NVML_VALUE_TYPE_DOUBLE",
    "FI_PERF_POLICY_THERMAL": "NVML_FI_DEV_PERF_POLICY_THERMAL",
    "FI_MEMORY_TEMP": "NVML_FI_DEV_MEMORY_TEMP",
    "FI_TOTAL_ENERGY_CONSUMPTION": "NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "FI_NVLINK_LINK_COUNT": "NVML_FI_DEV_NVLINK_LINK_COUNT",
    "FI_PCIE_REPLAY_COUNTER": "NVML_FI_DEV_PCIE_REPLAY_COUNTER",
    "FI_NVLINK_THROUGHPUT_DATA_TX": "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX",
    "FI_NVLINK_THROUGHPUT_DATA_RX": "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX",
    "FI_REMAPPED_COR": "NVML_FI_DEV_REMAPPED_COR",
    "FI_REMAPPED_FAILURE": "NVML_FI_DEV_REMAPPED_FAILURE",
    "FI_POWER_INSTANT": "NVML_FI_DEV_POWER_INSTANT",
    "FI_PCIE_COUNT_TX_BYTES": "NVML_FI_DEV_PCIE_COUNT_TX_BYTES",
    "FI_PCIE_COUNT_RX_BYTES": "NVML_FI_DEV_PCIE_COUNT_RX_BYTES",
    "FI_NVLINK_COUNT_XMIT_BYTES": "NVML_FI_DEV_NVLINK_COUNT_XMIT_BYTES",
    "FI_NVLINK_COUNT_RCV_BYTES": "NVML_FI_DEV_NVLINK_COUNT_RCV_BYTES",
    "FI_ECC_SBE_VOL_TOTAL": "NVML_FI_DEV_ECC_SBE_VOL_TOTAL",
    "FI_ECC_DBE_AGG_TOTAL": "NVML_FI_DEV_ECC_DBE_AGG_TOTAL",
    "FI_RETIRED_SBE": "NVML_FI_DEV_RETIRED_SBE",
    "FI_RETIRED_PENDING": "NVML_FI_DEV_RETIRED_PENDING",
    "FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN": "NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN",
    "FI_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN": "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN",
    "FI_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN": (
        "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN"
    ),
    "GPM_SM_UTIL": "NVML_GPM_METRIC_SM_UTIL",
    "GPM_SM_OCCUPANCY": "NVML_GPM_METRIC_SM_OCCUPANCY",
    "GPM_ANY_TENSOR_UTIL": "NVML_GPM_METRIC_ANY_TENSOR_UTIL",
    "GPM_DFMA_TENSOR_UTIL": "NVML_GPM_METRIC_DFMA_TENSOR_UTIL",
    "GPM_HMMA_TENSOR_UTIL": "NVML_GPM_METRIC_HMMA_TENSOR_UTIL",
    "GPM_IMMA_TENSOR_UTIL": "NVML_GPM_METRIC_IMMA_TENSOR_UTIL",
    "GPM_DRAM_BW_UTIL": "NVML_GPM_METRIC_DRAM_BW_UTIL",
    "GPM_FP64_UTIL": "NVML_GPM_METRIC_FP64_UTIL",
    "GPM_FP32_UTIL": "NVML_GPM_METRIC_FP32_UTIL",
    "GPM_FP16_UTIL": "NVML_GPM_METRIC_FP16_UTIL",
    "GPM_PCIE_TX_PER_SEC": "NVML_GPM_METRIC_PCIE_TX_PER_SEC",
    "GPM_PCIE_RX_PER_SEC": "NVML_GPM_METRIC_PCIE_RX_PER_SEC",
    "GPM_NVLINK_TOTAL_RX_PER_SEC": "NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC",
    "GPM_NVLINK_TOTAL_TX_PER_SEC": "NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC",
}


@pytest.mark.parametrize("ours,theirs", sorted(CONSTS.items()))
def test_abi_numbers_match_pynvml(ours: str, theirs: str) -> None:
    assert getattr(C, ours) == getattr(pynvml, theirs)


def test_violation_field_ids_are_the_documented_ones() -> None:
    assert C.VIOLATION_FIELDS[pynvml.NVML_FI_DEV_PERF_POLICY_POWER] == "sw_power_cap"
    assert C.VIOLATION_FIELDS[pynvml.NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT] == "board_limit"
    assert C.VIOLATION_FIELDS[pynvml.NVML_FI_DEV_PERF_POLICY_TOTAL_BASE_CLOCKS] == "total_base_clocks"
    assert pynvml.NVML_FI_DEV_PERF_POLICY_TOTAL_APP_CLOCKS not in C.VIOLATION_FIELDS  # deprecated, not read
