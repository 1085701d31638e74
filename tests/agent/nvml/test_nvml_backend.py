"""NvmlBackend read through FakeNvml: every field family, units, and the error policy."""

from __future__ import annotations

import ctypes.util
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import pynvml
import pytest

from agent.clock import ManualClock, ScaledClock
from agent.model import DeviceStatus
from agent.nvml import consts as C
from agent.nvml.backend import NO_DRIVER, NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.nvml.steady import SteadyDevice
from agent.sim.device import Activity, DeviceSnapshot
from agent.specs import SPECS, GpuSpec

T0 = 1000.0


class Tweaked(SteadyDevice):
    """A steady GPU whose snapshot fields can be overridden, and whose load can change at a time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.overrides: dict[str, Any] = {}
        self.step_at: float | None = None  # from this clock time on, busy is `busy_after`
        self.busy_after = 0.0

    def snapshot(self, t: float) -> DeviceSnapshot:
        return dataclasses.replace(super().snapshot(t), **self.overrides)

    def activity(self, t0: float, t1: float) -> Activity:
        base = super().activity(t0, t1)
        if self.step_at is None or t1 <= self.step_at:
            return base
        after = (t1 - max(t0, self.step_at)) / (t1 - t0)
        busy = base.busy * (1 - after) + self.busy_after * after
        return dataclasses.replace(base, busy=busy, sm_active=busy)


class Rig:
    def __init__(
        self,
        model: str = "H100-SXM",
        count: int = 2,
        *,
        spec: GpuSpec | None = None,
        before_start: Callable[[list[Tweaked]], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self.clock = ManualClock(T0)
        self.models = [Tweaked(spec or SPECS[model], i, **kwargs) for i in range(count)]
        if before_start is not None:
            before_start(self.models)
        self.fake = FakeNvml(self.models, self.clock)
        self.backend = NvmlBackend(self.fake, self.clock)
        assert self.backend.start()

    def read(self, index: int = 0, *, processes: bool = False, advance: float = 1.0) -> Any:
        self.clock.advance(advance)
        return self.backend.read(index, processes=processes)

    def snap(self, index: int = 0) -> DeviceSnapshot:
        return self.fake.snapshot(index)

    def calls(self, name: str, index: int = 0) -> int:
        return self.fake.calls[index][name]


@pytest.fixture
def rig() -> Rig:
    return Rig()


# ---------------------------------------------------------------- start-up
def test_no_driver_runs_host_only_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = ScaledClock(speed=100.0)
    backend = NvmlBackend(FakeNvml([SteadyDevice(SPECS["H100-SXM"], 0)], clock, library_missing=True), clock)
    with caplog.at_level(logging.INFO, logger="gpulse.nvml"):
        assert backend.start() is False
        assert backend.start() is False  # the sampler retries now and then
    assert backend.available is False
    assert backend.status_message == NO_DRIVER == "no NVIDIA driver (libnvidia-ml.so.1 not found): host-only"
    assert [r.getMessage() for r in caplog.records].count(NO_DRIVER) == 1
    assert backend.identities() == []
    assert backend.read(0, processes=False).status is DeviceStatus.ERROR
    assert backend.wait_events(0.5) == []  # 5 ms of real time at speed 100, no crash
    backend.close()


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="an NVIDIA driver is installed")
def test_real_pynvml_without_a_driver_is_host_only() -> None:
    backend = NvmlBackend()  # imports pynvml lazily; this machine has no libnvidia-ml.so.1
    assert backend.start() is False
    assert backend.status_message == NO_DRIVER
    backend.close()


def test_identity_is_read_once_and_complete(rig: Rig) -> None:
    ident = rig.backend.identities()
    assert [i.index for i in ident] == [0, 1]
    model = rig.models[1].identity
    assert ident[1].uuid == model.uuid and ident[1].pci_bus_id == model.pci_bus_id == "00000000:2A:00.0"
    assert ident[1].name == "NVIDIA H100 80GB HBM3"
    assert ident[1].serial == model.serial and ident[1].vbios_version == model.vbios_version
    assert (ident[1].driver_version, ident[1].cuda_driver_version) == ("550.54.15", "12.4")
    assert ident[1].compute_capability == "9.0" and ident[1].mig_mode is False and ident[1].brand == "nvidia"
    assert "2 GPUs" in rig.backend.status_message and "550.54.15" in rig.backend.status_message
    rig.read(0)
    rig.read(0)
    assert rig.calls("nvmlDeviceGetUUID") == 1 and rig.calls("nvmlDeviceGetSerial") == 1


# ---------------------------------------------------------------- values and units
def test_memory_in_bytes_with_reserved(rig: Rig) -> None:
    r = rig.read()
    s = rig.snap()
    assert r.memory_total_bytes == s.memory_total_bytes == 80 * 2**30
    assert r.memory_used_bytes == s.memory_used_bytes
    assert r.memory_reserved_bytes == s.memory_reserved_bytes > 0
    assert r.memory_free_bytes == s.memory_total_bytes - s.memory_used_bytes - s.memory_reserved_bytes


def test_memory_falls_back_to_v1_without_the_v2_call(rig: Rig) -> None:
    rig.fake.remove_function("nvmlDeviceGetMemoryInfo_v2")
    r = rig.read()
    s = rig.snap()
    assert r.memory_reserved_bytes is None
    assert r.memory_used_bytes == s.memory_used_bytes + s.memory_reserved_bytes  # v1 counts reserved as used
    assert r.status is DeviceStatus.OK


def test_clocks_power_and_energy_in_base_units(rig: Rig) -> None:
    r = rig.read()
    s = rig.snap()
    spec = SPECS["H100-SXM"]
    assert (
        r.sm_clock_hz == round(s.sm_clock_mhz) * 1e6
        and r.graphics_clock_hz == round(s.graphics_clock_mhz) * 1e6
    )
    assert r.memory_clock_hz == spec.max_memory_clock_mhz * 1e6
    assert (
        r.sm_clock_max_hz == spec.max_sm_clock_mhz * 1e6
        and r.memory_clock_max_hz == spec.max_memory_clock_mhz * 1e6
    )
    assert r.sm_clock_app_hz == spec.max_sm_clock_mhz * 1e6
    assert r.power_watts == pytest.approx(s.power_average_mw / 1000, abs=1e-3)
    assert r.power_instant_watts == pytest.approx(s.power_instant_mw / 1000, abs=1e-3)
    assert r.power_watts is not None and 400 < r.power_watts < 600
    assert r.power_limit_watts == 700.0 and r.power_default_limit_watts == 700.0
    assert (r.power_min_limit_watts, r.power_max_limit_watts) == (200.0, 700.0)
    assert r.energy_joules == s.energy_mj / 1000.0


def test_thermals_thresholds_margin_and_pstate(rig: Rig) -> None:
    r = rig.read()
    s = rig.snap()
    assert r.temperatures_celsius == {
        "gpu": round(s.temperature_gpu_c),
        "memory": round(s.temperature_memory_c or 0),
    }
    assert r.temperature_thresholds_celsius == {
        "shutdown": 92.0,
        "slowdown": 89.0,
        "mem_max": 95.0,
        "gpu_max": 87.0,
    }
    assert r.temperature_margin_celsius == round(87 - s.temperature_gpu_c)
    assert r.performance_state == 0
    assert r.fan_speed_ratios == {}  # SXM boards have no fans of their own
    assert rig.calls("nvmlDeviceGetFanSpeed_v2") == 0


def test_fans_and_no_memory_sensor_on_a_pcie_card() -> None:
    rig = Rig("L40S", 1, fan_speeds_pct=(45.0, 110.0))
    r = rig.read()
    assert r.fan_speed_ratios == {0: 0.45, 1: 1.1}  # intended speed may exceed 100 %
    assert "memory" not in r.temperatures_celsius  # GDDR: no memory temperature


def test_clock_event_reasons_and_violation_counters() -> None:
    rig = Rig(count=1)
    violations = {
        74: 5_000_000_000,
        75: 1,
        76: 2,
        77: 3,
        78: 4,
        79: 5,
        80: 999,
        81: 6,
        269: 7,
        270: 8,
        271: 9,
    }
    rig.models[0].overrides = {
        "violation_ns": violations,
        "clock_event_reasons": C.REASON_SW_POWER_CAP | C.REASON_HW_THERMAL_SLOWDOWN,
    }
    r = rig.read()
    assert r.clock_event_reasons == 0x44 and r.supported_clock_event_reasons == 0xFF
    assert r.violation_ns == {
        "sw_power_cap": 5_000_000_000,
        "sync_boost": 2,
        "board_limit": 3,
        "low_utilization": 4,
        "reliability": 5,
        "total_base_clocks": 6,
        "sw_thermal_slowdown": 7,
        "hw_thermal_slowdown": 8,
        "hw_power_brake_slowdown": 9,
    }
    assert (C.FI_PERF_POLICY_THERMAL, 0) not in rig.backend._devices[
        0
    ].fields.request  # 269 answered: 75 dropped


def test_old_thermal_policy_counter_stands_in_for_269() -> None:
    rig = Rig(count=1)
    rig.models[0].overrides = {"violation_ns": {75: 1234, 74: 1}}
    rig.fake.fail_field(0, C.FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN, C.ERROR_NOT_SUPPORTED)
    r = rig.read()
    assert r.violation_ns["sw_thermal_slowdown"] == 1234
    assert rig.read().violation_ns["sw_thermal_slowdown"] == 1234


def test_pcie_and_nvlink_byte_counters(rig: Rig) -> None:
    r = rig.read()
    s = rig.snap()
    assert (r.pcie_tx_bytes, r.pcie_rx_bytes, r.pcie_replay_count) == (s.pcie_tx_bytes, s.pcie_rx_bytes, 0)
    assert r.nvlink_tx_bytes == s.nvlink_tx_bytes // 1024 * 1024  # a KiB counter
    assert r.nvlink_rx_bytes == s.nvlink_rx_bytes // 1024 * 1024
    assert rig.fake.system_calls["nvmlDeviceGetPcieThroughput"] == 0  # samples for 20 ms: never called


def test_nvlink5_per_link_byte_counters() -> None:
    rig = Rig("B200", 1)
    first = rig.read()
    assert first.nvlink_tx_bytes is None  # 138/139 unsupported; the links are probed once
    r = rig.read()
    s = rig.snap()
    assert (
        r.nvlink_tx_bytes == s.nvlink_tx_bytes and r.nvlink_rx_bytes == s.nvlink_rx_bytes
    )  # exact bytes, summed
    request = rig.backend._devices[0].fields.request
    assert sum(1 for fid, _ in request if fid == C.FI_NVLINK_COUNT_XMIT_BYTES) == 18
    calls = rig.calls("nvmlDeviceGetFieldValues")
    rig.read()
    assert rig.calls("nvmlDeviceGetFieldValues") == calls + 1  # still one batch per read


def test_no_nvlink_no_series_and_not_asked_again() -> None:
    rig = Rig("L4", 1)
    rig.read()
    r = rig.read()
    assert r.nvlink_tx_bytes is None and r.nvlink_rx_bytes is None
    assert not any(fid in (138, 139, 202, 204) for fid, _ in rig.backend._devices[0].fields.request)


def test_health_counters_ecc_remapped_rows_and_retired_pages() -> None:
    rig = Rig(count=1)
    rig.models[0].overrides = {
        "ecc_volatile_corrected": 3,
        "ecc_volatile_uncorrected": 1,
        "ecc_aggregate_corrected": 30,
        "ecc_aggregate_uncorrected": 2,
        "remapped_rows_corrected": 4,
        "remapped_rows_pending": True,
    }
    r = rig.read()
    assert r.ecc_errors == {
        ("volatile", "corrected"): 3,
        ("volatile", "uncorrected"): 1,
        ("aggregate", "corrected"): 30,
        ("aggregate", "uncorrected"): 2,
    }
    assert r.remapped_rows == {"corrected": 4, "uncorrected": 0, "pending": 1, "failure": 0}
    assert r.retired_pages == {} and r.retired_pages_pending is None  # Hopper remaps rows instead

    volta = Rig("V100-SXM2", 1)
    volta.models[0].overrides = {"retired_pages_dbe": 2, "retired_pages_pending": True}
    v = volta.read()
    assert v.retired_pages == {"single_bit_ecc": 0, "double_bit_ecc": 2} and v.retired_pages_pending is True
    assert v.remapped_rows == {}


def test_health_counters_are_asked_for_every_health_interval_and_carried_between() -> None:
    rig = Rig(count=1)
    rig.backend = NvmlBackend(rig.fake, rig.clock, health_refresh_s=5.0)
    assert rig.backend.start()
    requests: list[set[int]] = []
    real = rig.fake.nvmlDeviceGetFieldValues

    def recording(handle: Any, field_ids: Any) -> Any:
        requests.append({fid for fid, _ in field_ids})
        return real(handle, field_ids)

    rig.fake.nvmlDeviceGetFieldValues = recording  # type: ignore[method-assign]
    health = {C.FI_ECC_DBE_VOL_TOTAL, C.FI_REMAPPED_PENDING, C.FI_PCIE_REPLAY_COUNTER}

    first = rig.read()  # the first read asks for everything
    assert health <= requests[-1] and first.ecc_errors[("volatile", "uncorrected")] == 0
    rig.models[0].overrides = {"ecc_volatile_uncorrected": 7, "pcie_replay_count": 3}
    between = [rig.read() for _ in range(4)]  # 1..4 s later: not asked, last values carried
    assert all(not (health & request) for request in requests[-4:])
    assert all(r.ecc_errors[("volatile", "uncorrected")] == 0 and r.pcie_replay_count == 0 for r in between)
    assert all(r.remapped_rows == first.remapped_rows for r in between)
    due = rig.read()  # 5 s after the last health read
    assert health <= requests[-1]
    assert due.ecc_errors[("volatile", "uncorrected")] == 7 and due.pcie_replay_count == 3

    # a device that comes back after being lost is asked at once, not at the next interval
    rig.models[0].overrides["ecc_volatile_uncorrected"] = 9
    rig.read()
    rig.models[0].overrides["lost"] = True
    assert rig.read().status is DeviceStatus.LOST
    del rig.models[0].overrides["lost"]
    back = rig.read(advance=0.5)
    assert back.status is DeviceStatus.OK and back.ecc_errors[("volatile", "uncorrected")] == 9


def test_no_ecc_no_series() -> None:
    rig = Rig(count=1, spec=dataclasses.replace(SPECS["L4"], has_ecc=False))
    r = rig.read()
    assert r.ecc_errors == {} and r.retired_pages == {} and r.remapped_rows != {}


# ---------------------------------------------------------------- activity
def test_utilization_rates_and_the_sample_buffer_since_the_last_read() -> None:
    rig = Rig(count=1, busy=0.2)
    first = rig.read()
    assert first.utilization_gpu_ratio == 0.2
    assert first.utilization_samples_ratio is None  # the first call only sets the baseline
    rig.models[0].step_at = rig.clock.now() + 0.5
    rig.models[0].busy_after = 0.8
    r = rig.read(advance=1.0)  # six new 1/6 s slots: three at 0.2, three at 0.8
    assert r.utilization_samples_count == 6
    assert r.utilization_samples_ratio == pytest.approx(0.5)
    assert r.utilization_gpu_ratio == 0.8  # only the last 1/6 s
    r = rig.read(advance=2.0)
    assert (r.utilization_samples_count, r.utilization_samples_ratio) == (12, pytest.approx(0.8))


def test_no_new_samples_leaves_the_ratio_absent_and_falls_back() -> None:
    rig = Rig("A100-SXM-80GB", 1, busy=0.6)
    rig.read()
    rig.read()
    r = rig.read(advance=0.0)  # NotFound: nothing newer than the last sample seen
    assert r.utilization_samples_ratio is None
    assert r.executing_ratio() == (0.6, "utilization_gpu")
    assert r.status is DeviceStatus.OK


def test_gpm_windows_alternate_between_two_samples() -> None:
    rig = Rig(count=1, busy=0.5)
    first = rig.read()
    assert first.sm_active_ratio is None and first.gpm_window_seconds is None  # no previous sample yet
    rig.models[0].step_at = rig.clock.now() + 1.0
    rig.models[0].busy_after = 1.0
    r = rig.read(advance=2.5)
    assert r.gpm_window_seconds == pytest.approx(2.5)
    assert r.sm_active_ratio == pytest.approx((1.0 * 0.5 + 1.5 * 1.0) / 2.5)  # exactly the window's average
    assert r.executing_ratio()[1] == "gpm_sm_active"
    assert r.tensor_active_ratio == pytest.approx(0.6 * 0.5) and r.dram_active_ratio == pytest.approx(
        0.4 * 0.5
    )
    assert (
        r.hmma_active_ratio == pytest.approx(0.3)
        and r.imma_active_ratio == 0.0
        and r.dfma_active_ratio == 0.0
    )
    assert r.sm_occupancy_ratio == pytest.approx(0.45 * 0.5)
    assert (r.fp16_active_ratio, r.fp32_active_ratio, r.fp64_active_ratio) == pytest.approx(
        (0.025, 0.05, 0.0)
    )
    r = rig.read(advance=1.0)
    assert r.gpm_window_seconds == pytest.approx(1.0) and r.sm_active_ratio == pytest.approx(1.0)
    assert rig.fake.system_calls["nvmlGpmSampleAlloc"] == 2  # two buffers, reused


def test_no_gpm_before_hopper() -> None:
    rig = Rig("A100-SXM-80GB", 1)
    rig.read()
    r = rig.read()
    assert r.sm_active_ratio is None and r.tensor_active_ratio is None and r.gpm_window_seconds is None
    assert rig.calls("nvmlGpmSampleGet") == 0 and rig.fake.system_calls["nvmlGpmSampleAlloc"] == 0


def test_gpm_rates_stand_in_for_missing_pcie_counters() -> None:
    rig = Rig(count=1)
    rig.fake.fail_field(0, C.FI_PCIE_COUNT_TX_BYTES, C.ERROR_NOT_SUPPORTED)
    rig.read()
    a = rig.read(advance=1.0).pcie_tx_bytes
    b = rig.read(advance=2.0).pcie_tx_bytes
    assert a is not None and b is not None
    assert b - a == pytest.approx(2 * 2e9 * 0.85, rel=1e-3)  # SteadyDevice sends 2 GB/s x busy


# ---------------------------------------------------------------- processes
def test_processes_with_memory_and_sm_share(rig: Rig) -> None:
    assert rig.read(processes=False).processes is None
    r = rig.read(processes=True)
    pid, used = rig.snap().processes[0]
    assert r.processes is not None and [p.pid for p in r.processes] == [pid] == [4100]
    assert r.processes[0].used_memory_bytes == used
    assert r.processes[0].sm_ratio == pytest.approx(0.85)
    assert r.processes_timestamp == rig.clock.now()


def test_idle_gpu_has_an_empty_process_list_despite_the_sizing_quirk() -> None:
    rig = Rig(count=1, busy=0.0)
    r = rig.read(processes=True)  # nvmlDeviceGetProcessUtilization raises a base NVMLError(0) here
    assert r.status is DeviceStatus.OK and r.processes == []
    with pytest.raises(pynvml.NVMLError) as info:
        rig.fake.nvmlDeviceGetProcessUtilization(rig.fake.nvmlDeviceGetHandleByIndex(0), 0)
    assert type(info.value) is pynvml.NVMLError and info.value.value == 0


def test_old_driver_without_v3_process_list_uses_v2(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.fake.remove_function("nvmlDeviceGetComputeRunningProcesses_v3")
    with caplog.at_level(logging.INFO, logger="gpulse.nvml"):
        for _ in range(3):
            r = rig.read(processes=True)
    assert r.processes is not None and [p.pid for p in r.processes] == [4100]
    assert rig.calls("nvmlDeviceGetComputeRunningProcesses_v2") == 3
    assert rig.calls("nvmlDeviceGetComputeRunningProcesses") == 1  # NVMLLibraryMismatchError once, then _v2
    assert sum("nvmlDeviceGetComputeRunningProcesses" in m.getMessage() for m in caplog.records) == 1


# ---------------------------------------------------------------- error policy
def test_not_supported_is_none_and_never_asked_again(rig: Rig) -> None:
    rig.fake.fail(0, "nvmlDeviceGetMarginTemperature", C.ERROR_NOT_SUPPORTED)
    assert rig.read().temperature_margin_celsius is None
    rig.fake.clear_faults()
    assert rig.read().temperature_margin_celsius is None
    assert rig.calls("nvmlDeviceGetMarginTemperature") == 1
    assert rig.backend.read(1, processes=False).temperature_margin_celsius is not None  # per device


def test_missing_function_is_logged_once_and_skipped(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.fake.remove_function("nvmlDeviceGetMarginTemperature")
    with caplog.at_level(logging.INFO, logger="gpulse.nvml"):
        for _ in range(3):
            rig.clock.advance(1.0)
            for i in (0, 1):
                r = rig.backend.read(i, processes=False)
                assert r.status is DeviceStatus.OK and r.temperature_margin_celsius is None
    assert sum("nvmlDeviceGetMarginTemperature" in m.getMessage() for m in caplog.records) == 1
    assert (
        rig.calls("nvmlDeviceGetMarginTemperature", 0) + rig.calls("nvmlDeviceGetMarginTemperature", 1) == 1
    )


def test_per_entry_field_errors() -> None:
    rig = Rig("A100-SXM-80GB", 1)  # no GPM rates to stand in for the PCIe counters
    rig.fake.fail_field(0, C.FI_PCIE_COUNT_TX_BYTES, C.ERROR_NOT_SUPPORTED)
    rig.fake.fail_field(0, C.FI_PCIE_COUNT_RX_BYTES, C.ERROR_UNKNOWN)
    r = rig.read()
    assert r.pcie_tx_bytes is None and r.pcie_rx_bytes is None and r.energy_joules is not None
    rig.fake.clear_faults()
    r = rig.read()
    assert r.pcie_tx_bytes is None  # NotSupported: dropped from the batch for good
    assert r.pcie_rx_bytes == rig.snap().pcie_rx_bytes  # a transient error: asked again
    assert (C.FI_PCIE_COUNT_TX_BYTES, 0) not in rig.backend._devices[0].fields.request


def test_optional_call_failure_is_isolated(rig: Rig) -> None:
    rig.fake.fail(0, "nvmlDeviceGetEnforcedPowerLimit", C.ERROR_UNKNOWN)
    r = rig.read()
    assert r.status is DeviceStatus.OK and r.power_limit_watts is None and r.power_watts is not None
    rig.fake.clear_faults()
    assert rig.read().power_limit_watts == 700.0


def test_mandatory_call_failure_marks_the_reading_error(rig: Rig) -> None:
    rig.fake.fail(0, "nvmlDeviceGetPowerUsage", C.ERROR_NO_PERMISSION)
    r = rig.read()
    assert r.status is DeviceStatus.ERROR
    assert r.error is not None and "nvmlDeviceGetPowerUsage" in r.error and "Permission" in r.error
    assert rig.backend.read(1, processes=False).status is DeviceStatus.OK


def test_lost_gpu_is_reported_and_picked_up_again_by_pci_bus_id(rig: Rig) -> None:
    rig.read(0)
    rig.models[0].lost = True
    r = rig.read(0)
    assert (
        r.status is DeviceStatus.LOST and r.uuid == rig.models[0].identity.uuid and "lost" in (r.error or "")
    )
    assert r.power_watts is None
    assert rig.backend.read(1, processes=False).status is DeviceStatus.OK  # the others are unaffected
    assert rig.read(0).status is DeviceStatus.LOST  # still gone: the re-lookup fails
    rig.models[0].lost = False
    back = rig.read(0)
    assert back.status is DeviceStatus.OK and back.power_watts is not None
    assert rig.calls("nvmlDeviceGetHandleByPciBusId") == 2  # by bus id: the index lookup fails after a loss
    assert rig.read(0).gpm_window_seconds == pytest.approx(1.0)  # GPM restarted its windows


def test_reset_required_counts_as_lost(rig: Rig) -> None:
    rig.fake.fail(0, "nvmlDeviceGetFieldValues", C.ERROR_RESET_REQUIRED)
    assert rig.read().status is DeviceStatus.LOST
    rig.fake.clear_faults()
    assert rig.read().status is DeviceStatus.OK


def test_static_values_are_cached_and_refreshed_occasionally() -> None:
    rig = Rig(count=1)
    rig.backend = NvmlBackend(rig.fake, rig.clock, static_refresh_s=60.0)
    rig.backend.start()
    for _ in range(5):
        rig.read()
    assert rig.calls("nvmlDeviceGetTemperatureThreshold") == 4  # four thresholds, read once
    rig.models[0].overrides = {"power_max_limit_mw": 650_000.0}
    assert rig.read().power_max_limit_watts == 700.0  # still cached
    assert rig.read(advance=60.0).power_max_limit_watts == 650.0
    assert rig.calls("nvmlDeviceGetTemperatureThreshold") == 8
    rig.models[0].overrides = {"power_limit_mw": 400_000.0}
    assert rig.read().power_limit_watts == 400.0  # the enforced limit is read every time


# ---------------------------------------------------------------- events and shutdown
def test_xid_events_are_delivered_once_each() -> None:
    rig = Rig(before_start=lambda models: models[1].add_xid(T0 - 10, 13))  # before registration: not seen
    rig.clock.advance(1.0)
    rig.models[1].add_xid(rig.clock.now(), 79)
    rig.models[0].add_xid(rig.clock.now() + 0.5, 48)
    rig.clock.advance(1.0)
    events = rig.backend.wait_events(0.05)
    assert [(e.index, e.xid) for e in events] == [(1, 79), (0, 48)]
    assert events[0].uuid == rig.models[1].identity.uuid and events[0].timestamp == rig.clock.now()
    assert rig.backend.wait_events(0.02) == []  # Timeout: nothing new


def test_without_xid_registration_the_event_wait_just_waits() -> None:
    clock = ScaledClock(speed=100.0, start=T0)
    fake = FakeNvml([SteadyDevice(SPECS["H100-SXM"], 0)], clock)
    fake.fail(None, "nvmlDeviceRegisterEvents", C.ERROR_NOT_SUPPORTED)
    backend = NvmlBackend(fake, clock)
    assert backend.start()
    assert backend.wait_events(1.0) == []  # 10 ms of real time, no event set to wait on
    assert fake.system_calls["nvmlEventSetWait_v2"] == 0 and fake.system_calls["nvmlEventSetFree"] == 1
    backend.close()


def test_close_frees_gpm_samples_and_the_event_set_and_shuts_down(rig: Rig) -> None:
    rig.read()
    rig.backend.close()
    assert rig.fake.system_calls["nvmlGpmSampleFree"] == 4
    assert rig.fake.system_calls["nvmlEventSetFree"] == 1
    assert rig.fake.system_calls["nvmlShutdown"] == 1
    assert rig.backend.available is False
    rig.backend.close()  # idempotent
    assert rig.fake.system_calls["nvmlShutdown"] == 1


# ---------------------------------------------------------------- MIG
MIG_A = "MIG-11111111-2222-4333-8444-555555555555"
MIG_B = "MIG-66666666-7777-4888-8999-aaaaaaaaaaaa"


def _mig_backend(*, remove: str | None = None) -> tuple[NvmlBackend, FakeNvml]:
    clock = ManualClock(T0)
    models = [
        SteadyDevice(SPECS["H100-SXM"], 0),
        SteadyDevice(SPECS["H100-SXM"], 1, mig_uuids=(MIG_A, "", MIG_B)),  # slot 1 empty
    ]
    fake = FakeNvml(models, clock)
    if remove is not None:
        fake.remove_function(remove)
    backend = NvmlBackend(fake, clock)
    assert backend.start()
    return backend, fake


def test_identity_lists_the_mig_devices_of_a_mig_enabled_gpu() -> None:
    backend, fake = _mig_backend()
    plain, mig = backend.identities()
    assert (plain.mig_mode, plain.mig_devices) == (False, ())
    assert mig.mig_mode is True and mig.mig_devices == (MIG_A, MIG_B)
    assert mig.uuid == fake.models[1].identity.uuid  # the GPU's own UUID is not a MIG one
    # enumerated once, at start: every slot asked, reads do not ask again
    assert fake.calls[1]["nvmlDeviceGetMigDeviceHandleByIndex"] == 7
    assert fake.calls[0]["nvmlDeviceGetMigDeviceHandleByIndex"] == 0  # MIG off: not enumerated
    backend.read(1, processes=False)
    assert fake.calls[1]["nvmlDeviceGetMigDeviceHandleByIndex"] == 7
    backend.close()


@pytest.mark.parametrize("missing", ["nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex"])
def test_a_driver_without_mig_enumeration_gives_no_mig_devices(missing: str) -> None:
    backend, fake = _mig_backend(remove=missing)
    mig = backend.identities()[1]
    assert mig.mig_mode is True and mig.mig_devices == ()
    assert fake.calls[1]["nvmlDeviceGetMigDeviceHandleByIndex"] <= 1  # gives up at once
    assert backend.read(1, processes=False).status is DeviceStatus.OK
    backend.close()


def test_mig_count_not_supported_gives_no_mig_devices() -> None:
    clock = ManualClock(T0)
    fake = FakeNvml([SteadyDevice(SPECS["H100-SXM"], 0, mig_uuids=(MIG_A,))], clock)
    fake.fail(0, "nvmlDeviceGetMaxMigDeviceCount", C.ERROR_NOT_SUPPORTED)
    backend = NvmlBackend(fake, clock)
    assert backend.start()
    (ident,) = backend.identities()
    assert ident.mig_mode is True and ident.mig_devices == ()
    backend.close()
