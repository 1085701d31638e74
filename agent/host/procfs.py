"""Parsers for the /proc and /sys files the host backend reads.

Every ``parse_*`` function takes the file's text and returns plain values, so that
the format knowledge sits in one place and can be tested on a literal string. The
``read_*`` helpers take a full path; the callers own the root (``procfs``, ``sysfs``,
``cgroupfs``), which is what lets the tests point the backend at fixture trees.

Units are converted here, where the value is read: clock ticks (USER_HZ) and
microseconds become seconds, pages and kB become bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

# USER_HZ and the page size are the kernel's ABI constants for this machine (100 and
# 4096 on every mainstream architecture); read once.
CLK_TCK: int = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")

# Longest command line we keep: label values and API bodies do not need more.
CMDLINE_MAX_CHARS = 4096

CPU_MODES: tuple[str, ...] = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


_CHUNK = 65536


def read_bytes(path: str) -> bytes:
    # os.open/os.read skip the buffered-file layers: these files are small and read
    # hundreds of times a second, and this halves the cost of each read. procfs, sysfs
    # and cgroupfs fill the buffer unless they reach the end, so a short read is the end.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunk = os.read(fd, _CHUNK)
        if len(chunk) < _CHUNK:
            return chunk
        chunks = [chunk]
        while chunk:
            chunk = os.read(fd, _CHUNK)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8", errors="replace")


# ProcStat and DiskStats are NamedTuples rather than frozen dataclasses: several are built
# every second, and a frozen dataclass costs several times as much to construct.
class ProcStat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` (or ``task/<tid>/stat``) that the agent uses."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime_ticks: int
    stime_ticks: int
    num_threads: int
    starttime_ticks: int
    rss_pages: int
    blkio_ticks: int | None  # field 42, delayacct_blkio_ticks; absent on old kernels


def parse_stat(text: str) -> ProcStat:
    # comm may hold spaces and parentheses: it runs from the first "(" to the last ")".
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    pid = int(text[:open_paren])
    comm = text[open_paren + 1 : close_paren]
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state); field n sits at rest[n - 3].
    blkio = int(rest[39]) if len(rest) > 39 else None
    return ProcStat(
        pid=pid,
        comm=comm,
        state=rest[0],
        ppid=int(rest[1]),
        utime_ticks=int(rest[11]),
        stime_ticks=int(rest[12]),
        num_threads=int(rest[17]),
        starttime_ticks=int(rest[19]),
        rss_pages=int(rest[21]),
        blkio_ticks=blkio,
    )


def parse_ppid(text: str) -> int:
    """Just the parent pid from a stat line (the cheap path for the whole-tree scan)."""
    return int(text[text.rindex(")") + 2 :].split(maxsplit=2)[1])


@dataclass(frozen=True)
class ProcStatus:
    uid: int | None
    nspids: tuple[int, ...]


def parse_status(text: str) -> ProcStatus:
    uid: int | None = None
    nspids: tuple[int, ...] = ()
    for line in text.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])  # real uid
        elif line.startswith("NSpid:"):
            nspids = tuple(int(x) for x in line.split()[1:])
    return ProcStatus(uid=uid, nspids=nspids)


def parse_cmdline(raw: bytes) -> str:
    args = raw.rstrip(b"\0").split(b"\0")
    return b" ".join(args).decode("utf-8", errors="replace")[:CMDLINE_MAX_CHARS]


def parse_environ(raw: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[key.decode("utf-8", errors="replace")] = value.decode("utf-8", errors="replace")
    return env


def parse_proc_io(text: str) -> tuple[int | None, int | None]:
    """Storage-layer bytes (``read_bytes``/``write_bytes``).

    Not ``rchar``/``wchar``, which also count page-cache hits and sockets.
    """
    read = write = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "read_bytes":
            read = value
        elif key == "write_bytes":
            write = value
    return (int(read) if read is not None else None, int(write) if write is not None else None)


@dataclass(frozen=True)
class CgroupLine:
    hierarchy: int
    controllers: tuple[str, ...]  # empty for the v2 unified hierarchy
    path: str


def parse_cgroup(text: str) -> list[CgroupLine]:
    lines = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers = tuple(c for c in parts[1].split(",") if c)
        lines.append(CgroupLine(int(parts[0]), controllers, parts[2]))
    return lines


@dataclass(frozen=True)
class CpuTimes:
    seconds: dict[str, float]  # mode -> cumulative seconds over all CPUs
    cpu_count: int
    boot_time: float | None  # btime, seconds since the epoch


def parse_proc_stat(text: str) -> CpuTimes:
    seconds: dict[str, float] = {}
    cpu_count = 0
    boot_time: float | None = None
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = line.split()[1:]
            for mode, value in zip(CPU_MODES, values, strict=False):
                seconds[mode] = int(value) / CLK_TCK
        elif line.startswith("cpu"):
            cpu_count += 1
        elif line.startswith("btime "):
            boot_time = float(line.split()[1])
    if not seconds:
        raise ValueError("no aggregate 'cpu' line")
    return CpuTimes(seconds, cpu_count, boot_time)


def parse_loadavg(text: str) -> tuple[float, float, float]:
    one, five, fifteen = text.split()[:3]
    return float(one), float(five), float(fifteen)


def parse_meminfo(text: str, keys: frozenset[str] | None = None) -> dict[str, int]:
    """Key -> bytes (the kernel writes kB; a few keys are plain counts and are kept as they are).

    With ``keys``, only those are parsed (the file has some 50 lines; a reading needs four).
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if keys is not None and key not in keys:
            continue
        parts = rest.split()
        if not parts:
            continue
        value = int(parts[0])
        out[key] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
        if keys is not None and len(out) == len(keys):
            break
    return out


