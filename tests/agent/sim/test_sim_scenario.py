"""Scenario files: the shipped ones load, and bad ones get errors that name the field."""

from __future__ import annotations

import textwrap

import pytest

from agent.sim.scenario import ScenarioError, load_scenario, parse_scenario, scenario_names, steady_scenario


def _errors(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(textwrap.dedent(text))
    return info.value.errors


def test_shipped_scenarios_load() -> None:
    names = scenario_names()
    assert {"default", "mixed", "starvation", "thermal"} <= set(names)
    for name in names:
        scenario = load_scenario(name)
        assert scenario.gpus, name
        assert all(e.gpu < len(scenario.gpus) for e in scenario.events)


def test_default_is_eight_h100_and_open_ended() -> None:
    scenario = load_scenario("default")
    assert [g.model for g in scenario.gpus] == ["H100-SXM"] * 8
    assert scenario.duration_s is None
    assert scenario.interval_s == 1.0
    kinds = {g.workload.kind for g in scenario.gpus}
    assert kinds == {"training", "inference_decode", "idle"}
    assert {e.kind for e in scenario.events} >= {"power_cap", "cooling_failure", "xid", "gpu_lost"}


def test_count_expands_and_events_sorted(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        textwrap.dedent("""
        seed: 3
        duration_s: 100
        gpus:
          - {model: A100-SXM-80GB, count: 3, workload: {kind: training, precision: tf32}}
          - {model: L4}
        events:
          - {at_s: 50, gpu: 3, kind: xid, xid: 13}
          - {at_s: 10, gpu: 0, kind: power_cap, watts: 300}
    """)
    )
    scenario = load_scenario(path)
    assert [g.model for g in scenario.gpus] == ["A100-SXM-80GB"] * 3 + ["L4"]
    assert scenario.gpus[3].workload.kind == "idle"
    assert [e.at_s for e in scenario.events] == [10, 50]
    assert scenario.events[0].watts == 300
    assert scenario.name == "s"


def test_wait_cause_error_names_the_field() -> None:
    errors = _errors("""
        gpus:
          - {model: H100-SXM}
          - {model: H100-SXM}
          - {model: H100-SXM, workload: {kind: training, wait_s: 0.1, wait_cause: cpu}}
    """)
    assert errors == ["gpus[2].workload.wait_cause: must be one of host_cpu, io, other (got 'cpu')"]


def test_event_gpu_out_of_range() -> None:
    errors = _errors("""
        gpus:
          - {model: H100-SXM, count: 8}
        events:
          - {at_s: 1, gpu: 0, kind: xid, xid: 79}
          - {at_s: 1, gpu: 1, kind: gpu_lost}
          - {at_s: 1, gpu: 2, kind: gpu_lost}
          - {at_s: 5, gpu: 9, kind: gpu_lost}
    """)
    assert errors == ["events[3].gpu: index 9 out of range (8 GPUs)"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpus: [{model: H300}]", "gpus[0].model: unknown GPU model 'H300'"),
        ("gpus: [{count: 2}]", "gpus[0].model: required"),
        ("gpus: [{model: L4, wokload: {kind: idle}}]", "gpus[0].wokload: unknown field"),
        ("gpus: [{model: L4, count: 0}]", "gpus[0].count: must be >= 1 (got 0)"),
        (
            "gpus: [{model: L4, workload: {kind: idle, precision: bf16}}]",
            "gpus[0].workload.precision: not allowed for kind idle",
        ),
        (
            "gpus: [{model: L4, workload: {kind: sleeping}}]",
            "gpus[0].workload.kind: must be one of idle, training",
        ),
        (
            "gpus: [{model: A100-SXM-80GB, workload: {kind: training, precision: fp8}}]",
            "gpus[0].workload.precision: fp8 is not in the A100-SXM-80GB spec",
        ),
        (
            "gpus: [{model: L4, workload: {kind: training, compute_s: -1}}]",
            "gpus[0].workload.compute_s: must be >= 0.001 (got -1)",
        ),
        (
            "gpus: [{model: L4, workload: {kind: training, compute_s: fast}}]",
            "gpus[0].workload.compute_s: must be a number (got 'fast')",
        ),
        (
            "gpus: [{model: L4, power_limit_w: 500}]",
            "gpus[0].power_limit_w: 500 W is outside the L4 power-limit",
        ),
        ("seed: -1\ngpus: [{model: L4}]", "seed: must be >= 0 (got -1)"),
        ("interval_s: 0.01\ngpus: [{model: L4}]", "interval_s: must be >= 0.1 (got 0.01)"),
        ("gpus: []", "gpus: must be a non-empty list"),
        ("{}", "gpus: required"),
        ("colour: blue\ngpus: [{model: L4}]", "colour: unknown field"),
        (
            "gpus: [{model: H100-SXM}]\nevents: [{at_s: 1, gpu: 0, kind: power_cap}]",
            "events[0].watts: required for kind power_cap",
        ),
        (
            "gpus: [{model: H100-SXM}]\nevents: [{at_s: 1, gpu: 0, kind: power_cap, watts: 900}]",
            "events[0].watts: 900 W is outside the H100-SXM power-limit range 200..700 W",
        ),
        (
            "gpus: [{model: H100-SXM}]\nevents: [{at_s: 1, gpu: 0, kind: gpu_lost, watts: 9}]",
            "events[0].watts: not used by kind gpu_lost",
        ),
        (
            "gpus: [{model: H100-SXM}]\nevents: [{at_s: 1, gpu: 0, kind: melt}]",
            "events[0].kind: must be one of",
        ),
        ("gpus: [{model: H100-SXM}]\nevents: [{gpu: 0, kind: gpu_lost}]", "events[0].at_s: required"),
        (
            "duration_s: 10\ngpus: [{model: H100-SXM}]\nevents: [{at_s: 20, gpu: 0, kind: gpu_lost}]",
            "events[0].at_s: 20 is after duration_s 10",
        ),
        (
            "gpus: [{model: H100-SXM}]\nevents: [{at_s: 1, gpu: 0, kind: nvml_hang, seconds: 0}]",
            "events[0].seconds: must be > 0 (got 0)",
        ),
        (
            "gpus: [{model: H100-SXM}]\nevents: [{at_s: 1, gpu: 0, kind: workload, "
            "workload: {kind: training, "
            "wait_cause: disk}}]",
            "events[0].workload.wait_cause: must be one of host_cpu, io, other (got 'disk')",
        ),
        (
            "gpus: [{model: H100-SXM}]\nevents: [{at_s: 1, gpu: true, kind: gpu_lost}]",
            "events[0].gpu: must be an integer (got True)",
        ),
    ],
)
def test_bad_fields_are_named(text: str, expected: str) -> None:
    errors = _errors(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_all_errors_are_reported_together() -> None:
    errors = _errors("""
        seed: x
        gpus:
          - {model: H100-SXM, workload: {kind: training, wait_cause: cpu}}
    """)
    assert len(errors) == 2
    assert errors[0].startswith("seed: ")
    assert errors[1].startswith("gpus[0].workload.wait_cause: ")


def test_invalid_yaml_says_where() -> None:
    errors = _errors("gpus:\n  - {model: H100-SXM\n")
    assert errors[0].startswith("line 3, column 1: not valid YAML")


def test_unknown_name_and_missing_file(tmp_path) -> None:
    with pytest.raises(ScenarioError, match=r"no shipped scenario named 'nope'.*default"):
        load_scenario("nope")
    with pytest.raises(ScenarioError, match="cannot read the file"):
        load_scenario(tmp_path / "missing.yaml")


def test_error_message_carries_the_source(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("gpus: [{model: H300}]\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: gpus[0].model: unknown GPU model 'H300'")


def test_steady_scenario() -> None:
    scenario = steady_scenario("A100-SXM-80GB", 3)
    assert len(scenario.gpus) == 3
    assert all(g.workload.kind == "training" and g.workload.wait_s == 0 for g in scenario.gpus)
    with pytest.raises(ScenarioError, match="unknown GPU model 'X1'"):
        steady_scenario("X1", 2)
    with pytest.raises(ScenarioError, match="gpus: must be between 1"):
        steady_scenario("L4", 0)


# --- owners -------------------------------------------------------------------------------------


def test_owner_applies_to_each_gpu_of_its_entry() -> None:
    scenario = parse_scenario(
        textwrap.dedent("""
        gpus:
          - {model: H100-SXM, count: 2, owner: {pod: train-0, container: trainer}}
          - {model: H100-SXM, owner: {slurm_job: "4242", user: alice, partition: gpu}}
          - {model: H100-SXM, owner: {slurm_job: 77}}
          - {model: H100-SXM}
    """)
    )
    pod, pod2, job, bare_job, nobody = (g.owner for g in scenario.gpus)
    assert pod == pod2 and pod is not None and pod.kubernetes
    assert (pod.pod, pod.namespace, pod.container) == ("train-0", "default", "trainer")  # Kubernetes' default
    assert job is not None and not job.kubernetes
    assert (job.slurm_job, job.user, job.partition) == ("4242", "alice", "gpu")
    assert bare_job is not None and (bare_job.slurm_job, bare_job.user, bare_job.partition) == (
        "77",
        None,
        None,
    )
    assert nobody is None


def test_default_scenario_owners() -> None:
    owners = [g.owner for g in load_scenario("default").gpus]
    pods = {
        i: (o.namespace, o.pod, o.container) for i, o in enumerate(owners) if o is not None and o.kubernetes
    }
    assert pods == {
        0: ("ml", "train-0", "trainer"),
        1: ("serving", "llm-decode-0", "vllm"),
        2: ("ml", "train-0", "trainer"),
        3: ("ml", "train-0", "trainer"),
    }
    jobs = {i: (o.slurm_job, o.user, o.partition) for i, o in enumerate(owners) if o and not o.kubernetes}
    assert jobs == {5: ("4242", "alice", "gpu")}
    assert [i for i, o in enumerate(owners) if o is None] == [4, 6, 7]


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        (
            "{pod: train-0, slurm_job: 1}",
            "gpus[0].owner: must be a Kubernetes pod (pod, namespace, container) or a",
        ),
        ("{}", "gpus[0].owner: must name a Kubernetes pod (pod, namespace, container) or a Slurm job"),
        ("yes", "gpus[0].owner: must be a mapping (got True)"),
        (
            "{pod: train-0, team: ml}",
            "gpus[0].owner.team: unknown field (allowed: pod, namespace, container,",
        ),
        ("{namespace: ml, container: c}", "gpus[0].owner.pod: required (the pod's name)"),
        ("{pod: train-0}", "gpus[0].owner.container: required (the container's name)"),
        ("{pod: Train_0, container: c}", "gpus[0].owner.pod: must be a DNS-1123 name"),
        ("{pod: p, namespace: ml.prod, container: c}", "gpus[0].owner.namespace: must be a DNS-1123 name"),
        ("{pod: p, container: 7}", "gpus[0].owner.container: must be a string (got 7)"),
        (
            f"{{pod: p, namespace: {'n' * 64}, container: c}}",
            "gpus[0].owner.namespace: must be a DNS-1123 name",
        ),
        ("{user: alice}", "gpus[0].owner.slurm_job: required for a Slurm owner"),
        ("{slurm_job: 0}", "gpus[0].owner.slurm_job: must be >= 1 (got 0)"),
        ("{slurm_job: job-7}", "gpus[0].owner.slurm_job: must be an integer (got 'job-7')"),
        ("{slurm_job: 7, user: 'a b'}", "gpus[0].owner.user: must be a user name"),
        ("{slurm_job: 7, partition: 'gpu,cpu'}", "gpus[0].owner.partition: must be letters, digits"),
    ],
)
def test_bad_owner_fields_are_named(owner: str, expected: str) -> None:
    errors = _errors(f"gpus:\n  - {{model: H100-SXM, workload: {{kind: training}}, owner: {owner}}}\n")
    assert any(e.startswith(expected) for e in errors), errors


def test_bad_owner_is_reported_with_the_other_errors() -> None:
    errors = _errors("""
        gpus:
          - {model: H100-SXM, owner: {pod: p, container: c}}
          - {model: H100-SXM, count: 0, owner: {slurm_job: -3}}
    """)
    assert errors == ["gpus[1].count: must be >= 1 (got 0)", "gpus[1].owner.slurm_job: must be >= 1 (got -3)"]
