"""Scenario files: the fleet, its workloads and the faults injected into it.

A scenario is YAML (see docs/simulator.md)::

    seed: 7
    duration_s: 600          # optional; without it the demo runs until stopped
    interval_s: 1.0          # the agent's sampling interval, in simulated seconds
    gpus:
      - {model: H100-SXM, count: 2, workload: {kind: training, precision: bf16}}
    events:
      - {at_s: 120, gpu: 0, kind: cooling_failure}

Validation is hand-written so that every error names the field the way a user
reads the file (``gpus[2].workload.wait_cause: must be one of host_cpu, io, other
(got 'cpu')``); all errors are collected and reported together.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from agent.specs import PRECISIONS, SPECS

WORKLOAD_KINDS: tuple[str, ...] = ("idle", "training", "inference_decode", "inference_prefill")
WAIT_CAUSES: tuple[str, ...] = ("host_cpu", "io", "other")
EVENT_KINDS: tuple[str, ...] = (
    "cooling_failure",
    "cooling_restored",
    "power_cap",
    "power_brake",
    "xid",
    "ecc_uncorrectable",
    "row_remap_pending",
    "gpu_lost",
    "gpu_recovered",
    "nvml_hang",
    "workload",
    "process_exit",
)
# Fields each event kind takes beyond at_s / gpu / kind.
_EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "cooling_failure": ("factor",),
    "cooling_restored": (),
    "power_cap": ("watts",),
    "power_brake": ("seconds",),
    "xid": ("xid",),
    "ecc_uncorrectable": ("count",),
    "row_remap_pending": (),
    "gpu_lost": (),
    "gpu_recovered": (),
    "nvml_hang": ("seconds",),
    "workload": ("workload",),
    "process_exit": (),
}
_EVENT_REQUIRED: dict[str, tuple[str, ...]] = {
    "power_cap": ("watts",),
    "power_brake": ("seconds",),
    "xid": ("xid",),
    "nvml_hang": ("seconds",),
    "workload": ("workload",),
}
_TOP_FIELDS = ("name", "description", "seed", "duration_s", "interval_s", "host", "gpus", "events")
_GPU_FIELDS = ("model", "count", "workload", "power_limit_w", "ambient_c", "owner")
_KUBERNETES_OWNER_FIELDS = ("pod", "namespace", "container")
_SLURM_OWNER_FIELDS = ("slurm_job", "user", "partition")
# Kubernetes object names: a pod is a DNS-1123 subdomain, a namespace and a container DNS-1123 labels.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_UNIX_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_SLURM_PARTITION = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HOST_FIELDS = ("cpus", "memory_gib")
_WORKLOAD_FIELDS = (
    "kind",
    "precision",
    "compute_s",
    "wait_s",
    "wait_cause",
    "memory_gib",
    "workers",
    "cpu_quota",
    "sm_active",
    "tensor",
    "dram",
    "command",
)
_MAX_GPUS = 1024
_DNS_HINT = "a DNS-1123 name: lower-case letters, digits and '-' (a pod's also '.')"


class ScenarioError(ValueError):
    """A scenario file that does not validate; ``errors`` lists ``field: problem`` lines."""

    def __init__(self, errors: list[str], source: str = "scenario") -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__(f"{source}: " + "; ".join(self.errors))


@dataclass(frozen=True)
class WorkloadSpec:
    kind: str = "idle"
    precision: str = "bf16"
    compute_s: float = 1.0  # length of one compute burst
    wait_s: float = 0.0  # the GPU waits this long between bursts (0: it never waits)
    wait_cause: str = "other"  # what the owner waits on: host_cpu | io | other
    memory_gib: float | None = None  # GPU memory the process holds; None: the kind's default share
    workers: int | None = None  # data-loader workers in the process tree; None: the kind's default
    cpu_quota: float | None = None  # cgroup CPU quota of the tree, in cores; None: the kind's default
    sm_active: float | None = None  # overrides of the kind's activity levels during a burst (0..1)
    tensor: float | None = None
    dram: float | None = None
    command: str | None = None  # the owner's command line, for display

    @property
    def waits(self) -> bool:
        return self.kind != "idle" and self.wait_s > 0


@dataclass(frozen=True)
class OwnerSpec:
    """Whose workload a GPU runs, for the whole scenario: a Kubernetes pod's container or a Slurm job."""

    pod: str | None = None
    namespace: str | None = None
    container: str | None = None
    slurm_job: str | None = None
    user: str | None = None  # the Slurm job's user
    partition: str | None = None  # the Slurm job's partition

    @property
    def kubernetes(self) -> bool:
        return self.pod is not None


