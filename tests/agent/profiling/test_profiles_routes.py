"""The profiling API over HTTP: every refusal with its status and message, and a real capture."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Proc
from fastapi import FastAPI
from fastapi.testclient import TestClient
from profiling_fixtures import TOKEN, ScriptedPySpy, fake_runtime, make_settings, make_snapshot

from agent.api.profiles_routes import router
from agent.profiling.manager import ProfileManager
from agent.profiling.service import ProfilingService, attach
from agent.profiling.settings import ProfilingSettings
from agent.snapshot import Snapshot

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_app(
    settings: ProfilingSettings, snapshot: Snapshot | None, manager: ProfileManager | None = None
) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    runtime = fake_runtime(settings, snapshot)
    app.state.runtime = runtime
    if manager is not None:
        app.state.profiling = ProfilingService(settings, manager)
    return app


@pytest.fixture
def hold() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def scripted(tmp_path: Path, hold: threading.Event) -> Callable[..., TestClient]:
    """A client over an app whose captures are scripted (instant, or held until ``hold`` is set)."""

    def build(snapshot: Snapshot | None = None, held: bool = False, **settings: Any) -> TestClient:
        s = make_settings(tmp_path, **settings)
        snap = snapshot if snapshot is not None else make_snapshot({0: [os.getpid()]})
        manager = ProfileManager(s, latest=lambda: snap, pyspy=ScriptedPySpy(hold=hold if held else None))
        return TestClient(make_app(s, snap, manager))

    return build


def test_disabled_profiling_says_how_to_enable(tmp_path: Path) -> None:
    client = TestClient(make_app(ProfilingSettings(), make_snapshot({})))
    for method, path in [
        ("POST", "/api/v1/profiles"),
        ("GET", "/api/v1/profiles"),
        ("GET", "/api/v1/profiles/abc"),
        ("GET", "/api/v1/processes/1/stacks"),
    ]:
        r = client.request(method, path, headers=AUTH, json={"pid": 1})
        assert r.status_code == 404
        body = r.json()
        assert body["error"] == "profiling_disabled"
        assert "set profiling.enabled: true and a profiling.token" in body["message"]


def test_no_token(scripted: Callable[..., TestClient]) -> None:
    r = scripted().post("/api/v1/profiles", json={"pid": os.getpid()})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="gpulse profiling"'
    assert r.json()["message"] == "profiling needs an Authorization: Bearer <token> header"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"X-Gpulse-Token": "nope"},
    ],
)
def test_wrong_token(scripted: Callable[..., TestClient], headers: dict[str, str]) -> None:
    r = scripted().get("/api/v1/profiles", headers=headers)
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"] or "Bearer <token>" in r.json()["message"]


def test_token_in_the_alternative_header(scripted: Callable[..., TestClient]) -> None:
    # For setups where the web config's basic auth already takes the Authorization header.
    r = scripted().get(
        "/api/v1/profiles", headers={"Authorization": "Basic dXNlcjpwdw==", "X-Gpulse-Token": TOKEN}
    )
    assert r.status_code == 200


def test_token_file_is_read_per_request(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    settings = ProfilingSettings(enabled=True, token_file=str(token_file), directory=str(tmp_path / "p"))
    snap = make_snapshot({})
    client = TestClient(make_app(settings, snap, ProfileManager(settings, latest=lambda: snap)))
    assert client.get("/api/v1/profiles", headers={"Authorization": "Bearer first"}).status_code == 200
    token_file.write_text("second\n")  # rotated
    assert client.get("/api/v1/profiles", headers={"Authorization": "Bearer first"}).status_code == 401
    assert client.get("/api/v1/profiles", headers={"Authorization": "Bearer second"}).status_code == 200
    token_file.unlink()
    r = client.get("/api/v1/profiles", headers={"Authorization": "Bearer second"})
    assert r.status_code == 503 and "profiling.token_file" in r.json()["message"]


def test_pid_outside_the_rule(scripted: Callable[..., TestClient]) -> None:
    r = scripted(make_snapshot({0: [999_999]})).post(
        "/api/v1/profiles", headers=AUTH, json={"pid": os.getpid()}
    )
    assert r.status_code == 403
    assert r.json()["error"] == "pid_not_allowed"
    assert "only processes that use a GPU, and their descendants, may be profiled" in r.json()["message"]


def test_too_long_a_duration(scripted: Callable[..., TestClient]) -> None:
    r = scripted().post("/api/v1/profiles", headers=AUTH, json={"pid": os.getpid(), "seconds": 301})
    assert r.status_code == 422
    assert (
        r.json()["message"]
        == "seconds: 301 is out of range: a capture lasts 1 to 300 s (profiling.max_seconds)"
    )


def test_too_many_at_once(scripted: Callable[..., TestClient], hold: threading.Event) -> None:
    client = scripted(make_snapshot({0: [os.getpid(), os.getppid()]}), held=True, max_concurrent=1)
    first = client.post("/api/v1/profiles", headers=AUTH, json={"pid": os.getppid(), "subprocesses": False})
    assert first.status_code == 202
    r = client.post("/api/v1/profiles", headers=AUTH, json={"pid": os.getpid()})
    assert r.status_code == 429
    assert r.json()["error"] == "too_many_captures"
    assert "profiling.max_concurrent (1)" in r.json()["message"]


def test_a_vanished_process(scripted: Callable[..., TestClient]) -> None:
    r = scripted(make_snapshot({0: [999_999]})).post("/api/v1/profiles", headers=AUTH, json={"pid": 999_999})
    assert r.status_code == 404
    assert r.json()["error"] == "process_gone"
    assert r.json()["message"].startswith("process 999999 does not exist (it may have exited)")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"pid": "123"}', "pid: Input should be a valid integer"),
        (b'{"pid": 1, "duration": 5}', "duration: Extra inputs are not permitted"),
        (b'{"pid": 1, "format": "pprof"}', "format: Input should be 'speedscope', 'flamegraph' or 'raw'"),
        (b"{}", 'give exactly one of "pid" or "gpu"'),
    ],
)
def test_bad_bodies_name_the_field(scripted: Callable[..., TestClient], body: bytes, message: str) -> None:
    r = scripted().post(
        "/api/v1/profiles", headers={**AUTH, "Content-Type": "application/json"}, content=body
    )
    assert r.status_code == 422
    assert message in r.json()["message"]


def test_lifecycle_with_a_scripted_capture(scripted: Callable[..., TestClient]) -> None:
    client = scripted()
    r = client.post("/api/v1/profiles", headers=AUTH, json={"pid": os.getpid(), "format": "flamegraph"})
    assert r.status_code == 202
    profile_id = r.json()["id"]
    assert r.headers["location"] == f"/api/v1/profiles/{profile_id}"
    deadline = time.monotonic() + 10
    while (body := client.get(f"/api/v1/profiles/{profile_id}", headers=AUTH).json())["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert body["summary"]["top_self"][0]["function"] == "hot"
    download = client.get(f"/api/v1/profiles/{profile_id}/download", headers=AUTH)
    assert download.status_code == 200 and download.headers["content-type"] == "image/svg+xml"
    assert download.text.startswith("<?xml")
    raw = client.get(f"/api/v1/profiles/{profile_id}/download?format=raw", headers=AUTH)
    assert raw.headers["content-type"] == "text/plain; charset=utf-8" and "hot (a.py:5)" in raw.text
    listing = client.get("/api/v1/profiles", headers=AUTH).json()
    assert [p["id"] for p in listing["profiles"]] == [profile_id]
    assert listing["limits"]["max_seconds"] == 300
    assert client.delete(f"/api/v1/profiles/{profile_id}", headers=AUTH).status_code == 204
    gone = client.get(f"/api/v1/profiles/{profile_id}", headers=AUTH)
    assert gone.status_code == 404 and gone.json()["error"] == "profile_not_found"


def test_download_before_done(scripted: Callable[..., TestClient], hold: threading.Event) -> None:
    client = scripted(held=True)
    profile_id = client.post("/api/v1/profiles", headers=AUTH, json={"pid": os.getpid()}).json()["id"]
    r = client.get(f"/api/v1/profiles/{profile_id}/download", headers=AUTH)
    assert r.status_code == 409 and r.json()["error"] == "profile_not_ready"


def test_stacks_refusals(scripted: Callable[..., TestClient]) -> None:
    client = scripted(make_snapshot({0: [999_999]}))
    r = client.get(f"/api/v1/processes/{os.getpid()}/stacks", headers=AUTH)
    assert r.status_code == 403 and "may be profiled" in r.json()["message"]
    r = client.get("/api/v1/processes/abc/stacks", headers=AUTH)
    assert r.status_code == 422 and r.json()["message"] == "pid: 'abc' is not a process id"


# --- real py-spy through a real server ------------------------------------------------------------


@pytest.mark.e2e
def test_capture_and_stacks_through_uvicorn(
    hot_process: Proc, pyspy_attach: None, tmp_path: Path, live_server: Callable[[Any], str]
) -> None:
    settings = make_settings(tmp_path)
    snapshot = make_snapshot({1: [hot_process.pid]})
    app = make_app(settings, snapshot)
    runtime = app.state.runtime
    app.state.profiling = attach(runtime)  # what the agent does at start-up
    base = live_server(app)
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
        stacks = client.get(f"/api/v1/processes/{hot_process.pid}/stacks")
        assert stacks.status_code == 200
        frames = stacks.json()["processes"][0]["threads"][0]["frames"]
        assert frames[0]["function"] == "burn_cpu_hot_loop"

        r = client.post("/api/v1/profiles", json={"gpu": 1, "seconds": 1, "format": "speedscope"})
        assert r.status_code == 202, r.text
        profile_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while (body := client.get(f"/api/v1/profiles/{profile_id}").json())["status"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert body["status"] == "done", body["error"]
        assert body["target"]["pid"] == hot_process.pid and body["trigger"] == "manual"
        assert body["summary"]["top_self"][0]["function"] == "burn_cpu_hot_loop"
        download = client.get(f"/api/v1/profiles/{profile_id}/download")
        assert download.headers["content-type"] == "application/json"
        assert download.json()["profiles"][0]["name"].startswith(f"Process {hot_process.pid} Thread")
        assert "attachment" in download.headers["content-disposition"]
        counts = runtime.node_metrics.counts
        assert counts == {("gpulse_profiles_total", (("trigger", "manual"),)): 1.0}
        # no token over the wire either
        assert httpx.get(f"{base}/api/v1/profiles").status_code == 401
    app.state.profiling.close()
