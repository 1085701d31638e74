"""The kubelet pod-resources client against a real gRPC server on a unix socket."""

from __future__ import annotations

import logging
import time

import pytest
from kubelet_server import FakeKubelet, pod

from agent.attribution.kubelet import DeviceRef, KubeletPods, parse_device_id
from agent.attribution.settings import AttributionSettings
from agent.clock import ManualClock

GPU0 = "GPU-6b4c0d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e"
GPU1 = "GPU-7c5d1e2f-3a4b-4c5d-9e0f-1a2b3c4d5e6f"
GPU2 = "GPU-8d6e2f3a-4b5c-4d6e-8f01-2a3b4c5d6e7f"
MIG_A = "MIG-1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b"


def settings(sock: str, **kw: object) -> AttributionSettings:
    return AttributionSettings(kubelet_socket=sock, kubelet_timeout_seconds=0.5, **kw)  # type: ignore[arg-type]


def test_parse_device_id_forms() -> None:
    assert parse_device_id(GPU0) == DeviceRef(gpu_uuid=GPU0)
    assert parse_device_id(MIG_A) == DeviceRef(mig_uuid=MIG_A, mig=MIG_A)
    assert parse_device_id(f"MIG-{GPU2}/3/0") == DeviceRef(gpu_uuid=GPU2, mig="3/0")
    assert parse_device_id("5") == DeviceRef(index=5)
    assert parse_device_id("2:1") == DeviceRef(index=2, mig="1")
    assert parse_device_id(f"k8s.gpu.nvidia.com/device={GPU1}") == DeviceRef(gpu_uuid=GPU1)
    assert parse_device_id("GPU-0000") == DeviceRef(gpu_uuid="GPU-0000")  # whatever NVML calls its UUID
    assert parse_device_id("mlx5_3") is None


def test_whole_gpus_and_mig_slices_map_to_pods(kubelet: FakeKubelet) -> None:
    kubelet.pods = [
        pod("train-0", "ml", {"trainer": [("nvidia.com/gpu", [GPU0, GPU1])], "sidecar": []}),
        pod("infer-a", "serving", {"server": [("nvidia.com/mig-1g.10gb", [MIG_A])]}),
        pod("infer-b", "serving", {"server": [("nvidia.com/mig-3g.40gb", [f"MIG-{GPU2}/2/0"])]}),
        pod("net", "ml", {"app": [("rdma/hca", ["mlx5_3"]), ("nvidia.com/gpu", [])]}),
    ]
    k = KubeletPods(settings(kubelet.socket_path), ManualClock())
    assert k.refresh()
    devmap, status = k.current()
    assert devmap is not None and status is not None and status.success
    owners = {(a.owner.pod, a.owner.container) for a in devmap.for_gpu(0, GPU0, {})}
    assert owners == {("train-0", "trainer")}
    assert [a.owner.pod for a in devmap.for_gpu(1, GPU1.lower(), {})] == ["train-0"]  # UUID case ignored
    # GPU 2 is split: one slice named by its parent's UUID, one by its own MIG UUID (parent from NVML)
    assert sorted(a.owner.pod for a in devmap.for_gpu(2, GPU2, {MIG_A.upper(): 2})) == ["infer-a", "infer-b"]
    assert [a.owner.pod for a in devmap.for_gpu(2, GPU2, {})] == ["infer-b"]
    assert [a.device_id for a in devmap.unplaced_mig({})] == [MIG_A]
    assert devmap.for_gpu(3, "GPU-none", {}) == []
    assert ("ml", "net") in devmap.pods  # listed, though it holds no GPU
    k.close()


def test_ended_pod_drops_out_at_the_next_refresh(kubelet: FakeKubelet) -> None:
    kubelet.pods = [
        pod("a", "ns", {"c": [("nvidia.com/gpu", [GPU0])]}),
        pod("b", "ns", {"c": [("nvidia.com/gpu", [GPU1])]}),
    ]
    k = KubeletPods(settings(kubelet.socket_path), ManualClock())
    assert k.refresh()
    kubelet.pods = kubelet.pods[1:]  # pod a ended
    assert k.refresh()
    devmap, _ = k.current()
    assert devmap is not None
    assert devmap.for_gpu(0, GPU0, {}) == []
    assert [a.owner.pod for a in devmap.for_gpu(1, GPU1, {})] == ["b"]
    k.close()


def test_timer_thread_refreshes_on_its_own(kubelet: FakeKubelet) -> None:
    kubelet.pods = [pod("a", "ns", {"c": [("nvidia.com/gpu", [GPU0])]})]
    k = KubeletPods(settings(kubelet.socket_path, kubelet_refresh_seconds=0.05))
    k.start()
    try:
        deadline = time.monotonic() + 5
        while kubelet.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert kubelet.calls >= 3
        devmap, _ = k.current()
        assert devmap is not None and devmap.for_gpu(0, GPU0, {})
    finally:
        k.close()


def test_hanging_kubelet_times_out_and_the_last_answer_is_kept(
    kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    kubelet.pods = [pod("a", "ns", {"c": [("nvidia.com/gpu", [GPU0])]})]
    clock = ManualClock()
    k = KubeletPods(settings(kubelet.socket_path, kubelet_keep_stale_seconds=30), clock)
    assert k.refresh()
    kubelet.hang.set()
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert not k.refresh()
    assert time.monotonic() - start < 3  # bounded by the 0.5 s deadline, not the server
    devmap, status = k.current()
    assert status is not None and not status.success and "DEADLINE_EXCEEDED" in (status.message or "")
    assert status.last_success == 0.0
    assert devmap is not None and devmap.for_gpu(0, GPU0, {})  # kept while fresh enough
    assert any("pod-resources List" in r.getMessage() for r in caplog.records)
    clock.advance(31)
    assert not k.refresh()
    assert k.current()[0] is None  # too old to trust: dropped
    kubelet.hang.clear()
    kubelet.release.set()
    assert k.refresh() and k.current()[1].success  # type: ignore[union-attr]
    k.close()


def test_socket_that_vanishes_fails_the_collector(
    kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    kubelet.pods = [pod("a", "ns", {"c": [("nvidia.com/gpu", [GPU0])]})]
    k = KubeletPods(settings(kubelet.socket_path, kubelet_keep_stale_seconds=0), ManualClock())
    assert k.refresh()
    kubelet.stop()
    with caplog.at_level(logging.WARNING):
        assert not k.refresh()
        assert not k.refresh()
    devmap, status = k.current()
    assert status is not None and not status.success
    assert "missing" in (status.message or "")
    assert devmap is None
    warnings = [r for r in caplog.records if "kubelet pod-resources socket" in r.getMessage()]
    assert len(warnings) == 1  # said once, not every refresh
    k.close()


def test_no_socket_in_auto_mode_is_not_kubernetes(tmp_path: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        k = KubeletPods(settings("/nonexistent/kubelet.sock"), ManualClock())
        assert not k.refresh()
        assert not k.refresh()
    assert k.current() == (None, None)  # no failure reported on a node without a kubelet
    assert sum("not found" in r.getMessage() for r in caplog.records) == 1
    forced = KubeletPods(settings("/nonexistent/kubelet.sock", kubernetes="on"), ManualClock())
    assert not forced.refresh()
    status = forced.current()[1]
    assert status is not None and not status.success and "/nonexistent/kubelet.sock" in (status.message or "")
