"""The engine inside the real agent pipeline: Runtime + sampler ticks over the simulated fleet."""

from __future__ import annotations

import pytest

from agent.clock import ManualClock
from agent.config import Settings
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.runtime import Runtime
from agent.signals.diagnosis import diagnose_store
from agent.signals.engine import SignalEngine
from agent.sim.fleet import Fleet
from agent.sim.scenario import parse_scenario

SCENARIO = """
seed: 1
gpus:
  - {model: H100-SXM, workload: {kind: training, precision: bf16}}
  - {model: H100-SXM, workload: {kind: training, precision: bf16, compute_s: 0.1, wait_s: 0.15,
                                 wait_cause: host_cpu, workers: 4, cpu_quota: 5}}
  - {model: H100-SXM, workload: {kind: idle}}
"""
STATE = "gpulse_gpu_state_seconds_total"


@pytest.fixture
def runtime():
    clock = ManualClock(0.0)
    fleet = Fleet.from_scenario(parse_scenario(SCENARIO), clock)
    rt = Runtime(Settings(interval_seconds=1.0), NvmlBackend(FakeNvml(fleet.models, clock), clock),
                 fleet.host_source, clock, renderer=lambda snapshot: None)
    yield rt, clock
    rt.stop()


def test_the_runtime_books_states_peaks_and_a_diagnosis(runtime) -> None:
    rt, clock = runtime
    assert isinstance(rt.signals, SignalEngine)
    snapshot = None
    for _ in range(40):
        clock.advance(1.0)
        snapshot = rt.sampler.tick()
    assert snapshot is not None
    states = {i: {labels[0][1]: v for (name, labels), v in snapshot.gpu_counters[i].items() if name == STATE}
              for i in range(3)}
    total = sum(states[1].values())
    assert total == pytest.approx(sum(states[0].values()), rel=0.05) and total > 30
    assert states[0]["compute_bound"] / total > 0.95
    assert states[1]["starved_host"] / total == pytest.approx(0.6, abs=0.06)
    assert states[2]["idle"] / total > 0.95
    assert snapshot.gpu_gauges[0][("gpulse_gpu_peak_flops", (("precision", "bf16"),))] == 989.5e12
    flops = snapshot.gpu_counters[0][("gpulse_gpu_estimated_flops_total", (("precision", "bf16"),))]
    assert flops > 0
    [_, starved, _] = diagnose_store(rt.store, rt.store.latest(), 0.5, precision="bf16", min_share=0.1)
    assert starved.problem == "starved_host"
    assert "used their whole 5-CPU quota" in starved.sentence
