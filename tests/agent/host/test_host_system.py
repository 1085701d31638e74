"""Host-wide parts: which disks and interfaces count, kept between reads and looked up again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.host.system import SystemReader

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "host"
ETH0_ETH1_RX = 9876543210 + 5000000000
PHYSICAL_NET = "../../devices/pci0000:00/0000:00:03.2/0000:03:00.2/net/{}"
VIRTUAL_NET = "../../devices/virtual/net/{}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    dest = tmp_path / "host"
    shutil.copytree(FIXTURES, dest, symlinks=True)
    return dest


def system(root: Path, recheck_every: int = 60) -> SystemReader:
    return SystemReader(str(root / "proc"), str(root / "sys"), recheck_every=recheck_every)


def read_network(reader: SystemReader) -> tuple[int, int]:
    reader.begin()
    return reader.network()


def read_disks(reader: SystemReader) -> tuple[int, int, float]:
    reader.begin()
    return reader.disks()


def net_dev_line(name: str, rx: int, tx: int) -> str:
    return f"  {name}: {rx} 1 0 0 0 0 0 0 {tx} 1 0 0 0 0 0 0\n"


def set_interface(root: Path, name: str, target: str | None, rx: int = 0, tx: int = 0) -> None:
    """Add (or with target None, remove) an interface in net/dev and /sys/class/net."""
    dev = root / "proc" / "1" / "net" / "dev"
    lines = [line for line in dev.read_text().splitlines(keepends=True) if line.split(":")[0].strip() != name]
    link = root / "sys" / "class" / "net" / name
    if link.is_symlink():
        link.unlink()
    if target is not None:
        lines.append(net_dev_line(name, rx, tx))
        link.symlink_to(target.format(name))
    dev.write_text("".join(lines))


def test_a_new_physical_interface_is_counted(root: Path) -> None:
    reader = system(root)
    assert read_network(reader)[0] == ETH0_ETH1_RX
    set_interface(root, "eth2", PHYSICAL_NET, rx=7, tx=9)
    assert read_network(reader) == (ETH0_ETH1_RX + 7, 1234567890 + 6000000000 + 9)


def test_an_interface_that_comes_back_virtual_under_the_same_name_is_looked_up_again(root: Path) -> None:
    reader = system(root)
    assert read_network(reader)[0] == ETH0_ETH1_RX
    set_interface(root, "eth1", None)
    assert read_network(reader)[0] == 9876543210
    set_interface(root, "eth1", VIRTUAL_NET, rx=5000000000)  # e.g. a bridge now named eth1
    assert read_network(reader)[0] == 9876543210


def test_every_interface_is_looked_up_again_after_recheck_every_reads(root: Path) -> None:
    reader = system(root, recheck_every=3)
    assert read_network(reader)[0] == ETH0_ETH1_RX
    link = root / "sys" / "class" / "net" / "eth1"
    link.unlink()
    link.symlink_to(VIRTUAL_NET.format("eth1"))  # renamed in place between two reads: not seen at once
    results = [read_network(reader)[0] for _ in range(3)]
    assert results[-1] == 9876543210


def test_a_disk_that_comes_back_virtual_under_the_same_name_is_looked_up_again(root: Path) -> None:
    reader = system(root)
    both = read_disks(reader)
    diskstats = root / "proc" / "diskstats"
    text = diskstats.read_text()
    nvme1 = next(line for line in text.splitlines(keepends=True) if " nvme1n1 " in line)
    diskstats.write_text(text.replace(nvme1, ""))
    only_nvme0 = read_disks(reader)
    assert only_nvme0[0] == both[0] - 100000000 * 512
    link = root / "sys" / "block" / "nvme1n1"
    link.unlink()
    link.symlink_to("../devices/virtual/block/nvme1n1")
    diskstats.write_text(text)
    assert read_disks(reader) == only_nvme0


def test_every_disk_is_looked_up_again_after_recheck_every_reads(root: Path) -> None:
    reader = system(root, recheck_every=2)
    both = read_disks(reader)
    link = root / "sys" / "block" / "nvme1n1"
    link.unlink()
    link.symlink_to("../devices/virtual/block/nvme1n1")
    results = [read_disks(reader) for _ in range(2)]
    assert results[-1][0] == both[0] - 100000000 * 512
