"""FakeNvml's NVML semantics over a device model, and its fault hooks."""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
from typing import Any

import pynvml
import pytest

from agent.clock import ManualClock, ScaledClock
from agent.nvml import consts as C
from agent.nvml import fake as fake_module
from agent.nvml.fake import SAMPLE_BUFFER_LEN, SAMPLE_PERIOD_S, FakeNvml
from agent.nvml.steady import SteadyDevice
from agent.sim.device import Activity
from agent.specs import SPECS

T0 = 600.0  # a whole number of 1/6 s slots


class Ramp(SteadyDevice):
    """busy rises linearly with time (0 at t=T0, 1 at t=T0+10), so every window has its own average."""

    def activity(self, t0: float, t1: float) -> Activity:
        mid = ((t0 + t1) / 2 - T0) / 10
        busy = max(0.0, min(1.0, mid))
        return Activity(busy=busy, sm_active=busy, tensor=busy / 2, dram=0.25, memory_controller=0.2)


def make(
    count: int = 2, model: str = "H100-SXM", cls: type[SteadyDevice] = SteadyDevice, clock: Any = None
) -> tuple[Any, list[SteadyDevice], FakeNvml]:
    clock = clock or ManualClock(T0)
    models = [cls(SPECS[model], i) for i in range(count)]
    nvml = FakeNvml(models, clock)
    nvml.nvmlInit()
    return clock, models, nvml


def test_calls_before_init_raise_uninitialized() -> None:
    clock = ManualClock(T0)
    nvml = FakeNvml([SteadyDevice(SPECS["H100-SXM"], 0)], clock)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetPowerUsage(handle)


def test_library_missing_raises_library_not_found() -> None:
    nvml = FakeNvml([], ManualClock(), library_missing=True)
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        nvml.nvmlInit()


def test_handles_by_index_uuid_and_bus_id_are_the_same_device() -> None:
    _, models, nvml = make()
    h = nvml.nvmlDeviceGetHandleByIndex(1)
    assert isinstance(h, pynvml.c_nvmlDevice_t)
    assert nvml.nvmlDeviceGetIndex(nvml.nvmlDeviceGetHandleByUUID(models[1].identity.uuid)) == 1
    assert nvml.nvmlDeviceGetIndex(nvml.nvmlDeviceGetHandleByPciBusId("00000000:2A:00.0")) == 1
    assert nvml.nvmlDeviceGetIndex(nvml.nvmlDeviceGetHandleByPciBusId(b"0000:2a:00.0")) == 1
    assert nvml.nvmlDeviceGetPciInfo(h).busId == "00000000:2A:00.0"
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetHandleByPciBusId("00000000:FF:00.0")
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetPowerUsage(pynvml.c_nvmlDevice_t())


def test_units_are_nvmls_own() -> None:
    _, _, nvml = make(1)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    snap = nvml.snapshot(0)
    assert nvml.nvmlDeviceGetPowerUsage(h) == round(snap.power_average_mw)  # mW
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(h) == snap.energy_mj  # mJ
    assert nvml.nvmlDeviceGetClockInfo(h, C.CLOCK_SM) == round(snap.sm_clock_mhz)  # MHz
    assert nvml.nvmlDeviceGetMaxClockInfo(h, C.CLOCK_SM) == 1980
    assert nvml.nvmlDeviceGetPowerManagementLimitConstraints(h) == [200_000, 700_000]


def test_utilization_covers_the_last_sixth_of_a_second() -> None:
    clock, _, nvml = make(1, cls=Ramp)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    clock.advance(5.0)
    util = nvml.nvmlDeviceGetUtilizationRates(h)
    assert isinstance(util, pynvml.c_nvmlUtilization_t)
    assert util.gpu == round(100 * (5.0 - SAMPLE_PERIOD_S / 2) / 10) and util.memory == 20


