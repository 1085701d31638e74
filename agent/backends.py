"""The two seams the samplers read through: a GPU backend and a host backend.

The real implementations are ``agent.nvml.backend.NvmlBackend`` (the only module that
imports pynvml) and ``agent.host.backend.HostBackend`` (the only module that imports
psutil or reads /proc and /sys). The simulated fleet provides objects with the same
shape; the agent never asks which one it has.
"""

from __future__ import annotations

from typing import Protocol

from agent.model import GpuIdentity, GpuReading, HostReading, XidEvent


class GpuBackend(Protocol):
    @property
    def available(self) -> bool:
        """True once a driver answered; False means host-only."""
        ...

    @property
    def status_message(self) -> str:
        """One line for the log and /readyz, e.g. "NVML driver 550.54.15, 8 GPUs" or "... host-only"."""
        ...

    def start(self) -> bool:
        """Initialise; returns ``available``. Never raises for a missing driver."""
        ...

    def close(self) -> None: ...

    def identities(self) -> list[GpuIdentity]: ...

    def read(self, index: int, *, processes: bool) -> GpuReading:
        """Read one GPU. May block (a wedged driver): the sampler calls it on a reader thread, not its own."""
        ...

    def wait_events(self, timeout_s: float) -> list[XidEvent]:
        """Block up to ``timeout_s`` for XID events; run on a thread of its own."""
        ...


class HostSource(Protocol):
    def read(self, gpu_pids: dict[int, tuple[int, ...]]) -> HostReading:
        """Host stats, plus per-process stats for the GPU pids (pid -> GPU indices) and their descendants."""
        ...
