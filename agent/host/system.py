"""Host-wide readings: CPU time by mode, load, memory, pressure stalls, disk and network bytes.

Each function reads one part and raises on failure; the backend turns a failure into
an entry in ``HostReading.errors`` so one unreadable file never hides the others.
"""

from __future__ import annotations

import os
import re

from agent.host.openfiles import OpenFiles
from agent.host.procfs import (
    CpuTimes,
    parse_diskstats,
    parse_loadavg,
    parse_meminfo,
    parse_net_dev,
    parse_proc_stat,
    parse_psi,
    read_text,
)

PSI_RESOURCES: tuple[str, ...] = ("cpu", "io", "memory")

# Used only where sysfs cannot tell (no /sys/block, or an interface from another network
# namespace): names of partitions and virtual devices (node_exporter's default ignore list,
# plus device-mapper and md), and of virtual network interfaces.
_NOT_A_DISK = re.compile(
    r"^(z?ram\d+|loop\d+|fd\d+|dm-\d+|md\d+|sr\d+|nbd\d+|(h|s|v|xv)d[a-z]+\d+|nvme\d+n\d+p\d+|mmcblk\d+p\d+)$"
)
_VIRTUAL_NET = re.compile(
    r"^(lo|veth|cali|cni|flannel|docker|br-|virbr|vxlan|tunl|kube-|cilium|lxc|genev|tap|tun)"
)


_MEMINFO_KEYS = frozenset({"MemTotal", "MemAvailable", "SwapTotal", "SwapFree"})


def read_cpu(procfs: str, files: OpenFiles | None = None) -> CpuTimes:
    return parse_proc_stat(_read(files, f"{procfs}/stat"))


def read_load(procfs: str, files: OpenFiles | None = None) -> tuple[float, float, float]:
    return parse_loadavg(_read(files, f"{procfs}/loadavg"))


def read_memory(procfs: str, files: OpenFiles | None = None) -> dict[str, int]:
    """memory_total/available and swap_total/used, in bytes."""
    info = parse_meminfo(_read(files, f"{procfs}/meminfo"), _MEMINFO_KEYS)
    out = {"memory_total_bytes": info["MemTotal"], "memory_available_bytes": info["MemAvailable"]}
    if "SwapTotal" in info and "SwapFree" in info:
        out["swap_total_bytes"] = info["SwapTotal"]
        out["swap_used_bytes"] = info["SwapTotal"] - info["SwapFree"]
    return out


def read_pressure(
    procfs: str, files: OpenFiles | None = None
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """resource -> {some, full} stall seconds, and the failures.

    A kernel without PSI has no ``pressure`` directory: that is "not supported", not a
    failure, and gives an empty result. A file that exists but cannot be read (PSI
    compiled in but disabled with ``psi=0`` answers EOPNOTSUPP) is reported.
    """
    out: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    for resource in PSI_RESOURCES:
        try:
            out[resource] = parse_psi(_read(files, f"{procfs}/pressure/{resource}"))
        except (FileNotFoundError, NotADirectoryError):
            if not os.path.isdir(f"{procfs}/pressure"):
                return {}, []  # no PSI: skip the other files
            continue  # not this resource
        except (OSError, ValueError) as exc:
            failures.append(f"{resource}: {exc}")
    return out, failures


def is_physical_disk(sysfs: str, name: str) -> bool:
    """A whole disk backed by hardware: in /sys/block (so not a partition) and not under devices/virtual."""
    block = os.path.join(sysfs, "block")
    if not os.path.isdir(block):
        return _NOT_A_DISK.match(name) is None
    entry = os.path.join(block, name.replace("/", "!"))
    try:
        target = os.readlink(entry)
    except FileNotFoundError:
        return False  # partitions live under their disk, not in /sys/block
    except OSError:  # a plain directory (not a link): judge by name
        return os.path.isdir(entry) and _NOT_A_DISK.match(name) is None
    return "/devices/virtual/" not in target


def is_virtual_interface(sysfs: str, name: str) -> bool:
    try:
        return "/devices/virtual/" in os.readlink(os.path.join(sysfs, "class", "net", name))
    except OSError:
        return _VIRTUAL_NET.match(name) is not None


class SystemReader:
    """Reads the host-wide parts, remembering which devices are physical between reads.

    Whether a disk or an interface is physical is a sysfs look-up per device (a readlink, a
    stat); it does not change while the device exists, so it is kept per name while the name
    stays listed in ``diskstats`` / ``net/dev``. A name that drops out is forgotten (a device
    that comes back under that name is looked up again), and every ``recheck_every`` reads
    all are looked up again, which bounds how long a rename to a name of a different kind
    between two reads can go unnoticed.
    """

    def __init__(
        self, procfs: str, sysfs: str, files: OpenFiles | None = None, recheck_every: int = 60
    ) -> None:
        self.procfs = procfs
        self.sysfs = sysfs
        self.files = files
        self.recheck_every = max(1, recheck_every)
        self._physical_disk: dict[str, bool] = {}
        self._virtual_net: dict[str, bool] = {}
        self._reads = 0

    def begin(self) -> None:
        """Call once per host read."""
        if self._reads % self.recheck_every == 0:
            self._physical_disk = {}
            self._virtual_net = {}
        self._reads += 1

    def cpu(self) -> CpuTimes:
        return read_cpu(self.procfs, self.files)

    def load(self) -> tuple[float, float, float]:
        return read_load(self.procfs, self.files)

    def memory(self) -> dict[str, int]:
        return read_memory(self.procfs, self.files)

    def pressure(self) -> tuple[dict[str, dict[str, float]], list[str]]:
        return read_pressure(self.procfs, self.files)

    def disks(self) -> tuple[int, int, float]:
        """Read bytes, written bytes and busy seconds summed over physical disks."""
        known = self._physical_disk
        seen: dict[str, bool] = {}

        def physical(name: str) -> bool:
            kind = known.get(name)
            if kind is None:
                kind = is_physical_disk(self.sysfs, name)
            seen[name] = kind
            return kind

        disks = parse_diskstats(_read(self.files, f"{self.procfs}/diskstats"), keep=physical)
        self._physical_disk = seen
        return (
            sum(d.read_bytes for d in disks),
            sum(d.write_bytes for d in disks),
            sum((d.busy_seconds for d in disks), 0.0),
        )

    def network(self) -> tuple[int, int]:
        """Receive and transmit bytes over the node's interfaces, loopback and virtual ones excluded.

        Reads the network namespace of pid 1 (the host's, when the agent shares the host's
        pid namespace) and falls back to the agent's own. Virtual interfaces (veth, bridges)
        carry the same packets as the physical ones, so counting them would double it; when
        only virtual interfaces exist (the agent in a container's namespace) they are counted.
        """
        try:
            interfaces = parse_net_dev(_read(self.files, f"{self.procfs}/1/net/dev"))
        except OSError:
            interfaces = parse_net_dev(_read(self.files, f"{self.procfs}/net/dev"))
        known = self._virtual_net
        seen: dict[str, bool] = {}
        for name in interfaces:
            if name != "lo":
                virtual = known.get(name)
                seen[name] = is_virtual_interface(self.sysfs, name) if virtual is None else virtual
        self._virtual_net = seen
        physical = [interfaces[name] for name, virtual in seen.items() if not virtual]
        chosen = physical or [interfaces[name] for name in seen]
        return sum(v[0] for v in chosen), sum(v[1] for v in chosen)


def _read(files: OpenFiles | None, path: str) -> str:
    return files.read_text(path) if files is not None else read_text(path)
