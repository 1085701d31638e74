"""The live page: ``GET /`` serves it, ``GET /api/v1/overview`` feeds it.

Everything the page needs ships inside the package (no CDN, nothing fetched at run
time); the charts are SVG drawn by our own script. The overview is built at most once
per sampling tick and window, however many browsers poll it.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from agent.web.overview import build_overview

if TYPE_CHECKING:
    from agent.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter()

# A fixed list: no part of the URL ever reaches the file system.
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _asset(name: str) -> bytes:
    return resources.files("agent.web").joinpath("static", name).read_bytes()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index() -> HTMLResponse:
    return HTMLResponse(_asset("index.html"), headers=_NO_CACHE)


@router.get("/ui/{name}", include_in_schema=False)
def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"no such asset: {name}")
    return Response(_asset(name), media_type=media_type, headers=_NO_CACHE)


def diagnoses(runtime: Runtime, minutes: float) -> dict[int, dict[str, Any]]:
    """GPU index -> the diagnosis of ``GET /api/v1/diagnosis``; empty without a signal engine."""
    engine = runtime.signals
    settings = getattr(engine, "settings", None)
    if settings is None:  # the null engine: no states, no sentences
        return {}
    from agent.signals.diagnosis import diagnose_store

    try:
        items = diagnose_store(
            runtime.store,
            runtime.store.latest(),
            minutes,
            precision=settings.precision,
            min_share=settings.diagnosis_min_share,
            providers=getattr(engine, "evidence_providers", ()),
        )
    except Exception:  # the page still shows states and charts without the sentences
        log.warning("diagnosis failed; the live page shows no sentences this time", exc_info=True)
        return {}
    return {d.gpu: d.to_dict() for d in items}


class _OverviewCache:
    """The last overview per window, valid while the store holds the same snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[float, tuple[object, dict[str, Any]]] = {}

    def get(self, runtime: Runtime, minutes: float) -> dict[str, Any]:
        snapshot = runtime.store.latest()
        with self._lock:  # one build per tick, even when several browsers ask at once
            hit = self._entries.get(minutes)
            if hit is not None and snapshot is not None and hit[0] is snapshot:
                body = dict(hit[1])
                healthy, detail = runtime.health()  # health moves with time, not with ticks
                body["node"] = {**body["node"], "health": {"healthy": healthy, "detail": detail}}
                return body
            body = build_overview(runtime, minutes, diagnoses(runtime, minutes))
            if len(self._entries) > 8:
                self._entries.clear()
            self._entries[minutes] = (snapshot, body)
            return body


def _cache(request: Request) -> _OverviewCache:
    state = request.app.state
    cache = getattr(state, "web_overview_cache", None)
    if not isinstance(cache, _OverviewCache):
        cache = state.web_overview_cache = _OverviewCache()
    return cache


@router.get(
    "/api/v1/overview",
    summary="What the live page shows: state, shares, charts, diagnosis per GPU",
    response_class=JSONResponse,
    responses={200: {"content": {"application/json": {}}, "description": "node, gpus, ready"}},
)
def overview(request: Request, minutes: float = Query(5.0, gt=0, le=60)) -> Response:
    runtime: Runtime = request.app.state.runtime
    body = json.dumps(
        _cache(request).get(runtime, minutes), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode()
    headers = {"Cache-Control": "no-store", "Vary": "Accept-Encoding"}
    # ~150 KiB for 8 GPUs every 2 s, about 8 times less gzipped: it matters through a port-forward
    if len(body) > 1024 and "gzip" in request.headers.get("accept-encoding", "").lower():
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/json", headers=headers)
