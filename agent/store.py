"""The sample store: bounded ring buffers per GPU and for the host, and the agent's own counters.

The sampler thread is the only writer of readings, signals and counters; the XID
thread adds events; HTTP handlers read. Ring buffers hold ``history_seconds`` of
samples at the sampling interval (default 15 minutes) and never grow past that.

The ``Accumulator`` implements "integrate, don't snapshot" (see the design): activity
ratios times the interval become ``*_seconds_total`` counters, deltas of raw device
counters (energy, PCIe and NVLink bytes) become the agent's own counters (both lists are
``exporters.catalog``'s ``INTEGRATED_RATIOS`` and ``DEVICE_COUNTER_DELTAS``), and the
derived signals of each interval (state seconds, throttle seconds, FLOPs) are added up.
A raw counter that goes backwards was reset (driver reload, GPU reset): that interval
is skipped and the new value becomes the baseline.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import functools
import itertools
import math
import operator
import threading
import types
import typing
from collections import deque
from collections.abc import Callable
from typing import Any

from agent.model import GPU_STATES, DeviceStatus, GpuReading, HostReading, IntervalSignals, XidEvent
from agent.snapshot import CounterKey, Snapshot
from exporters.catalog import DEVICE_COUNTER_DELTAS, INTEGRATED_RATIOS


def _getter(attrs: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """obj -> the tuple of its ``attrs``, in one C call."""
    getter = operator.attrgetter(*attrs)
    if len(attrs) == 1:  # attrgetter of one name returns the value itself, not a tuple
        return lambda obj: (getter(obj),)
    return getter


# Driven by the exporter's catalog, so a ratio or device counter it lists is integrated
# without a second hand-kept list here. Keys and getters are built once, at import.
def _ratio_tables() -> tuple[tuple[CounterKey, ...], Callable[[Any], tuple[Any, ...]], int | None]:
    keys = tuple((name, labels) for _, name, labels in INTEGRATED_RATIOS)
    attrs = tuple(attr for attr, _, _ in INTEGRATED_RATIOS)
    busy = attrs.index("utilization_gpu_ratio") if "utilization_gpu_ratio" in attrs else None
    return keys, _getter(attrs), busy


# (reading fields) -> values, and the counter key of each: activity ratio x dt -> seconds
_RATIO_KEYS, _RATIO_VALUES, _BUSY_INDEX = _ratio_tables()
BUSY_KEY: CounterKey = ("gpulse_gpu_busy_seconds_total", ())

# (reading field, counter key): delta of a raw cumulative device counter
_RAW: tuple[tuple[str, CounterKey], ...] = tuple((attr, (name, ())) for attr, name in DEVICE_COUNTER_DELTAS)
_RAW_VALUES = _getter(tuple(attr for attr, _ in _RAW))

_STATE_KEYS: dict[str, CounterKey] = {
    s: ("gpulse_gpu_state_seconds_total", (("state", s),)) for s in GPU_STATES
}
CLOCK_LOST_KEY: CounterKey = ("gpulse_gpu_clock_lost_seconds_total", ())
DRAM_BYTES_KEY: CounterKey = ("gpulse_gpu_estimated_dram_bytes_total", ())
REPORTED_FLOPS_KEY: CounterKey = ("gpulse_gpu_reported_flops_total", ())


def _labelled(cache: dict[str, CounterKey], name: str, label: str, value: str) -> CounterKey:
    key = cache.get(value)
    if key is None:
        key = cache[value] = (name, ((label, value),))
    return key


class Accumulator:
    """Per-GPU counters the agent integrates itself. Used on the sampler thread only."""

    def __init__(self) -> None:
        self._counters: dict[int, dict[CounterKey, float]] = {}
        self._baselines: dict[int, dict[str, float]] = {}
        self._throttle_keys: dict[str, CounterKey] = {}
        self._flops_keys: dict[str, CounterKey] = {}

    def counters(self, index: int) -> dict[CounterKey, float]:
        """A copy, safe to hand to other threads."""
        return dict(self._counters.get(index, ()))

    def integrate(self, prev: GpuReading | None, cur: GpuReading) -> None:
        """Fold one new reading into the counters of its GPU."""
        if cur.status is not DeviceStatus.OK:
            return  # baselines survive: the next good reading books the whole delta since the last one
        counters = self._counters.setdefault(cur.index, {})
        baselines = self._baselines.setdefault(cur.index, {})
        for (attr, key), value in zip(_RAW, _RAW_VALUES(cur), strict=True):
            if value is None:
                continue
            last = baselines.get(attr)
            baselines[attr] = value
            if last is None:
                counters.setdefault(key, 0.0)
            elif value > last:
                counters[key] = counters.get(key, 0.0) + (value - last)
            # value == last: nothing to add (see _add); value < last: the device counter was reset,
            # skip this interval and keep the new baseline
        dt = cur.timestamp - prev.timestamp if prev is not None and prev.status is DeviceStatus.OK else 0.0
        values = _RATIO_VALUES(cur)
        if _BUSY_INDEX is not None and cur.utilization_samples_ratio is not None:
            # the high-rate samples cover the whole interval; utilization.gpu only its tail
            values = (*values[:_BUSY_INDEX], cur.utilization_samples_ratio, *values[_BUSY_INDEX + 1 :])
        for key, ratio in zip(_RATIO_KEYS, values, strict=True):
            if ratio is None:
                continue
            seconds = (0.0 if ratio < 0.0 else 1.0 if ratio > 1.0 else ratio) * dt if dt > 0 else 0.0
            if seconds or key not in counters:  # _add, inlined: the hottest loop of the store
                counters[key] = counters.get(key, 0.0) + seconds

    def book(self, index: int, signals: IntervalSignals) -> None:
        """Add one interval's derived signals (see the runtime contract for the metric names)."""
        counters = self._counters.setdefault(index, {})
        if signals.state_seconds:
            if _STATE_KEYS["idle"] not in counters:
                for key in _STATE_KEYS.values():  # every state has a series from the start
                    counters[key] = 0.0
            for state, seconds in signals.state_seconds.items():
                key = _STATE_KEYS.get(state) or ("gpulse_gpu_state_seconds_total", (("state", state),))
                _add(counters, key, seconds)
            _add(counters, CLOCK_LOST_KEY, signals.clock_lost_seconds)
        throttle_keys = self._throttle_keys
        for reason, seconds in signals.throttle_seconds.items():
            key = throttle_keys.get(reason) or _labelled(throttle_keys, "gpulse_gpu_throttle_seconds_total",
                                                         "reason", reason)
            _add(counters, key, seconds)
        flops_keys = self._flops_keys
        for precision, flops in signals.estimated_flops.items():
            key = flops_keys.get(precision) or _labelled(flops_keys, "gpulse_gpu_estimated_flops_total",
                                                         "precision", precision)
            _add(counters, key, flops)
        if signals.estimated_dram_bytes is not None:
            _add(counters, DRAM_BYTES_KEY, signals.estimated_dram_bytes)
        if signals.reported_flops or REPORTED_FLOPS_KEY in counters:
            # absent until a workload reports, so dashboards can prefer reported over estimated MFU
            _add(counters, REPORTED_FLOPS_KEY, signals.reported_flops)


