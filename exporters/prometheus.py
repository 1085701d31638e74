"""Prometheus exposition: one Snapshot in, ready bytes out, once per sampling tick.

``render(snapshot)`` walks the snapshot once and builds every family's sample lines,
formatting again only the values that changed since the last render (see ``_Column``);
the Prometheus text format 0.0.4 and OpenMetrics 1.0.0 share those lines and differ
only in their metadata (OpenMetrics names a counter's family without ``_total`` and
an info family without ``_info``, adds ``# UNIT`` and ends with ``# EOF``). A scrape
then costs a dictionary lookup: ``Exposition.negotiate(accept, accept_encoding)``
picks the format and encoding and returns cached bytes. The OpenMetrics body and the
gzip bodies are built on the first request that wants them in a tick, so a node
scraped in one format never pays for the other; ``Renderer``, the sampler's renderer,
builds at render time the bodies scrapers asked for recently, so a steady scraper never
waits for compression on the request path.

The text is written by hand rather than through prometheus_client, whose per-series
formatting costs several microseconds; what leaves here is checked against
prometheus_client's parsers and ``promtool check metrics`` in the tests.

Rules kept here (see docs/metrics.md):
- a family is emitted only from its catalog feed, so no family appears twice;
- ``None``, a missing key, NaN or infinity gives no series, never a fake 0;
- a GPU whose latest read is not ``ok`` keeps ``gpulse_gpu_up 0``, its identity, its
  XID counts and the agent's own counters, but none of its readings or derived levels.
"""

from __future__ import annotations

import functools
import gzip
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from operator import attrgetter, is_
from typing import Any

import agent
from agent.model import DeviceStatus, GpuIdentity, GpuProcess, GpuReading, ProcessStats
from agent.snapshot import CounterKey, Snapshot
from exporters.catalog import (
    BY_NAME,
    CATALOG,
    CLOCK_EVENT_REASONS,
    COUNTER,
    DEVICE_STATUSES,
    GPU_COUNTER,
    GPU_GAUGE,
    INFO,
    NODE_COUNTER,
    NODE_GAUGE,
    READING,
    MetricDef,
)

log = logging.getLogger(__name__)

TEXT = "text"
OPENMETRICS = "openmetrics"
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
CONTENT_TYPES = {TEXT: TEXT_CONTENT_TYPE, OPENMETRICS: OPENMETRICS_CONTENT_TYPE}
# Level 1: a quarter larger than level 6 on our text but under half the CPU (docs/metrics.md).
GZIP_LEVEL = 1

# NVML clock-event reason bits (nvmlClocksEventReason*), in the catalog's vocabulary.
CLOCK_EVENT_BITS: tuple[tuple[int, str], ...] = tuple(
    zip((0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100), CLOCK_EVENT_REASONS, strict=True)
)

# Scalar GpuReading fields exported as they are: (metric, attribute).
_READING_SCALARS: tuple[tuple[str, str], ...] = (
    ("gpulse_gpu_memory_total_bytes", "memory_total_bytes"),
    ("gpulse_gpu_memory_used_bytes", "memory_used_bytes"),
    ("gpulse_gpu_memory_free_bytes", "memory_free_bytes"),
    ("gpulse_gpu_memory_reserved_bytes", "memory_reserved_bytes"),
    ("gpulse_gpu_sm_clock_hertz", "sm_clock_hz"),
    ("gpulse_gpu_sm_clock_max_hertz", "sm_clock_max_hz"),
    ("gpulse_gpu_sm_clock_application_hertz", "sm_clock_app_hz"),
    ("gpulse_gpu_memory_clock_hertz", "memory_clock_hz"),
    ("gpulse_gpu_memory_clock_max_hertz", "memory_clock_max_hz"),
    ("gpulse_gpu_memory_clock_application_hertz", "memory_clock_app_hz"),
    ("gpulse_gpu_graphics_clock_hertz", "graphics_clock_hz"),
    ("gpulse_gpu_graphics_clock_max_hertz", "graphics_clock_max_hz"),
    ("gpulse_gpu_power_watts", "power_watts"),
    ("gpulse_gpu_power_instant_watts", "power_instant_watts"),
    ("gpulse_gpu_power_limit_watts", "power_limit_watts"),
    ("gpulse_gpu_power_limit_default_watts", "power_default_limit_watts"),
    ("gpulse_gpu_power_limit_min_watts", "power_min_limit_watts"),
    ("gpulse_gpu_power_limit_max_watts", "power_max_limit_watts"),
    ("gpulse_gpu_temperature_margin_celsius", "temperature_margin_celsius"),
    ("gpulse_gpu_performance_state", "performance_state"),
    ("gpulse_gpu_pcie_replays_total", "pcie_replay_count"),
    ("gpulse_gpu_retired_pages_pending", "retired_pages_pending"),
)
_SCALAR_VALUES = attrgetter(*(attr for _, attr in _READING_SCALARS))  # reading -> a tuple of them
# Single-label dict fields of GpuReading: (metric, attribute); the dict key is the label value.
_READING_DICTS: tuple[tuple[str, str], ...] = (
    ("gpulse_gpu_temperature_celsius", "temperatures_celsius"),
    ("gpulse_gpu_temperature_threshold_celsius", "temperature_thresholds_celsius"),
    ("gpulse_gpu_fan_speed_ratio", "fan_speed_ratios"),
    ("gpulse_gpu_retired_pages", "retired_pages"),
)


