"""A real Prometheus scraping a real gpulse agent on loopback, for the end-to-end tests.

``PrometheusStack`` starts both as subprocesses in a temporary directory, waits for the
scrape to work and tears both down. ``dashboard_queries`` reads every panel query of the
committed dashboards with the template variables filled in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "dashboards" / "rules"
DASHBOARDS_DIR = REPO / "dashboards"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

# Grafana's built-in interval variables, replaced the way Grafana would for a short time range
# with a 1 s scrape interval: $__rate_interval is at least four scrape intervals.
GRAFANA_INTERVALS = {"$__rate_interval": "20s", "$__interval": "2s", "$__range": "2m"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.rules.yml"))


def recording_rules() -> list[str]:
    names: list[str] = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            names += [rule["record"] for rule in group["rules"] if "record" in rule]
    return names


def alert_names() -> set[str]:
    names: set[str] = set()
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {rule["alert"] for rule in group["rules"] if "alert" in rule}
    return names


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def dashboard_queries(variables: dict[str, str]) -> Iterator[PanelQuery]:
    """Every target of every committed dashboard, variables and Grafana intervals substituted."""
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name, value in GRAFANA_INTERVALS.items():
                    expr = expr.replace(name, value)
                for name, value in variables.items():
                    expr = re.sub(rf"\$\{{{name}\}}|\${name}\b", value, expr)
                yield PanelQuery(board["title"], panel["title"], target["refId"], expr,
                                 bool(target.get("instant")))


class PrometheusStack:
    """``python -m agent demo`` plus ``prometheus`` with the shipped rules, both on loopback."""

    def __init__(self, workdir: Path, *, scenario: str = "default", speed: float = 20.0) -> None:
        self.workdir = workdir
        self.scenario = scenario
        self.speed = speed
        self.agent_port = free_port()
        self.prom_port = free_port()
        self.agent_url = f"http://127.0.0.1:{self.agent_port}"
        self.prom_url = f"http://127.0.0.1:{self.prom_port}"
        self.instance = f"127.0.0.1:{self.agent_port}"
        self.agent: subprocess.Popen[bytes] | None = None
        self.prometheus: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(timeout=10.0)
        self.reporter: Any = None  # set by a test that plays a workload reporting its FLOPs

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        agent_log = open(self.workdir / "agent.log", "wb")  # noqa: SIM115 - closed with the process
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "demo", "--scenario", self.scenario, "--speed", str(self.speed),
             "--listen", self.instance],
            cwd=REPO, stdout=agent_log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files()],
            "scrape_configs": [{"job_name": "gpulse", "static_configs": [{"targets": [self.instance]}]}],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom_log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        self.prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address={self.instance_prom}",
             "--log.level=warn"],
            cwd=self.workdir, stdout=prom_log, stderr=subprocess.STDOUT,
        )
        self._wait(lambda: self._ok(f"{self.agent_url}/readyz"), timeout_s, "the agent's /readyz")
        self._wait(lambda: self._ok(f"{self.prom_url}/-/ready"), timeout_s, "Prometheus' /-/ready")
        self._wait(self._target_up, timeout_s, "the gpulse target to be up")

    @property
    def instance_prom(self) -> str:
        return f"127.0.0.1:{self.prom_port}"

    def stop(self) -> None:
        for proc in (self.prometheus, self.agent):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.client.close()

    def logs(self) -> str:
        out = []
        for name in ("agent.log", "prometheus.log"):
            path = self.workdir / name
            if path.exists():
                out.append(f"--- {name} (tail) ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def _wait(self, ready: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc, name in ((self.agent, "agent"), (self.prometheus, "prometheus")):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.25)
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{self.logs()}")

    def _ok(self, url: str) -> bool:
        try:
            return self.client.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    def _target_up(self) -> bool:
        try:
            return bool(self.query(f'up{{job="gpulse", instance="{self.instance}"}} == 1'))
        except (httpx.HTTPError, RuntimeError):
            return False

    # -- Prometheus HTTP API --------------------------------------------------------------------

    def _api(self, path: str, params: dict[str, Any]) -> Any:
        response = self.client.get(f"{self.prom_url}{path}", params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            query = params.get("query", "")
            raise RuntimeError(f"{path} {query!r}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (a scalar comes back as one unlabelled sample)."""
        data = self._api("/api/v1/query", {"query": expr})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, seconds: float = 30.0, step: float = 1.0) -> list[dict[str, Any]]:
        end = time.time()
        data = self._api("/api/v1/query_range",
                         {"query": expr, "start": end - seconds, "end": end, "step": step})
        return list(data["result"])

    def alert_states(self) -> dict[tuple[str, str], str]:
        """(alert name, gpu label or "") -> state of every active alert (pending or firing)."""
        data = self._api("/api/v1/rules", {"type": "alert"})
        out: dict[tuple[str, str], str] = {}
        for group in data["groups"]:
            for rule in group["rules"]:
                for alert in rule.get("alerts", []):
                    out[(rule["name"], alert["labels"].get("gpu", ""))] = alert["state"]
        return out

    def rule_health(self) -> dict[str, str]:
        """Rule name -> lastError for every rule whose last evaluation failed."""
        data = self._api("/api/v1/rules", {})
        return {rule["name"]: rule.get("lastError", "") for group in data["groups"] for rule in group["rules"]
                if rule.get("health") == "err"}