def test_sample_buffer_slots_timestamps_and_last_seen() -> None:
    clock, _, nvml = make(1, cls=Ramp)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetSamples(h, C.SAMPLING_GPU_UTILIZATION, 0)  # nothing completed yet
    clock.advance(1.0)
    vtype, samples = nvml.nvmlDeviceGetSamples(h, C.SAMPLING_GPU_UTILIZATION, 0)
    assert vtype == C.VALUE_TYPE_UNSIGNED_INT and len(samples) == 6
    assert all(isinstance(s, pynvml.c_nvmlSample_t) for s in samples)
    stamps = [s.timeStamp for s in samples]
    assert stamps[-1] == round((clock.epoch()) * 1e6)  # µs on the epoch clock, the newest slot ends now
    assert [b - a for a, b in itertools.pairwise(stamps)] == pytest.approx([1e6 / 6] * 5, abs=1)
    assert [s.sampleValue.uiVal for s in samples] == [round(100 * (k - 0.5) / 6 / 10) for k in range(1, 7)]
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetSamples(h, C.SAMPLING_GPU_UTILIZATION, stamps[-1])  # nothing newer
    clock.advance(0.5)
    _, newer = nvml.nvmlDeviceGetSamples(h, C.SAMPLING_GPU_UTILIZATION, stamps[-1])
    assert len(newer) == 3 and newer[0].timeStamp > stamps[-1]
    _, again = nvml.nvmlDeviceGetSamples(h, C.SAMPLING_GPU_UTILIZATION, stamps[2])
    assert [s.timeStamp for s in again] == [*stamps[3:], *(s.timeStamp for s in newer)]
    clock.advance(60.0)
    _, everything = nvml.nvmlDeviceGetSamples(h, C.SAMPLING_GPU_UTILIZATION, 0)
    assert len(everything) == SAMPLE_BUFFER_LEN  # the driver keeps a bounded buffer


def test_gpm_metrics_average_the_window_between_two_samples() -> None:
    clock, _, nvml = make(2, cls=Ramp)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlGpmQueryDeviceSupport(h).isSupportedDevice == 1
    s1, s2 = nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()
    clock.advance(2.0)
    nvml.nvmlGpmSampleGet(h, s1)
    clock.advance(4.0)
    nvml.nvmlGpmSampleGet(h, s2)
    req = pynvml.c_nvmlGpmMetricsGet_t()
    req.version, req.numMetrics, req.sample1, req.sample2 = 1, 4, s1, s2
    for i, metric in enumerate((C.GPM_SM_UTIL, C.GPM_ANY_TENSOR_UTIL, C.GPM_PCIE_TX_PER_SEC, 999)):
        req.metrics[i].metricId = metric
    assert nvml.nvmlGpmMetricsGet(req) is req
    assert req.metrics[0].nvmlReturn == C.SUCCESS and req.metrics[0].value == pytest.approx(
        40.0
    )  # busy at t=4
    assert req.metrics[1].value == pytest.approx(20.0)
    assert req.metrics[0].metricInfo.shortName == b"SM_UTIL" and req.metrics[2].metricInfo.unit == b"MiB/sec"
    assert req.metrics[2].value == pytest.approx(2e9 * 0.85 / 2**20)  # MiB/s from the PCIe byte counter
    assert req.metrics[3].nvmlReturn == C.ERROR_NOT_SUPPORTED
    other = nvml.nvmlGpmSampleAlloc()
    nvml.nvmlGpmSampleGet(nvml.nvmlDeviceGetHandleByIndex(1), other)
    req.sample2 = other
    with pytest.raises(pynvml.NVMLError_InvalidArgument):  # samples of two different GPUs
        nvml.nvmlGpmMetricsGet(req)


def test_gpm_not_supported_before_hopper() -> None:
    _, _, nvml = make(1, model="A100-SXM-80GB")
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlGpmQueryDeviceSupport(h).isSupportedDevice == 0
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlGpmSampleGet(h, nvml.nvmlGpmSampleAlloc())


def test_field_values_per_entry_returns() -> None:
    _, _, nvml = make(1, model="L4")
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    values = nvml.nvmlDeviceGetFieldValues(
        h, [C.FI_TOTAL_ENERGY_CONSUMPTION, (C.FI_NVLINK_THROUGHPUT_DATA_TX, C.UINT_MAX), 5000]
    )
    assert isinstance(values[0], pynvml.c_nvmlFieldValue_t)
    assert values[0].nvmlReturn == C.SUCCESS and values[0].value.ullVal == nvml.snapshot(0).energy_mj
    assert (
        values[0].valueType == C.VALUE_TYPE_UNSIGNED_LONG_LONG and values[0].timestamp > 1_600_000_000 * 10**6
    )
    assert values[1].nvmlReturn == C.ERROR_NOT_SUPPORTED and values[1].scopeId == C.UINT_MAX  # L4: no NVLink
    assert values[2].nvmlReturn == C.ERROR_NOT_SUPPORTED


