"""Every dashboard query, evaluated by promtool over synthetic series of two attributed GPUs.

The end-to-end test runs every query against the real agent, but the simulated fleet has no
Kubernetes pods or Slurm jobs, so the per-pod and per-job queries cannot return data there. Here
the input has both (GPU 0 belongs to pod ml/train-0, GPU 1 to Slurm job 42), the shipped recording
rules run over it, and each query must return at least one sample: the joins, label names and
filters of every panel are exercised with data, in CI, without a GPU or an agent.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.model import GPU_STATES
from exporters.catalog import BY_NAME, COUNTER, THROTTLE_REASONS

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
PROMTOOL = Path("/usr/bin/promtool")
NODE = 'instance="node-a:10835",job="gpulse"'
GPUS = {"0": "GPU-0", "1": "GPU-1"}
STEPS = 40  # one-minute samples
# Agent seconds per minute in each state: GPU 0 trains with starvation and some throttling,
# GPU 1 is an LLM decode server (mostly memory-bound).
STATES = {
    "0": {"compute_bound": 30, "starved_host": 18, "throttled_power": 6, "throttled_thermal": 6},
    "1": {"memory_bound": 48, "starved_other": 12},
}
OWNERS = {"0": {"pod": "train-0", "namespace": "ml", "container": "trainer", "slurm_job": ""},
          "1": {"pod": "", "namespace": "", "container": "", "slurm_job": "42"}}
PIDS = {"0": "100", "1": "200"}


def _labels(**labels: str) -> str:
    return ",".join([NODE, *(f'{k}="{v}"' for k, v in labels.items())])


def _series(metric: str, values: str, **labels: str) -> dict[str, str]:
    return {"series": f"{metric}{{{_labels(**labels)}}}", "values": values}


def _counter(per_minute: float) -> str:
    return f"0+{per_minute:g}x{STEPS}"


def _gauge(value: float) -> str:
    return f"{value:g}x{STEPS}"


def _gpu_series(gpu: str) -> list[dict[str, str]]:
    uuid = GPUS[gpu]
    g = {"gpu": gpu, "uuid": uuid}
    out = [_series("gpulse_gpu_state_seconds_total", _counter(STATES[gpu].get(state, 0)), **g, state=state)
           for state in GPU_STATES]
    out += [_series("gpulse_gpu_throttle_seconds_total", _counter(6 if reason == "sw_power_cap" else 0), **g,
                    reason=reason) for reason in THROTTLE_REASONS]
    out += [_series("gpulse_gpu_clock_event_active", _gauge(1 if reason == "sw_power_cap" else 0), **g,
                    reason=reason) for reason in ("sw_power_cap", "sw_thermal_slowdown", "hw_slowdown")]
    out += [_series("gpulse_gpu_peak_flops", _gauge(1000), **g, precision=p) for p in ("bf16", "fp32")]
    out += [_series("gpulse_gpu_estimated_flops_total", _counter(18000 if gpu == "0" else 3000), **g,
                    precision="bf16"),
            _series("gpulse_gpu_estimated_flops_total", _counter(600), **g, precision="fp32"),
            _series("gpulse_gpu_reported_flops_total", _counter(0), **g),
            _series("gpulse_gpu_peak_memory_bandwidth_bytes_per_second", _gauge(1000), **g),
            _series("gpulse_gpu_estimated_dram_bytes_total", _counter(42000 if gpu == "1" else 12000), **g)]
    out += [_series(f"gpulse_gpu_{name}_seconds_total", _counter(40), **g)
            for name in ("busy", "sm_active", "tensor_active", "dram_active", "clock_lost")]
    out += [_series(f"gpulse_gpu_{name}_bytes_total", _counter(6e9), **g)
            for name in ("pcie_transmit", "pcie_receive", "nvlink_transmit", "nvlink_receive")]
    out += [_series("gpulse_gpu_temperature_celsius", _gauge(70), **g, sensor=s) for s in ("gpu", "memory")]
    out += [_series("gpulse_gpu_temperature_threshold_celsius", _gauge(t), **g, threshold=name)
            for name, t in (("slowdown", 87), ("shutdown", 92))]
    uncorrected = ("1", "volatile", "uncorrected")  # GPU 1 has one
    out += [_series("gpulse_gpu_ecc_errors_total", _gauge(int((gpu, c, t) == uncorrected)), **g, counter=c,
                    type=t)
            for c in ("volatile", "aggregate") for t in ("corrected", "uncorrected")]
    gauges = {"up": 1, "sm_clock_hertz": 1.7e9, "sm_clock_max_hertz": 1.98e9, "power_watts": 600,
              "power_limit_watts": 700, "energy_joules_total": None, "thermal_headroom_celsius": 17,
              "power_headroom_watts": 100, "memory_used_bytes": 6e10, "memory_total_bytes": 8e10,
              "row_remap_pending": 1 if gpu == "0" else 0, "row_remap_failure": 0, "retired_pages_pending": 0}
    for name, value in gauges.items():
        metric = f"gpulse_gpu_{name}"
        out.append(_series(metric, _counter(36000) if value is None else _gauge(value), **g))
    out.append(_series("gpulse_gpu_info", _gauge(1), **g, name="NVIDIA H100 80GB HBM3"))
    out.append(_series("gpulse_gpu_allocation_info", _gauge(1), **g, **OWNERS[gpu]))
    out.append(_series("gpulse_process_gpu_memory_bytes", _gauge(3e10), **g, pid=PIDS[gpu]))
    out.append(_series("gpulse_process_gpu_sm_utilization_ratio", _gauge(0.7), **g, pid=PIDS[gpu]))
    if gpu == "0":
        out.append(_series("gpulse_gpu_xid_errors_total", _gauge(1), **g, xid="79"))
    return out


def _node_series() -> list[dict[str, str]]:
    out = [{"series": f"up{{{NODE}}}", "values": _gauge(1)},
           _series("gpulse_host_cpus", _gauge(4))]
    out += [_series("gpulse_host_cpu_seconds_total", _counter(r), mode=m)
            for m, r in (("user", 120), ("system", 24), ("iowait", 6), ("idle", 90))]
    out += [_series("gpulse_host_pressure_stall_seconds_total", _counter(6), resource=r, kind=k)
            for r in ("cpu", "io", "memory") for k in ("some", "full")]
    for gpu, pid in PIDS.items():
        owner = OWNERS[gpu]
        out.append(_series("gpulse_process_info", _gauge(1), pid=pid, comm="python3", user="ml",
                           container_id="c0ffee", **owner))
        out += [_series("gpulse_process_cpu_seconds_total", _counter(30), pid=pid, mode=m)
                for m in ("user", "system")]
    return out


SERIES = _gpu_series("0") + _gpu_series("1") + _node_series()


def _queries() -> list[tuple[str, str]]:
    """(panel, expr) of every dashboard target, variables filled as Grafana would."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        single = not board["templating"]["list"][1]["multi"]
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name, value in (("$__rate_interval", "3m"), ("$__interval", "1m"), ("$__range", "10m"),
                                    ("$instance", "node-a:10835" if single else ".*"), ("$gpu", ".*")):
                    expr = expr.replace(name, value)
                out.append((f"{board['title']} / {panel['title']} / {target['refId']}", expr))
    return out


