"""Runtime wiring, node metrics, health, and a real agent process stopped by SIGTERM."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.clock import ManualClock
from agent.config import Settings, bcrypt_available
from agent.runtime import (
    AGENT_CPU,
    AGENT_RSS,
    STARTUP_GRACE_SECONDS,
    NodeMetrics,
    Runtime,
    SelfUsage,
    default_renderer,
    default_signal_engine,
)
from agent.specs import SpecTable
from exporters.prometheus import OPENMETRICS

ROOT = Path(__file__).resolve().parents[2]
TEST_HASH = "$2y$10$8TpGNPHzCN0szEoTiJ3jOucgQI4afrENI7d32EKH9mjGwThz2C5ca"  # htpasswd -nbBC 10 "" test


def test_node_metrics_feed_the_snapshot(scripted_gpu: Any, static_host: Any) -> None:
    clock = ManualClock(0.0)
    rt = Runtime(Settings(), scripted_gpu(1, clock), static_host(clock), clock, renderer=lambda s: None)
    rt.node_metrics.inc("gpulse_profiles_total", {"trigger": "manual"})
    rt.node_metrics.inc("gpulse_profiles_total", (("trigger", "manual"),), 2)
    rt.node_metrics.set("gpulse_process_gpu_memory_bytes", {"gpu": "0", "uuid": "GPU-0000", "pid": "1"}, 5.0)
    snap = rt.sampler.tick()
    own = {AGENT_CPU, AGENT_RSS}
    assert {k: v for k, v in snap.node_counters.items() if k[0] not in own} == {
        ("gpulse_profiles_total", (("trigger", "manual"),)): 3.0
    }
    key = ("gpulse_process_gpu_memory_bytes", (("gpu", "0"), ("uuid", "GPU-0000"), ("pid", "1")))
    assert {k: v for k, v in snap.node_gauges.items() if k[0] not in own} == {key: 5.0}
    rt.node_metrics.replace("gpulse_process_gpu_memory_bytes", {(("gpu", "0"), ("pid", "2")): 7.0})
    gauges = rt.node_metrics.gauges()
    assert {k: v for k, v in gauges.items() if k[0] not in own} == {
        ("gpulse_process_gpu_memory_bytes", (("gpu", "0"), ("pid", "2"))): 7.0
    }
    rt.node_metrics.remove("gpulse_process_gpu_memory_bytes", (("gpu", "0"), ("pid", "2")))
    assert [k for k in rt.node_metrics.gauges() if k[0] not in own] == []
    assert snap.node_counters is not rt.node_metrics.counters()  # the snapshot holds a copy


def test_each_tick_reports_the_agents_own_cpu_and_resident_memory(
    scripted_gpu: Any, static_host: Any
) -> None:
    clock = ManualClock(0.0)
    rt = Runtime(Settings(), scripted_gpu(1, clock), static_host(clock), clock)
    first = rt.sampler.tick()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn a little CPU between the ticks
        pass
    clock.advance(1.0)
    second = rt.sampler.tick()
    cpu0, cpu1 = first.node_counters[(AGENT_CPU, ())], second.node_counters[(AGENT_CPU, ())]
    assert cpu1 - cpu0 >= 0.04
    times = os.times()
    assert cpu1 <= times.user + times.system
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    rss = second.node_gauges[(AGENT_RSS, ())]
    assert 0.5 * resident < rss < 2 * resident  # the current RSS, not getrusage's peak in KiB
    text = rt.store.exposition().negotiate(None, None)[0].decode()
    assert f"{AGENT_CPU} " in text and f"{AGENT_RSS} " in text


def test_the_resident_memory_is_fresh_each_tick_from_the_kept_open_statm() -> None:
    metrics = NodeMetrics()
    usage = SelfUsage(metrics)
    usage.update()
    before = metrics.gauges()[(AGENT_RSS, ())]
    ballast = b"x" * (64 << 20)  # written, so resident
    usage.update()
    after = metrics.gauges()[(AGENT_RSS, ())]
    assert after - before > 48 << 20
    del ballast
    usage.close()


def test_no_resident_memory_series_where_statm_cannot_be_read(tmp_path: Path) -> None:
    metrics = NodeMetrics()
    usage = SelfUsage(metrics, statm=str(tmp_path / "missing"))
    usage.update()
    usage.update()
    assert metrics.gauges() == {}
    assert metrics.counters()[(AGENT_CPU, ())] > 0


def test_node_metrics_are_thread_safe() -> None:
    metrics = NodeMetrics()

    def hammer() -> None:
        for _ in range(2000):
            metrics.inc("x_total", {"a": "b"})

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert metrics.counters() == {("x_total", (("a", "b"),)): 8000.0}


def test_health_grace_before_the_first_tick(scripted_gpu: Any, static_host: Any) -> None:
    clock = ManualClock(0.0)
    rt = Runtime(Settings(), scripted_gpu(1, clock), static_host(clock), clock, renderer=lambda s: None)
    assert rt.health()[0]
    clock.advance(STARTUP_GRACE_SECONDS + 1)
    healthy, why = rt.health()
    assert not healthy and "has not ticked" in why


def test_default_engine_and_renderer_are_the_feature_modules() -> None:
    engine = default_signal_engine(Settings(), SpecTable())
    assert type(engine).__module__ == "agent.signals.engine"
    renderer = default_renderer()
    assert renderer is not None and type(renderer).__module__ == "exporters.prometheus"


def test_bodies_a_scraper_asked_for_are_prepared_on_the_sampler_thread(
    scripted_gpu: Any, static_host: Any
) -> None:
    clock = ManualClock(0.0)
    rt = Runtime(Settings(interval_seconds=0.1), scripted_gpu(1, clock), static_host(clock), clock)
    rt.sampler.tick()
    first = rt.store.exposition()
    openmetrics = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    _, headers = first.negotiate(openmetrics, "gzip")
    assert headers["Content-Encoding"] == "gzip"
    clock.advance(0.1)
    rt.sampler.tick()
    second = rt.store.exposition()
    assert second is not first
    # built by the tick (the sampler thread), before any scrape asked this exposition for it
    assert (OPENMETRICS, True) in second.prepared


def test_stop_shuts_nvml_down_even_with_a_device_hung(scripted_gpu: Any, static_host: Any) -> None:
    clock = ManualClock(0.0)
    gpu = scripted_gpu(2, clock)
    rt = Runtime(Settings(interval_seconds=0.1), gpu, static_host(clock), clock, renderer=lambda s: None)
    rt.sampler.tick()
    rt.start()
    gpu.block(1)
    clock.advance(0.5)
    time.sleep(0.1)
    start = time.monotonic()
    rt.stop(timeout=1.5)
    assert time.monotonic() - start < 1.8
    assert gpu.closed


def test_stop_closes_a_host_source_that_keeps_files_open(scripted_gpu: Any, static_host: Any) -> None:
    clock = ManualClock(0.0)
    host = static_host(clock)
    closed = threading.Event()
    host.close = closed.set  # the real host backend keeps /proc files open between reads
    rt = Runtime(Settings(interval_seconds=0.1), scripted_gpu(1, clock), host, clock, renderer=lambda s: None)
    rt.sampler.tick()
    rt.stop(timeout=1.0)
    assert closed.is_set()


# --- a real agent process ---------------------------------------------------------------------

CHILD = r"""
import sys, threading
from agent.clock import MonotonicClock
from agent.config import Settings, bcrypt_available
from agent.model import HostReading
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.nvml.steady import SteadyDevice
from agent.runtime import Runtime, run_agent
from agent.specs import SPECS