def test_lost_gpu_raises_gpu_is_lost_everywhere() -> None:
    _, models, nvml = make()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    models[0].lost = True
    for call in (
        lambda: nvml.nvmlDeviceGetMemoryInfo(h),
        lambda: nvml.nvmlDeviceGetFieldValues(h, [83]),
        lambda: nvml.nvmlDeviceGetHandleByPciBusId(models[0].identity.pci_bus_id),
    ):
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            call()
    with pytest.raises(pynvml.NVMLError_Unknown):
        nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetPowerUsage(nvml.nvmlDeviceGetHandleByIndex(1)) > 0


def test_hang_blocks_only_that_device_until_the_clock_passes() -> None:
    clock, models, nvml = make()
    h0, h1 = nvml.nvmlDeviceGetHandleByIndex(0), nvml.nvmlDeviceGetHandleByIndex(1)
    models[0].hang_until = clock.now() + 30
    done = threading.Event()

    def read() -> None:
        nvml.nvmlDeviceGetPowerUsage(h0)
        done.set()

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    assert not done.wait(0.1)
    assert nvml.nvmlDeviceGetPowerUsage(h1) > 0  # the other GPU answers meanwhile
    clock.advance(29.0)
    assert not done.wait(0.05)
    clock.advance(1.5)
    assert done.wait(2.0)


def test_block_hook_respects_clock_speed() -> None:
    clock = ScaledClock(speed=20.0)
    _, _, nvml = make(1, clock=clock)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.block(0, 2.0)  # two clock seconds = 0.1 s of real time at speed 20
    start = time.monotonic()
    nvml.nvmlDeviceGetTemperature(h, C.TEMPERATURE_GPU)
    assert 0.08 <= time.monotonic() - start < 1.0


def test_fail_remove_and_clear_hooks_and_call_counts() -> None:
    _, _, nvml = make()
    h0, h1 = nvml.nvmlDeviceGetHandleByIndex(0), nvml.nvmlDeviceGetHandleByIndex(1)
    nvml.fail(0, "nvmlDeviceGetPowerUsage", C.ERROR_NO_PERMISSION)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        nvml.nvmlDeviceGetPowerUsage(h0)
    assert nvml.nvmlDeviceGetPowerUsage(h1) > 0
    nvml.fail(1, None, C.ERROR_UNKNOWN)
    with pytest.raises(pynvml.NVMLError_Unknown):
        nvml.nvmlDeviceGetMemoryInfo(h1)
    nvml.remove_function("nvmlDeviceGetMarginTemperature")
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        nvml.nvmlDeviceGetMarginTemperature(h0)
    nvml.remove_function("nvmlDeviceGetComputeRunningProcesses_v3")
    with pytest.raises(pynvml.NVMLLibraryMismatchError):
        nvml.nvmlDeviceGetComputeRunningProcesses(h0)
    assert len(nvml.nvmlDeviceGetComputeRunningProcesses_v2(h0)) == 1
    nvml.clear_faults()
    assert nvml.nvmlDeviceGetPowerUsage(h0) > 0 and nvml.nvmlDeviceGetMarginTemperature(h0) > 0
    assert nvml.calls[0]["nvmlDeviceGetPowerUsage"] == 2 and nvml.calls[1]["nvmlDeviceGetPowerUsage"] == 1


def test_process_utilization_quirks() -> None:
    clock, models, nvml = make(1)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    clock.advance(1.0)
    samples = nvml.nvmlDeviceGetProcessUtilization(h, 0)
    assert [(s.pid, s.smUtil) for s in samples] == [(4100, 85)]
    assert isinstance(samples[0], pynvml.c_nvmlProcessUtilizationSample_t)
    with pytest.raises(pynvml.NVMLError_NotFound):  # nothing newer than what was seen
        nvml.nvmlDeviceGetProcessUtilization(h, samples[0].timeStamp)
    models[0].busy = 0.0
    with pytest.raises(pynvml.NVMLError) as info:  # no process at all: the sizing call "succeeds"
        nvml.nvmlDeviceGetProcessUtilization(h, 0)
    assert info.value.value == 0 and type(info.value) is pynvml.NVMLError