@dataclass(frozen=True)
class GpuEntry:
    model: str
    workload: WorkloadSpec
    power_limit_w: float | None = None
    ambient_c: float | None = None
    owner: OwnerSpec | None = None  # None: nobody owns the GPU (it shows as unattributed)


@dataclass(frozen=True)
class Event:
    at_s: float
    gpu: int
    kind: str
    watts: float | None = None
    xid: int | None = None
    seconds: float | None = None
    count: int = 1
    factor: float = 3.5  # cooling_failure: how many times the thermal resistance rises
    workload: WorkloadSpec | None = None


@dataclass(frozen=True)
class HostSpec:
    cpus: int | None = None  # None: 28 per GPU, as on an 8-GPU node with 224 hardware threads
    memory_gib: float | None = None  # None: 256 GiB per GPU


@dataclass(frozen=True)
class Scenario:
    gpus: tuple[GpuEntry, ...]  # expanded: ``count`` resolved, one entry per GPU index
    events: tuple[Event, ...] = ()  # sorted by time (stable)
    seed: int = 0
    duration_s: float | None = None
    interval_s: float = 1.0
    host: HostSpec = field(default_factory=HostSpec)
    name: str = "scenario"
    description: str = ""

    def with_overrides(
        self, *, seed: int | None = None, duration_s: float | None = None, interval_s: float | None = None
    ) -> Scenario:
        changes: dict[str, Any] = {}
        if seed is not None:
            changes["seed"] = seed
        if duration_s is not None:
            changes["duration_s"] = duration_s
        if interval_s is not None:
            changes["interval_s"] = interval_s
        return replace(self, **changes)


def steady_scenario(model: str = "H100-SXM", count: int = 8, precision: str = "bf16") -> Scenario:
    """``gpulse demo --gpus N --model M``: N GPUs of one model, all running steady training."""
    if model not in SPECS:
        raise ScenarioError(
            [f"model: unknown GPU model {model!r} (known: {', '.join(sorted(SPECS))})"], "--model"
        )
    if not 1 <= count <= _MAX_GPUS:
        raise ScenarioError([f"gpus: must be between 1 and {_MAX_GPUS} (got {count})"], "--gpus")
    if precision not in SPECS[model].peak_flops:
        precision = next(iter(SPECS[model].peak_flops))
    workload = WorkloadSpec(kind="training", precision=precision)
    return Scenario(gpus=tuple(GpuEntry(model, workload) for _ in range(count)), name=f"steady-{model}")


# ---------------------------------------------------------------------------------------------
# Loading


