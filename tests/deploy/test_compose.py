"""deploy/compose: the agent (demo without a GPU), Prometheus with the rules, Grafana with the dashboards."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
PROMTOOL = Path("/usr/bin/promtool")


def _compose() -> dict:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


def _mounts(service: dict) -> dict[str, str]:
    """container path -> host path (resolved against the compose file's directory)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        out[target] = source
    return out


def test_three_services() -> None:
    services = _compose()["services"]
    assert set(services) == {"agent", "prometheus", "grafana"}
    assert services["prometheus"]["depends_on"] == ["agent"]
    for name, service in services.items():
        image = service.get("image", "")
        if name != "agent":
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image"


def test_agent_runs_the_demo_without_a_gpu_and_serve_with_one() -> None:
    agent = _compose()["services"]["agent"]
    assert agent["build"]["context"] == "../.."
    assert agent["command"][0] == "demo"
    assert "0.0.0.0:10835" in agent["command"]
    assert agent["read_only"] is True and agent["cap_drop"] == ["ALL"]
    gpu = yaml.safe_load((COMPOSE / "docker-compose.gpu.yml").read_text())["services"]["agent"]
    assert gpu["command"][0] == "serve"
    assert gpu["pid"] == "host"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"


def test_mounted_host_paths_exist() -> None:
    for name, service in _compose()["services"].items():
        for target, source in _mounts(service).items():
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name}: {source} -> {target} does not exist"


def test_prometheus_loads_the_shipped_rules_and_scrapes_the_agent() -> None:
    prometheus = _compose()["services"]["prometheus"]
    mounts = _mounts(prometheus)
    assert (COMPOSE / mounts["/etc/prometheus/rules"]).resolve() == (REPO / "dashboards" / "rules").resolve()
    config = yaml.safe_load((COMPOSE / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "gpulse"
    assert job["static_configs"] == [{"targets": ["agent:10835"]}]


@pytest.mark.skipif(not PROMTOOL.exists(), reason="/usr/bin/promtool missing (Debian package 'prometheus')")
def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    # Lay the files out as the container sees them, with the rule path made local.
    config = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())
    shutil.copytree(REPO / "dashboards" / "rules", tmp_path / "rules", ignore=shutil.ignore_patterns("tests"))
    config["rule_files"] = [str(tmp_path / "rules" / "*.rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run([str(PROMTOOL), "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_grafana_is_provisioned_with_the_datasource_and_dashboards() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = COMPOSE / mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True  # the dashboards' ${datasource} picks it
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "gpulse.yml").read_text())["providers"]
    path = provider["options"]["path"]
    host_dir = (COMPOSE / mounts[path]).resolve()
    assert host_dir == (REPO / "dashboards").resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path) and (host_dir / Path(home).name).exists()
