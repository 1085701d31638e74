"""A process's cgroup path -> container runtime, container id and Kubernetes pod UID.

The layouts, per runtime and cgroup driver (the same under cgroup v1 and v2):

- containerd (Kubernetes): systemd ``.../kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope``,
  cgroupfs ``/kubepods/<qos>/pod<uid>/<id>``;
- CRI-O: systemd ``.../kubepods-<qos>-pod<uid_>.slice/crio-<id>.scope``,
  cgroupfs ``/kubepods/<qos>/pod<uid>/crio-<id>``;
- Docker: systemd ``/system.slice/docker-<id>.scope``, cgroupfs ``/docker/<id>``;
- Podman: systemd ``.../libpod-<id>.scope``, cgroupfs ``/libpod_parent/libpod-<id>``.

A bare 64-hex id (the cgroupfs layout of containerd and of dockershim) does not name
its runtime; the caller may ask the container's shim (its parent process) instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.host.procfs import CgroupLine

_ID = r"([0-9a-f]{64})"
_NAMED: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"cri-containerd-{_ID}\.scope"), "containerd"),
    (re.compile(rf"(?:^|/)crio-{_ID}(?:\.scope)?(?:/|$)"), "cri-o"),
    (re.compile(rf"docker-{_ID}\.scope"), "docker"),
    (re.compile(rf"/docker/{_ID}(?:/|$)"), "docker"),
    (re.compile(rf"libpod-{_ID}(?:\.scope)?(?:/|$)"), "podman"),
)
_BARE_ID = re.compile(rf"/{_ID}(?:/|$)")
# systemd escapes the pod UID's dashes as underscores; static pods have a 32-hex UID.
_POD_UID = re.compile(
    r"(?:^|/|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})(?:\.slice)?(?:/|$)"
)


@dataclass(frozen=True)
class ContainerInfo:
    runtime: str | None = None  # containerd, cri-o, docker, podman; None when the path does not say
    container_id: str | None = None
    pod_uid: str | None = None
    kubernetes: bool = False


def from_cgroup_path(path: str) -> ContainerInfo:
    pod_match = _POD_UID.search(path)
    pod_uid = pod_match.group(1).replace("_", "-") if pod_match else None
    kubernetes = "kubepods" in path
    for pattern, runtime in _NAMED:
        m = pattern.search(path)
        if m:
            return ContainerInfo(runtime, m.group(1), pod_uid, kubernetes)
    # conmon's own cgroup sits beside the container's: it is not the container
    if "crio-conmon-" in path:
        return ContainerInfo(None, None, pod_uid, kubernetes)
    bare = _BARE_ID.search(path)
    if bare:
        return ContainerInfo(None, bare.group(1), pod_uid, kubernetes)
    return ContainerInfo(None, None, pod_uid, kubernetes)


def from_cgroups(lines: list[CgroupLine]) -> ContainerInfo:
    """The most informative reading over every hierarchy (v1 controllers may disagree with systemd's)."""
    best = ContainerInfo()
    for line in lines:
        info = from_cgroup_path(line.path)
        if _score(info) > _score(best):
            best = info
    return best


def _score(info: ContainerInfo) -> int:
    return (info.container_id is not None) * 4 + (info.runtime is not None) * 2 + (info.pod_uid is not None)


def runtime_from_shim(comm: str, cmdline: str) -> str | None:
    """The runtime that a container's parent process (its shim) belongs to."""
    if comm == "conmon":
        return "cri-o"
    if comm.startswith("containerd-shim") or "containerd-shim" in cmdline:
        return "docker" if "-namespace moby" in cmdline else "containerd"
    return None
