"""End to end: the real agent (`gpulse demo`, default scenario, speed 20) scraped by a real Prometheus
running the shipped recording and alerting rules; every recording rule and every dashboard query
must return data, and the scenario's alerts must be the active ones.

Time: the simulated clock runs 20 times faster than Prometheus' clock, so counters of simulated
seconds grow 20 times faster per real second. The rules never divide by wall time: every share,
MFU and MBU is a ratio of two rates over the same window, with the GPU's accounted seconds
(the sum of its ``gpulse_gpu_state_seconds_total``) as the denominator, so they read the same at
any speed (``test_shares_do_not_depend_on_the_clock_speed`` checks it).

Alerts: their ``for:`` durations (minutes) are far longer than this test. We read the alert
states Prometheus itself computes from the shipped rules (``/api/v1/rules``): an alert whose
expression holds is *pending* until its ``for:`` has passed, then *firing*; we count both as
active. That checks the real expressions, thresholds and label sets; ``for:`` itself is covered
by the promtool unit tests (dashboards/rules/tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_stack import (
    PROMETHEUS,
    PanelQuery,
    PrometheusStack,
    alert_names,
    dashboard_queries,
    recording_rules,
)

from agent.sim.scenario import load_scenario
from agent.specs import SPECS

pytestmark = pytest.mark.e2e

SPEED = 20.0
WARMUP_S = 25.0  # real seconds of scraping before the checks: ~500 simulated seconds
REPORTED_MFU = 0.4  # the MFU our fake training loop reports for GPU 0


def _needs_prometheus() -> None:
    if not Path(PROMETHEUS).exists():
        pytest.skip(f"{PROMETHEUS} not installed (Debian package 'prometheus'); the e2e test needs it")


class FlopsReporter(threading.Thread):
    """Plays a training loop on GPU 0 that reports its model FLOPs: REPORTED_MFU of the bf16 peak.

    Its clock is the simulated one: the loop does REPORTED_MFU x peak FLOPs per second of GPU 0's
    accounted time, read from the agent's own /metrics.
    """

    def __init__(self, agent_url: str, pid: int) -> None:
        super().__init__(daemon=True)
        self.agent_url = agent_url
        self.pid = pid
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.sent = 0
        self.peak = SPECS["H100-SXM"].peak_flops["bf16"]

    def _gpu0_seconds(self, client: httpx.Client) -> float:
        text = client.get(f"{self.agent_url}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("gpulse_gpu_state_seconds_total{") and 'gpu="0"' in line)

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            start: float | None = None
            while not self.stop.wait(0.5):
                try:
                    now = self._gpu0_seconds(client)
                    start = now if start is None else start
                    total = REPORTED_MFU * self.peak * (now - start)
                    response = client.post(f"{self.agent_url}/api/v1/workloads/report",
                                           json={"pid": self.pid, "model_flops_total": total})
                except httpx.HTTPError as exc:  # the test reads errors; a dead thread would tell nothing
                    self.errors.append(repr(exc))
                    continue
                if response.status_code == 200:
                    self.sent += 1
                else:
                    self.errors.append(f"{response.status_code} {response.text[:200]}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusStack]:
    _needs_prometheus()
    s = PrometheusStack(tmp_path_factory.mktemp("prometheus-e2e"), speed=SPEED)
    reporter: FlopsReporter | None = None
    try:
        s.start()
        pid = _pid_on_gpu(s, "0")
        reporter = FlopsReporter(s.agent_url, pid)
        reporter.start()
        s.reporter = reporter
        _wait_for_rules(s)
        yield s
    finally:
        if reporter is not None:
            reporter.stop.set()
            reporter.join(timeout=5)
        s.stop()


def _pid_on_gpu(s: PrometheusStack, gpu: str) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = s.query(f'gpulse_process_gpu_memory_bytes{{gpu="{gpu}"}}')
        if found:
            return int(found[0]["metric"]["pid"])
        time.sleep(0.5)
    raise AssertionError(f"no process on GPU {gpu} within 20 s\n{s.logs()}")


def _wait_for_rules(s: PrometheusStack) -> None:
    """Scrape WARMUP_S seconds, and at least until every recording rule has data (or 60 s)."""
    start = time.monotonic()
    names = recording_rules()
    while True:
        elapsed = time.monotonic() - start
        missing = [name for name in names if not s.query(name)]
        if (elapsed >= WARMUP_S and not missing) or elapsed > 60:
            return
        time.sleep(1.0)


def _owner_query(q: PanelQuery) -> bool:
    return "gpulse_gpu_allocation_info" in q.expr


# --- recording rules -------------------------------------------------------------------------------


def test_rules_evaluate_without_errors(stack: PrometheusStack) -> None:
    assert stack.rule_health() == {}


def test_every_recording_rule_returns_data(stack: PrometheusStack) -> None:
    empty = [name for name in recording_rules() if not stack.query(name)]
    assert not empty, f"recording rules without data: {empty}\n{stack.logs()}"


def test_shares_do_not_depend_on_the_clock_speed(stack: PrometheusStack) -> None:
    # The accounted seconds run about 20 times faster than Prometheus' clock. (Read over a short
    # window: rate() divides by its whole window, and Prometheus has less than 5 minutes of data.)
    clock = stack.query("avg(sum without (state) (rate(gpulse_gpu_state_seconds_total[10s])))")
    assert float(clock[0]["value"][1]) > 5.0
    # ... while every GPU's shares still add up to 1, and MFU/MBU stay ratios of their peak.
    sums = stack.query("sum by (gpu) (gpu:gpulse_gpu_state_seconds:ratio_rate5m)")
    assert len(sums) == 8
    assert all(float(s["value"][1]) == pytest.approx(1.0, abs=1e-6) for s in sums)
    for rule in ("gpu:gpulse_gpu_mfu:ratio_rate5m", "gpu:gpulse_gpu_mbu:ratio_rate5m"):
        values = [float(s["value"][1]) for s in stack.query(rule)]
        assert values and all(0.0 <= v <= 1.0 for v in values), (rule, values)


def test_reported_mfu_is_preferred_and_speed_corrected(stack: PrometheusStack) -> None:
    reporter = stack.reporter
    assert not reporter.errors, f"POST /api/v1/workloads/report failed: {reporter.errors[:3]}"
    assert reporter.sent >= 5
    reported = stack.query('gpu:gpulse_gpu_mfu:ratio_rate5m{gpu="0"}')
    assert len(reported) == 1
    assert reported[0]["metric"]["source"] == "reported"
    # What the loop reports per simulated second, not 20 times it.
    assert float(reported[0]["value"][1]) == pytest.approx(REPORTED_MFU, rel=0.25)
    others = stack.query('gpu:gpulse_gpu_mfu:ratio_rate5m{gpu!="0"}')
    assert others and {s["metric"]["source"] for s in others} == {"estimated"}


# --- dashboards ------------------------------------------------------------------------------------


def _variables(stack: PrometheusStack, dashboard: str) -> dict[str, str]:
    # Multi-value variables set to "All" (".*", the dashboards' allValue); the node dashboard's
    # instance variable is single-valued: our one agent.
    instance = stack.instance if dashboard == "gpulse / Node & GPU detail" else ".*"
    return {"datasource": "prometheus", "instance": instance, "gpu": ".*"}


DASHBOARD_TITLES = ("gpulse / Fleet overview", "gpulse / Node & GPU detail", "gpulse / Workload efficiency")


def _all_queries(stack: PrometheusStack) -> list[PanelQuery]:
    queries = []
    for dashboard in DASHBOARD_TITLES:
        queries += [q for q in dashboard_queries(_variables(stack, dashboard)) if q.dashboard == dashboard]
    return queries


def _run(stack: PrometheusStack, q: PanelQuery) -> list[dict[str, object]]:
    return stack.query(q.expr) if q.instant else stack.query_range(q.expr)


def test_dashboards_have_queries(stack: PrometheusStack) -> None:
    # Guards the next tests against passing vacuously.
    assert len(_all_queries(stack)) >= 60


def test_every_dashboard_query_returns_data(stack: PrometheusStack) -> None:
    failures = []
    for q in _all_queries(stack):
        if _owner_query(q):
            continue  # test_owner_queries_return_data
        try:
            if not _run(stack, q):
                failures.append(f"{q}: no data\n    {q.expr}")
        except RuntimeError as exc:
            failures.append(f"{q}: {exc}")
    assert not failures, "\n".join(failures)


def test_owner_queries_return_data(stack: PrometheusStack) -> None:
    owner_queries = [q for q in _all_queries(stack) if _owner_query(q)]
    assert owner_queries
    failures = []
    for q in owner_queries:  # every one must at least parse and evaluate
        try:
            _run(stack, q)
        except RuntimeError as exc:
            failures.append(f"{q}: {exc}")
    assert not failures, "\n".join(failures)
    # The default scenario gives its GPUs pods and a Slurm job: the per-workload panels must have data.
    assert stack.query("gpulse_gpu_allocation_info{pod!=\"\"}"), "the demo exports no pod allocations"
    assert stack.query("gpulse_gpu_allocation_info{slurm_job!=\"\"}"), "the demo exports no Slurm allocations"
    empty = [f"{q}\n    {q.expr}" for q in owner_queries if not _run(stack, q)]
    assert not empty, "no data:\n" + "\n".join(empty)


# --- alerts ----------------------------------------------------------------------------------------


def _expected_alerts() -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(required, allowed) (alert, gpu) pairs, read from the default scenario itself."""
    scenario = load_scenario("default")
    required: set[tuple[str, str]] = set()
    allowed: set[tuple[str, str]] = set()
    for position, entry in enumerate(scenario.gpus):
        workload = entry.workload
        if not workload.waits or workload.wait_s / (workload.wait_s + workload.compute_s) <= 0.3:
            continue
        if workload.wait_cause in ("host_cpu", "io"):
            required.add(("GpuDataStarvation", str(position)))
        else:
            # Waiting on the network is starvation too (starved_other); whether it shows depends on
            # how long the GPU ran before it was lost.
            allowed.add(("GpuDataStarvation", str(position)))
    for event in scenario.events:
        index = str(event.gpu)
        if event.kind == "cooling_failure":
            # Throttling, and running within a few degrees of the slowdown threshold while it does.
            required |= {("GpuThermalThrottling", index), ("GpuTemperatureNearSlowdown", index)}
        elif event.kind == "power_cap":
            required.add(("GpuPowerThrottling", index))  # info: held at the cap the operator set
        elif event.kind == "xid":
            required.add(("GpuXidCritical", index))
        elif event.kind == "gpu_lost":
            required.add(("GpuUnavailable", index))
    return required, required | allowed


def test_scenario_alerts_are_active_and_no_others(stack: PrometheusStack) -> None:
    required, allowed = _expected_alerts()
    assert {name for name, _ in required} == {
        "GpuDataStarvation", "GpuThermalThrottling", "GpuXidCritical", "GpuUnavailable",
        "GpuTemperatureNearSlowdown", "GpuPowerThrottling"}
    active = stack.alert_states()
    missing = required - set(active)
    unexpected = {key: state for key, state in active.items() if key not in allowed}
    assert not missing, f"expected alerts not active: {sorted(missing)}; active: {active}"
    assert not unexpected, f"alerts that should stay inactive: {unexpected}"
    # Everything else stays inactive, LLM decode's low MFU above all.
    assert {name for name, _ in active} <= alert_names()
    assert not any(name in ("GpuLowMfu", "GpuLowMbu") for name, _ in active)
