"""The application shell: JSON errors everywhere, OpenAPI, basic auth, real HTTP through uvicorn."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from agent.api.app import create_app
from agent.clock import ManualClock
from agent.config import Settings, bcrypt_available
from agent.runtime import Runtime

# htpasswd -nbBC 10 "" test: the exporter-toolkit documentation's example
TEST_HASH = "$2y$10$8TpGNPHzCN0szEoTiJ3jOucgQI4afrENI7d32EKH9mjGwThz2C5ca"


@pytest.fixture
def runtime(scripted_gpu: Any, static_host: Any) -> Iterator[Any]:
    made: list[Runtime] = []

    def make(**settings: Any) -> Runtime:
        clock = ManualClock(10.0)
        rt = Runtime(
            Settings(interval_seconds=0.1, **settings), scripted_gpu(1, clock), static_host(clock), clock
        )
        for _ in range(2):
            rt.sampler.tick()
            clock.advance(0.1)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.stop(timeout=0.5)


def test_unknown_path_and_method_are_json(runtime: Any) -> None:
    client = TestClient(create_app(runtime()))
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found", "detail": "no such path: /nope"}
    r = client.post("/metrics")
    assert r.status_code == 405
    assert r.json() == {"error": "Method Not Allowed", "detail": "POST is not allowed on /metrics"}


def test_an_unexpected_exception_is_a_json_500(runtime: Any) -> None:
    app = create_app(runtime())
    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise ZeroDivisionError("division by zero")

    app.include_router(router)
    r = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": "internal error", "detail": "ZeroDivisionError: division by zero"}


def test_openapi_is_served(runtime: Any) -> None:
    client = TestClient(create_app(runtime()))
    spec = client.get("/openapi.json").json()
    assert {"/metrics", "/healthz", "/readyz", "/api/v1/gpus", "/api/v1/gpus/{gpu}/history"} <= set(
        spec["paths"]
    )
    assert spec["info"]["title"] == "gpulse"
    assert client.get("/docs").status_code == 200


@pytest.mark.skipif(not bcrypt_available(), reason="no bcrypt implementation on this machine")
def test_basic_auth_from_the_web_config(runtime: Any, tmp_path: Path) -> None:
    web = tmp_path / "web.yaml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{TEST_HASH}'\n")
    client = TestClient(create_app(runtime(web_config_file=str(web))))
    r = client.get("/metrics")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert r.json()["error"] == "Unauthorized"
    wrong = base64.b64encode(b"prometheus:nope").decode()
    assert client.get("/metrics", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    good = base64.b64encode(b"prometheus:test").decode()
    for _ in range(2):  # the second time from the cache of verified credentials
        assert client.get("/metrics", headers={"Authorization": f"Basic {good}"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # probes stay open
    assert client.get("/readyz").status_code == 200


def test_real_http_through_uvicorn(runtime: Any, live_server: Any) -> None:
    base = live_server(create_app(runtime()))
    with httpx.Client(base_url=base, timeout=5) as client:
        r = client.get("/metrics")
        assert r.status_code == 200 and "gpulse_gpu_up" in r.text
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.get("/api/v1/gpus/9/history").json()["error"] == "Not Found"
