"""Ground truth: what really happened on every simulated GPU, as JSON lines.

Four kinds of record, told apart by their keys (times are scenario seconds)::

    {"gpu": 0, "uuid": "GPU-…", "state": "starved_host", "start_s": 12.0, "end_s": 12.15}
    {"gpu": 0, "uuid": "GPU-…", "reasons": ["sw_power_cap"], "start_s": 10.0, "end_s": 61.5}
    {"gpu": 0, "uuid": "GPU-…", "flops": 6.1e14, "precision": "bf16", "peak_flops": 9.895e14,
     "start_s": 12.0, "end_s": 13.0}
    {"summary": {"0": {"compute_bound": 431.2, "idle": 0.0, …}, …}, "duration_s": 600.0,
     "flops_total": {"0": {"bf16": 4.1e17}}}

State intervals use the design's nine-state vocabulary and tile each GPU's time
exactly; adjacent intervals with the same state are merged. Reason intervals hold
the clock-event reasons (snake case) that were active. FLOPs records cover fixed
windows (1 s by default) with the tensor (or FP32/FP64) work the GPU really executed;
``peak_flops`` is the dense datasheet peak for that precision, so true MFU over a
window is ``flops / (peak_flops × (end_s − start_s))``. The summary's per-GPU seconds
add up to ``duration_s``.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent.model import GPU_STATES


class TruthSink:
    """Where the records go: a JSON-lines stream (optional) plus the in-memory summary."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out
        self._lock = threading.Lock()
        self.state_seconds: dict[int, dict[str, float]] = {}
        self.flops_total: dict[int, dict[str, float]] = {}
        self.closed_at: float | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self._out is None:
            return
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._out.write(line)

    def book_state(self, gpu: int, state: str, seconds: float) -> None:
        with self._lock:
            per = self.state_seconds.setdefault(gpu, dict.fromkeys(GPU_STATES, 0.0))
            per[state] += seconds

    def book_flops(self, gpu: int, precision: str, flops: float) -> None:
        with self._lock:
            per = self.flops_total.setdefault(gpu, {})
            per[precision] = per.get(precision, 0.0) + flops

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "summary": {
                    str(g): {s: round(v, 6) for s, v in per.items()}
                    for g, per in sorted(self.state_seconds.items())
                },
                "duration_s": self.closed_at,
                "flops_total": {str(g): dict(per) for g, per in sorted(self.flops_total.items())},
            }

    def close(self, end_s: float) -> None:
        self.closed_at = end_s
        self.write(self.summary())
        if self._out is not None:
            with self._lock:
                self._out.flush()


class GpuTruth:
    """One GPU's recorder: merges adjacent pieces and hands finished records to the sink.

    ``limit`` clips everything at the scenario's end, so a reading taken after the end
    cannot add truth beyond it.
    """

    def __init__(
        self, sink: TruthSink, gpu: int, uuid: str, *, window_s: float = 1.0, limit: float | None = None
    ) -> None:
        self.sink = sink
        self.gpu = gpu
        self.uuid = uuid
        self.window_s = window_s
        self.limit = limit
        self._state: str | None = None
        self._state_start = 0.0
        self._state_end = 0.0
        self._reasons: tuple[str, ...] | None = None
        self._reasons_start = 0.0
        self._reasons_end = 0.0
        self._window = 0
        self._window_flops = 0.0
        self._window_precision: str | None = None
        self._window_peak: float | None = None
        self._closed = False

    def state(self, t0: float, t1: float, state: str) -> None:
        if self.limit is not None:
            t1 = min(t1, self.limit)
        if t1 <= t0 or self._closed:
            return
        if state == self._state and abs(t0 - self._state_end) < 1e-9:
            self._state_end = t1
            return
        self._flush_state()
        self._state, self._state_start, self._state_end = state, t0, t1

    def reasons(self, t0: float, t1: float, reasons: tuple[str, ...]) -> None:
        if self.limit is not None:
            t1 = min(t1, self.limit)
        if t1 <= t0 or self._closed:
            return
        if reasons == self._reasons and abs(t0 - self._reasons_end) < 1e-9:
            self._reasons_end = t1
            return
        self._flush_reasons()
        self._reasons, self._reasons_start, self._reasons_end = reasons, t0, t1

    def flops(self, window: int, flops: float, precision: str | None, peak: float | None) -> None:
        """Add FLOPs executed in window number ``window`` (``[window × window_s, …)``)."""
        if self._closed or (self.limit is not None and window * self.window_s >= self.limit):
            return
        if window != self._window:
            self._flush_flops()
            self._window = window
        self._window_flops += flops
        if precision is not None:
            self._window_precision, self._window_peak = precision, peak

    def _flush_state(self) -> None:
        if self._state is None:
            return
        self.sink.write(
            {
                "gpu": self.gpu,
                "uuid": self.uuid,
                "state": self._state,
                "start_s": _r(self._state_start),
                "end_s": _r(self._state_end),
            }
        )
        self.sink.book_state(self.gpu, self._state, self._state_end - self._state_start)
        self._state = None

    def _flush_reasons(self) -> None:
        if self._reasons is None:
            return
        self.sink.write(
            {
                "gpu": self.gpu,
                "uuid": self.uuid,
                "reasons": list(self._reasons),
                "start_s": _r(self._reasons_start),
                "end_s": _r(self._reasons_end),
            }
        )
        self._reasons = None

    def _flush_flops(self) -> None:
        start = self._window * self.window_s
        end = start + self.window_s
        if self.limit is not None:
            end = min(end, self.limit)
        if end > start and (self._window_precision is not None or self._window_flops > 0):
            self.sink.write(
                {
                    "gpu": self.gpu,
                    "uuid": self.uuid,
                    "flops": self._window_flops,
                    "precision": self._window_precision,
                    "peak_flops": self._window_peak,
                    "start_s": _r(start),
                    "end_s": _r(end),
                }
            )
            if self._window_precision is not None:
                self.sink.book_flops(self.gpu, self._window_precision, self._window_flops)
        self._window_flops = 0.0
        self._window_precision = None
        self._window_peak = None

    def close(self) -> None:
        if self._closed:
            return
        self._flush_state()
        self._flush_reasons()
        self._flush_flops()
        self._closed = True


