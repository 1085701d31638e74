"""Workloads as analytic functions of time, and each GPU's timeline of them.

A workload alternates compute bursts of ``compute_s`` with waits of ``wait_s``
(no waits: it computes all the time). While a burst runs the GPU shows the kind's
activity levels (SM, tensor, DRAM ...); while it waits, nothing executes. Because
the pattern is periodic, the compute time inside any window has a closed form, so
``activity(t0, t1)`` is exact whatever the window, and readings do not depend on
when, or how often, anyone looks.

A GPU's timeline is a list of segments, each running one workload (or none: idle)
from its start; events (workload switch, process exit, fallen off the bus) cut it.
All times here are *scenario* seconds (0 = scenario start).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields

from agent.sim.device import Activity
from agent.sim.scenario import Scenario, WorkloadSpec
from agent.specs import GpuSpec

INF = math.inf
GIB = 1024**3


@dataclass(frozen=True)
class Levels:
    """Activity fractions while a burst runs (what ``Activity`` averages over a window)."""

    busy: float = 0.0
    sm_active: float = 0.0
    sm_occupancy: float = 0.0
    tensor: float = 0.0
    hmma: float = 0.0
    imma: float = 0.0
    dfma: float = 0.0
    dram: float = 0.0
    fp16: float = 0.0
    fp32: float = 0.0
    fp64: float = 0.0
    memory_controller: float = 0.0


LEVEL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Levels))
ACTIVITY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Activity))
_IDLE = Activity()

# Activity during a burst, per kind. Training and prefill are dense GEMM work (tensor pipes
# busy, DRAM moderate); decode streams the weights and KV cache once per token, so DRAM sits
# near its practical ceiling (~0.8) while the tensor pipes idle. Figures are typical of
# published DCGM/GPM traces of such jobs, not measurements of a particular one.
_KIND_LEVELS: dict[str, dict[str, float]] = {
    "training": dict(
        busy=1.0,
        sm_active=0.97,
        sm_occupancy=0.45,
        pipe=0.65,
        dram=0.40,
        fp32=0.10,
        fp16=0.05,
        memory_controller=0.38,
    ),
    "inference_prefill": dict(
        busy=1.0,
        sm_active=0.98,
        sm_occupancy=0.50,
        pipe=0.72,
        dram=0.30,
        fp32=0.06,
        fp16=0.04,
        memory_controller=0.28,
    ),
    "inference_decode": dict(
        busy=1.0,
        sm_active=0.90,
        sm_occupancy=0.25,
        pipe=0.10,
        dram=0.82,
        fp32=0.05,
        fp16=0.03,
        memory_controller=0.80,
    ),
}
# Dynamic power while a burst runs, as fractions of (TDP - idle power): ``k_sm`` scales with the
# SM clock (f x V^2, roughly f^2.2 near the top of the V/f curve), ``k_mem`` does not (HBM, I/O).
_KIND_POWER: dict[str, tuple[float, float]] = {
    "training": (0.74, 0.08),
    "inference_prefill": (0.80, 0.07),
    "inference_decode": (0.28, 0.30),
}
_KIND_MEMORY_SHARE = {"training": 0.85, "inference_prefill": 0.75, "inference_decode": 0.92}
# Interconnect flows while a burst runs, bytes/s: (PCIe to host, PCIe from host, NVLink each way).
_KIND_FLOWS = {
    "training": (0.2e9, 1.5e9, 60e9),
    "inference_prefill": (0.1e9, 0.3e9, 20e9),
    "inference_decode": (0.05e9, 0.05e9, 10e9),
}
_TENSOR_PRECISIONS = {
    "tf32": "hmma",
    "bf16": "hmma",
    "fp16": "hmma",
    "fp8": "hmma",
    "int8": "imma",
    "fp64_tensor": "dfma",
}
# A workload is memory-bound (truth) when DRAM is near its ceiling and its math pipe far below.
MEMORY_BOUND_DRAM = 0.6
MEMORY_BOUND_PIPE = 0.3
_STARVED = {"host_cpu": "starved_host", "io": "starved_io", "other": "starved_other"}


@dataclass(frozen=True)
class Workload:
    spec: WorkloadSpec
    levels: Levels
    pipe: float  # activity of the pipe that executes ``precision`` (tensor, or the FP32/FP64 units)
    k_sm: float
    k_mem: float
    memory_bytes: int
    memory_bound: bool
    pcie_tx_bps: float
    pcie_rx_bps: float
    nvlink_bps: float
    executing_state: str  # truth while a burst runs unthrottled: memory_bound or compute_bound
    starved_state: str  # truth while it waits: starved_host, starved_io or starved_other
    level_values: tuple[float, ...]  # ``levels`` in ``Activity``'s field order

    @property
    def precision(self) -> str:
        return self.spec.precision

    @property
    def period(self) -> float:
        return self.spec.compute_s + self.spec.wait_s

    def compute_time(self, start: float, t: float) -> float:
        """Seconds of burst between ``start`` (the workload's start) and ``t``."""
        u = t - start
        if u <= 0:
            return 0.0
        c, w = self.spec.compute_s, self.spec.wait_s
        if w <= 0:
            return u
        p = c + w
        n = math.floor(u / p)
        return n * c + min(u - n * p, c)

    def phases(self, start: float, a: float, b: float) -> Iterator[tuple[float, float, bool]]:
        """(t0, t1, computing) pieces covering [a, b] exactly."""
        c, w = self.spec.compute_s, self.spec.wait_s
        if w <= 0:
            yield a, b, True
            return
        p = c + w
        n = math.floor((a - start) / p)
        t = a
        while t < b:
            base = start + n * p
            c_end, p_end = base + c, base + p
            if t < c_end:
                end = min(b, c_end)
                yield t, end, True
                t = end
            if t < b and t < p_end:
                end = min(b, p_end)
                yield t, end, False
                t = end
            n += 1

    def wait_elapsed(self, start: float, t: float) -> float:
        """How long the current wait has lasted at ``t``; -1 while a burst runs."""
        c, w = self.spec.compute_s, self.spec.wait_s
        if w <= 0 or t < start:
            return -1.0
        p = c + w
        r = (t - start) % p
        return r - c if r >= c else -1.0


def make_workload(spec: WorkloadSpec, gpu: GpuSpec) -> Workload | None:
    """The modelled workload for a scenario workload on a GPU model; None for ``idle``."""
    if spec.kind == "idle":
        return None
    base = dict(_KIND_LEVELS[spec.kind])
    pipe = spec.tensor if spec.tensor is not None else base.pop("pipe")
    base.pop("pipe", None)
    if spec.sm_active is not None:
        base["sm_active"] = spec.sm_active
    if spec.dram is not None:
        base["dram"] = spec.dram
        base["memory_controller"] = min(1.0, spec.dram * 0.97)
    tensor_unit = _TENSOR_PRECISIONS.get(spec.precision)
    levels = dict(base)
    if tensor_unit is not None:
        levels["tensor"] = pipe
        levels[tensor_unit] = pipe
    elif spec.precision == "fp32":
        levels["fp32"] = max(levels.get("fp32", 0.0), pipe)
    else:  # fp64 on the vector units
        levels["fp64"] = pipe
    k_sm, k_mem = _KIND_POWER[spec.kind]
    memory = (
        spec.memory_gib * GIB
        if spec.memory_gib is not None
        else gpu.memory_bytes * _KIND_MEMORY_SHARE[spec.kind]
    )
    tx, rx, nvlink = _KIND_FLOWS[spec.kind]
    memory_bound = levels["dram"] >= MEMORY_BOUND_DRAM and pipe <= MEMORY_BOUND_PIPE
    return Workload(
        spec=spec,
        levels=Levels(**levels),
        pipe=pipe,
        k_sm=k_sm,
        k_mem=k_mem,
        memory_bytes=int(memory),
        memory_bound=memory_bound,
        executing_state="memory_bound" if memory_bound else "compute_bound",
        starved_state=_STARVED[spec.wait_cause],
        level_values=tuple(float(levels.get(f, 0.0)) for f in ACTIVITY_FIELDS),
        pcie_tx_bps=tx,
        pcie_rx_bps=rx,
        nvlink_bps=nvlink if gpu.has_nvlink else 0.0,
    )


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    workload: Workload | None  # None: no process on the GPU
    number: int  # 0, 1, 2 ... per GPU (simulated PIDs are derived from it)


class Timeline:
    """One GPU's workloads, lost periods and NVML hangs over scenario time."""

    def __init__(
        self, segments: list[Segment], lost: list[tuple[float, float]], hangs: list[tuple[float, float]]
    ) -> None:
        self.segments = segments
        self._starts = [s.start for s in segments]
        self.lost = lost
        self.hangs = hangs

    @classmethod
    def for_gpu(cls, scenario: Scenario, index: int, gpu: GpuSpec) -> Timeline:
        entry = scenario.gpus[index]
        cuts: list[tuple[float, Workload | None]] = [(0.0, make_workload(entry.workload, gpu))]
        lost: list[tuple[float, float]] = []
        hangs: list[tuple[float, float]] = []
        lost_since: float | None = None
        for ev in scenario.events:
            if ev.gpu != index:
                continue
            if ev.kind == "workload" and ev.workload is not None:
                if lost_since is None:  # a lost GPU runs nothing until it is back and given work
                    cuts.append((ev.at_s, make_workload(ev.workload, gpu)))
            elif ev.kind == "process_exit":
                cuts.append((ev.at_s, None))
            elif ev.kind == "gpu_lost" and lost_since is None:
                lost_since = ev.at_s
                cuts.append((ev.at_s, None))  # its processes die with it
            elif ev.kind == "gpu_recovered" and lost_since is not None:
                lost.append((lost_since, ev.at_s))
                lost_since = None
            elif ev.kind == "nvml_hang" and ev.seconds is not None:
                hangs.append((ev.at_s, ev.at_s + ev.seconds))
        if lost_since is not None:
            lost.append((lost_since, INF))
        segments: list[Segment] = []
        for i, (start, wl) in enumerate(cuts):
            end = cuts[i + 1][0] if i + 1 < len(cuts) else INF
            if end > start:  # of several cuts at one instant, the last one wins
                segments.append(Segment(start, end, wl, len(segments)))
        return cls(segments, lost, hangs)

    def segment_at(self, t: float) -> Segment:
        i = bisect.bisect_right(self._starts, t) - 1
        return self.segments[max(0, i)]

    def overlapping(self, a: float, b: float) -> Iterator[Segment]:
        i = max(0, bisect.bisect_right(self._starts, a) - 1)
        while i < len(self.segments) and self.segments[i].start < b:
            seg = self.segments[i]
            if seg.end > a:
                yield seg
            i += 1

    def is_lost(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.lost)

    def hang_until(self, t: float) -> float | None:
        for a, b in self.hangs:
            if a <= t < b:
                return b
        return None

    def compute_seconds(self, a: float, b: float) -> list[tuple[Workload, float]]:
        """Seconds of burst per workload inside [a, b]."""
        seg = self.segment_at(a)
        if seg.end >= b:  # the common case: one segment covers the window
            wl = seg.workload
            if wl is None:
                return []
            ct = wl.compute_time(seg.start, b) - wl.compute_time(seg.start, max(a, seg.start))
            return [(wl, ct)] if ct > 0 else []
        out = []
        for seg in self.overlapping(a, b):
            if seg.workload is None:
                continue
            lo, hi = max(a, seg.start), min(b, seg.end)
            ct = seg.workload.compute_time(seg.start, hi) - seg.workload.compute_time(seg.start, lo)
            if ct > 0:
                out.append((seg.workload, ct))
        return out

    def activity(self, a: float, b: float) -> Activity:
        """Exact time-averaged activity over [a, b]."""
        if b <= a:
            seg = self.segment_at(a)
            wl = seg.workload
            if wl is None or a < seg.start or wl.wait_elapsed(seg.start, a) >= 0:
                return _IDLE
            return Activity(*wl.level_values)
        works = self.compute_seconds(a, b)
        if not works:
            return _IDLE
        span = b - a
        if len(works) == 1:
            wl, ct = works[0]
            x = ct / span
            return Activity(*[min(1.0, v * x) for v in wl.level_values])
        sums = [0.0] * len(ACTIVITY_FIELDS)
        for wl, ct in works:
            for i, v in enumerate(wl.level_values):
                sums[i] += v * ct
        return Activity(*[min(1.0, v / span) for v in sums])

    def phases(self, a: float, b: float) -> Iterator[tuple[float, float, Segment, bool]]:
        """(t0, t1, segment, computing) pieces covering [a, b]; idle segments yield computing False."""
        for seg in self.overlapping(a, b):
            lo, hi = max(a, seg.start), min(b, seg.end)
            if hi <= lo:
                continue
            if seg.workload is None:
                yield lo, hi, seg, False
                continue
            for t0, t1, computing in seg.workload.phases(seg.start, lo, hi):
                yield t0, t1, seg, computing
