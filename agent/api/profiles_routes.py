"""Profiling endpoints: on-demand py-spy captures and instant stacks.

Off unless ``profiling.enabled`` (then every endpoint answers 404 saying how to enable
it). When on, every endpoint needs ``Authorization: Bearer <token>`` (or ``X-Gpulse-Token:
<token>`` when basic auth already uses the Authorization header), compared in constant
time; a missing or wrong token gets 401 with ``WWW-Authenticate``. Errors are JSON
``{"error": code, "message": ..., "detail": ...}``; nothing here answers a bare 500.

- ``POST   /api/v1/profiles``                 {"pid": N} or {"gpu": N}, seconds, rate_hz,
  subprocesses, native, idle, nonblocking, format → 202 {"id": ...}
- ``GET    /api/v1/profiles``                 all stored profiles, newest first
- ``GET    /api/v1/profiles/{id}``            status, progress, and the summary when done
- ``GET    /api/v1/profiles/{id}/download``   the file (``?format=`` renders another format)
- ``DELETE /api/v1/profiles/{id}``            stops a running capture, removes the files
- ``GET    /api/v1/processes/{pid}/stacks``   py-spy dump of every thread, now
"""

from __future__ import annotations

import hmac
import json
import threading
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.concurrency import run_in_threadpool

from agent.profiling.errors import InvalidRequest, ProfilingError
from agent.profiling.manager import CaptureRequest, ProfileManager
from agent.profiling.service import ProfilingService, attach

router = APIRouter(tags=["profiling"])

REALM = 'Bearer realm="gpulse profiling"'
TOKEN_HEADER = "x-gpulse-token"
_attach_lock = threading.Lock()


class ProfileBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pid: StrictInt | None = Field(None, ge=1)
    gpu: StrictInt | None = Field(None, ge=0)
    seconds: StrictInt | None = None  # range checked against profiling.max_seconds
    rate_hz: StrictInt | None = None
    subprocesses: StrictBool = True
    native: StrictBool = False
    idle: StrictBool = False
    nonblocking: StrictBool = False  # sample without pausing the target (less overhead, less exact)
    format: Literal["speedscope", "flamegraph", "raw"] = "speedscope"