def _add(counters: dict[CounterKey, float], key: CounterKey, amount: float) -> None:
    """``counters[key] += amount``, creating the key at 0.0.

    Adding zero to a counter that exists is skipped: the value would not change (a sum that
    starts at 0.0 is never -0.0: x + y is -0.0 only when both are), and the counter keeps its
    float object, which tells the renderer at once that its line has not changed either.
    """
    if amount or key not in counters:
        counters[key] = counters.get(key, 0.0) + amount


Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]  # (freeze, thaw)
FieldCodec = tuple[int, Callable[[Any], Any], Callable[[Any], Any]]  # (field index, freeze, thaw)


class CompactRing:
    """A bounded ring of dataclass records kept as flat value tuples, oldest first.

    A 15-minute history of 64 GPUs is 57,600 readings of about sixty fields each. As
    objects that is several hundred MiB, and hundreds of thousands of objects the cyclic
    garbage collector walks on every full collection (half a second, every few minutes).
    So each record is stored as one tuple of plain values: dicts become flat tuples of
    keys and values, lists of dataclasses tuples of their fields, enums their values.
    Tuples of plain values are not tracked by the collector, and a value equal to the
    previous record's is stored once. Records are rebuilt on read.
    """

    def __init__(self, cls: type, maxlen: int) -> None:
        self._cls = cls
        self._names, self._codecs = _layout(cls)
        self._values = _getter(self._names)
        # field index -> (the items of the list last frozen there, its frozen form): see append
        self._lists: dict[int, tuple[tuple[Any, ...], Any]] = {}
        self._items: deque[tuple[float, tuple[Any, ...]]] = deque(maxlen=maxlen)

    def __len__(self) -> int:
        return len(self._items)

    def append(self, timestamp: float, record: Any) -> None:
        values = list(self._values(record))
        for i, freeze, _ in self._codecs:
            field = values[i]
            if field is None:
                continue
            if field.__class__ is list:
                # A list of frozen dataclasses (the processes) is carried unchanged between polls:
                # the same objects freeze to the same values.
                items = tuple(field)
                last = self._lists.get(i)
                if last is not None and len(last[0]) == len(items) and all(map(operator.is_, items, last[0])):
                    values[i] = last[1]
                    continue
                values[i] = freeze(field)
                self._lists[i] = (items, values[i])
            else:
                values[i] = freeze(field)
        if self._items:
            # a value equal to the previous record's, of the same type, is stored as that one object
            values = [old if value.__class__ is old.__class__ and value == old else value
                      for value, old in zip(values, self._items[-1][1], strict=True)]
        self._items.append((timestamp, tuple(values)))

    def entries(self) -> list[tuple[float, tuple[Any, ...]]]:
        """A copy of the stored (timestamp, values); cheap, so callers can hold a lock around it."""
        return list(self._items)

    def window(self, entries: list[tuple[float, tuple[Any, ...]]], seconds: float) -> list[tuple[float, Any]]:
        """(timestamp, record) for the last ``seconds`` before the newest of ``entries``."""
        if not entries:
            return []
        cutoff = entries[-1][0] - seconds
        start = bisect.bisect_left(entries, cutoff, key=lambda item: item[0])
        return [(t, self._thaw(values)) for t, values in entries[start:]]

    def _thaw(self, frozen: tuple[Any, ...]) -> Any:
        values = list(frozen)
        for i, _, thaw in self._codecs:
            if values[i] is not None:
                values[i] = thaw(values[i])
        return self._cls(*values)


