"""Host-wide readings: CPU time by mode, load, memory, pressure stalls, disk and network bytes.

Each function reads one part and raises on failure; the backend turns a failure into
an entry in ``HostReading.errors`` so one unreadable file never hides the others.
"""

from __future__ import annotations

import os
import re

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


def read_cpu(procfs: str) -> CpuTimes:
    return parse_proc_stat(read_text(os.path.join(procfs, "stat")))


def read_load(procfs: str) -> tuple[float, float, float]:
    return parse_loadavg(read_text(os.path.join(procfs, "loadavg")))


def read_memory(procfs: str) -> dict[str, int]:
    """memory_total/available and swap_total/used, in bytes."""
    info = parse_meminfo(read_text(os.path.join(procfs, "meminfo")))
    out = {"memory_total_bytes": info["MemTotal"], "memory_available_bytes": info["MemAvailable"]}
    if "SwapTotal" in info and "SwapFree" in info:
        out["swap_total_bytes"] = info["SwapTotal"]
        out["swap_used_bytes"] = info["SwapTotal"] - info["SwapFree"]
    return out


def read_pressure(procfs: str) -> tuple[dict[str, dict[str, float]], list[str]]:
    """resource -> {some, full} stall seconds, and the failures.

    A kernel without PSI has no ``pressure`` directory: that is "not supported", not a
    failure, and gives an empty result. A file that exists but cannot be read (PSI
    compiled in but disabled with ``psi=0`` answers EOPNOTSUPP) is reported.
    """
    base = os.path.join(procfs, "pressure")
    if not os.path.isdir(base):
        return {}, []
    out: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    for resource in PSI_RESOURCES:
        try:
            out[resource] = parse_psi(read_text(os.path.join(base, resource)))
        except FileNotFoundError:
            continue
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


def read_disks(procfs: str, sysfs: str) -> tuple[int, int, float]:
    """Read bytes, written bytes and busy seconds summed over physical disks."""
    read = write = 0
    busy = 0.0
    for disk in parse_diskstats(read_text(os.path.join(procfs, "diskstats"))):
        if is_physical_disk(sysfs, disk.name):
            read += disk.read_bytes
            write += disk.write_bytes
            busy += disk.busy_seconds
    return read, write, busy


def _is_virtual_interface(sysfs: str, name: str) -> bool:
    try:
        return "/devices/virtual/" in os.readlink(os.path.join(sysfs, "class", "net", name))
    except OSError:
        return _VIRTUAL_NET.match(name) is not None


def read_network(procfs: str, sysfs: str) -> tuple[int, int]:
    """Receive and transmit bytes over the node's interfaces, loopback and virtual ones excluded.

    Reads the network namespace of pid 1 (the host's, when the agent shares the host's
    pid namespace) and falls back to the agent's own. Virtual interfaces (veth, bridges)
    carry the same packets as the physical ones, so counting them would double it; when
    only virtual interfaces exist (the agent in a container's namespace) they are counted.
    """
    path = os.path.join(procfs, "1", "net", "dev")
    try:
        interfaces = parse_net_dev(read_text(path))
    except OSError:
        interfaces = parse_net_dev(read_text(os.path.join(procfs, "net", "dev")))
    candidates = {name: v for name, v in interfaces.items() if name != "lo"}
    physical = {name: v for name, v in candidates.items() if not _is_virtual_interface(sysfs, name)}
    chosen = physical or candidates
    return sum(v[0] for v in chosen.values()), sum(v[1] for v in chosen.values())