clock = MonotonicClock()

class Host:
    def read(self, gpu_pids):
        return HostReading(clock.now(), cpu_count=1)

fake = FakeNvml([SteadyDevice(SPECS["H100-SXM"], i) for i in range(4)], clock)
rt = Runtime(Settings(interval_seconds=0.2), NvmlBackend(fake, clock), Host(), clock)
if "--hang" in sys.argv:  # once sampling runs, GPU 0's calls hang for ten minutes
    rt.tick_listeners.append(lambda s: s.ticks == 3 and fake.block(0, 600.0))
code = run_agent(rt, "127.0.0.1:0")
print(f"exit {code} nvmlShutdown {fake.system_calls['nvmlShutdown']}", flush=True)
sys.exit(code)
"""


class Agent:
    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env = {k: v for k, v in env.items() if not k.startswith("GPULSE_")}
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.banner = self._wait_for("gpulse listening on ")
        self.url = self.banner.split("gpulse listening on ", 1)[1].split()[0]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def _wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"agent never printed {text!r}: {''.join(self.output)}")

    def wait_until(self, predicate: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                try:
                    if predicate(client):
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"condition not met: {''.join(self.output)}")

    def sigterm(self) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        return code, time.monotonic() - start


@pytest.mark.parametrize("hang", [False, True], ids=["healthy", "gpu-hung"])
def test_sigterm_exits_cleanly_within_2_s_with_nvml_shut_down(hang: bool) -> None:
    agent = Agent([sys.executable, "-c", CHILD, *(["--hang"] if hang else [])])
    assert agent.url.startswith("http://127.0.0.1:") and agent.url.endswith("/")
    assert agent.banner.startswith(f"gpulse listening on {agent.url} (live page; metrics at /metrics")
    agent.wait_until(lambda c: c.get("/readyz").status_code == 200)
    if hang:
        agent.wait_until(lambda c: c.get("/api/v1/gpus").json()[0]["status"] == "unresponsive")
    code, took = agent.sigterm()
    print(f"SIGTERM to exit: {took:.2f} s")
    assert code == 0, "".join(agent.output)
    assert took < 2.0
    assert any("nvmlShutdown 1" in line for line in agent.output), "".join(agent.output)


def test_gpulse_serve_runs_and_stops_on_sigterm() -> None:
    """The real command on this machine's driver (host-only where there is none)."""
    agent = Agent([sys.executable, "-m", "agent", "serve", "--listen", "127.0.0.1:0", "--interval", "0.5"])
    agent.wait_until(lambda c: c.get("/readyz").status_code == 200)
    with httpx.Client(base_url=agent.url, timeout=2) as client:
        ready = client.get("/readyz").json()
        metrics = client.get("/metrics").text
        # what the start-up line names is there
        assert client.get("/").status_code == 200 and client.get("/docs").status_code == 200
    assert "(live page; metrics at /metrics, API docs at /docs)" in agent.banner
    assert f"{AGENT_CPU} " in metrics and f"{AGENT_RSS} " in metrics
    assert ready["mode"] in ("host-only", "gpu")
    assert ("gpulse_nvml_up 0" in metrics) == (ready["mode"] == "host-only")
    code, took = agent.sigterm()
    assert code == 0 and took < 2.0, "".join(agent.output)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_and_basic_auth_from_the_web_config(tmp_path: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    web = tmp_path / "web.yaml"
    users = f"basic_auth_users:\n  prom: '{TEST_HASH}'\n" if bcrypt_available() else ""
    web.write_text(f"tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n{users}")
    config = tmp_path / "gpulse.yaml"
    config.write_text(f"web_config_file: {web}\ninterval_seconds: 0.5\n")
    agent = Agent(
        [sys.executable, "-m", "agent", "serve", "--config", str(config), "--listen", "127.0.0.1:0"]
    )
    assert agent.url.startswith("https://127.0.0.1:")
    auth = ("prom", "test") if users else None
    with httpx.Client(base_url=agent.url, verify=str(tmp_path / "cert.pem"), timeout=5) as client:
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/metrics", auth=auth).status_code == 200
        if users:
            assert client.get("/metrics").status_code == 401
    with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
        httpx.get(agent.url.replace("https://", "http://") + "metrics", timeout=2)
    code, _ = agent.sigterm()
    assert code == 0