@functools.cache  # per record class: resolving the type hints takes about a millisecond
def _layout(cls: type) -> tuple[tuple[str, ...], tuple[FieldCodec, ...]]:
    """(field names, (index, freeze, thaw) of each field that needs a codec) of a dataclass."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    hints = typing.get_type_hints(cls)
    codecs = tuple((i, *codec) for i, name in enumerate(names) if (codec := _codec(hints[name])) is not None)
    return names, codecs


def _codec(tp: Any) -> Codec | None:
    """How to store a field of type ``tp`` as plain values, or None when it already is plain."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return _codec(inner[0]) if len(inner) == 1 else None
    origin = typing.get_origin(tp)
    if origin is dict:
        return _freeze_dict, _thaw_dict
    args = typing.get_args(tp)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        item_cls: Any = args[0]
        names = tuple(f.name for f in dataclasses.fields(item_cls))

        def freeze_list(items: list[Any]) -> tuple[Any, ...]:
            return tuple(tuple(getattr(item, name) for name in names) for item in items)

        def thaw_list(frozen: tuple[Any, ...]) -> list[Any]:
            return [item_cls(*fields) for fields in frozen]

        return freeze_list, thaw_list
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return operator.attrgetter("value"), tp
    return None


def _freeze_dict(value: dict[Any, Any]) -> tuple[Any, ...]:
    return tuple(itertools.chain.from_iterable(value.items()))


def _thaw_dict(frozen: tuple[Any, ...]) -> dict[Any, Any]:
    return dict(zip(frozen[::2], frozen[1::2], strict=True))