# Optional ProcessStats fields, one series per process: (metric, attribute).
_PROCESS_OPTIONAL: tuple[tuple[str, str], ...] = (
    ("gpulse_process_resident_memory_bytes", "rss_bytes"),
    ("gpulse_process_io_read_bytes_total", "io_read_bytes"),
    ("gpulse_process_io_written_bytes_total", "io_write_bytes"),
    ("gpulse_process_io_delay_seconds_total", "io_delay_seconds"),
    ("gpulse_process_start_time_seconds", "create_time"),
    ("gpulse_process_cgroup_cpu_quota_cores", "cgroup_cpu_quota_cores"),
    ("gpulse_process_cgroup_cpu_usage_seconds_total", "cgroup_cpu_usage_seconds"),
    ("gpulse_process_cgroup_cpu_throttled_seconds_total", "cgroup_cpu_throttled_seconds"),
)


# --- formatting helpers ----------------------------------------------------------------------

def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped, as both formats require."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def format_value(value: object) -> str | None:
    """The sample value as text, or None when there is no honest value (None, NaN, infinity)."""
    cls = value.__class__
    if cls is float:
        # v - v is 0.0 only for finite floats: NaN and infinities give no series.
        return repr(value) if value - value == 0.0 else None  # type: ignore[operator]
    if cls is int:
        return str(value)
    if cls is bool:
        return "1" if value else "0"
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return repr(number) if number - number == 0.0 else None


