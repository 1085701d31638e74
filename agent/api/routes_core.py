"""Core routes: /metrics, /healthz, /readyz, /api/v1/gpus and a GPU's history.

All of them read what the sampler already produced (the latest snapshot, the rendered
exposition, the ring buffers); none calls a backend, so they answer in the same time
whatever state the GPUs are in.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from agent.model import GpuReading
from agent.snapshot import Snapshot

if TYPE_CHECKING:
    from agent.runtime import Runtime

router = APIRouter()


class Problem(BaseModel):
    error: str
    detail: Any = None


class GpuView(BaseModel):
    index: int
    uuid: str
    name: str
    status: str = Field(description="ok | lost | unresponsive | error | unknown (not read yet)")
    error: str | None = None
    sampled_at: float | None = Field(None, description="wall-clock seconds since 1970 of the latest reading")
    identity: dict[str, Any]
    reading: dict[str, Any] | None = Field(
        None, description="the latest reading; unsupported fields are absent"
    )
    xid_errors: dict[str, int] = Field(
        default_factory=dict, description="XID -> count since the agent started"
    )
    owners: dict[str, Any] | None = None


class HistoryView(BaseModel):
    index: int
    uuid: str
    seconds: float
    readings: list[dict[str, Any]]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get(
    "/metrics",
    summary="Prometheus exposition (text or OpenMetrics by Accept; gzip by Accept-Encoding)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, 503: {"model": Problem}},
)
async def metrics(request: Request) -> Response:
    exposition = _runtime(request).store.exposition()
    if exposition is None:
        return JSONResponse({"error": "not ready", "detail": "no metrics rendered yet"}, status_code=503)
    body, headers = exposition.negotiate(
        request.headers.get("accept"), request.headers.get("accept-encoding")
    )
    return Response(content=body, headers=headers)


@router.get("/healthz", summary="200 while the sampling loop ticks", responses={503: {"model": Problem}})
async def healthz(request: Request) -> JSONResponse:
    healthy, detail = _runtime(request).health()
    if not healthy:
        return JSONResponse({"error": "unhealthy", "detail": detail}, status_code=503)
    return JSONResponse({"status": "ok", "detail": detail})


@router.get(
    "/readyz",
    summary="200 after the first complete sample; says host-only when there is no NVIDIA driver",
    responses={503: {"model": Problem}},
)
async def readyz(request: Request) -> JSONResponse:
    ready, body = _runtime(request).readiness()
    if not ready:
        return JSONResponse({"error": "not ready", "detail": body["detail"]}, status_code=503)
    return JSONResponse(body)


@router.get(
    "/api/v1/gpus", summary="Every GPU: identity, status and latest readings", response_model=list[GpuView]
)
async def gpus(request: Request) -> list[GpuView]:
    snapshot = _runtime(request).store.latest()
    if snapshot is None:
        return []
    return [gpu_view(snapshot, index) for index in sorted(snapshot.identities)]


@router.get(
    "/api/v1/gpus/{gpu}/history",
    summary="One GPU's readings over the last N seconds (GPU by index or UUID)",
    response_model=HistoryView,
    responses={404: {"model": Problem}, 422: {"model": Problem}},
)
async def history(
    request: Request,
    gpu: str,
    seconds: float = Query(60.0, gt=0, description="window length, at most history_seconds"),
) -> HistoryView:
    runtime = _runtime(request)
    snapshot = runtime.store.latest()
    index = _resolve(snapshot, gpu)
    limit = runtime.settings.history_seconds
    if seconds > limit:
        raise HTTPException(422, f"query.seconds: must be at most {limit:g} (the configured history_seconds)")
    assert snapshot is not None
    readings = runtime.store.history(index, seconds)
    epoch_offset = snapshot.epoch - snapshot.timestamp
    return HistoryView(
        index=index,
        uuid=snapshot.identities[index].uuid,
        seconds=seconds,
        readings=[reading_json(r, epoch_offset) for r in readings],
    )


def _resolve(snapshot: Snapshot | None, gpu: str) -> int:
    identities = snapshot.identities if snapshot is not None else {}
    if gpu.isdigit() and int(gpu) in identities:
        return int(gpu)
    for index, identity in identities.items():
        if identity.uuid == gpu:
            return index
    known = ", ".join(str(i) for i in sorted(identities)) or "none"
    raise HTTPException(404, f"no GPU {gpu!r} on this node (GPUs by index: {known})")


def gpu_view(snapshot: Snapshot, index: int) -> GpuView:
    identity = snapshot.identities[index]
    reading = snapshot.readings.get(index)
    epoch_offset = snapshot.epoch - snapshot.timestamp
    xids = {str(xid): n for (gpu, xid), n in snapshot.xid_counts.items() if gpu == index}
    owners = snapshot.owners.get(index)
    return GpuView(
        index=index,
        uuid=identity.uuid,
        name=identity.name,
        status=reading.status.value if reading is not None else "unknown",
        error=reading.error if reading is not None else None,
        sampled_at=reading.timestamp + epoch_offset if reading is not None else None,
        identity=_plain(dataclasses.asdict(identity)),
        reading=reading_json(reading, epoch_offset) if reading is not None else None,
        xid_errors=xids,
        owners=_plain(owners) if owners is not None else None,
    )


_READING_FIELDS = tuple(f.name for f in dataclasses.fields(GpuReading))


def reading_json(reading: GpuReading, epoch_offset: float) -> dict[str, Any]:
    """A reading as JSON: absent fields left out, tuple keys joined, timestamps as epoch seconds."""
    out: dict[str, Any] = {}
    for name in _READING_FIELDS:
        value = getattr(reading, name)
        if value is None or (isinstance(value, (dict, list)) and not value):
            continue
        out[name] = _plain(value)
    out["epoch"] = reading.timestamp + epoch_offset
    if reading.processes_timestamp is not None:
        out["processes_epoch"] = reading.processes_timestamp + epoch_offset
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {
            "_".join(map(str, k)) if isinstance(k, tuple) else str(k): _plain(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items() if v is not None}
    return value