def test_process_list_is_friendly_objects() -> None:
    _, _, nvml = make(1)
    procs = nvml.nvmlDeviceGetComputeRunningProcesses(nvml.nvmlDeviceGetHandleByIndex(0))
    assert isinstance(procs[0], pynvml.nvmlFriendlyObject)
    assert procs[0].pid == 4100 and procs[0].usedGpuMemory > 0 and procs[0].gpuInstanceId == C.UINT_MAX


def test_event_set_delivers_each_xid_once_and_times_out_in_clock_time() -> None:
    clock = ScaledClock(speed=10.0, start=T0)
    _, models, nvml = make(clock=clock)
    es = nvml.nvmlEventSetCreate()
    for i in (0, 1):
        nvml.nvmlDeviceRegisterEvents(nvml.nvmlDeviceGetHandleByIndex(i), C.EVENT_XID_CRITICAL, es)
    models[1].add_xid(clock.now(), 79)
    data = nvml.nvmlEventSetWait_v2(es, 1000)
    assert isinstance(data, pynvml.c_nvmlEventData_t)
    assert (data.eventType, data.eventData, data.gpuInstanceId) == (C.EVENT_XID_CRITICAL, 79, C.UINT_MAX)
    assert nvml.nvmlDeviceGetIndex(data.device) == 1
    start = time.monotonic()
    with pytest.raises(pynvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait_v2(es, 1000)  # one clock second = 0.1 s of real time
    assert 0.08 <= time.monotonic() - start < 1.0


def test_event_wait_wakes_for_a_scheduled_xid_without_building_snapshots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fake_module, "EVENT_POLL_S", 5.0)  # so that only the schedule can wake it early
    clock = ScaledClock(speed=10.0, start=T0)
    _, models, nvml = make(clock=clock)
    es = nvml.nvmlEventSetCreate()
    for i in (0, 1):
        nvml.nvmlDeviceRegisterEvents(nvml.nvmlDeviceGetHandleByIndex(i), C.EVENT_XID_CRITICAL, es)
    built = 0
    for m in models:
        original = m.snapshot

        def counting(t: float, original: Any = original) -> Any:
            nonlocal built
            built += 1
            return original(t)

        object.__setattr__(m, "snapshot", counting)
    with pytest.raises(pynvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait_v2(es, 500)  # nothing raised or scheduled: the models are not asked
    assert built == 0
    models[0].add_xid(clock.now() + 0.3, 48)  # 0.03 s of real time ahead
    start = time.monotonic()
    data = nvml.nvmlEventSetWait_v2(es, 5000)
    assert data.eventData == 48 and nvml.nvmlDeviceGetIndex(data.device) == 0
    assert time.monotonic() - start < 2.0  # woken for the XID, not at the next poll (5 s)
    assert built >= 1


def test_snapshot_is_shared_within_an_instant_but_follows_model_changes() -> None:
    clock, models, nvml = make(1)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    calls = 0
    original = models[0].snapshot

    def counting(t: float) -> Any:
        nonlocal calls
        calls += 1
        return original(t)

    object.__setattr__(models[0], "snapshot", counting)  # no revision bump
    for _ in range(5):
        nvml.nvmlDeviceGetPowerUsage(h)
    base = calls
    assert base <= 1  # five calls in one instant share one snapshot
    models[0].busy = 0.0  # bumps revision: served at once
    assert nvml.nvmlDeviceGetCurrentClocksEventReasons(h) == C.REASON_GPU_IDLE
    assert calls == base + 1
    clock.advance(1.0)
    nvml.nvmlDeviceGetPowerUsage(h)
    assert calls == base + 2


# ---------------------------------------------------------------- what the fake keeps between calls
class Switch(SteadyDevice):
    """Returns whatever Activity object it holds: the fake keeps what it derived only for that object."""

    current = Activity(busy=0.2, sm_active=0.2, memory_controller=0.1)

    def activity(self, t0: float, t1: float) -> Activity:
        return self.current


class Accelerating(SteadyDevice):
    """PCIe traffic that speeds up (1e9 * t^2 bytes) under a constant, cached activity."""

    def snapshot(self, t: float) -> Any:
        snap = super().snapshot(t)
        snap.pcie_tx_bytes = int(1e9 * (t - T0) ** 2)
        return snap


def gpm_request(s1: Any, s2: Any, metrics: tuple[int, ...]) -> Any:
    req = pynvml.c_nvmlGpmMetricsGet_t()
    req.version, req.numMetrics, req.sample1, req.sample2 = 1, len(metrics), s1, s2
    for i, metric in enumerate(metrics):
        req.metrics[i].metricId = metric
    return req


def test_values_derived_from_an_activity_follow_a_new_activity_object() -> None:
    clock, models, nvml = make(1, cls=Switch)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    s1, s2 = nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()
    clock.advance(1.0)
    nvml.nvmlGpmSampleGet(h, s1)
    util = nvml.nvmlDeviceGetUtilizationRates(h)
    _, samples = nvml.nvmlDeviceGetSamples(h, C.SAMPLING_GPU_UTILIZATION, 0)
    assert (util.gpu, util.memory, samples[-1].sampleValue.uiVal) == (20, 10, 20)
    clock.advance(1.0)
    nvml.nvmlGpmSampleGet(h, s2)
    req = gpm_request(s1, s2, (C.GPM_SM_UTIL,))
    assert nvml.nvmlGpmMetricsGet(req).metrics[0].value == pytest.approx(20.0)
    _, samples = nvml.nvmlDeviceGetSamples(h, C.SAMPLING_GPU_UTILIZATION, samples[-1].timeStamp)
    assert [s.sampleValue.uiVal for s in samples] == [20] * 6
    models[0].current = Activity(busy=0.7, sm_active=0.6, memory_controller=0.5)
    clock.advance(1.0)
    util = nvml.nvmlDeviceGetUtilizationRates(h)
    _, newer = nvml.nvmlDeviceGetSamples(h, C.SAMPLING_GPU_UTILIZATION, samples[-1].timeStamp)
    _, memory = nvml.nvmlDeviceGetSamples(h, 2, samples[-1].timeStamp)  # NVML_MEMORY_UTILIZATION_SAMPLES
    assert (util.gpu, util.memory) == (70, 50)
    assert [s.sampleValue.uiVal for s in newer] == [70] * 6 and [s.sampleValue.uiVal for s in memory] == [
        50
    ] * 6
    nvml.nvmlGpmSampleGet(h, s1)
    req = gpm_request(s2, s1, (C.GPM_SM_UTIL,))
    assert nvml.nvmlGpmMetricsGet(req).metrics[0].value == pytest.approx(60.0)


def test_gpm_results_follow_the_counters_and_the_request() -> None:
    clock, _, nvml = make(1, cls=Accelerating)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    samples = [nvml.nvmlGpmSampleAlloc() for _ in range(3)]
    for s in samples:
        clock.advance(1.0)
        nvml.nvmlGpmSampleGet(h, s)
    metrics = (C.GPM_SM_UTIL, C.GPM_PCIE_TX_PER_SEC)
    first = nvml.nvmlGpmMetricsGet(gpm_request(samples[0], samples[1], metrics))
    second = nvml.nvmlGpmMetricsGet(gpm_request(samples[1], samples[2], metrics))
    # the same activity (a steady model's cached object), but the traffic grew: 3e9 B/s, then 5e9
    assert first.metrics[0].value == second.metrics[0].value == pytest.approx(100 * 0.95 * 0.85)
    assert first.metrics[1].value == pytest.approx(3e9 / 2**20)
    assert second.metrics[1].value == pytest.approx(5e9 / 2**20)
    other = nvml.nvmlGpmMetricsGet(
        gpm_request(samples[1], samples[2], (C.GPM_DRAM_BW_UTIL, 999, C.GPM_SM_UTIL))
    )
    got = [(m.metricId, m.nvmlReturn, m.value, m.metricInfo.shortName) for m in other.metrics[:3]]
    assert got == [
        (C.GPM_DRAM_BW_UTIL, C.SUCCESS, pytest.approx(100 * 0.4 * 0.85), b"DRAM_BW"),
        (999, C.ERROR_NOT_SUPPORTED, 0.0, None),
        (C.GPM_SM_UTIL, C.SUCCESS, pytest.approx(100 * 0.95 * 0.85), b"SM_UTIL"),
    ]


def test_field_value_answers_follow_the_request_and_faults_set_later() -> None:
    _, _, nvml = make(1)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    energy, temp = C.FI_TOTAL_ENERGY_CONSUMPTION, C.FI_MEMORY_TEMP
    first = nvml.nvmlDeviceGetFieldValues(h, [energy, temp])
    assert [(v.fieldId, v.nvmlReturn, v.valueType) for v in first] == [
        (energy, C.SUCCESS, C.VALUE_TYPE_UNSIGNED_LONG_LONG),
        (temp, C.SUCCESS, C.VALUE_TYPE_UNSIGNED_INT),
    ]
    swapped = nvml.nvmlDeviceGetFieldValues(h, [temp, energy])
    assert [v.fieldId for v in swapped] == [temp, energy]
    assert swapped[0].value.uiVal == first[1].value.uiVal and swapped[1].value.ullVal == first[0].value.ullVal
    nvml.fail_field(0, temp, C.ERROR_UNKNOWN)  # after the request was first seen
    faulted = nvml.nvmlDeviceGetFieldValues(h, [energy, temp])
    assert [v.nvmlReturn for v in faulted] == [C.SUCCESS, C.ERROR_UNKNOWN]
    nvml.clear_faults()
    assert [v.nvmlReturn for v in nvml.nvmlDeviceGetFieldValues(h, [energy, temp])] == [C.SUCCESS] * 2


def test_gpm_samples_are_found_through_copies_and_not_after_free() -> None:
    clock, _, nvml = make(1)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    sample = nvml.nvmlGpmSampleAlloc()
    copy = ctypes.cast(sample, pynvml.c_nvmlGpmSample_t)
    nvml.nvmlGpmSampleGet(h, copy)
    clock.advance(1.0)
    nvml.nvmlGpmSampleGet(h, sample)
    nvml.nvmlGpmSampleFree(sample)
    for freed in (sample, copy):
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            nvml.nvmlGpmSampleGet(h, freed)


# ---------------------------------------------------------------- MIG
MIG_A = "MIG-11111111-2222-4333-8444-555555555555"
MIG_B = "MIG-66666666-7777-4888-8999-aaaaaaaaaaaa"


def test_mig_devices_have_their_own_handles_and_uuids() -> None:
    clock = ManualClock(T0)
    mig = SteadyDevice(SPECS["H100-SXM"], 0, mig_uuids=(MIG_A, "", MIG_B))  # slot 1 empty
    nvml = FakeNvml([mig, SteadyDevice(SPECS["H100-SXM"], 1)], clock)
    nvml.nvmlInit()
    h0, h1 = nvml.nvmlDeviceGetHandleByIndex(0), nvml.nvmlDeviceGetHandleByIndex(1)
    assert nvml.nvmlDeviceGetMigMode(h0) == [C.DEVICE_MIG_ENABLE, C.DEVICE_MIG_ENABLE]
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(h0) == 7
    m0, m2 = nvml.nvmlDeviceGetMigDeviceHandleByIndex(h0, 0), nvml.nvmlDeviceGetMigDeviceHandleByIndex(h0, 2)
    assert isinstance(m0, pynvml.c_nvmlDevice_t)
    assert (nvml.nvmlDeviceGetUUID(m0), nvml.nvmlDeviceGetUUID(m2)) == (MIG_A, MIG_B)
    assert nvml.nvmlDeviceGetUUID(h0) == mig.identity.uuid  # the parent keeps its GPU- UUID
    # the same slot gives the same handle (as the driver's), seen through a copy of the pointer too
    again = nvml.nvmlDeviceGetMigDeviceHandleByIndex(h0, 0)
    assert nvml.nvmlDeviceGetUUID(ctypes.cast(again, pynvml.c_nvmlDevice_t)) == MIG_A
    for slot in (1, 3, 6):  # empty slots, and slots past the configured ones
        with pytest.raises(pynvml.NVMLError_NotFound):
            nvml.nvmlDeviceGetMigDeviceHandleByIndex(h0, slot)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(h0, 7)
    # a GPU without MIG devices: capable, disabled, no slots
    assert nvml.nvmlDeviceGetMigMode(h1) == [0, 0]
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetMaxMigDeviceCount(h1)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(h1, 0)
    # a MIG handle answers for its parent's faults
    mig.lost = True
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetUUID(m0)