def test_synthetic_series_cover_every_metric_the_dashboards_read() -> None:
    fed = {s["series"].split("{")[0] for s in _gpu_series("0") + _node_series()}
    recorded = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")
    used = {name for _, expr in _queries()
            for name in re.findall(r"\b(gpulse_[a-z0-9_]+)\b", recorded.sub("", expr))}
    assert used <= fed, sorted(used - fed)
    for name in fed - {"up"}:
        assert name in BY_NAME, name
        assert (BY_NAME[name].type == COUNTER) == name.endswith("_total"), name


@pytest.mark.skipif(not PROMTOOL.exists(), reason="/usr/bin/promtool missing: install Debian's 'prometheus'")
def test_every_dashboard_query_returns_data(tmp_path: Path) -> None:
    queries = _queries()
    assert len(queries) >= 60
    tests = [{"expr": f"(count(({expr})) > bool 0) or vector(0)", "eval_time": "30m",
              "exp_samples": [{"labels": "{}", "value": 1}]} for _, expr in queries]
    spec = {
        "rule_files": [str(REPO / "dashboards" / "rules" / "gpulse-recording.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": SERIES, "promql_expr_test": tests}],
    }
    path = tmp_path / "dashboard-queries.test.yml"
    path.write_text(yaml.safe_dump(spec, width=1000))
    result = subprocess.run([str(PROMTOOL), "test", "rules", str(path)], capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        # promtool quotes each failing expression Go-style, which JSON reads back.
        failing = {json.loads(m) for m in re.findall(r'expr: ("(?:[^"\\]|\\.)*"), time:', output)}
        failed = [panel for panel, expr in queries if f"(count(({expr})) > bool 0) or vector(0)" in failing]
        pytest.fail(f"queries without data or with errors: {failed or '(see output)'}\n{output[-3000:]}")
    assert "SUCCESS" in output
