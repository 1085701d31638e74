"""Wiring profiling into a runtime: nothing when off; manager, tick listener and evidence when on."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from profiling_fixtures import TOKEN, fake_runtime, make_settings, make_snapshot

from agent.api.profiles_routes import router
from agent.profiling.service import attach
from agent.profiling.settings import ProfilingSettings
from agent.profiling.trigger import StarvationTrigger


def test_off_builds_nothing(tmp_path: Path) -> None:
    runtime = fake_runtime(ProfilingSettings(directory=str(tmp_path / "never")), make_snapshot({}))
    service = attach(runtime)
    assert service.manager is None and service.trigger is None
    assert runtime.tick_listeners == [] and runtime.signals.evidence_providers == []
    assert not (tmp_path / "never").exists()


def test_on_registers_the_trigger_and_the_evidence_provider(tmp_path: Path) -> None:
    runtime = fake_runtime(make_settings(tmp_path), make_snapshot({}))
    service = attach(runtime)
    try:
        assert service.manager is not None
        assert isinstance(service.trigger, StarvationTrigger)
        assert runtime.tick_listeners == [service.trigger]
        assert runtime.signals.evidence_providers == [service.trigger.evidence]
        assert service.trigger.evidence(0, 300.0) is None
    finally:
        service.close()


def test_trigger_can_be_turned_off_alone(tmp_path: Path) -> None:
    runtime = fake_runtime(make_settings(tmp_path, trigger={"enabled": False}), make_snapshot({}))
    service = attach(runtime)
    assert service.manager is not None and service.trigger is None
    assert runtime.tick_listeners == []


def test_an_unusable_directory_is_reported_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    runtime = fake_runtime(make_settings(tmp_path, directory=str(blocker / "profiles")), make_snapshot({}))
    service = attach(runtime)
    assert service.manager is None and service.error is not None
    assert "profiling.directory" in service.error
    app = FastAPI()
    app.include_router(router)
    app.state.runtime = runtime  # the router attaches lazily when the agent did not
    r = TestClient(app).get("/api/v1/profiles", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 503
    assert "profiling.directory" in r.json()["message"] and "cannot be created" in r.json()["message"]
