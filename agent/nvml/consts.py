"""NVML ABI numbers the backend and the fake use, named once.

These are part of the NVML C ABI (``nvml.h``) and never change between driver
releases, so they are written here rather than read from ``pynvml``: the backend
then works with any object that exposes the NVML function names, and only
``agent.nvml.backend`` imports pynvml. A test checks every value against pynvml.
"""

from __future__ import annotations

# --- return codes -------------------------------------------------------------------
SUCCESS = 0
ERROR_UNINITIALIZED = 1
ERROR_INVALID_ARGUMENT = 2
ERROR_NOT_SUPPORTED = 3
ERROR_NO_PERMISSION = 4
ERROR_NOT_FOUND = 6
ERROR_INSUFFICIENT_SIZE = 7
ERROR_DRIVER_NOT_LOADED = 9
ERROR_TIMEOUT = 10
ERROR_LIBRARY_NOT_FOUND = 12
ERROR_FUNCTION_NOT_FOUND = 13
ERROR_GPU_IS_LOST = 15
ERROR_RESET_REQUIRED = 16
ERROR_ARGUMENT_VERSION_MISMATCH = 25
ERROR_UNKNOWN = 999

# --- enums --------------------------------------------------------------------------
CLOCK_GRAPHICS = 0
CLOCK_SM = 1
CLOCK_MEM = 2
CLOCK_ID_CURRENT = 0
CLOCK_ID_APP_CLOCK_TARGET = 1
CLOCK_ID_APP_CLOCK_DEFAULT = 2
CLOCK_ID_CUSTOMER_BOOST_MAX = 3

TEMPERATURE_GPU = 0
THRESHOLD_SHUTDOWN = 0
THRESHOLD_SLOWDOWN = 1
THRESHOLD_MEM_MAX = 2
THRESHOLD_GPU_MAX = 3
# threshold id -> the name gpulse exports
THRESHOLD_NAMES: dict[int, str] = {
    THRESHOLD_SHUTDOWN: "shutdown",
    THRESHOLD_SLOWDOWN: "slowdown",
    THRESHOLD_MEM_MAX: "mem_max",
    THRESHOLD_GPU_MAX: "gpu_max",
}

MEMORY_ERROR_CORRECTED = 0
MEMORY_ERROR_UNCORRECTED = 1
VOLATILE_ECC = 0
AGGREGATE_ECC = 1
PAGE_RETIREMENT_SINGLE_BIT = 0
PAGE_RETIREMENT_DOUBLE_BIT = 1

SAMPLING_TOTAL_POWER = 0
SAMPLING_GPU_UTILIZATION = 1

VALUE_TYPE_DOUBLE = 0
VALUE_TYPE_UNSIGNED_INT = 1
VALUE_TYPE_UNSIGNED_LONG = 2
VALUE_TYPE_UNSIGNED_LONG_LONG = 3
VALUE_TYPE_SIGNED_LONG_LONG = 4
VALUE_TYPE_SIGNED_INT = 5
VALUE_TYPE_UNSIGNED_SHORT = 6

MEMORY_V2_VERSION = 0x02000028  # nvmlMemory_v2
GPM_METRICS_GET_VERSION = 1
GPM_SUPPORT_VERSION = 1
DEVICE_MIG_ENABLE = 1
UINT_MAX = 0xFFFFFFFF  # field scopeId meaning "all links"
VALUE_NOT_AVAILABLE_ULL = 0xFFFFFFFFFFFFFFFF

# --- events -------------------------------------------------------------------------
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_PSTATE = 0x4
EVENT_XID_CRITICAL = 0x8
EVENT_CLOCK = 0x10

# --- clock-event reasons (instantaneous bitmask) --------------------------------------
REASON_GPU_IDLE = 0x1
REASON_APPLICATIONS_CLOCKS_SETTING = 0x2
REASON_SW_POWER_CAP = 0x4
REASON_HW_SLOWDOWN = 0x8
REASON_SYNC_BOOST = 0x10
REASON_SW_THERMAL_SLOWDOWN = 0x20
REASON_HW_THERMAL_SLOWDOWN = 0x40
REASON_HW_POWER_BRAKE_SLOWDOWN = 0x80
REASON_DISPLAY_CLOCK_SETTING = 0x100
REASON_BITS: dict[int, str] = {
    REASON_GPU_IDLE: "gpu_idle",
    REASON_APPLICATIONS_CLOCKS_SETTING: "applications_clocks_setting",
    REASON_SW_POWER_CAP: "sw_power_cap",
    REASON_HW_SLOWDOWN: "hw_slowdown",
    REASON_SYNC_BOOST: "sync_boost",
    REASON_SW_THERMAL_SLOWDOWN: "sw_thermal_slowdown",
    REASON_HW_THERMAL_SLOWDOWN: "hw_thermal_slowdown",
    REASON_HW_POWER_BRAKE_SLOWDOWN: "hw_power_brake_slowdown",
    REASON_DISPLAY_CLOCK_SETTING: "display_clock_setting",
}

