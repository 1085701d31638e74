"""The signals API and the training-loop client, over real HTTP through uvicorn."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from agent.api import signals_routes
from agent.clock import ManualClock
from agent.model import GpuIdentity, IntervalSignals
from agent.signals.client import FlopsReporter
from agent.signals.engine import SignalEngine
from agent.signals.settings import SignalSettings
from agent.snapshot import Snapshot
from agent.specs import SpecTable
from agent.store import Store


def _engine(**settings) -> SignalEngine:
    engine = SignalEngine(SignalSettings(**settings), SpecTable())
    engine.set_identity(0, GpuIdentity(index=0, uuid="GPU-0", name="NVIDIA H100 80GB HBM3", pci_bus_id=""))
    return engine


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, SimpleNamespace]]:
    runtime = SimpleNamespace(signals=_engine(), clock=ManualClock(100.0), store=Store(1.0, 900.0))
    app = FastAPI()
    app.state.runtime = runtime
    app.include_router(signals_routes.router)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    srv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", runtime
    srv.should_exit = True
    thread.join(5)


@pytest.fixture
def api(server) -> tuple[str, SimpleNamespace]:
    url, runtime = server
    runtime.signals = _engine()
    return url, runtime


_http = httpx.Client(timeout=5)


def _post(url: str, body: object, **headers: str) -> httpx.Response:
    return _http.post(url + "/api/v1/workloads/report", json=body, headers=headers)


def test_report_baseline_then_increase(api) -> None:
    url, runtime = api
    first = _post(url, {"pid": 4121, "model_flops_total": 1.2e18})
    assert first.status_code == 200 and first.json()["baseline"] is True
    runtime.clock.advance(10)
    second = _post(url, {"pid": 4121, "model_flops_total": 1.2e18 + 5e15})
    expected = {"pid": 4121, "total_flops": 1.2e18 + 5e15, "added_flops": 5e15, "baseline": False}
    assert second.json() == expected


def test_tokens_form_multiplies(api) -> None:
    url, runtime = api
    _post(url, {"pid": 9, "tokens_total": 0, "flops_per_token": 4e10})
    runtime.clock.advance(10)
    r = _post(url, {"pid": 9, "tokens_total": 1e5, "flops_per_token": 4e10})
    assert r.json()["added_flops"] == pytest.approx(4e15)


@pytest.mark.parametrize(("body", "reason"), [
    ({"pid": 1, "model_flops_total": -5}, "model_flops_total"),
    ({"pid": 1}, "give model_flops_total"),
    ({"pid": 1, "tokens_total": 5}, "together with flops_per_token"),
    ({"pid": 1, "model_flops_total": 1, "tokens_total": 1, "flops_per_token": 1}, "not both"),
    ({"pid": 0, "model_flops_total": 1}, "pid"),
    ({"pid": 1, "model_flops_total": 1, "extra": 2}, "extra"),
    ([1, 2], "JSON object"),
])
def test_bad_bodies_get_422_naming_the_problem(api, body, reason) -> None:
    url, _ = api
    r = _post(url, body)
    assert r.status_code == 422
    assert reason in r.text


def test_decreasing_and_absurd_totals_get_422_with_the_reason(api) -> None:
    url, runtime = api
    _post(url, {"pid": 5, "model_flops_total": 1e18})
    runtime.clock.advance(1)
    r = _post(url, {"pid": 5, "model_flops_total": 1e17})
    assert r.status_code == 422 and "decreased" in r.json()["detail"]
    r = _post(url, {"pid": 5, "model_flops_total": 1e18 + 1e17})  # 1e17 FLOPs in 1 s on one H100
    assert r.status_code == 422 and "absurd" in r.json()["detail"]


def test_token_required_when_configured(api) -> None:
    url, runtime = api
    runtime.signals = _engine(report_token="s3cret")
    body = {"pid": 3, "model_flops_total": 1.0}
    assert _post(url, body).status_code == 401
    assert _post(url, body, Authorization="Bearer wrong").status_code == 401
    assert _post(url, body, Authorization="Bearer s3cret").status_code == 200
    assert _post(url, body, **{"X-Gpulse-Token": "s3cret"}).status_code == 200


def test_diagnosis_endpoint(api) -> None:
    url, runtime = api
    for t in range(1, 121):
        runtime.store.add_signals(0, float(t), IntervalSignals(dt=1.0, state_seconds={"starved_host": 1.0},
                                                               starvation_evidence="a thread of pid 7 ran"))
    identity = GpuIdentity(0, "GPU-0", "NVIDIA H100 80GB HBM3", "")
    snapshot = Snapshot(timestamp=120.0, epoch=0.0, interval_seconds=1.0, nvml_up=True, nvml_message="",
                        identities={0: identity})
    runtime.store.publish(snapshot, None)
    r = _http.get(url + "/api/v1/diagnosis", params={"minutes": 1})
    assert r.status_code == 200
    [gpu] = r.json()["gpus"]
    assert gpu["uuid"] == "GPU-0" and gpu["shares"]["starved_host"] == pytest.approx(1.0)
    assert gpu["sentence"] == ("GPU 0 spent 100 % of the last minute starved by host CPU: "
                               "a thread of pid 7 ran")
    assert _http.get(url + "/api/v1/diagnosis", params={"minutes": -1}).status_code == 422


def test_client_reports_baseline_and_totals_and_never_raises(api) -> None:
    url, runtime = api
    reporter = FlopsReporter(url, pid=777, flops_per_token=2e9, min_interval_s=0.0)
    assert 777 in runtime.signals.reports.pids()
    runtime.clock.advance(10)
    assert reporter.add_tokens(1000)
    gpus = runtime.signals.reports.take(0, lambda pid: (0,), runtime.clock.now())
    assert gpus == pytest.approx(2e12)
    dead = FlopsReporter("http://127.0.0.1:9", pid=1, timeout_s=0.5)
    assert dead.add_flops(1.0) is False


def test_client_sends_the_token_and_rate_limits(api) -> None:
    url, runtime = api
    runtime.signals = _engine(report_token="tok")
    assert not FlopsReporter(url, pid=5).flush()  # no token: refused, returns False
    reporter = FlopsReporter(url, pid=6, token="tok", min_interval_s=3600.0)
    assert 6 in runtime.signals.reports.pids()
    assert reporter.add_flops(1e12) is False  # within min_interval_s: kept for the next post
    runtime.clock.advance(10)
    assert reporter.flush()
    assert runtime.signals.reports.take(0, lambda pid: (0,), runtime.clock.now()) == pytest.approx(1e12)