def _r(t: float) -> float:
    return round(t, 6)


# ---------------------------------------------------------------------------------------------
# Reading a truth file back (for scoring)


@dataclass
class Truth:
    states: dict[int, list[tuple[float, float, str]]] = field(default_factory=lambda: defaultdict(list))
    reasons: dict[int, list[tuple[float, float, tuple[str, ...]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    flops: dict[int, list[tuple[float, float, float, str | None, float | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    uuids: dict[int, str] = field(default_factory=dict)
    summary: dict[int, dict[str, float]] = field(default_factory=dict)
    duration_s: float | None = None

    def state_seconds(self, gpu: int, t0: float = 0.0, t1: float = float("inf")) -> dict[str, float]:
        """Seconds per state inside [t0, t1]."""
        out = dict.fromkeys(GPU_STATES, 0.0)
        for a, b, state in self.states.get(gpu, []):
            lo, hi = max(a, t0), min(b, t1)
            if hi > lo:
                out[state] += hi - lo
        return out

    def executed_flops(self, gpu: int, t0: float = 0.0, t1: float = float("inf")) -> float:
        """True FLOPs inside [t0, t1] (windows cut proportionally)."""
        total = 0.0
        for a, b, flops, _precision, _peak in self.flops.get(gpu, []):
            lo, hi = max(a, t0), min(b, t1)
            if hi > lo and b > a:
                total += flops * (hi - lo) / (b - a)
        return total

    def mfu(self, gpu: int, t0: float, t1: float) -> float | None:
        """True MFU over [t0, t1] against the dense peak of the workload's precision."""
        peaks = [p for a, b, _f, _pr, p in self.flops.get(gpu, []) if p and b > t0 and a < t1]
        if not peaks or t1 <= t0:
            return None
        return self.executed_flops(gpu, t0, t1) / (max(peaks) * (t1 - t0))


def read_truth(source: str | Path | Iterable[str]) -> Truth:
    lines: Iterable[str] = (
        Path(source).read_text().splitlines() if isinstance(source, (str, Path)) else source
    )
    truth = Truth()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        if "summary" in rec:
            truth.summary = {int(g): per for g, per in rec["summary"].items()}
            truth.duration_s = rec.get("duration_s")
            continue
        gpu = int(rec["gpu"])
        truth.uuids[gpu] = rec["uuid"]
        if "state" in rec:
            truth.states[gpu].append((rec["start_s"], rec["end_s"], rec["state"]))
        elif "reasons" in rec:
            truth.reasons[gpu].append((rec["start_s"], rec["end_s"], tuple(rec["reasons"])))
        elif "flops" in rec:
            truth.flops[gpu].append(
                (rec["start_s"], rec["end_s"], rec["flops"], rec.get("precision"), rec.get("peak_flops"))
            )
    return truth
