"""deploy/kubernetes: rendered offline, every object validated against the Kubernetes schemas.

Built-in kinds go through kubernetes-validate (the OpenAPI schemas of a recent Kubernetes, strict:
unknown fields fail). ServiceMonitor and PrometheusRule are custom resources it has no schema for:
their structure is checked here, and the PrometheusRule's groups by `promtool check rules`.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kustomize_lite import render

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
PROMTOOL = Path("/usr/bin/promtool")


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gpulse_{name}", KUBE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kube_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with a profiling token in place (users create their own)."""
    root = tmp_path_factory.mktemp("kube") / "kubernetes"
    shutil.copytree(KUBE, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (root / "overlays" / "profiling" / "profiling-token.txt").write_text("0123456789abcdef\n")
    return root


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        out.setdefault(obj["kind"], []).append(obj)
    return out


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (ds,) = _by_kind(objects)["DaemonSet"]
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    return container


def _pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (ds,) = _by_kind(objects)["DaemonSet"]
    return ds["spec"]["template"]["spec"]


OVERLAYS = ["base", "overlays/profiling", "overlays/non-root"]


@pytest.mark.parametrize("variant", OVERLAYS)
def test_builtin_objects_validate_against_the_kubernetes_schemas(kube_tree: Path, variant: str) -> None:
    objects = render(kube_tree / variant)
    builtin = [obj for obj in objects if obj["kind"] not in CUSTOM_KINDS]
    assert len(builtin) >= 7
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_base_has_the_expected_objects(kube_tree: Path) -> None:
    objects = render(kube_tree / "base")
    kinds = sorted((obj["kind"], obj["metadata"]["name"]) for obj in objects)
    assert kinds == sorted([
        ("Namespace", "gpulse"), ("ResourceQuota", "gpulse-critical-pods"), ("ServiceAccount", "gpulse"),
        ("DaemonSet", "gpulse"), ("Service", "gpulse"), ("ServiceMonitor", "gpulse"),
        ("PrometheusRule", "gpulse"), ("ConfigMap", "gpulse-fleet-dashboard"),
        ("ConfigMap", "gpulse-node-dashboard"), ("ConfigMap", "gpulse-workloads-dashboard"),
    ])
    assert all(obj["metadata"].get("namespace") == "gpulse" for obj in objects if obj["kind"] != "Namespace")


def test_daemonset_runs_on_gpu_nodes_with_what_the_agent_needs(kube_tree: Path) -> None:
    objects = render(kube_tree / "base")
    pod = _pod(objects)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists"} in pod["tolerations"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["hostPID"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["automountServiceAccountToken"] is False
    assert "hostNetwork" not in pod and "hostIPC" not in pod
    container = _container(objects)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert container["args"] == ["serve"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/var/lib/kubelet/pod-resources"]["readOnly"] is True
    assert mounts["/host/sys/fs/cgroup"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pod-resources"]["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"
    # Every host path is mounted read-only; nothing else from the host.
    host_volumes = {name for name, v in volumes.items() if "hostPath" in v}
    assert host_volumes == {"pod-resources", "host-cgroup"}
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] in host_volumes)


def test_daemonset_is_locked_down(kube_tree: Path) -> None:
    objects = render(kube_tree / "base")
    security = _container(objects)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert _pod(objects)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_daemonset_has_resources_and_probes(kube_tree: Path) -> None:
    container = _container(render(kube_tree / "base"))
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 10835}