# --- field values (nvmlDeviceGetFieldValues) ------------------------------------------
FI_ECC_SBE_VOL_TOTAL = 3
FI_ECC_DBE_VOL_TOTAL = 4
FI_ECC_SBE_AGG_TOTAL = 5
FI_ECC_DBE_AGG_TOTAL = 6
FI_RETIRED_SBE = 29
FI_RETIRED_DBE = 30
FI_RETIRED_PENDING = 31
FI_PERF_POLICY_POWER = 74
FI_PERF_POLICY_THERMAL = 75
FI_PERF_POLICY_SYNC_BOOST = 76
FI_PERF_POLICY_BOARD_LIMIT = 77
FI_PERF_POLICY_LOW_UTILIZATION = 78
FI_PERF_POLICY_RELIABILITY = 79
FI_PERF_POLICY_TOTAL_APP_CLOCKS = 80
FI_PERF_POLICY_TOTAL_BASE_CLOCKS = 81
FI_MEMORY_TEMP = 82
FI_TOTAL_ENERGY_CONSUMPTION = 83
FI_NVLINK_LINK_COUNT = 91
FI_PCIE_REPLAY_COUNTER = 94
FI_NVLINK_THROUGHPUT_DATA_TX = 138
FI_NVLINK_THROUGHPUT_DATA_RX = 139
FI_REMAPPED_COR = 142
FI_REMAPPED_UNC = 143
FI_REMAPPED_PENDING = 144
FI_REMAPPED_FAILURE = 145
FI_POWER_INSTANT = 186
FI_PCIE_COUNT_TX_BYTES = 197
FI_PCIE_COUNT_RX_BYTES = 198
FI_NVLINK_COUNT_XMIT_BYTES = 202
FI_NVLINK_COUNT_RCV_BYTES = 204
FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN = 269
FI_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN = 270
FI_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN = 271

# Violation counters (cumulative ns) -> reason label. 80 (TOTAL_APP_CLOCKS) is deprecated
# ("Do not use") and not read. 75 (the old THERMAL policy) is superseded by 269 and only
# used, as sw_thermal_slowdown, on drivers that do not know 269.
VIOLATION_FIELDS: dict[int, str] = {
    FI_PERF_POLICY_POWER: "sw_power_cap",
    FI_PERF_POLICY_SYNC_BOOST: "sync_boost",
    FI_PERF_POLICY_BOARD_LIMIT: "board_limit",
    FI_PERF_POLICY_LOW_UTILIZATION: "low_utilization",
    FI_PERF_POLICY_RELIABILITY: "reliability",
    FI_PERF_POLICY_TOTAL_BASE_CLOCKS: "total_base_clocks",
    FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN: "sw_thermal_slowdown",
    FI_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN: "hw_thermal_slowdown",
    FI_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN: "hw_power_brake_slowdown",
}

# --- GPM metric ids ---------------------------------------------------------------------
GPM_SM_UTIL = 2
GPM_SM_OCCUPANCY = 3
GPM_ANY_TENSOR_UTIL = 5
GPM_DFMA_TENSOR_UTIL = 6
GPM_HMMA_TENSOR_UTIL = 7
GPM_IMMA_TENSOR_UTIL = 9
GPM_DRAM_BW_UTIL = 10
GPM_FP64_UTIL = 11
GPM_FP32_UTIL = 12
GPM_FP16_UTIL = 13
GPM_PCIE_TX_PER_SEC = 20
GPM_PCIE_RX_PER_SEC = 21
GPM_NVLINK_TOTAL_RX_PER_SEC = 60
GPM_NVLINK_TOTAL_TX_PER_SEC = 61

# Percent metrics -> GpuReading ratio attribute (value / 100).
GPM_RATIO_METRICS: dict[int, str] = {
    GPM_SM_UTIL: "sm_active_ratio",
    GPM_SM_OCCUPANCY: "sm_occupancy_ratio",
    GPM_ANY_TENSOR_UTIL: "tensor_active_ratio",
    GPM_HMMA_TENSOR_UTIL: "hmma_active_ratio",
    GPM_IMMA_TENSOR_UTIL: "imma_active_ratio",
    GPM_DFMA_TENSOR_UTIL: "dfma_active_ratio",
    GPM_DRAM_BW_UTIL: "dram_active_ratio",
    GPM_FP16_UTIL: "fp16_active_ratio",
    GPM_FP32_UTIL: "fp32_active_ratio",
    GPM_FP64_UTIL: "fp64_active_ratio",
}
# MiB/s rate metrics -> the byte counter they stand in for where the counter field is missing.
GPM_RATE_METRICS: dict[int, str] = {
    GPM_PCIE_TX_PER_SEC: "pcie_tx_bytes",
    GPM_PCIE_RX_PER_SEC: "pcie_rx_bytes",
    GPM_NVLINK_TOTAL_TX_PER_SEC: "nvlink_tx_bytes",
    GPM_NVLINK_TOTAL_RX_PER_SEC: "nvlink_rx_bytes",
}
