"""The host side of the simulated fleet: a ``HostSource`` for the workloads' process trees.

Each workload has an owning process tree: the main process (whose PID the fake NVML
lists on the GPU) and, for training, data-loader workers. What the tree does on the
CPU follows the workload's wait cause, so that the agent can find the cause from the
host the way it would on a real node:

* ``host_cpu``: every worker has one thread pinned at ~100 % of a core, the tree uses
  its whole cgroup CPU quota and is throttled, and the node shows CPU pressure;
* ``io``: the workers' threads sit in D state (uninterruptible I/O), CPU use is low,
  block-I/O delay and the node's I/O pressure (and iowait) grow;
* ``other``: the workers are asleep; nothing on the host explains the wait.

Cumulative figures are rates × elapsed time per timeline segment, so they are exact
functions of the clock, like the device side.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.clock import Clock
from agent.model import HostReading, ProcessStats
from agent.sim.scenario import Scenario
from agent.sim.workload import Segment, Workload

if TYPE_CHECKING:
    from agent.sim.physics import SimDevice

GIB = 1024**3
_BACKGROUND_CORES = 0.6  # the node's own daemons
_DEFAULT_CMD = {
    "training": "python3 train.py --config configs/llama3-8b.yaml --precision {precision}",
    "inference_decode": "python3 -m vllm.entrypoints.openai.api_server "
    "--model meta-llama/Llama-3.1-70B-Instruct",
    "inference_prefill": "python3 serve.py --role prefill --model meta-llama/Llama-3.1-70B-Instruct",
}


@dataclass(frozen=True)
class TreeProfile:
    """How a workload's process tree uses the host, per second of wall time."""

    workers: int
    quota_cores: float
    main_cores: float
    worker_cores: float  # each
    worker_state: str  # R (running), D (uninterruptible I/O), S (sleeping)
    read_bps: float
    net_bps: float
    throttled_per_s: float  # cgroup CPU throttled seconds per second
    cpu_pressure: float  # node PSI cpu "some" seconds per second
    io_pressure: float  # node PSI io "some" seconds per second
    io_full_pressure: float
    iowait_cores: float
    io_delay_per_worker: float  # block-I/O delay seconds per second, per worker

    @property
    def worker_thread_cores(self) -> float:
        """CPU of each worker's busiest thread (a thread cannot use more than one core)."""
        return min(0.99, self.worker_cores)

    @property
    def tree_cores(self) -> float:
        return self.main_cores + self.workers * self.worker_cores


