"""Captures of raw readings: the format ``gpulse record`` writes and ``gpulse demo --replay`` plays.

A capture is JSON lines. The first line is a header::

    {"format": "gpulse-capture", "version": 1, "interval_s": 1.0, "source": "NVML driver 550.54.15 ...",
     "recorded_at": "2025-01-01T12:00:00Z",
     "gpus": [{"index": 0, "uuid": "GPU-…", "name": "NVIDIA H100 80GB HBM3", "pci_bus_id": "…",
               "spec": "H100-SXM", …}]}

Then one object per device per tick with the ``GpuReading`` fields that were read
(None fields are left out), ``t`` in seconds since the capture started, and ``gpu``
the index::

    {"t": 1.0, "gpu": 0, "status": "ok", "power_watts": 612.4, "sm_clock_hz": 1.98e9,
     "clock_event_reasons": 0, "violation_ns": {"sw_power_cap": 0}, "energy_joules": 81234.5,
     "processes": [[4121, 68719476736, 0.97]], …}

Dict fields keep their keys, except ``ecc_errors``, whose (counter, kind) keys become
``"volatile/uncorrected"``; processes are ``[pid, used bytes, SM ratio]``. XID events
are lines of their own: ``{"t": 90.2, "gpu": 7, "xid": 79}``. Floats keep 6 significant digits,
large ones (cumulative counters such as energy) three decimals.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent.backends import GpuBackend
from agent.clock import Clock
from agent.model import DeviceStatus, GpuIdentity, GpuProcess, GpuReading
from agent.specs import SpecTable

FORMAT = "gpulse-capture"
VERSION = 1
_SKIP = {"index", "uuid", "timestamp", "processes_timestamp"}


class CaptureError(ValueError):
    pass


def _round(x: float) -> float:
    """6 significant digits for levels and ratios; large values (counters) to the thousandth."""
    return round(x, 3) if abs(x) >= 1e5 else float(f"{x:.6g}")


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return _round(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, DeviceStatus):
        return value.value
    return value


def reading_record(reading: GpuReading, t: float) -> dict[str, Any]:
    """One capture line for one reading; ``t`` = seconds since the capture started."""
    rec: dict[str, Any] = {"t": _round(t), "gpu": reading.index}
    for f in dataclasses.fields(reading):
        if f.name in _SKIP:
            continue
        value = getattr(reading, f.name)
        if value is None or (isinstance(value, dict) and not value):
            continue
        if f.name == "ecc_errors":
            value = {f"{a}/{b}": n for (a, b), n in value.items()}
        elif f.name == "processes":
            value = [[p.pid, p.used_memory_bytes, p.sm_ratio] for p in value]
        rec[f.name] = _clean(value)
    return rec


def record_from(rec: dict[str, Any], uuid: str = "") -> GpuReading:
    """A capture line back into a ``GpuReading`` (timestamp = ``t``)."""
    known = {f.name for f in dataclasses.fields(GpuReading)}
    kwargs: dict[str, Any] = {}
    for key, value in rec.items():
        if key in ("t", "gpu") or key not in known:
            continue
        if key == "status":
            value = DeviceStatus(value)
        elif key == "ecc_errors":
            value = {tuple(k.split("/", 1)): int(v) for k, v in value.items()}
        elif key == "processes":
            value = [
                GpuProcess(pid=int(p[0]), used_memory_bytes=p[1], sm_ratio=p[2] if len(p) > 2 else None)
                for p in value
            ]
        elif key == "fan_speed_ratios":
            value = {int(k): v for k, v in value.items()}
        kwargs[key] = value
    return GpuReading(index=int(rec["gpu"]), uuid=uuid, timestamp=float(rec["t"]), **kwargs)


def header(
    identities: list[GpuIdentity], interval_s: float, source: str, specs: SpecTable | None = None
) -> dict:
    table = specs or SpecTable()
    gpus = []
    for ident in identities:
        d = {k: v for k, v in dataclasses.asdict(ident).items() if v is not None}
        spec = table.for_device(ident.name)
        d["spec"] = spec.key if spec is not None else None
        gpus.append(d)
    return {
        "format": FORMAT,
        "version": VERSION,
        "interval_s": interval_s,
        "source": source,
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gpus": gpus,
    }


def record(
    backend: GpuBackend,
    clock: Clock,
    out: IO[str],
    *,
    seconds: float,
    interval_s: float = 1.0,
    stop: threading.Event | None = None,
    progress: Callable[[float], None] | None = None,
) -> int:
    """Read every GPU each ``interval_s`` (clock seconds) for ``seconds``; returns the lines written.

    The backend must be started. XID events that arrive meanwhile are written as lines of their own.
    """
    stop = stop or threading.Event()
    identities = backend.identities()
    out.write(
        json.dumps(header(identities, interval_s, backend.status_message), separators=(",", ":")) + "\n"
    )
    t0 = clock.now()
    lines = 0
    tick = 0
    while not stop.is_set():
        target = t0 + tick * interval_s
        if target - t0 > seconds + 1e-9:
            break
        if clock.wait(stop, target - clock.now()):
            break
        now = clock.now()
        for ident in identities:
            reading = backend.read(ident.index, processes=True)
            out.write(json.dumps(reading_record(reading, now - t0), separators=(",", ":")) + "\n")
            lines += 1
        for event in backend.wait_events(0.0):
            out.write(
                json.dumps({"t": _round(event.timestamp - t0), "gpu": event.index, "xid": event.xid}) + "\n"
            )
            lines += 1
        if progress is not None:
            progress(now - t0)
        tick += 1
    out.flush()
    return lines


@dataclass
class Capture:
    header: dict[str, Any]
    readings: dict[int, list[GpuReading]] = field(default_factory=dict)  # per GPU, in time order
    xids: dict[int, list[tuple[float, int]]] = field(default_factory=dict)

    @property
    def identities(self) -> list[dict[str, Any]]:
        return list(self.header["gpus"])

    @property
    def duration_s(self) -> float:
        return max((r[-1].timestamp for r in self.readings.values() if r), default=0.0)


def read_capture(source: str | Path) -> Capture:
    """Load a capture; raises ``CaptureError`` naming the line for a malformed one."""
    path = Path(source)
    try:
        lines: Iterator[str] = iter(path.read_text().splitlines())
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read the capture: {exc.strerror or exc}") from exc
    try:
        head = json.loads(next(lines))
    except (StopIteration, json.JSONDecodeError) as exc:
        raise CaptureError(f"{path}: line 1: not a capture header") from exc
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise CaptureError(f"{path}: line 1: format must be {FORMAT!r}")
    if head.get("version") != VERSION:
        raise CaptureError(f"{path}: line 1: unsupported capture version {head.get('version')!r}")
    gpus = head.get("gpus")
    if not isinstance(gpus, list) or not gpus:
        raise CaptureError(f"{path}: line 1: gpus: the header lists no GPUs")
    uuids = {int(g["index"]): g.get("uuid", "") for g in gpus}
    cap = Capture(head, {i: [] for i in uuids}, {i: [] for i in uuids})
    for n, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            gpu = int(rec["gpu"])
            if gpu not in uuids:
                raise CaptureError(f"{path}: line {n}: gpu: {gpu} is not in the header")
            if "xid" in rec:
                cap.xids[gpu].append((float(rec["t"]), int(rec["xid"])))
            else:
                cap.readings[gpu].append(record_from(rec, uuids[gpu]))
        except CaptureError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise CaptureError(f"{path}: line {n}: {exc}") from exc
    for gpu, readings in cap.readings.items():
        readings.sort(key=lambda r: r.timestamp)
        if not readings:
            raise CaptureError(f"{path}: GPU {gpu} has no readings")
    return cap