def test_profiling_overlay_adds_ptrace_and_a_token_secret(kube_tree: Path) -> None:
    objects = render(kube_tree / "overlays/profiling")
    container = _container(objects)
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GPULSE_PROFILING__ENABLED"] == "true"
    token_file = Path(env["GPULSE_PROFILING__TOKEN_FILE"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[str(token_file.parent)]["readOnly"] is True
    assert env["GPULSE_PROFILING__DIRECTORY"] in mounts  # writable despite the read-only root
    (secret,) = _by_kind(objects)["Secret"]
    assert secret["metadata"]["namespace"] == "gpulse"
    assert token_file.name in secret["data"]
    volumes = {v["name"]: v for v in _pod(objects)["volumes"]}
    token_volume = volumes[mounts[str(token_file.parent)]["name"]]
    assert token_volume["secret"]["secretName"] == secret["metadata"]["name"]
    # The base stays without SYS_PTRACE.
    assert _container(render(kube_tree / "base"))["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_profiling_overlay_needs_a_token_file(kube_tree: Path, tmp_path: Path) -> None:
    tree = tmp_path / "kubernetes"
    shutil.copytree(kube_tree, tree)
    (tree / "overlays" / "profiling" / "profiling-token.txt").unlink()
    with pytest.raises(FileNotFoundError):
        render(tree / "overlays/profiling")


def test_non_root_overlay_drops_root_and_the_socket(kube_tree: Path) -> None:
    objects = render(kube_tree / "overlays/non-root")
    pod = _pod(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    container = _container(objects)
    assert all(m["mountPath"] != "/var/lib/kubelet/pod-resources" for m in container["volumeMounts"])
    assert all(v["name"] != "pod-resources" for v in pod["volumes"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GPULSE_ATTRIBUTION__KUBERNETES"] == "off"


def test_service_and_servicemonitor_select_the_agent(kube_tree: Path) -> None:
    objects = _by_kind(render(kube_tree / "base"))
    (ds,) = objects["DaemonSet"]
    (service,) = objects["Service"]
    (monitor,) = objects["ServiceMonitor"]
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["clusterIP"] == "None"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["honorLabels"] is True  # the workload's pod/namespace labels win
    # job="gpulse", as GpulseAgentDown selects.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "gpulse"
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"jobLabel", "selector", "endpoints", "namespaceSelector", "targetLabels",
                                    "podTargetLabels"}
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings",
                             "metricRelabelings", "scheme", "tlsConfig", "basicAuth"}
    for relabel in endpoint["relabelings"]:
        assert set(relabel) <= {"sourceLabels", "targetLabel", "action", "regex", "replacement", "separator"}


def test_prometheusrule_is_the_shipped_rules(kube_tree: Path, tmp_path: Path) -> None:
    (rule,) = _by_kind(render(kube_tree / "base"))["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and set(rule["spec"]) == {"groups"}
    shipped = []
    for path in sorted((REPO / "dashboards" / "rules").glob("*.rules.yml")):
        shipped += yaml.safe_load(path.read_text())["groups"]
    assert rule["spec"]["groups"] == shipped
    if PROMTOOL.exists():
        rules_file = tmp_path / "prometheusrule.rules.yml"
        rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        result = subprocess.run([str(PROMTOOL), "check", "rules", str(rules_file)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_committed_prometheusrule_equals_the_generated_one() -> None:
    build = _script("build_prometheusrule")
    assert build.main(["--check"]) == 0, "run python deploy/kubernetes/build_prometheusrule.py"
    assert build.OUT.read_text() == build.build()


def test_committed_dashboard_configmaps_equal_the_generated_ones(kube_tree: Path) -> None:
    build = _script("build_dashboards")
    assert build.main(["--check"]) == 0, "run python deploy/kubernetes/build_dashboards.py"
    maps = _by_kind(render(kube_tree / "base"))["ConfigMap"]
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = cm["data"].items()
        assert text == (REPO / "dashboards" / name).read_text()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl missing: renderer not cross-checked")
@pytest.mark.parametrize("variant", OVERLAYS)
def test_renderer_agrees_with_kubectl_kustomize(kube_tree: Path, variant: str) -> None:
    result = subprocess.run(["kubectl", "kustomize", str(kube_tree / variant)], capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0 and "unknown command" in result.stderr:
        pytest.skip("this kubectl has no kustomize")
    assert result.returncode == 0, result.stderr

    def key(obj: dict[str, Any]) -> tuple[str, str]:
        return obj["kind"], obj["metadata"]["name"]

    theirs = sorted((doc for doc in yaml.safe_load_all(result.stdout) if doc), key=key)
    ours = sorted(render(kube_tree / variant), key=key)
    assert [key(o) for o in ours] == [key(o) for o in theirs]
    for mine, kubectl in zip(ours, theirs, strict=True):
        assert mine == kubectl, key(mine)
