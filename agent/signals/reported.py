"""FLOPs that workloads report about themselves, attributed to the GPUs their process tree uses.

A workload posts monotonic totals (``model_flops_total``, or ``tokens_total`` x
``flops_per_token``), so a lost request loses nothing: the next one carries it. The first
report of a pid sets its baseline (report 0 at start to count from the first step). What a
pid added is divided among the GPUs its process tree uses, so one process driving 8 GPUs
gives each an eighth. What a pid adds before its GPUs are known (NVML's process list lags)
waits and is not lost.

Written by the API thread, read by the sampler thread: one lock guards the state.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

# A conservative stand-in for a GPU missing from the spec table, for the absurdity check only.
UNKNOWN_GPU_PEAK_FLOPS = 1e16


class ReportError(ValueError):
    """A report that cannot be true; the message says why (the API answers 422 with it)."""


@dataclass
class _Workload:
    baseline: float
    total: float
    last_time: float
    assigned: float = 0.0  # accepted FLOPs already divided among GPUs
    pending: dict[int, float] = field(default_factory=dict)  # gpu -> its share not yet credited

    @property
    def accepted(self) -> float:
        return self.total - self.baseline


@dataclass(frozen=True)
class Accepted:
    pid: int
    total: float
    added: float  # FLOPs added by this report (0 for the baseline)
    baseline: bool


class ReportedFlops:
    def __init__(self, absurd_factor: float, ttl_seconds: float,
                 node_peak_flops: Callable[[], float]) -> None:
        self._absurd = absurd_factor
        self._ttl = ttl_seconds
        self._node_peak = node_peak_flops
        self._lock = threading.Lock()
        self._workloads: dict[int, _Workload] = {}

    def report(self, pid: int, total: float, now: float) -> Accepted:
        if pid <= 0:
            raise ReportError(f"pid must be a positive process id, got {pid}")
        if not math.isfinite(total):
            raise ReportError("the FLOPs total is not a finite number")
        if total < 0:
            raise ReportError(f"the FLOPs total is negative ({total:g})")
        with self._lock:
            self._expire(now)
            w = self._workloads.get(pid)
            if w is None:
                self._workloads[pid] = _Workload(baseline=total, total=total, last_time=now)
                return Accepted(pid, total, 0.0, baseline=True)
            if total < w.total:
                raise ReportError(f"the FLOPs total decreased for pid {pid}: {total:g} after {w.total:g}; "
                                  "totals are monotonic (a restarted process gets a new pid)")
            elapsed = max(1.0, now - w.last_time)
            limit = self._absurd * self._node_peak() * elapsed
            added = total - w.total
            if added > limit:
                raise ReportError(f"absurd increase for pid {pid}: {added:g} FLOPs in {elapsed:.1f} s is "
                                  f"more than {self._absurd:g} x the node's peak ({limit:g} FLOPs)")
            w.total, w.last_time = total, now
            return Accepted(pid, total, added, baseline=False)

    def take(self, index: int, gpus_of: Callable[[int], tuple[int, ...]], now: float) -> float:
        """FLOPs to credit GPU ``index`` since its last call; ``gpus_of(pid)`` names the GPUs a pid uses.

        What a pid added since it was last divided goes, in equal shares, to the GPUs it uses
        when the first of them looks; each GPU then takes its own share.
        """
        credit = 0.0
        with self._lock:
            self._expire(now)
            for pid, w in self._workloads.items():
                gpus = gpus_of(pid)
                if index not in gpus:
                    continue
                new = w.accepted - w.assigned
                if new > 0:
                    for g in gpus:
                        w.pending[g] = w.pending.get(g, 0.0) + new / len(gpus)
                    w.assigned = w.accepted
                credit += w.pending.pop(index, 0.0)
        return credit

    @property
    def active(self) -> bool:
        """Whether any workload has reported (read without the lock: a report that races this
        is credited at the next ``take``, as if it had come just after)."""
        return bool(self._workloads)

    def pids(self) -> list[int]:
        with self._lock:
            return list(self._workloads)

    def _expire(self, now: float) -> None:
        for pid in [p for p, w in self._workloads.items() if now - w.last_time > self._ttl]:
            del self._workloads[pid]


def node_peak(peaks: list[float | None]) -> float:
    """Sum of the GPUs' highest peaks, with a generous stand-in for unknown models (at least one GPU)."""
    return sum(p if p else UNKNOWN_GPU_PEAK_FLOPS for p in peaks) or UNKNOWN_GPU_PEAK_FLOPS
