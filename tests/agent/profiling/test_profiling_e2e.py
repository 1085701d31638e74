"""End to end: a starved simulated GPU, a real data-loader worker burning CPU, the trigger, the diagnosis.

The simulated fleet's real-process mode runs a real training process (the PID the fake
NVML reports for the GPU) whose data-loader worker burns CPU in ``decode_sample``. The
real agent pipeline (NVML backend over the fake NVML, sampler, signal engine, store)
books the GPU as ``starved_host``; after ``trigger.starved_host_seconds`` the trigger
profiles the tree with real py-spy; the stored profile's top function is
``decode_sample``, ``gpulse_profiles_total{trigger="starvation"}`` counts it, and the
diagnosis served over HTTP quotes it.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from profiling_fixtures import TOKEN

from agent.api import profiles_routes, signals_routes
from agent.api.app import create_app
from agent.clock import ScaledClock
from agent.config import Settings
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.profiling.service import attach
from agent.runtime import Runtime
from agent.sim.fleet import Fleet
from agent.sim.realproc import RealProcesses
from agent.sim.scenario import parse_scenario

pytestmark = pytest.mark.e2e

SPEED = 10.0  # simulated seconds per real second: 20 s of starvation take 2 s
SCENARIO = """
    seed: 11
    interval_s: 1.0
    gpus:
      - model: H100-SXM   # 75 % of the time waiting on a CPU-bound data-loader worker
        workload: {kind: training, precision: bf16, compute_s: 0.1, wait_s: 0.3, wait_cause: host_cpu,
                   workers: 1, cpu_quota: 1}
      - model: H100-SXM   # healthy: never triggers
        workload: {kind: training, precision: bf16}
"""


def _include(app: Any, router: Any) -> None:
    paths = {getattr(route, "path", None) for route in app.routes}
    if not any(getattr(route, "path", None) in paths for route in router.routes):
        app.include_router(router)


def test_starvation_triggers_a_profile_that_the_diagnosis_quotes(
    pyspy_attach: None, tmp_path: Path, live_server: Callable[[Any], str]
) -> None:
    settings = Settings(
        interval_seconds=1.0,
        process_interval_seconds=1.0,
        profiling={
            "enabled": True,
            "token": TOKEN,
            "directory": str(tmp_path / "profiles"),
            "trigger": {"starved_host_seconds": 20, "seconds": 2, "rate_hz": 100},
        },
    )
    clock = ScaledClock(speed=SPEED)
    fleet = Fleet.from_scenario(parse_scenario(textwrap.dedent(SCENARIO)), clock)
    procs = RealProcesses(fleet, clock)
    runtime = Runtime(settings, NvmlBackend(FakeNvml(fleet.models, clock), clock), fleet.host_source, clock)
    service = attach(runtime)
    app = create_app(runtime)
    app.state.profiling = service
    _include(app, profiles_routes.router)
    _include(app, signals_routes.router)
    try:
        pids = procs.start()
        runtime.start()
        base = live_server(app)
        manager = service.manager
        assert manager is not None

        deadline = time.monotonic() + 90
        triggered = []
        while time.monotonic() < deadline:
            triggered = [p for p in manager.list() if p.trigger == "starvation" and not p.active]
            if triggered:
                break
            time.sleep(0.2)
        assert triggered, f"no triggered profile; trigger state {service.trigger.status()}"  # type: ignore[union-attr]
        profile = triggered[0]
        assert profile.status == "done", profile.error
        assert profile.gpu == 0 and profile.pid == pids[0]  # the healthy GPU 1 never triggered

        summary = profile.summary
        assert summary is not None
        assert summary["top_self"][0]["function"] == "decode_sample"  # type: ignore[index]
        assert summary["workers"]["top_self"][0]["function"] == "decode_sample"  # type: ignore[index]
        assert summary["workers"]["pids"] == procs.worker_pids(0)  # type: ignore[index]

        counters = runtime.node_metrics.counters()
        assert counters[("gpulse_profiles_total", (("trigger", "starvation"),))] == 1.0

        with httpx.Client(base_url=base, timeout=30) as client:
            # the diagnosis is read-only and open; it quotes the profile
            body = client.get("/api/v1/diagnosis", params={"minutes": 1}).json()
            gpu0 = next(g for g in body["gpus"] if g["gpu"] == 0)
            assert "starved" in gpu0["sentence"]
            assert "% of worker samples in decode_sample (" in gpu0["sentence"], gpu0["sentence"]
            gpu1 = next(g for g in body["gpus"] if g["gpu"] == 1)
            assert "worker samples" not in gpu1["sentence"]
            # the stored profile over the API, with its token
            stored = client.get(
                f"/api/v1/profiles/{profile.id}", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert stored.status_code == 200
            assert stored.json()["trigger"] == "starvation"
            assert stored.json()["summary"]["top_self"][0]["function"] == "decode_sample"
            metrics = client.get("/metrics").text
            assert 'gpulse_profiles_total{trigger="starvation"} 1' in metrics
    finally:
        runtime.stop()
        service.close()
        procs.stop()