def tree_profile(wl: Workload) -> TreeProfile:
    spec = wl.spec
    duty = spec.compute_s / (spec.compute_s + spec.wait_s) if spec.wait_s > 0 else 1.0
    training = spec.kind == "training"
    workers = spec.workers if spec.workers is not None else (4 if training else 0)
    main = 0.15 + 0.85 * duty  # the main thread launches kernels while the GPU computes
    if not spec.waits:
        quota = spec.cpu_quota if spec.cpu_quota is not None else max(4.0, 2.0 * workers)
        return TreeProfile(
            workers,
            quota,
            main,
            0.55,
            "S",
            0.3e9 if training else 0.02e9,
            1.0e9 if training else 0.2e9,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        )
    cause = spec.wait_cause
    if cause == "host_cpu":
        # The input pipeline cannot keep up: the tree runs flat out at its quota.
        n = max(1, workers)
        quota = spec.cpu_quota if spec.cpu_quota is not None else float(n) + main
        per_worker = max(0.05, (quota - main) / n)
        return TreeProfile(
            n, quota, main, per_worker, "R", 0.25e9, 0.2e9, 0.35 * n, 0.12 * n, 0.01, 0.0, 0.0, 0.0
        )
    if cause == "io":
        n = max(1, workers)
        quota = spec.cpu_quota if spec.cpu_quota is not None else max(4.0, 2.0 * n)
        return TreeProfile(n, quota, main, 0.06, "D", 0.15e9, 0.1e9, 0.0, 0.01, 0.55, 0.3, 0.8 * n, 0.85)
    quota = spec.cpu_quota if spec.cpu_quota is not None else max(4.0, 2.0 * workers)
    return TreeProfile(workers, quota, main, 0.03, "S", 0.05e9, 3.0e9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


class SimHostSource:
    """``HostSource`` (``agent.backends``) for the simulated fleet."""

    def __init__(
        self,
        scenario: Scenario,
        devices: Sequence[SimDevice],
        clock: Clock | None,
        *,
        start: float = 0.0,
        pid_of: Callable[[int, Segment], int] | None = None,
        workers_of: Callable[[int, Segment, int], list[int]] | None = None,
    ) -> None:
        self.scenario = scenario
        self.devices = devices
        self.clock = clock
        self.start = start
        self._pid_of = pid_of or (lambda i, seg: 1000 + 100 * i + seg.number)
        self._workers_of = workers_of or (
            lambda i, seg, n: [self._pid_of(i, seg) + w for w in range(1, n + 1)]
        )
        n = max(1, len(scenario.gpus))
        self.cpus = scenario.host.cpus or 28 * n
        self.memory_bytes = int((scenario.host.memory_gib or 256.0 * n) * GIB)
        self._epoch0 = (clock.epoch() - (clock.now() - start)) if clock is not None else 1_700_000_000.0

    def read(self, gpu_pids: dict[int, tuple[int, ...]], *, at: float | None = None) -> HostReading:
        now = at if at is not None else (self.clock.now() if self.clock is not None else 0.0)
        ts = max(0.0, now - self.start)
        user = system = iowait = 0.0
        psi_cpu = psi_io = psi_io_full = 0.0
        read_bytes = net_bytes = busy = 0.0
        running = blocked = 0
        rss_total = 0
        processes: dict[int, ProcessStats] = {}
        for i, dev in enumerate(self.devices):
            for seg in dev.timeline.overlapping(0.0, ts if ts > 0 else 1e-9):
                if seg.workload is None:
                    continue
                prof = tree_profile(seg.workload)
                span = min(ts, seg.end) - seg.start
                if span <= 0:
                    continue
                cores = prof.tree_cores
                system += 0.1 * cores * span
                user += 0.9 * cores * span
                iowait += prof.iowait_cores * span
                psi_cpu += prof.cpu_pressure * span
                psi_io += prof.io_pressure * span
                psi_io_full += prof.io_full_pressure * span
                read_bytes += prof.read_bps * span
                net_bytes += prof.net_bps * span
                busy += (0.9 if prof.worker_state == "D" else min(1.0, prof.read_bps / 1.5e9)) * span
            seg = dev.timeline.segment_at(ts)
            if seg.workload is None or dev.timeline.is_lost(ts):
                continue
            prof = tree_profile(seg.workload)
            running += 1 + (prof.workers * math.ceil(prof.worker_cores) if prof.worker_state == "R" else 0)
            blocked += prof.workers if prof.worker_state == "D" else 0
            rss_total += 12 * GIB + prof.workers * 2 * GIB
            pid = self._pid_of(i, seg)
            if pid in gpu_pids:
                processes.update(self._tree(i, seg, prof, pid, ts, gpu_pids[pid]))
        user += 0.8 * _BACKGROUND_CORES * ts
        system += 0.2 * _BACKGROUND_CORES * ts
        total = self.cpus * ts
        softirq = 0.002 * total
        idle = max(0.0, total - user - system - iowait - softirq)
        load = float(running + blocked) + _BACKGROUND_CORES
        return HostReading(
            timestamp=now,
            cpu_count=self.cpus,
            cpu_seconds={
                "user": user,
                "nice": 0.0,
                "system": system,
                "idle": idle,
                "iowait": iowait,
                "irq": 0.0,
                "softirq": softirq,
                "steal": 0.0,
            },
            load_average=(load, load, load),
            memory_total_bytes=self.memory_bytes,
            memory_available_bytes=max(0, int(self.memory_bytes * 0.92) - rss_total),
            swap_total_bytes=0,
            swap_used_bytes=0,
            pressure_stall_seconds={
                "cpu": {"some": psi_cpu, "full": 0.0},
                "io": {"some": psi_io, "full": psi_io_full},
                "memory": {"some": 0.0, "full": 0.0},
            },
            disk_read_bytes=int(read_bytes),
            disk_write_bytes=int(read_bytes * 0.02),
            disk_busy_seconds=busy,
            network_receive_bytes=int(net_bytes),
            network_transmit_bytes=int(net_bytes),
            processes=processes,
        )

    def _tree(
        self, gpu: int, seg: Segment, prof: TreeProfile, pid: int, ts: float, gpus: tuple[int, ...]
    ) -> dict[int, ProcessStats]:
        wl = seg.workload
        assert wl is not None
        age = max(0.0, ts - seg.start)
        created = self._epoch0 + seg.start
        cgroup = _cgroup_path(self.scenario.seed, gpu, seg.number)
        throttled = prof.throttled_per_s * age
        usage = prof.tree_cores * age
        cmd = wl.spec.command or _DEFAULT_CMD[wl.spec.kind].format(precision=wl.spec.precision)
        gpu_indices = tuple(gpus) or (gpu,)
        common = dict(
            cgroup_path=cgroup,
            cgroup_cpu_quota_cores=prof.quota_cores,
            cgroup_cpu_throttled_seconds=throttled,
            cgroup_cpu_usage_seconds=usage,
            user="ml",
            create_time=created,
            gpu_indices=gpu_indices,
        )
        main = ProcessStats(
            pid=pid,
            ppid=max(1, pid - 1),
            comm="python3",
            cmdline=cmd,
            cpu_user_seconds=0.92 * prof.main_cores * age,
            cpu_system_seconds=0.08 * prof.main_cores * age,
            threads_total=24,
            threads_running=1 if prof.main_cores > 0.5 else 0,
            threads_blocked_io=0,
            max_thread_cpu_seconds=0.9 * prof.main_cores * age,
            rss_bytes=12 * GIB,
            io_read_bytes=int(prof.read_bps * age * 0.05),
            io_write_bytes=int(1e6 * age),
            io_delay_seconds=0.0,
            nspids=(pid,),
            **common,  # type: ignore[arg-type]
        )
        out = {pid: main}
        worker_read = prof.read_bps * 0.95 / max(1, prof.workers)
        for wpid in self._workers_of(gpu, seg, prof.workers):
            system_share = 0.35 if prof.worker_state == "D" else 0.1
            out[wpid] = ProcessStats(
                pid=wpid,
                ppid=pid,
                comm="pt_data_worker",
                cmdline=cmd,
                cpu_user_seconds=(1 - system_share) * prof.worker_cores * age,
                cpu_system_seconds=system_share * prof.worker_cores * age,
                threads_total=3,
                threads_running=math.ceil(prof.worker_cores) if prof.worker_state == "R" else 0,
                threads_blocked_io=1 if prof.worker_state == "D" else 0,
                max_thread_cpu_seconds=prof.worker_thread_cores * age,
                rss_bytes=2 * GIB,
                io_read_bytes=int(worker_read * age),
                io_write_bytes=0,
                io_delay_seconds=prof.io_delay_per_worker * age,
                nspids=(wpid,),
                **common,  # type: ignore[arg-type]
            )
        return out


def _cgroup_path(seed: int, gpu: int, segment: int) -> str:
    """A Kubernetes-style cgroup (v2, systemd driver) with stable pod and container ids."""
    h = hashlib.sha256(f"{seed}/{gpu}/{segment}".encode()).hexdigest()
    pod = f"{h[0:8]}_{h[8:12]}_{h[12:16]}_{h[16:20]}_{h[20:32]}"
    return (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/cri-containerd-{h}.scope"
    )