def parse_psi(text: str) -> dict[str, float]:
    """``some``/``full`` -> cumulative stall seconds (the ``total=`` field is in microseconds)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        for item in parts[1:]:
            if item.startswith("total="):
                out[parts[0]] = int(item[6:]) / 1e6
    return out


class DiskStats(NamedTuple):
    name: str
    read_bytes: int
    write_bytes: int
    busy_seconds: float


DISKSTATS_SECTOR_BYTES = 512  # /proc/diskstats always counts 512-byte sectors, whatever the device


def parse_diskstats(text: str, keep: Callable[[str], bool] | None = None) -> list[DiskStats]:
    """Every device's counters, or with ``keep`` only those of the devices it accepts by name."""
    disks = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 14 or (keep is not None and not keep(parts[2])):
            continue
        # major minor name reads merged sectors_read ms_reading writes merged sectors_written ms_writing
        # in_flight ms_doing_io ...
        disks.append(
            DiskStats(
                name=parts[2],
                read_bytes=int(parts[5]) * DISKSTATS_SECTOR_BYTES,
                write_bytes=int(parts[9]) * DISKSTATS_SECTOR_BYTES,
                busy_seconds=int(parts[12]) / 1000.0,
            )
        )
    return disks


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """Interface -> (receive bytes, transmit bytes)."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        values = rest.split()
        if len(values) < 9:
            continue
        out[name.strip()] = (int(values[0]), int(values[8]))
    return out


def parse_key_values(text: str) -> dict[str, int]:
    """``key value`` lines, as in cgroup ``cpu.stat``."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


# -- single-process look-ups for attribution (the one place /proc is read) ------------------


def read_process_cgroups(procfs: str, pid: int) -> list[CgroupLine]:
    return parse_cgroup(read_text(os.path.join(procfs, str(pid), "cgroup")))


def read_process_environ(procfs: str, pid: int) -> dict[str, str]:
    """The environment a process was started with (needs the same uid or CAP_SYS_PTRACE)."""
    return parse_environ(read_bytes(os.path.join(procfs, str(pid), "environ")))


def read_process_parent(procfs: str, pid: int) -> tuple[int, str, str]:
    """(ppid, comm, command line) of any process, e.g. a container's shim."""
    base = os.path.join(procfs, str(pid))
    stat = parse_stat(read_text(os.path.join(base, "stat")))
    return stat.ppid, stat.comm, parse_cmdline(read_bytes(os.path.join(base, "cmdline")))
