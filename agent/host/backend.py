"""HostBackend: the agent's one door to /proc, /sys and the cgroup filesystem.

It parses the kernel's files directly rather than going through psutil, because the
three roots (``procfs``, ``sysfs``, ``cgroupfs``) must be injectable per instance for
fixture trees and for running in a container with the host's filesystems mounted
elsewhere; ``psutil.PROCFS_PATH`` is one global, psutil does not read PSI or cgroup CPU
limits, and it would read each process's files several times per sample.

Every part (cpu, load, memory, pressure, disk, network, processes) is read on its own:
one that fails leaves its fields ``None`` and an entry in ``HostReading.errors``, and the
others stand. A process that ends while it is read is skipped. ``read`` never raises.

A read runs every second, so what cannot change between reads is not read again (which
disks and interfaces are physical, the cgroup layout, a process's identity), and on the
real kernel filesystems the files read every time are kept open and re-read with one
``pread`` (``openfiles.OpenFiles``). ``close`` closes them; dropping the backend does too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from agent.clock import Clock, MonotonicClock
from agent.host.cgroups import CgroupReader
from agent.host.openfiles import OpenFiles, default_fd_budget, is_kernel_fs
from agent.host.processes import ProcessReader
from agent.host.system import SystemReader
from agent.model import HostReading

log = logging.getLogger(__name__)

T = TypeVar("T")


class HostBackend:
    """Implements ``agent.backends.HostSource`` over the real kernel files (or a fixture tree)."""

    def __init__(
        self,
        procfs: str = "/proc",
        sysfs: str = "/sys",
        cgroupfs: str = "/sys/fs/cgroup",
        clock: Clock | None = None,
        *,
        max_processes: int = 512,
    ) -> None:
        self.procfs = procfs
        self.sysfs = sysfs
        self.cgroupfs = cgroupfs
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self._files = OpenFiles(is_kernel_fs(procfs), default_fd_budget(4))
        self._system = SystemReader(procfs, sysfs, self._files)
        self._cgroups = CgroupReader(cgroupfs)
        self._processes = ProcessReader(procfs, self._cgroups, max_processes=max_processes, files=self._files)
        self._lock = threading.Lock()  # the reader keeps per-thread CPU state between calls
        self._failing: set[str] = set()

    def read(self, gpu_pids: dict[int, tuple[int, ...]]) -> HostReading:
        with self._lock:
            reading = HostReading(timestamp=self.clock.now())
            self._cgroups.begin()
            self._system.begin()
            boot_time = self._part(reading, "cpu", lambda: self._read_cpu(reading))
            self._part(reading, "load", lambda: self._read_load(reading))
            self._part(reading, "memory", lambda: self._read_memory(reading))
            self._part(reading, "pressure", lambda: self._read_pressure(reading))
            self._part(reading, "disk", lambda: self._read_disk(reading))
            self._part(reading, "network", lambda: self._read_network(reading))
            self._part(reading, "processes", lambda: self._read_processes(reading, gpu_pids, boot_time))
            self._log_transitions(reading)
            return reading

    def close(self) -> None:
        """Close the files kept open between reads (a later read opens them again)."""
        with self._lock:
            self._files.close()
            self._cgroups.close()

    # -- parts ---------------------------------------------------------------

    def _read_cpu(self, reading: HostReading) -> float | None:
        times = self._system.cpu()
        reading.cpu_seconds = times.seconds
        reading.cpu_count = times.cpu_count or None
        return times.boot_time

    def _read_load(self, reading: HostReading) -> None:
        reading.load_average = self._system.load()

    def _read_memory(self, reading: HostReading) -> None:
        for name, value in self._system.memory().items():
            setattr(reading, name, value)

    def _read_pressure(self, reading: HostReading) -> None:
        stalls, failures = self._system.pressure()
        reading.pressure_stall_seconds = stalls
        if failures:
            raise OSError("; ".join(failures))

    def _read_disk(self, reading: HostReading) -> None:
        reading.disk_read_bytes, reading.disk_write_bytes, reading.disk_busy_seconds = self._system.disks()

    def _read_network(self, reading: HostReading) -> None:
        reading.network_receive_bytes, reading.network_transmit_bytes = self._system.network()

    def _read_processes(
        self, reading: HostReading, gpu_pids: dict[int, tuple[int, ...]], boot_time: float | None
    ) -> None:
        reading.processes = self._processes.read(gpu_pids, boot_time)

    # -- failure handling ----------------------------------------------------

    @staticmethod
    def _part(reading: HostReading, name: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Exception as exc:  # one part's failure must not take the others (or the sampler) down
            reading.errors[name] = f"{type(exc).__name__}: {exc}"
            return None

    def _log_transitions(self, reading: HostReading) -> None:
        # Log when a part starts and stops failing, not every second it stays failed.
        failing = set(reading.errors)
        for name in sorted(failing - self._failing):
            log.warning("host: reading %s failed: %s", name, reading.errors[name])
        for name in sorted(self._failing - failing):
            log.info("host: reading %s works again", name)
        self._failing = failing