def _labelstr(pairs: list[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)


def _text_header(m: MetricDef) -> str:
    text_type = "gauge" if m.type == INFO else m.type
    return f"# HELP {m.name} {m.help}\n# TYPE {m.name} {text_type}\n"


def _om_header(m: MetricDef) -> str:
    fam = m.om_family
    unit = f"# UNIT {fam} {m.unit}\n" if m.unit else ""
    return f"# HELP {fam} {m.help}\n# TYPE {fam} {m.type}\n{unit}"


_TEXT_HEADERS = {m.name: _text_header(m).encode() for m in CATALOG}
_OM_HEADERS = {m.name: _om_header(m).encode() for m in CATALOG}


# --- caches (bounded: keys come from small vocabularies; cleared if they ever grow) ----------
# Everything a render keeps for the next one. Entries are keyed by what they were made from (a
# GPU's index, uuid and identity, a metric's key, a GPU's keys), so a GPU whose uuid changes or
# a key that appears gets new ones; values are checked against the last ones on every render
# (see _Column). ``clear_caches()`` empties them all.
_CACHE_LIMIT = 50_000
_head_cache: dict[int, _GpuHead] = {}  # GPU index -> its labels and identity/status lines
# feed -> snapshot key -> (family, label text), or None for a key that does not fit the catalog
_key_caches: dict[str, dict[CounterKey, tuple[str, str] | None]] = {
    GPU_COUNTER: {}, GPU_GAUGE: {}, NODE_COUNTER: {}, NODE_GAUGE: {}}
# (feed, labels of consecutive GPUs whose counters, gauges or readings' dict fields have the same
# keys) -> their _Table, kept while the keys stay
_table_cache: dict[tuple[str, tuple[str, ...]], _Table] = {}
_TABLE_CACHE_LIMIT = 64  # a table holds a line prefix and a line per GPU and key (64 GPUs: up to 1 MB)
# (GPU labels, reasons, supported reasons) -> gpulse_gpu_clock_event_active lines
_clock_event_cache: dict[tuple[str, int, int | None], tuple[str, ...]] = {}
# (GPU labels, remapped_rows items) -> (family, line) pairs
_remap_cache: dict[tuple[str, tuple[tuple[str, object], ...]], tuple[tuple[str, str], ...]] = {}
# GPU labels -> (its processes last render, their memory, SM and memory-utilization lines)
_process_cache: dict[str, tuple[tuple[GpuProcess, ...], tuple[list[str], list[str], list[str]]]] = {}
_body_cache: dict[str, tuple[list[str], bytes]] = {}  # family -> (its lines last render, their bytes)
_MISSING: tuple[str, str] = ("", "")  # compared by identity: "not cached yet"
_warned: set[str] = set()
_render_lock = threading.Lock()

_CACHES: tuple[dict[Any, Any], ...] = (
    _head_cache, *_key_caches.values(), _table_cache, _clock_event_cache,
    _remap_cache, _body_cache, _process_cache,
)


def clear_caches() -> None:
    """Forget everything cached between renders (tests compare a warm render with a cold one)."""
    with _render_lock:
        for cache in _CACHES:
            cache.clear()


def _bounded(cache: dict[Any, Any]) -> dict[Any, Any]:
    """``cache``, emptied first when it has grown past its limit (keys nobody uses any more)."""
    if len(cache) > _CACHE_LIMIT:
        cache.clear()
    return cache


def _warn_once(message: str) -> None:
    if message not in _warned and len(_warned) < 1000:
        _warned.add(message)
        log.warning("%s", message)


class _GpuHead:
    """A GPU's labels and its info, up and status lines, kept while its identity, uuid and status stay."""

    __slots__ = ("identity", "info", "labels", "states", "status", "up", "uuid")

    def __init__(self, index: int, identity: GpuIdentity | None, uuid: str,
                 status: DeviceStatus | None) -> None:
        self.identity, self.uuid, self.status = identity, uuid, status
        labels = self.labels = f'gpu="{index}",uuid="{escape_label_value(uuid)}"'
        self.info = None if identity is None else _gpu_info_line(identity, labels)
        current = None if status is None else status.value
        self.up = f"gpulse_gpu_up{{{labels}}} {1 if current == DeviceStatus.OK.value else 0}"
        self.states = () if current is None else tuple(
            f'gpulse_gpu_status{{{labels},status="{state}"}} {1 if state == current else 0}'
            for state in DEVICE_STATUSES)


def _gpu_info_line(identity: GpuIdentity, labels: str) -> str:
    mig = None if identity.mig_mode is None else ("enabled" if identity.mig_mode else "disabled")
    extra = (
        ("name", identity.name), ("pci_bus_id", identity.pci_bus_id), ("serial", identity.serial),
        ("vbios_version", identity.vbios_version), ("driver_version", identity.driver_version),
        ("cuda_driver_version", identity.cuda_driver_version),
        ("cuda_capability", identity.compute_capability), ("mig_mode", mig), ("brand", identity.brand),
    )
    # An unknown label is left out, never "".
    present = "".join(f',{k}="{escape_label_value(v)}"' for k, v in extra if v)
    return f"gpulse_gpu_info{{{labels}{present}}} 1"


def _resolve_key(feed: str, key: CounterKey) -> tuple[str, str] | None:
    """(family, label text) for a snapshot counter/gauge key, or None when it does not fit the catalog.

    For per-GPU feeds the label text is the part after gpu/uuid (",state=\"idle\"");
    for node feeds it is the whole label set ("" for none).
    """
    resolved = _resolve_key_uncached(feed, key)
    _bounded(_key_caches[feed])[key] = resolved
    return resolved


def _resolve_key_uncached(feed: str, key: CounterKey) -> tuple[str, str] | None:
    try:
        name, labels = key
        pairs = [(str(k), str(v)) for k, v in labels]
    except (TypeError, ValueError):
        _warn_once(f"metric key {key!r} is not (name, ((label, value), ...)); not exported")
        return None
    metric = BY_NAME.get(name)
    if metric is None or metric.feed != feed:
        where = "not in the catalog" if metric is None else f"fed from {metric.feed}, not {feed}"
        _warn_once(f"metric {name!r} is {where}; not exported")
        return None
    allowed = metric.own_labels if feed in (GPU_COUNTER, GPU_GAUGE) else metric.labels
    names = [k for k, _ in pairs]
    # Info series may leave out what is unknown (an empty value is dropped); others carry every label.
    fits = set(names) <= set(allowed) if metric.type == INFO else set(names) == set(allowed)
    if len(set(names)) != len(names) or not fits:
        _warn_once(f"metric {name!r}: labels {names} do not match the catalog's {list(allowed)}; dropped")
        return None
    if metric.type == INFO:
        pairs = [(k, v) for k, v in pairs if v]
    order = {label: i for i, label in enumerate(allowed)}
    pairs.sort(key=lambda kv: order[kv[0]])
    text = _labelstr(pairs)
    if feed in (GPU_COUNTER, GPU_GAUGE):
        return name, ("," + text if text else "")
    return name, text


_BUILD_INFO_LINE = (
    f'gpulse_build_info{{version="{escape_label_value(agent.__version__)}",'
    f'python_version="{escape_label_value(platform.python_version())}"}} 1'
)


# --- rendering -------------------------------------------------------------------------------
# Lines are built without their newline; a family's body is "\n".join(lines + [""]).
#
# Most per-GPU series keep their value from one tick to the next (limits, peaks, thresholds,
# counters that did not move), and formatting a float is the costliest step of a render. So
# per-GPU series are rendered through ``_Column``s that keep last tick's values and lines and
# format again only the values that changed. A column belongs to a fixed set of line prefixes
# (GPU labels, keys): when those change, a new column is made. A ``_Table`` lays the series of
# several GPUs out in one column, so the work per tick is a few passes in C, not a loop per GPU.


class _Column:
    """A run of series with fixed line prefixes, and the values and lines of its last render."""

    __slots__ = ("counter", "lines", "prefixes", "values")

    def __init__(self, prefixes: list[str | None], counter: bool = False) -> None:
        self.prefixes = prefixes  # None: a key that does not fit the catalog, never a series
        self.counter = counter  # a negative counter value gives no series
        self.values: Sequence[Any] = ()
        self.lines: list[str | None] = []

    def lines_for(self, values: Sequence[Any]) -> list[str | None]:
        """The line of each value (None: no series), reusing last render's where the value is unchanged."""
        last = self.values
        self.values = values
        if len(last) != len(values):
            self.lines = list(map(self._line, self.prefixes, values))
        elif values == last and 0 not in values and tuple(map(type, values)) == tuple(map(type, last)):
            pass  # nothing changed (checked in C): equal values of one type print the same, but 0.0 and -0.0
        else:
            counter, line = self.counter, self._line
            # A value that is last render's object, or equal to it, of its type and not zero, keeps its
            # line: a counter that did not move and a peak keep their objects from tick to tick.
            self.lines = [
                old if value is prev or (value == prev and value.__class__ is prev.__class__ and value)
                else prefix + repr(value) if (value.__class__ is float and value - value == 0.0
                                              and prefix is not None and not (counter and value < 0))
                else line(prefix, value)
                for old, value, prev, prefix in zip(self.lines, values, last, self.prefixes, strict=True)
            ]
        return self.lines

    def _line(self, prefix: str | None, value: Any) -> str | None:
        if prefix is None or (text := format_value(value)) is None or (self.counter and value < 0):
            return None
        return prefix + text


class _Table:
    """Series laid out as GPUs (rows, in index order) x positions, rendered through one flat _Column.

    A position is a (family, labels after gpu/uuid) entry, None for one that is never a series.
    ``runs`` are the (family, start, end) stretches of consecutive positions of one family; a
    family's lines go out GPU-major, so a run is read out of the flat lines by extended slices.
    """

    __slots__ = ("column", "layout", "runs", "width")

    def __init__(self, layout: object, gls: tuple[str, ...], entries: list[tuple[str, str] | None],
                 counter: bool) -> None:
        self.layout = layout  # what the entries were made from: a new layout needs a new table
        self.width = len(entries)
        self.column = _Column([None if entry is None else f"{entry[0]}{{{gl}{entry[1]}}} "
                               for gl in gls for entry in entries], counter)
        self.runs: list[tuple[str, int, int]] = []
        for i, entry in enumerate(entries):
            if entry is None:
                continue
            runs = self.runs
            if runs and runs[-1][0] == entry[0] and runs[-1][2] == i:
                runs[-1] = (entry[0], runs[-1][1], i + 1)
            else:
                runs.append((entry[0], i, i + 1))

    def render(self, fam: dict[str, list[str]], rows: Iterable[Iterable[Any]]) -> None:
        """Append the lines of ``rows`` (a row of ``width`` values per GPU) to their families."""
        lines = self.column.lines_for(tuple(chain.from_iterable(rows)))
        width = self.width
        for family, start, end in self.runs:
            if end - start == 1:
                fam[family] += filter(None, lines[start::width])
            else:  # a GPU's lines of this family together, GPU after GPU
                per_key = [lines[i::width] for i in range(start, end)]
                fam[family] += filter(None, chain.from_iterable(zip(*per_key, strict=True)))


def render(snapshot: Snapshot) -> Exposition:
    """Render every catalog family that has a value in ``snapshot``."""
    with _render_lock:  # the columns' memory of the last render is shared
        return _render(snapshot)


def _render(snapshot: Snapshot) -> Exposition:
    fam: dict[str, list[str]] = {m.name: [] for m in CATALOG}

    # GPUs: everything known by identity or by reading, in index order.
    identities = snapshot.identities
    readings = snapshot.readings
    indices = sorted(set(identities) | set(readings))
    gpu_labels: dict[int, str] = {}
    ok: list[tuple[str, GpuReading]] = []
    ok_indices: set[int] = set()
    info, up, status = fam["gpulse_gpu_info"], fam["gpulse_gpu_up"], fam["gpulse_gpu_status"]
    for index in indices:
        identity = identities.get(index)
        reading = readings.get(index)
        uuid = identity.uuid if identity is not None else reading.uuid if reading is not None else ""
        current = reading.status if reading is not None else None
        head = _head_cache.get(index)
        if head is None or head.identity is not identity or head.status is not current or head.uuid != uuid:
            head = _head_cache[index] = _GpuHead(index, identity, uuid, current)
        gl = gpu_labels[index] = head.labels
        if head.info is not None:
            info.append(head.info)
        up.append(head.up)
        status += head.states
        if current is DeviceStatus.OK:
            assert reading is not None
            ok.append((gl, reading))
            ok_indices.add(index)

    _render_readings(fam, ok)
    _render_gpu_keyed(fam, GPU_COUNTER, snapshot.gpu_counters, gpu_labels, set(gpu_labels))
    _render_gpu_keyed(fam, GPU_GAUGE, snapshot.gpu_gauges, gpu_labels, ok_indices)
    _render_xids(fam, snapshot, gpu_labels)
    _render_node_keyed(fam, NODE_COUNTER, snapshot.node_counters)
    _render_node_keyed(fam, NODE_GAUGE, snapshot.node_gauges)
    if snapshot.host is not None:
        _render_host(fam, snapshot)
        _render_processes(fam, snapshot.host.processes, fallback_info=not fam["gpulse_process_info"])
    _render_agent(fam, snapshot)

    parts: list[tuple[str, bytes]] = []
    series = 0
    for m in CATALOG:
        lines = fam[m.name]
        if lines:
            series += len(lines)
            parts.append((m.name, _family_body(m.name, lines)))
    return Exposition(parts, series, snapshot.epoch)


def _family_body(name: str, lines: list[str]) -> bytes:
    """A family's sample lines as bytes, kept while they stay the same (peaks, limits, states, info)."""
    lines.append("")  # the last line's newline
    cached = _body_cache.get(name)
    if cached is not None and cached[0] == lines:  # lines reused from the columns compare by identity
        return cached[1]
    body = "\n".join(lines).encode()
    _body_cache[name] = (lines, body)
    return body


_ECC = "gpulse_gpu_ecc_errors_total"  # keyed by (counter, type)
_SCALAR_ENTRIES: list[tuple[str, str] | None] = [(name, "") for name, _ in _READING_SCALARS]
_DICT_FIELDS = attrgetter(*(attr for _, attr in _READING_DICTS))  # reading -> a tuple of its dict fields


def _reading_entries(layout: tuple[tuple[Any, ...], ...]) -> list[tuple[str, str] | None]:
    """The scalar metrics, then a series per key of each dict field (``layout``: their keys)."""
    entries = list(_SCALAR_ENTRIES)
    for (name, _), keys in zip(_READING_DICTS, layout, strict=True):
        entries += _dict_entries(name, keys)
    return entries


def _key_labels(name: str, key: Any) -> str:
    """The labels a GpuReading dict key stands for: sensor="gpu", or counter="volatile",type="corrected"."""
    if name == _ECC:
        counter, kind = key
        return f'counter="{escape_label_value(counter)}",type="{escape_label_value(kind)}"'
    return f'{BY_NAME[name].own_labels[0]}="{escape_label_value(str(key))}"'


def _dict_entries(name: str, keys: tuple[Any, ...]) -> list[tuple[str, str] | None]:
    return [(name, "," + _key_labels(name, key)) for key in keys]


def _clock_event_lines(gl: str, mask: int, supported: int | None) -> tuple[str, ...]:
    key = (gl, mask, supported)
    lines = _clock_event_cache.get(key)
    if lines is None:
        lines = tuple(f'gpulse_gpu_clock_event_active{{{gl},reason="{reason}"}} {1 if mask & bit else 0}'
                      for bit, reason in CLOCK_EVENT_BITS if supported is None or supported & bit)
        _bounded(_clock_event_cache)[key] = lines
    return lines


def _remap_lines(gl: str, remapped: dict[str, int]) -> tuple[tuple[str, str], ...]:
    """(family, line) per remapped_rows entry; counts change rarely, so lines are kept by value."""
    key = (gl, tuple(remapped.items()))
    lines = _remap_cache.get(key)
    if lines is None:
        out: list[tuple[str, str]] = []
        for kind, value in remapped.items():
            if (text := format_value(value)) is None:
                continue
            if kind == "pending":
                out.append(("gpulse_gpu_row_remap_pending", f"gpulse_gpu_row_remap_pending{{{gl}}} {text}"))
            elif kind == "failure":
                out.append(("gpulse_gpu_row_remap_failure", f"gpulse_gpu_row_remap_failure{{{gl}}} {text}"))
            else:
                out.append(("gpulse_gpu_remapped_rows",
                            f'gpulse_gpu_remapped_rows{{{gl},type="{escape_label_value(kind)}"}} {text}'))
        lines = tuple(out)
        # NaN is never equal to itself: such a key would never be found again
        if all(value == value for value in remapped.values()):
            _bounded(_remap_cache)[key] = lines
    return lines


def _render_readings(fam: dict[str, list[str]], ok: list[tuple[str, GpuReading]]) -> None:
    if not ok:
        return
    # Scalars and single-label dict fields: a table per run of GPUs whose dicts have the same keys.
    rows = []
    for gl, reading in ok:
        fields = _DICT_FIELDS(reading)
        values = chain(_SCALAR_VALUES(reading), *[field.values() for field in fields])
        rows.append((gl, tuple(map(tuple, fields)), values))
    _render_rows(fam, READING, rows, _reading_entries)

    events = fam["gpulse_gpu_clock_event_active"]
    for gl, reading in ok:
        mask = reading.clock_event_reasons
        if mask is not None:
            events += _clock_event_lines(gl, mask, reading.supported_clock_event_reasons)
        if reading.remapped_rows:
            for family, line in _remap_lines(gl, reading.remapped_rows):
                fam[family].append(line)
    ecc = [(gl, tuple(errors), errors.values()) for gl, reading in ok if (errors := reading.ecc_errors)]
    _render_rows(fam, _ECC, ecc, functools.partial(_dict_entries, _ECC), counter=True)

    memory = fam["gpulse_process_gpu_memory_bytes"]
    sm = fam["gpulse_process_gpu_sm_utilization_ratio"]
    mem_util = fam["gpulse_process_gpu_memory_utilization_ratio"]
    for gl, reading in ok:
        if reading.processes:
            lines = _process_lines(gl, reading.processes)
            memory += lines[0]
            sm += lines[1]
            mem_util += lines[2]


def _process_lines(gl: str, processes: list[GpuProcess]) -> tuple[list[str], list[str], list[str]]:
    """Memory, SM and memory-utilization lines of one GPU's processes.

    Kept while the list holds the same GpuProcess objects (frozen): the sampler carries one list
    between process polls.
    """
    procs = tuple(processes)
    cached = _process_cache.get(gl)
    if cached is not None and len(cached[0]) == len(procs) and all(map(is_, procs, cached[0])):
        return cached[1]
    fmt = format_value
    memory: list[str] = []
    sm: list[str] = []
    mem_util: list[str] = []
    seen: set[int] = set()
    for proc in procs:
        if proc.pid in seen:  # NVML can list a pid twice (several contexts): one series each
            continue
        seen.add(proc.pid)
        labels = f'{gl},pid="{proc.pid}"'
        if proc.used_memory_bytes is not None and (text := fmt(proc.used_memory_bytes)) is not None:
            memory.append(f"gpulse_process_gpu_memory_bytes{{{labels}}} {text}")
        if proc.sm_ratio is not None and (text := fmt(proc.sm_ratio)) is not None:
            sm.append(f"gpulse_process_gpu_sm_utilization_ratio{{{labels}}} {text}")
        if proc.memory_util_ratio is not None and (text := fmt(proc.memory_util_ratio)) is not None:
            mem_util.append(f"gpulse_process_gpu_memory_utilization_ratio{{{labels}}} {text}")
    lines = (memory, sm, mem_util)
    _bounded(_process_cache)[gl] = (procs, lines)
    return lines


def _render_gpu_keyed(fam: dict[str, list[str]], feed: str, per_gpu: Mapping[int, Mapping[CounterKey, float]],
                      gpu_labels: dict[int, str], allowed: set[int]) -> None:
    cache = _key_caches[feed]

    def entries(keys: tuple[CounterKey, ...]) -> list[tuple[str, str] | None]:
        return [cache[key] if key in cache else _resolve_key(feed, key) for key in keys]

    rows = [(gpu_labels[index], tuple(values), values.values())
            for index in sorted(per_gpu) if index in allowed and (values := per_gpu[index]) is not None]
    _render_rows(fam, feed, rows, entries, counter=feed == GPU_COUNTER)


def _render_rows(fam: dict[str, list[str]], kind: str, rows: Sequence[tuple[str, Any, Iterable[Any]]],
                 entries: Callable[[Any], list[tuple[str, str] | None]], counter: bool = False) -> None:
    """Rows of (GPU labels, layout, values) in GPU order: a _Table per run of GPUs with the same layout.

    ``entries(layout)`` gives each value's (family, labels after gpu/uuid), None for one never exported.
    """
    start = 0
    for end in range(1, len(rows) + 1):
        if end < len(rows) and rows[end][1] == rows[start][1]:
            continue
        layout = rows[start][1]
        table_key = (kind, tuple(row[0] for row in rows[start:end]))
        table = _table_cache.get(table_key)
        if table is None or table.layout != layout:  # a GPU's keys rarely change between ticks
            if len(_table_cache) > _TABLE_CACHE_LIMIT:
                _table_cache.clear()
            table = _table_cache[table_key] = _Table(layout, table_key[1], entries(layout), counter)
        table.render(fam, [row[2] for row in rows[start:end]])
        start = end


def _render_node_keyed(fam: dict[str, list[str]], feed: str, values: Mapping[CounterKey, float]) -> None:
    seen: set[tuple[str, str]] = set()
    for key, value in values.items():
        resolved = _key_caches[feed].get(key, _MISSING)
        if resolved is _MISSING:
            resolved = _resolve_key(feed, key)
        if resolved is None or resolved in seen:  # labels given in another order name the same series
            continue
        name, labels = resolved
        metric = BY_NAME[name]
        if metric.type == INFO:
            if not value:
                continue
            text: str | None = "1"
        else:
            text = format_value(value)
            if text is None or (metric.type == COUNTER and value < 0):
                continue
        seen.add(resolved)
        fam[name].append(f"{name}{{{labels}}} {text}" if labels else f"{name} {text}")


def _render_xids(fam: dict[str, list[str]], snapshot: Snapshot, gpu_labels: dict[int, str]) -> None:
    lines = fam["gpulse_gpu_xid_errors_total"]
    for (index, xid), count in sorted(snapshot.xid_counts.items()):
        gl = gpu_labels.get(index)
        if gl is not None and count >= 0:
            lines.append(f'gpulse_gpu_xid_errors_total{{{gl},xid="{xid}"}} {count}')
    lines = fam["gpulse_gpu_xid_last_seen_timestamp_seconds"]
    for index, when in sorted(snapshot.xid_last_seen.items()):
        gl = gpu_labels.get(index)
        if gl is not None and (text := format_value(when)) is not None:
            lines.append(f"gpulse_gpu_xid_last_seen_timestamp_seconds{{{gl}}} {text}")


def _scalar(fam: dict[str, list[str]], name: str, value: object) -> None:
    if value is not None and (text := format_value(value)) is not None:
        fam[name].append(f"{name} {text}")


def _render_host(fam: dict[str, list[str]], snapshot: Snapshot) -> None:
    host = snapshot.host
    assert host is not None
    lines = fam["gpulse_host_cpu_seconds_total"]
    for mode, seconds in host.cpu_seconds.items():
        if (text := format_value(seconds)) is not None:
            lines.append(f'gpulse_host_cpu_seconds_total{{mode="{escape_label_value(mode)}"}} {text}')
    _scalar(fam, "gpulse_host_cpus", host.cpu_count)
    if host.load_average is not None:
        lines = fam["gpulse_host_load_average"]
        for window, load in zip(("1m", "5m", "15m"), host.load_average, strict=False):
            if (text := format_value(load)) is not None:
                lines.append(f'gpulse_host_load_average{{window="{window}"}} {text}')
    _scalar(fam, "gpulse_host_memory_total_bytes", host.memory_total_bytes)
    _scalar(fam, "gpulse_host_memory_available_bytes", host.memory_available_bytes)
    _scalar(fam, "gpulse_host_swap_total_bytes", host.swap_total_bytes)
    _scalar(fam, "gpulse_host_swap_used_bytes", host.swap_used_bytes)
    lines = fam["gpulse_host_pressure_stall_seconds_total"]
    for resource, kinds in host.pressure_stall_seconds.items():
        for kind, seconds in kinds.items():
            if (text := format_value(seconds)) is not None:
                lines.append(f'gpulse_host_pressure_stall_seconds_total{{resource="{escape_label_value(resource)}",'
                             f'kind="{escape_label_value(kind)}"}} {text}')
    _scalar(fam, "gpulse_host_disk_read_bytes_total", host.disk_read_bytes)
    _scalar(fam, "gpulse_host_disk_written_bytes_total", host.disk_write_bytes)
    _scalar(fam, "gpulse_host_disk_busy_seconds_total", host.disk_busy_seconds)
    _scalar(fam, "gpulse_host_network_receive_bytes_total", host.network_receive_bytes)
    _scalar(fam, "gpulse_host_network_transmit_bytes_total", host.network_transmit_bytes)


def _render_processes(fam: dict[str, list[str]], processes: Mapping[int, ProcessStats], *,
                      fallback_info: bool) -> None:
    fmt = format_value
    info = fam["gpulse_process_info"]
    cpu = fam["gpulse_process_cpu_seconds_total"]
    threads = fam["gpulse_process_threads"]
    optional = [(fam[name], name, attr) for name, attr in _PROCESS_OPTIONAL]
    for pid in sorted(processes):
        proc = processes[pid]
        pl = f'pid="{pid}"'
        if fallback_info:
            present = (("comm", proc.comm), ("user", proc.user))
            extra = "".join(f',{k}="{escape_label_value(v)}"' for k, v in present if v)
            info.append(f"gpulse_process_info{{{pl}{extra}}} 1")
        if (text := fmt(proc.cpu_user_seconds)) is not None:
            cpu.append(f'gpulse_process_cpu_seconds_total{{{pl},mode="user"}} {text}')
        if (text := fmt(proc.cpu_system_seconds)) is not None:
            cpu.append(f'gpulse_process_cpu_seconds_total{{{pl},mode="system"}} {text}')
        if proc.threads_total > 0:  # 0 threads means the task list was not read
            other = proc.threads_total - proc.threads_running - proc.threads_blocked_io
            threads.append(f'gpulse_process_threads{{{pl},state="running"}} {proc.threads_running}')
            threads.append(f'gpulse_process_threads{{{pl},state="blocked_io"}} {proc.threads_blocked_io}')
            if other >= 0:
                threads.append(f'gpulse_process_threads{{{pl},state="other"}} {other}')
        for lines, name, attr in optional:
            value = getattr(proc, attr)
            if value is not None and (text := fmt(value)) is not None:
                lines.append(f"{name}{{{pl}}} {text}")


def _render_agent(fam: dict[str, list[str]], snapshot: Snapshot) -> None:
    fam["gpulse_build_info"].append(_BUILD_INFO_LINE)
    fam["gpulse_nvml_up"].append(f"gpulse_nvml_up {1 if snapshot.nvml_up else 0}")
    success = fam["gpulse_collector_success"]
    duration = fam["gpulse_collector_duration_seconds"]
    last = fam["gpulse_collector_last_success_timestamp_seconds"]
    for name in sorted(snapshot.collectors):
        status = snapshot.collectors[name]
        cl = f'collector="{escape_label_value(name)}"'
        success.append(f"gpulse_collector_success{{{cl}}} {1 if status.success else 0}")
        if (text := format_value(status.duration_seconds)) is not None:
            duration.append(f"gpulse_collector_duration_seconds{{{cl}}} {text}")
        if status.last_success is not None:
            # last_success is clock time; the snapshot pairs a clock reading with its epoch.
            when = format_value(snapshot.epoch - (snapshot.timestamp - status.last_success))
            if when is not None:
                last.append(f"gpulse_collector_last_success_timestamp_seconds{{{cl}}} {when}")
    _scalar(fam, "gpulse_last_sample_timestamp_seconds", snapshot.epoch)
    _scalar(fam, "gpulse_sampling_interval_seconds", snapshot.interval_seconds)
    _scalar(fam, "gpulse_sampler_ticks_total", snapshot.ticks)


# --- the cached result -----------------------------------------------------------------------

class Exposition:
    """One tick's exposition: the text body ready, OpenMetrics and gzip bodies built on first use."""

    def __init__(self, parts: list[tuple[str, bytes]], series: int, timestamp: float) -> None:
        """``parts``: (family name, its sample lines) per family, in catalog order."""
        self.series = series  # number of samples
        self.families = len(parts)
        self.timestamp = timestamp  # epoch seconds of the snapshot
        self._parts = parts
        self.requested: set[tuple[str, bool]] = set()  # (format, gzip) asked for through negotiate()
        self._lock = threading.Lock()
        self._bodies: dict[tuple[str, bool], bytes] = {(TEXT, False): self._join(_TEXT_HEADERS, b"")}

    def _join(self, headers: dict[str, bytes], end: bytes) -> bytes:
        flat: list[bytes] = []
        for name, lines in self._parts:
            flat += (headers[name], lines)
        flat.append(end)
        return b"".join(flat)

    @property
    def prepared(self) -> set[tuple[str, bool]]:
        """The (format, gzip) bodies built so far."""
        return set(self._bodies)

    def body(self, fmt: str = TEXT, compressed: bool = False) -> bytes:
        """The body in ``fmt`` (TEXT or OPENMETRICS), gzip-compressed when asked; built once per tick."""
        key = (fmt, compressed)
        body = self._bodies.get(key)
        if body is not None:
            return body
        if fmt not in CONTENT_TYPES:
            raise ValueError(f"unknown exposition format {fmt!r}; expected {TEXT!r} or {OPENMETRICS!r}")
        plain = self.body(fmt) if compressed else b""  # before taking the lock: it may build OpenMetrics
        with self._lock:  # concurrent scrapes build a body once
            body = self._bodies.get(key)
            if body is None:
                if compressed:
                    body = gzip.compress(plain, compresslevel=GZIP_LEVEL, mtime=0)
                else:  # only OpenMetrics is built lazily
                    body = self._join(_OM_HEADERS, b"# EOF\n")
                self._bodies[key] = body
        return body

    def negotiate(self, accept: str | None, accept_encoding: str | None) -> tuple[bytes, dict[str, str]]:
        """The body and response headers for a scrape's Accept and Accept-Encoding headers."""
        fmt = choose_format(accept)
        compressed = wants_gzip(accept_encoding)
        self.requested.add((fmt, compressed))
        headers = {"Content-Type": CONTENT_TYPES[fmt], "Vary": "Accept, Accept-Encoding"}
        if compressed:
            headers["Content-Encoding"] = "gzip"
        return self.body(fmt, compressed), headers


class Renderer:
    """``render`` for the sampler: also builds, at render time, the bodies scrapers have recently asked for.

    A scrape then only looks up bytes, even for gzip'd OpenMetrics (what Prometheus asks for),
    instead of compressing on the request path. Formats nobody asked for within ``keep_seconds``
    are not built at all.
    """

    def __init__(self, keep_seconds: float = 300.0) -> None:
        self.keep_seconds = keep_seconds
        self._wanted: dict[tuple[str, bool], float] = {}  # (format, gzip) -> monotonic time last asked for
        self._previous: set[tuple[str, bool]] | None = None

    def __call__(self, snapshot: Snapshot) -> Exposition:
        exposition = render(snapshot)
        now = time.monotonic()
        if self._previous is not None:
            for key in tuple(self._previous):  # tuple() copies atomically under the GIL
                self._wanted[key] = now
        for key, asked in list(self._wanted.items()):
            if now - asked > self.keep_seconds:
                del self._wanted[key]
            else:
                exposition.body(*key)
        self._previous = exposition.requested
        return exposition


def _params(item: str) -> tuple[str, float]:
    """(media range or coding, q) of one comma-separated element of an Accept header."""
    name, *params = item.split(";")
    q = 1.0
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                q = 0.0
    return name.strip().lower(), q


@functools.lru_cache(maxsize=256)
def choose_format(accept: str | None) -> str:
    """OpenMetrics when the client ranks it at least as high as the text format, else text.

    Prometheus sends ``application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5``;
    any OpenMetrics version is answered with 1.0.0, and anything unrecognised with the text format.
    """
    if not accept:
        return TEXT
    om_q = text_q = -1.0
    for item in accept.split(","):
        media, q = _params(item)
        if media == "application/openmetrics-text":
            om_q = max(om_q, q)
        elif media in ("text/plain", "text/*", "*/*"):
            text_q = max(text_q, q)
    return OPENMETRICS if om_q > 0 and om_q >= text_q else TEXT


@functools.lru_cache(maxsize=256)
def wants_gzip(accept_encoding: str | None) -> bool:
    """True when gzip is acceptable: named with q > 0, or covered by ``*`` with q > 0."""
    if not accept_encoding:
        return False
    gzip_q: float | None = None
    star_q: float | None = None
    for item in accept_encoding.split(","):
        coding, q = _params(item)
        if coding in ("gzip", "x-gzip"):
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif coding == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0