def _error(exc: ProfilingError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


def _unauthorized(message: str, invalid: bool) -> JSONResponse:
    challenge = REALM + (', error="invalid_token"' if invalid else "")
    return JSONResponse(
        {"error": "unauthorized", "message": message},
        status_code=401,
        headers={"WWW-Authenticate": challenge},
    )


def _service(request: Request) -> ProfilingService:
    state = request.app.state
    service = getattr(state, "profiling", None)
    if service is None:
        with _attach_lock:
            service = getattr(state, "profiling", None)
            if service is None:
                service = attach(state.runtime)
                state.profiling = service
    return service


def _authorize(request: Request) -> ProfileManager | JSONResponse:
    """The manager when the caller may use profiling, else the response that says why not."""
    service = _service(request)
    if not service.enabled:
        return _error(
            ProfilingError(
                "profiling is off: set profiling.enabled: true and a profiling.token (or token_file) in the "
                "agent's config, and give the agent CAP_SYS_PTRACE (see docs/profiling.md)",
                status=404,
                code="profiling_disabled",
            )
        )
    try:
        expected = service.token()
    except ProfilingError as exc:
        return _error(exc)
    supplied = _supplied_token(request)
    if supplied is None:
        return _unauthorized("profiling needs an Authorization: Bearer <token> header", invalid=False)
    if not hmac.compare_digest(supplied.encode("utf-8"), expected.encode("utf-8")):
        return _unauthorized("the bearer token is wrong", invalid=True)
    if service.manager is None:
        return _error(
            ProfilingError(service.error or "profiling is unavailable", status=503, code="unavailable")
        )
    return service.manager


def _supplied_token(request: Request) -> str | None:
    """``Authorization: Bearer <token>``, or ``X-Gpulse-Token`` where Authorization carries the
    web-config basic-auth credentials."""
    header = request.headers.get("authorization", "").strip()
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    alternative = request.headers.get(TOKEN_HEADER, "").strip()
    return alternative or None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        field = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{field}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


@router.post("/api/v1/profiles", status_code=202)
async def create_profile(request: Request) -> Response:
    manager = _authorize(request)
    if isinstance(manager, JSONResponse):
        return manager
    raw = await request.body()
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return _error(InvalidRequest('the body is not JSON: send {"pid": N} or {"gpu": N}'))
    if not isinstance(data, dict):
        return _error(InvalidRequest('the body must be a JSON object such as {"pid": N} or {"gpu": N}'))
    try:
        body = ProfileBody.model_validate(data)
    except ValidationError as exc:
        return _error(InvalidRequest(_validation_message(exc)))
    capture = CaptureRequest(**body.model_dump())
    try:
        profile = await run_in_threadpool(manager.submit, capture)
    except ProfilingError as exc:
        return _error(exc)
    url = f"/api/v1/profiles/{profile.id}"
    return JSONResponse(
        {"id": profile.id, "status": profile.status, "url": url, **profile.to_dict(summary=False)},
        status_code=202,
        headers={"Location": url},
    )


@router.get("/api/v1/profiles")
async def list_profiles(request: Request) -> Response:
    manager = _authorize(request)
    if isinstance(manager, JSONResponse):
        return manager
    service = _service(request)
    s = manager.settings
    return JSONResponse(
        {
            "profiles": [p.to_dict(summary=False) for p in manager.list()],
            "active": manager.active_count(),
            "limits": {
                "max_seconds": s.max_seconds,
                "max_rate_hz": s.max_rate_hz,
                "max_concurrent": s.max_concurrent,
                "max_profiles": s.max_profiles,
                "max_bytes": s.max_bytes,
            },
            "trigger": service.trigger.status() if service.trigger is not None else {"enabled": False},
        }
    )


@router.get("/api/v1/profiles/{profile_id}")
async def get_profile(profile_id: str, request: Request) -> Response:
    manager = _authorize(request)
    if isinstance(manager, JSONResponse):
        return manager
    try:
        return JSONResponse(manager.get(profile_id).to_dict(summary=True))
    except ProfilingError as exc:
        return _error(exc)


@router.get("/api/v1/profiles/{profile_id}/download")
async def download_profile(profile_id: str, request: Request, format: str | None = None) -> Response:
    manager = _authorize(request)
    if isinstance(manager, JSONResponse):
        return manager
    try:
        download = await run_in_threadpool(manager.download, profile_id, format)
    except ProfilingError as exc:
        return _error(exc)
    if download.path is not None:
        return FileResponse(download.path, media_type=download.content_type, filename=download.filename)
    return Response(
        download.content or "",
        media_type=download.content_type,
        headers={"Content-Disposition": f'attachment; filename="{download.filename}"'},
    )


@router.delete("/api/v1/profiles/{profile_id}", status_code=204)
async def delete_profile(profile_id: str, request: Request) -> Response:
    manager = _authorize(request)
    if isinstance(manager, JSONResponse):
        return manager
    try:
        await run_in_threadpool(manager.delete, profile_id)
    except ProfilingError as exc:
        return _error(exc)
    return Response(status_code=204)


@router.get("/api/v1/processes/{pid}/stacks")
async def process_stacks(
    pid: str, request: Request, subprocesses: bool = False, native: bool = False
) -> Response:
    manager = _authorize(request)
    if isinstance(manager, JSONResponse):
        return manager
    if not pid.isdigit() or int(pid) <= 0:
        return _error(InvalidRequest(f"pid: {pid!r} is not a process id"))
    try:
        stacks = await run_in_threadpool(manager.stacks, int(pid), subprocesses=subprocesses, native=native)
    except ProfilingError as exc:
        return _error(exc)
    return JSONResponse(stacks)
