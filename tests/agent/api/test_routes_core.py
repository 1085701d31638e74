"""The core HTTP routes over a runtime ticked by hand (ManualClock, scripted backends)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agent.api.app import create_app
from agent.clock import ManualClock
from agent.config import Settings
from agent.model import GpuProcess
from agent.runtime import HEALTHY_INTERVALS, Runtime

INTERVAL = 0.1


class Node:
    def __init__(self, scripted_gpu: Any, static_host: Any, driver: bool = True) -> None:
        self.clock = ManualClock(1000.0)
        self.gpu = scripted_gpu(2, self.clock, available=driver)
        self.rt = Runtime(
            Settings(interval_seconds=INTERVAL, history_seconds=60),
            self.gpu,
            static_host(self.clock),
            self.clock,
        )
        self.client = TestClient(create_app(self.rt))

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.rt.sampler.tick()
            self.clock.advance(INTERVAL)


@pytest.fixture
def node(scripted_gpu: Any, static_host: Any) -> Iterator[Any]:
    made: list[Node] = []

    def make(**kwargs: Any) -> Node:
        made.append(Node(scripted_gpu, static_host, **kwargs))
        return made[-1]

    yield make
    for n in made:
        n.gpu.unblock()
        n.rt.stop(timeout=0.5)


def test_before_the_first_sample(node: Any) -> None:
    n = node()
    r = n.client.get("/readyz")
    assert r.status_code == 503 and r.json()["error"] == "not ready"
    assert n.client.get("/metrics").status_code == 503
    assert n.client.get("/healthz").status_code == 200  # starting: within the start-up grace
    assert n.client.get("/api/v1/gpus").json() == []


def test_metrics_text_openmetrics_and_gzip(node: Any) -> None:
    n = node()
    n.tick(3)
    r = n.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'gpulse_gpu_up{gpu="0",uuid="GPU-0000"} 1' in r.text
    assert "gpulse_nvml_up 1" in r.text
    om = n.client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    with n.client.stream("GET", "/metrics", headers={"Accept-Encoding": "gzip"}) as raw:
        assert raw.headers.get("content-encoding") == "gzip"
        body = b"".join(raw.iter_raw())
    assert body[:2] == b"\x1f\x8b"
    assert hash(gzip.decompress(body)) == hash(r.content)  # same tick, same bytes (hash: no giant diff)


def test_healthz_fails_when_the_loop_stalls(node: Any) -> None:
    n = node()
    n.tick(2)
    assert n.client.get("/healthz").json()["status"] == "ok"
    n.clock.advance(HEALTHY_INTERVALS * INTERVAL + 0.5)
    r = n.client.get("/healthz")
    assert r.status_code == 503
    assert r.json()["error"] == "unhealthy" and "has not ticked" in r.json()["detail"]


def test_readyz_says_host_only_without_a_driver(node: Any) -> None:
    n = node(driver=False)
    n.tick(2)
    r = n.client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["mode"] == "host-only" and "host-only" in r.text
    assert "gpulse_nvml_up 0" in n.client.get("/metrics").text


def test_gpu_list_has_identity_readings_status_and_owners(node: Any) -> None:
    n = node()
    n.gpu.processes[1] = [GpuProcess(4242, 2**30)]
    n.rt.owners_provider = lambda s: {1: {"pod": "train-0", "namespace": "ml"}}
    n.tick(3)
    n.gpu.lose(0)
    n.tick()
    gpus = n.client.get("/api/v1/gpus").json()
    assert [g["index"] for g in gpus] == [0, 1]
    lost, ok = gpus
    assert lost["status"] == "lost" and lost["error"] == "GPU is lost"
    assert "memory_used_bytes" not in lost["reading"]
    assert ok["status"] == "ok" and ok["uuid"] == "GPU-0001" and ok["name"] == "NVIDIA H100 80GB HBM3"
    assert ok["identity"]["pci_bus_id"] == "00000000:19:00.0"
    assert ok["reading"]["memory_total_bytes"] == 80 * 2**30
    assert ok["reading"]["temperatures_celsius"] == {"gpu": 50.0}
    assert "power_instant_watts" not in ok["reading"]  # unsupported: absent, not null
    assert ok["reading"]["processes"] == [{"pid": 4242, "used_memory_bytes": 2**30}]
    assert ok["owners"] == {"pod": "train-0", "namespace": "ml"}
    assert ok["sampled_at"] == pytest.approx(n.clock.epoch() - INTERVAL)


def test_history_by_index_and_uuid(node: Any) -> None:
    n = node()
    n.tick(12)
    body = n.client.get("/api/v1/gpus/1/history", params={"seconds": 0.45}).json()
    assert body["index"] == 1 and body["uuid"] == "GPU-0001"
    assert len(body["readings"]) == 5
    epochs = [r["epoch"] for r in body["readings"]]
    assert epochs == sorted(epochs)
    by_uuid = n.client.get("/api/v1/gpus/GPU-0001/history?seconds=0.45").json()
    assert by_uuid["readings"] == body["readings"]


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/api/v1/gpus/7/history", 404, "no GPU '7'"),
        ("/api/v1/gpus/GPU-nope/history", 404, "GPUs by index: 0, 1"),
        ("/api/v1/gpus/0/history?seconds=-1", 422, "query.seconds"),
        ("/api/v1/gpus/0/history?seconds=abc", 422, "query.seconds"),
        ("/api/v1/gpus/0/history?seconds=61", 422, "at most 60"),
    ],
)
def test_history_errors_are_json(node: Any, path: str, status: int, fragment: str) -> None:
    n = node()
    n.tick(2)
    r = n.client.get(path)
    assert r.status_code == status
    body = r.json()
    assert set(body) == {"error", "detail"} and fragment in body["detail"]
