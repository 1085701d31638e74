"""The Attributor wired as the runtime's owners_provider: a sampling tick through to /metrics text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubelet_server import FakeKubelet, pod

from agent.attribution.attributor import Attributor
from agent.clock import ManualClock
from agent.config import Settings
from agent.host.backend import HostBackend
from agent.model import GpuProcess
from agent.runtime import Runtime
from agent.snapshot import Snapshot

PROC = Path(__file__).resolve().parents[2] / "fixtures" / "attribution" / "k8s-v2" / "proc"


def test_tick_exports_owner_labels(scripted_gpu: Any, kubelet: FakeKubelet, tmp_path: Path) -> None:
    clock = ManualClock(100.0)
    gpu = scripted_gpu(2, clock)
    gpu.processes = {0: [GpuProcess(pid=1001, used_memory_bytes=2**30, sm_ratio=0.7)]}
    kubelet.pods = [pod("train-llama-0", "ml", {"trainer": [("nvidia.com/gpu", ["GPU-0000"])]})]
    settings = Settings.model_validate(
        {"interval_seconds": 0.1, "attribution": {"kubelet_socket": kubelet.socket_path}}
    )
    host = HostBackend(str(PROC), str(tmp_path), str(tmp_path), clock)
    rt = Runtime(settings, gpu, host, clock)
    attributor = Attributor(settings.attribution, procfs=str(PROC), clock=clock)
    assert attributor.kubelet.refresh()
    rt.owners_provider = attributor.provide
    try:
        snapshot: Snapshot | None = None
        for _ in range(4):  # start NVML, read the GPUs and their processes, read the host for those pids
            snapshot = rt.sampler.tick()
            clock.advance(0.1)
        assert snapshot is not None
        assert snapshot.owners[0]["pod"] == "train-llama-0"
        assert snapshot.owners[1]["attributed"] is False
        body, _ = rt.store.exposition().negotiate("text/plain", None)
        text = body.decode()
    finally:
        rt.stop(timeout=0.5)
        attributor.close()
    owner = 'pod="train-llama-0",namespace="ml",container="trainer"'
    assert f'gpulse_gpu_allocation_info{{gpu="0",uuid="GPU-0000",{owner}}} 1' in text
    assert 'gpulse_gpu_allocation_info{gpu="1",uuid="GPU-0001"} 1' in text
    info = [line for line in text.splitlines() if line.startswith('gpulse_process_info{pid="1001"')]
    assert len(info) == 1 and 'pod="train-llama-0"' in info[0] and 'container="trainer"' in info[0]
    assert any(line.startswith('gpulse_process_info{pid="1002"') for line in text.splitlines())  # the worker
    assert 'gpulse_collector_success{collector="kubernetes"} 1' in text
    assert "gpulse_attribution_dropped_series_total 0" in text
