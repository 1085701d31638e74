"""Datasheet figures per GPU model: peak dense FLOP/s, memory bandwidth, clocks.

Tensor figures are **dense** (no 2:4 sparsity); NVIDIA's Ampere-and-newer datasheets
print sparse figures, twice these. ``peak_clock_mhz`` is the SM clock the datasheet
peak assumes (e.g. H100 SXM: 989 TFLOP/s bf16 = 132 SMs x 4096 FLOP/clk x ~1.83 GHz),
so that "peak at the current clock" is ``peak x sm_clock / peak_clock``.

The table is keyed by a short model name (``H100-SXM``) and matched against the NVML
device name (``NVIDIA H100 80GB HBM3``). Users override or extend it in the config
(``specs:`` section); a device the table does not know gets no peak series and one
clear log line naming the device and the config key to set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

TERA = 1e12

PRECISIONS: tuple[str, ...] = ("fp64", "fp64_tensor", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")


@dataclass(frozen=True)
class GpuSpec:
    key: str
    name: str  # the name NVML reports for this model
    match: str  # regular expression matched (case-insensitive) against the NVML device name
    architecture: str
    compute_capability: str
    sms: int
    max_sm_clock_mhz: float
    peak_clock_mhz: float  # clock basis of the datasheet peaks
    max_memory_clock_mhz: float
    memory_bytes: int
    memory_bandwidth_bytes_per_second: float
    tdp_watts: float
    min_power_limit_watts: float
    peak_flops: dict[str, float] = field(default_factory=dict)  # precision -> dense FLOP/s at peak_clock_mhz
    has_gpm: bool = False  # Hopper and newer
    has_nvlink: bool = False
    has_ecc: bool = True
    has_row_remapping: bool = False  # Ampere and newer data-centre parts
    pcie_generation: int = 4
    confirmed: bool = True  # False where a figure is recalled or third-party only

    def peak_at_clock(self, precision: str, sm_clock_mhz: float) -> float | None:
        peak = self.peak_flops.get(precision)
        if peak is None:
            return None
        return peak * sm_clock_mhz / self.peak_clock_mhz


GIB = 1024**3

_SPECS: tuple[GpuSpec, ...] = (
    GpuSpec(
        key="H100-SXM",
        name="NVIDIA H100 80GB HBM3",
        match=r"H100 80GB HBM3|H100.*SXM",
        architecture="hopper",
        compute_capability="9.0",
        sms=132,
        max_sm_clock_mhz=1980,
        peak_clock_mhz=1830,
        max_memory_clock_mhz=2619,
        memory_bytes=80 * GIB,
        memory_bandwidth_bytes_per_second=3.35e12,
        tdp_watts=700,
        min_power_limit_watts=200,
        peak_flops={
            "fp64": 34 * TERA,
            "fp64_tensor": 67 * TERA,
            "fp32": 67 * TERA,
            "tf32": 494.5 * TERA,
            "bf16": 989.5 * TERA,
            "fp16": 989.5 * TERA,
            "fp8": 1979 * TERA,
            "int8": 1979 * TERA,
        },
        has_gpm=True,
        has_nvlink=True,
        has_row_remapping=True,
        pcie_generation=5,
    ),
    GpuSpec(
        key="H100-PCIE",
        name="NVIDIA H100 PCIe",
        match=r"H100 PCIe",
        architecture="hopper",
        compute_capability="9.0",
        sms=114,
        max_sm_clock_mhz=1755,
        peak_clock_mhz=1620,
        max_memory_clock_mhz=1593,
        memory_bytes=80 * GIB,
        memory_bandwidth_bytes_per_second=2.0e12,
        tdp_watts=350,
        min_power_limit_watts=200,
        peak_flops={
            "fp64": 26 * TERA,
            "fp64_tensor": 51 * TERA,
            "fp32": 51 * TERA,
            "tf32": 378 * TERA,
            "bf16": 756.5 * TERA,
            "fp16": 756.5 * TERA,
            "fp8": 1513 * TERA,
            "int8": 1513 * TERA,
        },
        has_gpm=True,
        has_nvlink=False,
        has_row_remapping=True,
        pcie_generation=5,
    ),
    GpuSpec(
        key="H100-NVL",
        name="NVIDIA H100 NVL",
        match=r"H100 NVL",
        architecture="hopper",
        compute_capability="9.0",
        sms=132,
        max_sm_clock_mhz=1785,
        peak_clock_mhz=1785,
        max_memory_clock_mhz=2619,
        memory_bytes=94 * GIB,
        memory_bandwidth_bytes_per_second=3.9e12,
        tdp_watts=400,
        min_power_limit_watts=200,
        peak_flops={
            "fp64": 30 * TERA,
            "fp64_tensor": 60 * TERA,
            "fp32": 60 * TERA,
            "tf32": 417.5 * TERA,
            "bf16": 835.5 * TERA,
            "fp16": 835.5 * TERA,
            "fp8": 1670.5 * TERA,
            "int8": 1670.5 * TERA,
        },
        has_gpm=True,
        has_nvlink=True,
        has_row_remapping=True,
        pcie_generation=5,
        confirmed=False,
    ),
    GpuSpec(
        key="H200-SXM",
        name="NVIDIA H200",
        match=r"H200",
        architecture="hopper",
        compute_capability="9.0",
        sms=132,
        max_sm_clock_mhz=1980,
        peak_clock_mhz=1830,
        max_memory_clock_mhz=3201,
        memory_bytes=141 * 10**9,
        memory_bandwidth_bytes_per_second=4.8e12,
        tdp_watts=700,
        min_power_limit_watts=200,
        peak_flops={
            "fp64": 34 * TERA,
            "fp64_tensor": 67 * TERA,
            "fp32": 67 * TERA,
            "tf32": 494.5 * TERA,
            "bf16": 989.5 * TERA,
            "fp16": 989.5 * TERA,
            "fp8": 1979 * TERA,
            "int8": 1979 * TERA,
        },
        has_gpm=True,
        has_nvlink=True,
        has_row_remapping=True,
        pcie_generation=5,
    ),
    GpuSpec(
        key="B200",
        name="NVIDIA B200",
        match=r"B200",
        architecture="blackwell",
        compute_capability="10.0",
        sms=148,
        max_sm_clock_mhz=1965,
        peak_clock_mhz=1965,
        max_memory_clock_mhz=3996,
        memory_bytes=180 * GIB,
        memory_bandwidth_bytes_per_second=7.7e12,
        tdp_watts=1000,
        min_power_limit_watts=300,
        peak_flops={
            "fp64": 37 * TERA,
            "fp64_tensor": 37 * TERA,
            "fp32": 75 * TERA,
            "tf32": 1100 * TERA,
            "bf16": 2250 * TERA,
            "fp16": 2250 * TERA,
            "fp8": 4500 * TERA,
            "int8": 4500 * TERA,
        },
        has_gpm=True,
        has_nvlink=True,
        has_row_remapping=True,
        pcie_generation=5,
        confirmed=False,
    ),
    GpuSpec(
        key="A100-SXM-80GB",
        name="NVIDIA A100-SXM4-80GB",
        match=r"A100.*SXM4?-80GB",
        architecture="ampere",
        compute_capability="8.0",
        sms=108,
        max_sm_clock_mhz=1410,
        peak_clock_mhz=1410,
        max_memory_clock_mhz=1593,
        memory_bytes=80 * GIB,
        memory_bandwidth_bytes_per_second=2.039e12,
        tdp_watts=400,
        min_power_limit_watts=100,
        peak_flops={
            "fp64": 9.7 * TERA,
            "fp64_tensor": 19.5 * TERA,
            "fp32": 19.5 * TERA,
            "tf32": 156 * TERA,
            "bf16": 312 * TERA,
            "fp16": 312 * TERA,
            "int8": 624 * TERA,
        },
        has_nvlink=True,
        has_row_remapping=True,
    ),
    GpuSpec(
        key="A100-SXM-40GB",
        name="NVIDIA A100-SXM4-40GB",
        match=r"A100.*SXM4?-40GB",
        architecture="ampere",
        compute_capability="8.0",
        sms=108,
        max_sm_clock_mhz=1410,
        peak_clock_mhz=1410,
        max_memory_clock_mhz=1215,
        memory_bytes=40 * GIB,
        memory_bandwidth_bytes_per_second=1.555e12,
        tdp_watts=400,
        min_power_limit_watts=100,
        peak_flops={
            "fp64": 9.7 * TERA,
            "fp64_tensor": 19.5 * TERA,
            "fp32": 19.5 * TERA,
            "tf32": 156 * TERA,
            "bf16": 312 * TERA,
            "fp16": 312 * TERA,
            "int8": 624 * TERA,
        },
        has_nvlink=True,
        has_row_remapping=True,
    ),
    GpuSpec(
        key="A100-PCIE-80GB",
        name="NVIDIA A100 80GB PCIe",
        match=r"A100 80GB PCIe|A100-PCIE-80GB",
        architecture="ampere",
        compute_capability="8.0",
        sms=108,
        max_sm_clock_mhz=1410,
        peak_clock_mhz=1410,
        max_memory_clock_mhz=1512,
        memory_bytes=80 * GIB,
        memory_bandwidth_bytes_per_second=1.935e12,
        tdp_watts=300,
        min_power_limit_watts=150,
        peak_flops={
            "fp64": 9.7 * TERA,
            "fp64_tensor": 19.5 * TERA,
            "fp32": 19.5 * TERA,
            "tf32": 156 * TERA,
            "bf16": 312 * TERA,
            "fp16": 312 * TERA,
            "int8": 624 * TERA,
        },
        has_row_remapping=True,
    ),
    GpuSpec(
        key="A100-PCIE-40GB",
        name="NVIDIA A100-PCIE-40GB",
        match=r"A100-PCIE-40GB",
        architecture="ampere",
        compute_capability="8.0",
        sms=108,
        max_sm_clock_mhz=1410,
        peak_clock_mhz=1410,
        max_memory_clock_mhz=1215,
        memory_bytes=40 * GIB,
        memory_bandwidth_bytes_per_second=1.555e12,
        tdp_watts=250,
        min_power_limit_watts=150,
        peak_flops={
            "fp64": 9.7 * TERA,
            "fp64_tensor": 19.5 * TERA,
            "fp32": 19.5 * TERA,
            "tf32": 156 * TERA,
            "bf16": 312 * TERA,
            "fp16": 312 * TERA,
            "int8": 624 * TERA,
        },
        has_row_remapping=True,
    ),
    GpuSpec(
        key="L40S",
        name="NVIDIA L40S",
        match=r"L40S",
        architecture="ada",
        compute_capability="8.9",
        sms=142,
        max_sm_clock_mhz=2520,
        peak_clock_mhz=2520,
        max_memory_clock_mhz=9001,
        memory_bytes=48 * GIB,
        memory_bandwidth_bytes_per_second=864e9,
        tdp_watts=350,
        min_power_limit_watts=100,
        peak_flops={
            "fp32": 91.6 * TERA,
            "tf32": 183 * TERA,
            "bf16": 362 * TERA,
            "fp16": 362 * TERA,
            "fp8": 733 * TERA,
            "int8": 733 * TERA,
        },
        has_row_remapping=True,
    ),
    GpuSpec(
        key="L4",
        name="NVIDIA L4",
        match=r"\bL4\b",
        architecture="ada",
        compute_capability="8.9",
        sms=58,
        max_sm_clock_mhz=2040,
        peak_clock_mhz=2040,
        max_memory_clock_mhz=6251,
        memory_bytes=24 * GIB,
        memory_bandwidth_bytes_per_second=300e9,
        tdp_watts=72,
        min_power_limit_watts=40,
        peak_flops={
            "fp32": 30.3 * TERA,
            "tf32": 60 * TERA,
            "bf16": 121 * TERA,
            "fp16": 121 * TERA,
            "fp8": 242 * TERA,
            "int8": 242 * TERA,
        },
        has_row_remapping=True,
        confirmed=False,
    ),
    GpuSpec(
        key="A10G",
        name="NVIDIA A10G",
        match=r"A10G|\bA10\b",
        architecture="ampere",
        compute_capability="8.6",
        sms=80,
        max_sm_clock_mhz=1710,
        peak_clock_mhz=1695,
        max_memory_clock_mhz=6251,
        memory_bytes=24 * GIB,
        memory_bandwidth_bytes_per_second=600e9,
        tdp_watts=150,
        min_power_limit_watts=100,
        peak_flops={
            "fp32": 31.2 * TERA,
            "tf32": 62.5 * TERA,
            "bf16": 125 * TERA,
            "fp16": 125 * TERA,
            "int8": 250 * TERA,
        },
        has_row_remapping=True,
        confirmed=False,
    ),
    GpuSpec(
        key="T4",
        name="Tesla T4",
        match=r"\bT4\b",
        architecture="turing",
        compute_capability="7.5",
        sms=40,
        max_sm_clock_mhz=1590,
        peak_clock_mhz=1590,
        max_memory_clock_mhz=5001,
        memory_bytes=16 * GIB,
        memory_bandwidth_bytes_per_second=320e9,
        tdp_watts=70,
        min_power_limit_watts=60,
        peak_flops={"fp32": 8.1 * TERA, "fp16": 65 * TERA, "int8": 130 * TERA},
        pcie_generation=3,
    ),
    GpuSpec(
        key="V100-SXM2",
        name="Tesla V100-SXM2-32GB",
        match=r"V100",
        architecture="volta",
        compute_capability="7.0",
        sms=80,
        max_sm_clock_mhz=1530,
        peak_clock_mhz=1530,
        max_memory_clock_mhz=877,
        memory_bytes=32 * GIB,
        memory_bandwidth_bytes_per_second=900e9,
        tdp_watts=300,
        min_power_limit_watts=150,
        peak_flops={"fp64": 7.8 * TERA, "fp32": 15.7 * TERA, "fp16": 125 * TERA},
        has_nvlink=True,
        pcie_generation=3,
    ),
)

SPECS: dict[str, GpuSpec] = {s.key: s for s in _SPECS}


class SpecTable:
    """The built-in table plus the user's overrides; looked up by NVML device name."""

    def __init__(self, overrides: dict[str, dict[str, object]] | None = None) -> None:
        self._specs = dict(SPECS)
        for key, values in (overrides or {}).items():
            base = self._specs.get(key)
            if base is None:
                if "match" not in values:
                    values = {**values, "match": re.escape(key)}
                base = GpuSpec(
                    key=key,
                    name=str(values.get("name", key)),
                    match=str(values["match"]),
                    architecture="unknown",
                    compute_capability="",
                    sms=0,
                    max_sm_clock_mhz=0,
                    peak_clock_mhz=1,
                    max_memory_clock_mhz=0,
                    memory_bytes=0,
                    memory_bandwidth_bytes_per_second=0,
                    tdp_watts=0,
                    min_power_limit_watts=0,
                )
            fields = dict(values)
            if "peak_flops" in fields:
                fields["peak_flops"] = {**base.peak_flops, **dict(fields["peak_flops"])}  # type: ignore[call-overload]
            self._specs[key] = replace(base, **fields)  # type: ignore[arg-type]

    def by_key(self, key: str) -> GpuSpec | None:
        return self._specs.get(key)

    def for_device(self, nvml_name: str) -> GpuSpec | None:
        """The spec whose pattern matches the NVML device name; user overrides win over the built-in table."""
        for spec in reversed(list(self._specs.values())):
            if re.search(spec.match, nvml_name, re.IGNORECASE):
                return spec
        return None

    def keys(self) -> list[str]:
        return list(self._specs)