class Store:
    """Ring buffers of readings, interval signals and host readings, plus the latest snapshot.

    Per-process host stats are kept for the last ``HOST_PROCESS_SECONDS`` only; older host
    readings keep their node-level figures (CPU, memory, pressure, disk, network).
    """

    HOST_PROCESS_SECONDS = 60.0

    def __init__(self, interval_seconds: float, history_seconds: float) -> None:
        self.maxlen = max(2, math.ceil(history_seconds / interval_seconds) + 1)
        self._host_process_entries = max(2, math.ceil(self.HOST_PROCESS_SECONDS / interval_seconds))
        self.accumulator = Accumulator()
        self._lock = threading.Lock()
        self._readings: dict[int, CompactRing] = {}
        self._last: dict[int, GpuReading] = {}
        self._signals: dict[int, CompactRing] = {}
        self._host: deque[HostReading] = deque(maxlen=self.maxlen)
        self._latest: Snapshot | None = None
        self._exposition: Any = None
        self._xid_counts: dict[tuple[int, int], int] = {}
        self._xid_last_seen: dict[int, float] = {}

    # --- writers (sampler thread; XID thread for add_xid) ---

    def add_reading(self, reading: GpuReading) -> GpuReading | None:
        """Append, integrate into the counters, and return the previous reading of that GPU."""
        with self._lock:
            ring = self._readings.get(reading.index)
            if ring is None:
                ring = self._readings[reading.index] = CompactRing(GpuReading, self.maxlen)
            ring.append(reading.timestamp, reading)
            prev = self._last.get(reading.index)
            self._last[reading.index] = reading
        self.accumulator.integrate(prev, reading)
        return prev

    def add_signals(self, index: int, timestamp: float, signals: IntervalSignals) -> None:
        with self._lock:
            ring = self._signals.get(index)
            if ring is None:
                ring = self._signals[index] = CompactRing(IntervalSignals, self.maxlen)
            ring.append(timestamp, signals)
        self.accumulator.book(index, signals)

    def add_host(self, reading: HostReading) -> None:
        with self._lock:
            self._host.append(reading)
            n = self._host_process_entries
            if len(self._host) > n and self._host[-n - 1].processes:
                self._host[-n - 1] = dataclasses.replace(self._host[-n - 1], processes={})

    def add_xid(self, event: XidEvent, epoch: float) -> None:
        with self._lock:
            key = (event.index, event.xid)
            self._xid_counts[key] = self._xid_counts.get(key, 0) + 1
            self._xid_last_seen[event.index] = epoch

    def xids(self) -> tuple[dict[tuple[int, int], int], dict[int, float]]:
        with self._lock:
            return dict(self._xid_counts), dict(self._xid_last_seen)

    def publish(self, snapshot: Snapshot, exposition: Any) -> None:
        """Make a finished tick visible: the snapshot and its rendered exposition together."""
        with self._lock:
            self._latest = snapshot
            if exposition is not None:
                self._exposition = exposition

    # --- readers (any thread) ---

    def latest(self) -> Snapshot | None:
        return self._latest

    def exposition(self) -> Any:
        """The latest rendered exposition (``exporters.prometheus.render``'s result), or None."""
        return self._exposition

    def history(self, index: int, seconds: float) -> list[GpuReading]:
        """Readings of one GPU from the last ``seconds`` (relative to the newest reading), oldest first.

        Read-only: records share equal values with their neighbours.
        """
        with self._lock:
            ring = self._readings.get(index)
            entries = ring.entries() if ring is not None else []
        return [reading for _, reading in ring.window(entries, seconds)] if ring is not None else []

    def signal_history(self, index: int, seconds: float) -> list[tuple[float, IntervalSignals]]:
        """(end of interval, signals) of one GPU over the last ``seconds``, oldest first; read-only."""
        with self._lock:
            ring = self._signals.get(index)
            entries = ring.entries() if ring is not None else []
        return ring.window(entries, seconds) if ring is not None else []

    def host_history(self, seconds: float) -> list[HostReading]:
        with self._lock:
            items = list(self._host)
        return _window(items, seconds, lambda r: r.timestamp)


def _window(items: list[Any], seconds: float, key: Any) -> list[Any]:
    if not items:
        return items
    cutoff = key(items[-1]) - seconds
    return items[bisect.bisect_left(items, cutoff, key=key) :]
