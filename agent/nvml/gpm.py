"""GPM (Hopper and newer): window averages between two alternating samples per device.

Each read takes one GPM sample into the buffer not holding the previous one and asks
``nvmlGpmMetricsGet`` for the metrics between the two, so every window runs from the
previous read to this one and nothing is missed or counted twice. The first read after
start (or after the device came back) only takes a sample. Percent metrics become ratios
(/100); the PCIe/NVLink MiB/s rates are returned for the backend, which uses them only
where the byte-counter fields are missing.
"""

from __future__ import annotations

from typing import Any

from agent.clock import Clock
from agent.model import GpuReading
from agent.nvml import consts as C
from agent.nvml.calls import Caller, DeviceCalls
from agent.nvml.layout import raw_bytes, struct_for

METRICS: tuple[int, ...] = (*C.GPM_RATIO_METRICS, *C.GPM_RATE_METRICS)
_METRIC_LAYOUT = (("metricId", "I"), ("nvmlReturn", "I"), ("value", "d"))


class GpmWindow:
    """Two sample buffers and a reusable metrics request for one device."""

    def __init__(self, caller: Caller, nvml: Any) -> None:
        self._caller = caller
        self._nvml = nvml
        self.samples: list[Any] = []
        self._current = 0
        self._previous_t: float | None = None
        self._metrics: list[int] = list(METRICS)
        self._request: Any = None

    @staticmethod
    def supported(caller: Caller, dev: DeviceCalls, handle: Any) -> bool:
        support = caller.call(dev, "gpm", "nvmlGpmQueryDeviceSupport", handle)
        return bool(support is not None and support.isSupportedDevice)

    def allocate(self, caller: Caller, dev: DeviceCalls) -> bool:
        while len(self.samples) < 2:
            sample = caller.call(dev, "gpm", "nvmlGpmSampleAlloc")
            if sample is None:
                return False
            self.samples.append(sample)
        self._request = self._nvml.c_nvmlGpmMetricsGet_t()
        self._set_metric_ids()
        return True

    def _set_metric_ids(self) -> None:
        req = self._request
        req.version = C.GPM_METRICS_GET_VERSION
        req.numMetrics = len(self._metrics)
        for i, metric in enumerate(self._metrics):
            req.metrics[i].metricId = metric

    def reset(self) -> None:
        """Forget the previous sample (after a device loss): the next read starts a new window."""
        self._previous_t = None

    def read(self, dev: DeviceCalls, handle: Any, clock: Clock, reading: GpuReading) -> dict[str, float]:
        """Sample, fill the ratios for the window since the previous read; return the byte rates (B/s)."""
        if self._request is None or "gpm" in dev.unsupported:
            return {}
        sample = self.samples[self._current]
        if self._caller.call(dev, "gpm", "nvmlGpmSampleGet", handle, sample) is None:
            return {}
        now = clock.now()
        previous_t, self._previous_t = self._previous_t, now
        previous = self.samples[1 - self._current]
        self._current = 1 - self._current
        if previous_t is None or now <= previous_t:
            return {}
        req = self._request
        req.sample1, req.sample2 = previous, sample
        if self._caller.call(dev, "gpm_metrics", "nvmlGpmMetricsGet", req) is None:
            return {}
        reading.gpm_window_seconds = now - previous_t
        rates: dict[str, float] = {}
        unsupported: list[int] = []
        for metric_id, ret, value in self._results(req):
            if ret != C.SUCCESS:
                if ret == C.ERROR_NOT_SUPPORTED:
                    unsupported.append(metric_id)
                continue
            attr = C.GPM_RATIO_METRICS.get(metric_id)
            if attr is not None:
                setattr(reading, attr, max(0.0, value / 100.0))
            else:
                rates[C.GPM_RATE_METRICS[metric_id]] = max(0.0, value) * (1 << 20)
        if unsupported:
            self._metrics = [m for m in self._metrics if m not in unsupported]
            self._set_metric_ids()
        return rates

    def _results(self, req: Any) -> list[tuple[int, int, float]]:
        """(metric id, nvmlReturn, value) for each requested metric."""
        count = len(self._metrics)
        metrics = req.metrics
        layout = struct_for(getattr(type(metrics), "_type_", None), _METRIC_LAYOUT)
        view = raw_bytes(metrics, count) if layout is not None else None
        if layout is not None and view is not None:
            return [
                (mid, ret, value)
                for (_, ret, value), mid in zip(layout.iter_unpack(view), self._metrics, strict=True)
            ]
        return [(self._metrics[i], metrics[i].nvmlReturn, metrics[i].value) for i in range(count)]

    def free(self, caller: Caller, dev: DeviceCalls) -> None:
        for sample in self.samples:
            try:
                caller.call(dev, "gpm_free", "nvmlGpmSampleFree", sample)
            except Exception:
                pass
        self.samples = []
        self._request = None
