"""cgroup path -> container runtime, id and pod UID, for every runtime, driver and cgroup version."""

from __future__ import annotations

import pytest

from agent.attribution.containers import ContainerInfo, from_cgroup_path, from_cgroups, runtime_from_shim
from agent.host.procfs import parse_cgroup

CID = "4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
UID = "0d4c8a6e-3b1f-4e2a-9c7d-5f6e8a9b0c1d"
UIDS = UID.replace("-", "_")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # containerd, systemd driver (cgroup v1 and v2 alike)
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UIDS}.slice/cri-containerd-{CID}.scope",
            ContainerInfo("containerd", CID, UID, True),
        ),
        # guaranteed QoS sits right under kubepods.slice
        (
            f"/kubepods.slice/kubepods-pod{UIDS}.slice/cri-containerd-{CID}.scope",
            ContainerInfo("containerd", CID, UID, True),
        ),
        # CRI-O, systemd driver
        (
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UIDS}.slice/crio-{CID}.scope",
            ContainerInfo("cri-o", CID, UID, True),
        ),
        # CRI-O, cgroupfs driver
        (f"/kubepods/besteffort/pod{UID}/crio-{CID}", ContainerInfo("cri-o", CID, UID, True)),
        # containerd (or dockershim), cgroupfs driver: the path does not name the runtime
        (f"/kubepods/burstable/pod{UID}/{CID}", ContainerInfo(None, CID, UID, True)),
        # Docker without Kubernetes
        (f"/system.slice/docker-{CID}.scope", ContainerInfo("docker", CID, None, False)),
        (f"/docker/{CID}", ContainerInfo("docker", CID, None, False)),
        # Podman
        (
            f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope",
            ContainerInfo("podman", CID, None, False),
        ),
        # seen from inside another cgroup namespace
        (
            f"/../../kubepods-burstable-pod{UIDS}.slice/cri-containerd-{CID}.scope",
            ContainerInfo("containerd", CID, UID, True),
        ),
        # conmon is beside the container, not in it
        (
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UIDS}.slice/crio-conmon-{CID}.scope",
            ContainerInfo(None, None, UID, True),
        ),
        # not a container
        ("/user.slice/user-1000.slice/session-4.scope", ContainerInfo()),
        ("/", ContainerInfo()),
    ],
)
def test_cgroup_paths(path: str, expected: ContainerInfo) -> None:
    assert from_cgroup_path(path) == expected


def test_static_pod_uid_is_a_plain_hash() -> None:
    info = from_cgroup_path(f"/kubepods/burstable/pod6f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99/{CID}")
    assert info.pod_uid == "6f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99"


def test_most_informative_hierarchy_wins_on_v1() -> None:
    lines = parse_cgroup(
        f"12:pids:/docker/{CID}\n4:cpu,cpuacct:/docker/{CID}\n1:name=systemd:/system.slice/containerd.service\n0::/\n"
    )
    assert from_cgroups(lines) == ContainerInfo("docker", CID, None, False)


def test_runtime_from_the_shim() -> None:
    assert (
        runtime_from_shim("containerd-shim", "/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id x")
        == "containerd"
    )
    assert (
        runtime_from_shim("containerd-shim", "/usr/bin/containerd-shim-runc-v2 -namespace moby -id x")
        == "docker"
    )
    assert runtime_from_shim("conmon", "/usr/bin/conmon -c x") == "cri-o"
    assert runtime_from_shim("bash", "bash") is None
