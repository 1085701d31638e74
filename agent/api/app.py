"""The FastAPI application: core routes, feature routers, JSON errors, optional basic auth.

Every error, including 404/405/422 and unexpected 500s, is a JSON object
``{"error": <short phrase>, "detail": <what exactly>}``. OpenAPI lives at
``/openapi.json`` with the interactive page at ``/docs``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

import agent
from agent.api import profiles_routes, routes_core, signals_routes
from agent.config import bcrypt_check, load_web_config
from agent.profiling.service import attach as attach_profiling
from agent.web import routes as web_routes

if TYPE_CHECKING:
    from agent.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="gpulse",
        version=agent.__version__,
        description="GPU/CPU telemetry agent: where every GPU-second goes, and why a GPU is not doing "
        "useful work.",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.runtime = runtime
    _install_error_handlers(app)

    app.include_router(routes_core.router)
    app.include_router(signals_routes.router)
    app.include_router(profiles_routes.router)
    app.include_router(web_routes.router)
    # Profiling attaches its trigger and evidence provider at start-up, before any request
    # (once per runtime, however many apps are built over it).
    app.state.profiling = attach_profiling(runtime)

    if runtime.settings.web_config_file:
        users = load_web_config(runtime.settings.web_config_file).basic_auth_users
        if users:
            app.add_middleware(BasicAuthMiddleware, users=users)
    return app


def error_body(error: str, detail: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = _phrase(exc.status_code)
        detail: Any = exc.detail
        if exc.status_code == 404 and detail == phrase:
            detail = f"no such path: {request.url.path}"
        elif exc.status_code == 405 and detail == phrase:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(error_body(phrase, detail), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(part) for part in err.get("loc", ()))
            problems.append(f"{loc}: {err.get('msg', 'invalid')}")
        return JSONResponse(error_body("invalid request", "; ".join(problems)), status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal error", f"{type(exc).__name__}: {exc}"), status_code=500)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


# Probes must work without credentials (kubelet probes rarely carry them); they reveal nothing.
_OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class BasicAuthMiddleware:
    """HTTP basic auth against exporter-toolkit style bcrypt hashes, verified results cached."""

    def __init__(self, app: ASGIApp, users: dict[str, str]) -> None:
        self.app = app
        self.users = users
        self._verified: set[bytes] = set()  # sha256 of the good "user:password" headers seen (bcrypt is slow)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            error_body("Unauthorized", "basic auth required"),
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="gpulse"'},
        )
        await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if header is None or header[:6].lower() != b"basic ":
            return False
        digest = hashlib.sha256(header).digest()
        if digest in self._verified:
            return True
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None or not bcrypt_check(password, hashed):
            return False
        if len(self._verified) < 1024:
            self._verified.add(digest)
        return True
