"""``gpulse status``: a one-shot table of every GPU's key readings.

It asks a running agent (``/api/v1/gpus``, then its diagnosis from ``/api/v1/diagnosis``);
when none answers it reads the local driver directly (each device time-boxed, as in the
agent), and says which it did; a diagnosis needs the agent's history, so none is printed then.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

from agent.clock import MonotonicClock
from agent.config import Settings
from agent.model import DeviceStatus, GpuReading

LOCAL_READ_TIMEOUT = 5.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="print a table of every GPU's key readings",
        description="Ask a running agent for its GPUs; read the local driver directly if no agent answers.",
    )
    parser.add_argument("--url", help="agent base URL (default: http://127.0.0.1:<port from the settings>)")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file, for the default URL's port")
    parser.add_argument(
        "--timeout", type=float, default=2.0, metavar="SECONDS", help="HTTP timeout (default 2)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent.cli_serve import settings_from_args

    settings = settings_from_args(args)
    url = args.url or f"http://127.0.0.1:{settings.listen_address()[1]}"
    try:
        gpus = fetch(url, args.timeout)
        source = f"agent at {url}"
    except (OSError, ValueError) as exc:
        print(
            f"no agent answered at {url} ({_reason(exc)}); reading the local driver directly", file=sys.stderr
        )
        local = read_local(settings)
        if isinstance(local, str):
            print(f"gpulse status: {local}", file=sys.stderr)
            return 1
        gpus, source = local, "local driver"
    print_table(gpus, sys.stdout)
    print(f"({len(gpus)} GPU{'s' if len(gpus) != 1 else ''}, from the {source})")
    if source == "local driver":
        print("(no diagnosis: it needs a running agent's history)")
    else:
        print_diagnosis(url, args.timeout, sys.stdout)
    return 0


def print_diagnosis(url: str, timeout: float, out: TextIO) -> None:
    """The running agent's diagnosis (GET /api/v1/diagnosis), or one line saying why there is none."""
    try:
        data = _get_json(url.rstrip("/") + "/api/v1/diagnosis", timeout)
        if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
            raise ValueError("unexpected answer from /api/v1/diagnosis")
        from agent.signals.diagnosis import format_diagnosis

        text = format_diagnosis(data["gpus"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        out.write(f"(no diagnosis: {_reason(exc)})\n")
        return
    minutes = data.get("minutes")
    span = f" over the last {minutes:g} min" if isinstance(minutes, int | float) else ""
    out.write(f"\nDiagnosis{span}:\n{text}\n" if text else f"(no diagnosis{span}: no GPUs)\n")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc)


def _get_json(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def fetch(url: str, timeout: float) -> list[dict[str, Any]]:
    data = _get_json(url.rstrip("/") + "/api/v1/gpus", timeout)
    if not isinstance(data, list):
        raise ValueError("unexpected answer from /api/v1/gpus")
    return data


def read_local(settings: Settings) -> list[dict[str, Any]] | str:
    """The local GPUs as /api/v1/gpus would list them, or a message saying why not."""
    from agent.api.routes_core import reading_json
    from agent.cli_serve import real_backends
    from agent.device_worker import DeviceWorker

    clock = MonotonicClock()
    gpu, _host = real_backends(settings, clock)
    starter = DeviceWorker("gpulse-status-init", clock)
    starter.submit(lambda: (gpu.start(), gpu.identities() if gpu.available else []))
    result = _wait(starter, LOCAL_READ_TIMEOUT)
    if result is None:
        return "NVML initialisation did not answer"
    if result.error is not None:
        return f"NVML failed: {result.error}"
    available, identities = result.value
    if not available:
        return gpu.status_message
    workers = {}
    for identity in identities:
        workers[identity.index] = worker = DeviceWorker(f"gpulse-status-{identity.index}", clock)
        worker.submit(gpu.read, identity.index, processes=True)
    deadline = time.monotonic() + LOCAL_READ_TIMEOUT
    offset = clock.epoch() - clock.now()
    gpus = []
    for identity in identities:
        res = _wait(workers[identity.index], max(0.0, deadline - time.monotonic()))
        if res is None:
            reading = GpuReading(
                identity.index, identity.uuid, clock.now(), DeviceStatus.UNRESPONSIVE, "no answer"
            )
        elif res.error is not None:
            reading = GpuReading(
                identity.index, identity.uuid, clock.now(), DeviceStatus.ERROR, str(res.error)
            )
        else:
            reading = res.value
        gpus.append(
            {
                "index": identity.index,
                "uuid": identity.uuid,
                "name": identity.name,
                "status": reading.status.value,
                "error": reading.error,
                "reading": reading_json(reading, offset),
            }
        )
    if not any(w.outstanding for w in workers.values()):
        gpu.close()  # only when nothing is stuck inside the driver
    return gpus


def _wait(worker: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = worker.take()
        if result is not None or time.monotonic() >= deadline:
            return result
        time.sleep(0.01)


COLUMNS = ("GPU", "NAME", "STATUS", "UTIL", "SM", "MEMORY", "POWER", "TEMP", "SM CLOCK", "PROCS")


def print_table(gpus: list[dict[str, Any]], out: TextIO) -> None:
    rows = [COLUMNS, *(_row(g) for g in gpus)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        )


def _row(gpu: dict[str, Any]) -> tuple[str, ...]:
    r = gpu.get("reading") or {}
    status = str(gpu.get("status", "unknown"))
    if status != "ok":
        r = {}
    util = r.get("utilization_samples_ratio", r.get("utilization_gpu_ratio"))
    temps = r.get("temperatures_celsius") or {}
    procs = r.get("processes")
    name = str(gpu.get("name", ""))
    return (
        str(gpu.get("index", "?")),
        name if len(name) <= 28 else name[:27] + "…",
        status,
        _pct(util),
        _pct(r.get("sm_active_ratio")),
        _pair(r.get("memory_used_bytes"), r.get("memory_total_bytes"), 2**30, "GiB", 1),
        _pair(r.get("power_watts"), r.get("power_limit_watts"), 1, "W", 0),
        f"{temps['gpu']:.0f}°C" if "gpu" in temps else "-",
        f"{r['sm_clock_hz'] / 1e6:.0f} MHz" if r.get("sm_clock_hz") is not None else "-",
        str(len(procs)) if procs is not None else "-",
    )


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.0f}%"


def _pair(used: float | None, total: float | None, scale: float, unit: str, digits: int) -> str:
    if used is None:
        return "-"
    if total is None:
        return f"{used / scale:.{digits}f} {unit}"
    return f"{used / scale:.{digits}f}/{total / scale:.{digits}f} {unit}"