def scenario_names() -> list[str]:
    """Names of the scenarios shipped in the package."""
    root = importlib.resources.files("agent.sim") / "scenarios"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (``default``) or a YAML file by path."""
    text: str
    source = str(name_or_path)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in source:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ScenarioError([f"cannot read the file: {exc.strerror or exc}"], source) from exc
        default_name = path.stem
    else:
        resource = importlib.resources.files("agent.sim") / "scenarios" / f"{source}.yaml"
        if not resource.is_file():
            names = ", ".join(scenario_names())
            raise ScenarioError(
                [f"no shipped scenario named {source!r} (shipped: {names}); or give a path"], source
            )
        text = resource.read_text()
        default_name = source
    return parse_scenario(text, source=source, default_name=default_name)


def parse_scenario(text: str, *, source: str = "scenario", default_name: str = "scenario") -> Scenario:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError([f"{where}not valid YAML ({problem})"], source) from exc
    return validate_scenario(data, source=source, default_name=default_name)


def validate_scenario(data: object, *, source: str = "scenario", default_name: str = "scenario") -> Scenario:
    v = _Validator()
    scenario = v.scenario(data, default_name)
    if v.errors or scenario is None:
        raise ScenarioError(v.errors or ["empty scenario"], source)
    return scenario


# ---------------------------------------------------------------------------------------------
# Validation


class _Validator:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    # -- primitives ---------------------------------------------------------------------------

    def mapping(self, path: str, value: object, allowed: tuple[str, ...]) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.err(path, f"must be a mapping (got {_show(value)})")
            return None
        for key in value:
            if key not in allowed:
                self.err(_join(path, str(key)), f"unknown field (allowed: {', '.join(allowed)})")
        return value

    def number(
        self,
        path: str,
        value: object,
        *,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
        integer: bool = False,
    ) -> float | None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (integer and not isinstance(value, int))
        ):
            self.err(path, f"must be {'an integer' if integer else 'a number'} (got {_show(value)})")
            return None
        if value != value or value in (float("inf"), float("-inf")):
            self.err(path, f"must be a finite number (got {value})")
            return None
        if lo is not None and (value <= lo if lo_open else value < lo):
            self.err(path, f"must be {'>' if lo_open else '>='} {_fmt(lo)} (got {_fmt(value)})")
            return None
        if hi is not None and value > hi:
            self.err(path, f"must be <= {_fmt(hi)} (got {_fmt(value)})")
            return None
        return float(value)

    def integer(
        self, path: str, value: object, *, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        got = self.number(path, value, lo=lo, hi=hi, integer=True)
        return None if got is None else int(got)

    def choice(self, path: str, value: object, choices: tuple[str, ...]) -> str | None:
        if not isinstance(value, str) or value not in choices:
            self.err(path, f"must be one of {', '.join(choices)} (got {_show(value)})")
            return None
        return value

    def text(self, path: str, value: object) -> str | None:
        if not isinstance(value, str):
            self.err(path, f"must be a string (got {_show(value)})")
            return None
        return value

    # -- structure ----------------------------------------------------------------------------

    def scenario(self, data: object, default_name: str) -> Scenario | None:
        if data is None:
            self.err("scenario", "the file is empty")
            return None
        top = self.mapping("scenario", data, _TOP_FIELDS)
        if top is None:
            return None
        seed = self.integer("seed", top.get("seed", 0), lo=0) if "seed" in top else 0
        duration = None
        if top.get("duration_s") is not None:
            duration = self.number("duration_s", top["duration_s"], lo=0, lo_open=True)
        interval = self.number("interval_s", top.get("interval_s", 1.0), lo=0.1, hi=60.0)
        name = self.text("name", top["name"]) if "name" in top else default_name
        description = self.text("description", top["description"]) if "description" in top else ""
        host = self.host(top.get("host"))

        gpus: list[GpuEntry] = []
        errors_before_gpus = len(self.errors)
        raw_gpus = top.get("gpus")
        if raw_gpus is None:
            self.err("gpus", "required (a list of GPU entries)")
        elif not isinstance(raw_gpus, list) or not raw_gpus:
            self.err("gpus", f"must be a non-empty list (got {_show(raw_gpus)})")
        else:
            for i, raw in enumerate(raw_gpus):
                entry, count = self.gpu(f"gpus[{i}]", raw)
                if entry is not None:
                    gpus.extend([entry] * count)
            if len(gpus) > _MAX_GPUS:
                self.err("gpus", f"at most {_MAX_GPUS} GPUs in all (got {len(gpus)})")

        # Range-check event GPU indices only against a GPU list that validated completely.
        known_gpus = gpus if len(self.errors) == errors_before_gpus else None
        events: list[Event] = []
        raw_events = top.get("events") or []
        if not isinstance(raw_events, list):
            self.err("events", f"must be a list (got {_show(raw_events)})")
        else:
            for i, raw in enumerate(raw_events):
                event = self.event(f"events[{i}]", raw, known_gpus, duration)
                if event is not None:
                    events.append(event)

        if self.errors:
            return None
        assert seed is not None and interval is not None and name is not None and description is not None
        events.sort(key=lambda e: e.at_s)
        return Scenario(
            gpus=tuple(gpus),
            events=tuple(events),
            seed=seed,
            duration_s=duration,
            interval_s=interval,
            host=host or HostSpec(),
            name=name,
            description=description,
        )

    def host(self, raw: object) -> HostSpec | None:
        if raw is None:
            return None
        m = self.mapping("host", raw, _HOST_FIELDS)
        if m is None:
            return None
        cpus = self.integer("host.cpus", m["cpus"], lo=1, hi=4096) if "cpus" in m else None
        memory = (
            self.number("host.memory_gib", m["memory_gib"], lo=0, lo_open=True) if "memory_gib" in m else None
        )
        return HostSpec(cpus=cpus, memory_gib=memory)

    def gpu(self, path: str, raw: object) -> tuple[GpuEntry | None, int]:
        m = self.mapping(path, raw, _GPU_FIELDS)
        if m is None:
            return None, 0
        before = len(self.errors)
        model = None
        if "model" not in m:
            self.err(f"{path}.model", "required (a key of the spec table, e.g. H100-SXM)")
        elif not isinstance(m["model"], str) or m["model"] not in SPECS:
            self.err(
                f"{path}.model", f"unknown GPU model {_show(m['model'])} (known: {', '.join(sorted(SPECS))})"
            )
        else:
            model = m["model"]
        count = self.integer(f"{path}.count", m.get("count", 1), lo=1, hi=_MAX_GPUS)
        workload = self.workload(f"{path}.workload", m.get("workload", {"kind": "idle"}), model)
        limit = None
        if m.get("power_limit_w") is not None:
            limit = self.number(f"{path}.power_limit_w", m["power_limit_w"])
            if limit is not None and model is not None:
                limit = self.power_in_range(f"{path}.power_limit_w", limit, model)
        ambient = None
        if m.get("ambient_c") is not None:
            ambient = self.number(f"{path}.ambient_c", m["ambient_c"], lo=-20, hi=60)
        owner = self.owner(f"{path}.owner", m["owner"]) if m.get("owner") is not None else None
        if len(self.errors) > before or model is None or workload is None or count is None:
            return None, 0
        entry = GpuEntry(model=model, workload=workload, power_limit_w=limit, ambient_c=ambient, owner=owner)
        return entry, count

    def owner(self, path: str, raw: object) -> OwnerSpec | None:
        m = self.mapping(path, raw, _KUBERNETES_OWNER_FIELDS + _SLURM_OWNER_FIELDS)
        if m is None:
            return None
        kube = [k for k in _KUBERNETES_OWNER_FIELDS if k in m]
        slurm = [k for k in _SLURM_OWNER_FIELDS if k in m]
        if kube and slurm:
            self.err(
                path,
                "must be a Kubernetes pod (pod, namespace, container) or a Slurm job (slurm_job, user, "
                "partition), "
                f"not both (got {', '.join(kube + slurm)})",
            )
            return None
        before = len(self.errors)
        if kube:
            pod = self.name(f"{path}.pod", m.get("pod"), _DNS_SUBDOMAIN, 253, _DNS_HINT, "the pod's name")
            namespace = self.name(
                f"{path}.namespace", m.get("namespace", "default"), _DNS_LABEL, 63, _DNS_HINT
            )
            container = self.name(
                f"{path}.container", m.get("container"), _DNS_LABEL, 63, _DNS_HINT, "the container's name"
            )
            if len(self.errors) > before:
                return None
            return OwnerSpec(pod=pod, namespace=namespace, container=container)
        if slurm:
            job = None
            if "slurm_job" not in m:
                self.err(f"{path}.slurm_job", "required for a Slurm owner (the job id, e.g. 4242)")
            else:
                raw_job = m["slurm_job"]
                if isinstance(raw_job, str) and raw_job.isdigit():
                    raw_job = int(raw_job)  # a job id written as text
                job = self.integer(f"{path}.slurm_job", raw_job, lo=1)
            user = (
                self.name(f"{path}.user", m["user"], _UNIX_USER, 32, "a user name (letters, digits, _ . -)")
                if "user" in m
                else None
            )
            partition = (
                self.name(
                    f"{path}.partition", m["partition"], _SLURM_PARTITION, 64, "letters, digits, _ . - only"
                )
                if "partition" in m
                else None
            )
            if len(self.errors) > before or job is None:
                return None
            return OwnerSpec(slurm_job=str(job), user=user, partition=partition)
        self.err(
            path,
            "must name a Kubernetes pod (pod, namespace, container) "
            "or a Slurm job (slurm_job, user, partition)",
        )
        return None

    def name(
        self,
        path: str,
        value: object,
        pattern: re.Pattern[str],
        max_len: int,
        hint: str,
        required: str | None = None,
    ) -> str | None:
        """A name that becomes a label value; ``required`` says what it is when it must be given."""
        if value is None:
            self.err(path, f"required ({required})" if required else "must not be empty")
            return None
        if not isinstance(value, str):
            self.err(path, f"must be a string (got {_show(value)})")
            return None
        if len(value) > max_len or not pattern.fullmatch(value):
            self.err(path, f"must be {hint}, at most {max_len} characters (got {value!r})")
            return None
        return value

    def power_in_range(self, path: str, watts: float, model: str) -> float | None:
        spec = SPECS[model]
        if not spec.min_power_limit_watts <= watts <= spec.tdp_watts:
            self.err(
                path,
                f"{_fmt(watts)} W is outside the {model} power-limit range "
                f"{_fmt(spec.min_power_limit_watts)}..{_fmt(spec.tdp_watts)} W",
            )
            return None
        return watts

    def workload(self, path: str, raw: object, model: str | None) -> WorkloadSpec | None:
        m = self.mapping(path, raw, _WORKLOAD_FIELDS)
        if m is None:
            return None
        before = len(self.errors)
        if "kind" not in m:
            self.err(f"{path}.kind", f"required (one of {', '.join(WORKLOAD_KINDS)})")
            return None
        kind = self.choice(f"{path}.kind", m["kind"], WORKLOAD_KINDS)
        if kind is None:
            return None
        if kind == "idle":
            for key in m:
                if key != "kind" and key in _WORKLOAD_FIELDS:
                    self.err(f"{path}.{key}", "not allowed for kind idle (an idle GPU runs nothing)")
            return None if len(self.errors) > before else WorkloadSpec(kind="idle")

        opt: dict[str, Any] = {"kind": kind}
        checks: dict[str, Callable[[str, object], object]] = {
            "precision": lambda p, x: self.choice(p, x, PRECISIONS),
            "compute_s": lambda p, x: self.number(p, x, lo=0.001, hi=3600),
            "wait_s": lambda p, x: self.number(p, x, lo=0, hi=3600),
            "wait_cause": lambda p, x: self.choice(p, x, WAIT_CAUSES),
            "memory_gib": lambda p, x: self.number(p, x, lo=0),
            "workers": lambda p, x: self.integer(p, x, lo=0, hi=256),
            "cpu_quota": lambda p, x: self.number(p, x, lo=0, lo_open=True, hi=4096),
            "sm_active": lambda p, x: self.number(p, x, lo=0, hi=1),
            "tensor": lambda p, x: self.number(p, x, lo=0, hi=1),
            "dram": lambda p, x: self.number(p, x, lo=0, hi=1),
            "command": self.text,
        }
        for key, check in checks.items():
            if key in m:
                value = check(f"{path}.{key}", m[key])
                if value is not None:
                    opt[key] = value
        if len(self.errors) > before:
            return None
        spec = WorkloadSpec(**opt)
        if model is not None and spec.precision not in SPECS[model].peak_flops:
            self.err(
                f"{path}.precision",
                f"{spec.precision} is not in the {model} spec (has: {', '.join(SPECS[model].peak_flops)})",
            )
            return None
        if (
            model is not None
            and spec.memory_gib is not None
            and spec.memory_gib * 1024**3 > SPECS[model].memory_bytes
        ):
            self.err(
                f"{path}.memory_gib",
                f"{_fmt(spec.memory_gib)} GiB is more than the {model} has "
                f"({SPECS[model].memory_bytes / 1024**3:.0f} GiB)",
            )
            return None
        return spec

    def event(
        self, path: str, raw: object, gpus: list[GpuEntry] | None, duration: float | None
    ) -> Event | None:
        m = self.mapping(
            path, raw, ("at_s", "gpu", "kind", *sorted({f for fs in _EVENT_FIELDS.values() for f in fs}))
        )
        if m is None:
            return None
        before = len(self.errors)
        kind = self.choice(f"{path}.kind", m.get("kind"), EVENT_KINDS) if "kind" in m else None
        if "kind" not in m:
            self.err(f"{path}.kind", f"required (one of {', '.join(EVENT_KINDS)})")
        at = self.number(f"{path}.at_s", m["at_s"], lo=0) if "at_s" in m else None
        if "at_s" not in m:
            self.err(f"{path}.at_s", "required (simulated seconds from the start)")
        if at is not None and duration is not None and at > duration:
            self.err(f"{path}.at_s", f"{_fmt(at)} is after duration_s {_fmt(duration)}")
        gpu = None
        if "gpu" not in m:
            self.err(f"{path}.gpu", "required (an index into the expanded GPU list)")
        else:
            gpu = self.integer(f"{path}.gpu", m["gpu"], lo=0)
            if gpu is not None and gpus is not None and gpu >= len(gpus):
                self.err(f"{path}.gpu", f"index {gpu} out of range ({len(gpus)} GPUs)")
                gpu = None
        if kind is None:
            return None
        allowed = _EVENT_FIELDS[kind]
        for key in m:
            if key not in ("at_s", "gpu", "kind") and key not in allowed and key in _all_event_fields():
                self.err(
                    f"{path}.{key}", f"not used by kind {kind} (it takes: {', '.join(allowed) or 'nothing'})"
                )
        for key in _EVENT_REQUIRED.get(kind, ()):
            if key not in m:
                self.err(f"{path}.{key}", f"required for kind {kind}")
        model = gpus[gpu].model if gpus is not None and gpu is not None else None
        opt: dict[str, Any] = {}
        if "watts" in m and "watts" in allowed:
            watts = self.number(f"{path}.watts", m["watts"])
            if watts is not None and model is not None:
                watts = self.power_in_range(f"{path}.watts", watts, model)
            opt["watts"] = watts
        if "xid" in m and "xid" in allowed:
            opt["xid"] = self.integer(f"{path}.xid", m["xid"], lo=1, hi=999)
        if "seconds" in m and "seconds" in allowed:
            opt["seconds"] = self.number(f"{path}.seconds", m["seconds"], lo=0, lo_open=True, hi=86400)
        if "count" in m and "count" in allowed:
            opt["count"] = self.integer(f"{path}.count", m["count"], lo=1, hi=1_000_000)
        if "factor" in m and "factor" in allowed:
            opt["factor"] = self.number(f"{path}.factor", m["factor"], lo=1, lo_open=True, hi=100)
        if "workload" in m and "workload" in allowed:
            opt["workload"] = self.workload(f"{path}.workload", m["workload"], model)
        if len(self.errors) > before or at is None or gpu is None:
            return None
        return Event(at_s=at, gpu=gpu, kind=kind, **opt)


def _all_event_fields() -> set[str]:
    return {f for fs in _EVENT_FIELDS.values() for f in fs}


def _join(path: str, key: str) -> str:
    return key if path == "scenario" else f"{path}.{key}"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _show(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return repr(value)
