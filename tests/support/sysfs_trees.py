"""Recorded sysfs (and procfs) trees, built as real directories, files and symlinks.

The layout copies a real kernel's: ``bus/pci/devices/<BDF>`` are relative symlinks into
``devices/pciDDDD:BB/...``, bridges nest their secondary bus's devices, ``driver`` links into
``bus/pci/drivers``, the root bus's ``firmware_node`` links to an ACPI device with ``hid`` and
an optional ``uid``, and ``dev/block/M:m`` and ``class/block/<name>`` link to block devices
below their controller.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

# class codes
HOST_BRIDGE, ISA_BRIDGE, PCI_BRIDGE, SUBTRACTIVE_BRIDGE = 0x060000, 0x060100, 0x060400, 0x060401
ETHERNET, MASS_STORAGE, IDE, SATA, NVME = 0x020000, 0x018000, 0x010180, 0x010601, 0x010802
VGA, SMBUS, OTHER_BRIDGE = 0x030000, 0x0C0500, 0x068000


def _full(bdf: str) -> str:
    return bdf if bdf.count(":") == 2 else f"0000:{bdf}"


def _link(link: Path, target: Path) -> None:
    """A relative symlink, as sysfs has them."""
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


class Tree:
    """Builds one sysfs tree under *sysfs*."""

    def __init__(self, sysfs: Path) -> None:
        self.sysfs = sysfs
        self.dirs: dict[str, Path] = {}
        self._acpi = 0
        (sysfs / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)

    def root_bus(self, domain: int = 0, bus: int = 0, hid: str | None = "PNP0A08",
                 uid: str | None = "0") -> Path:
        """A root bus; *hid* None leaves out the ACPI companion, *uid* None its _UID file."""
        d = self.sysfs / "devices" / f"pci{domain:04x}:{bus:02x}"
        (d / "pci_bus" / f"{domain:04x}:{bus:02x}").mkdir(parents=True)
        (d / "uevent").write_text("")
        if hid is not None:
            bus = self.sysfs / "devices" / "LNXSYSTM:00" / "LNXSYBUS:00"
            acpi = bus / f"{hid}:{self._acpi:02x}"
            self._acpi += 1
            acpi.mkdir(parents=True)
            (acpi / "hid").write_text(hid + "\n")
            if uid is not None:
                (acpi / "uid").write_text(uid + "\n")
            (acpi / "path").write_text("\\_SB_.PCI0\n")
            _link(d / "firmware_node", acpi)
        return d

    def dev(self, bdf: str, cls: int, vendor: int, device: int, driver: str | None = None,
            parent: str | None = None, reset: str | None = "bus",
            config: bytes | None = None) -> Path:
        """A PCI function on the root bus of its domain:bus, or behind bridge *parent*.

        *reset*: the ``reset_method`` file (None: none, as a kernel hides it for a device
        without reset); *config*: the config space (default 64 zero bytes: unknown)."""
        bdf = _full(bdf)
        base = self.dirs[_full(parent)] if parent else self.sysfs / "devices" / f"pci{bdf[:7]}"
        assert base.is_dir(), f"no bus for {bdf}: create the root bus or the bridge first"
        d = base / bdf
        d.mkdir()
        (d / "class").write_text(f"0x{cls:06x}\n")
        (d / "vendor").write_text(f"0x{vendor:04x}\n")
        (d / "device").write_text(f"0x{device:04x}\n")
        (d / "config").write_bytes(b"\0" * 64 if config is None else config)
        if reset is not None:
            (d / "reset_method").write_text(reset + "\n")
        if driver:
            drv = self.sysfs / "bus" / "pci" / "drivers" / driver
            drv.mkdir(parents=True, exist_ok=True)
            _link(d / "driver", drv)
            _link(drv / bdf, d)
        _link(self.sysfs / "bus" / "pci" / "devices" / bdf, d)
        self.dirs[bdf] = d
        return d

    def disk(self, bdf: str, name: str, majmin: str, partitions: Sequence[str] = (),
             via: str = "ata1/host0/target0:0:0/0:0:0:0/block") -> Path:
        """A disk below controller *bdf*; partitions ``<name>1``... get minors after it."""
        d = self.dirs[_full(bdf)] / via / name
        major, minor = majmin.split(":")
        self._block(d, majmin, name)
        for i, part in enumerate(partitions, 1):
            self._block(d / part, f"{major}:{int(minor) + i}", part)
        return d

    def dm(self, index: int, name: str, majmin: str, slaves: Iterable[str]) -> Path:
        """A device-mapper device (LVM, LUKS) over the block devices named in *slaves*."""
        d = self.sysfs / "devices" / "virtual" / "block" / f"dm-{index}"
        self._block(d, majmin, f"dm-{index}")
        (d / "dm").mkdir()
        (d / "dm" / "name").write_text(name + "\n")
        for s in slaves:
            _link(d / "slaves" / s, Path(os.path.realpath(self.sysfs / "class" / "block" / s)))
        return d

    def _block(self, d: Path, majmin: str, name: str) -> None:
        d.mkdir(parents=True)
        (d / "dev").write_text(majmin + "\n")
        _link(self.sysfs / "dev" / "block" / majmin, d)
        _link(self.sysfs / "class" / "block" / name, d)

    def net(self, bdf: str, iface: str) -> Path:
        """Network interface *iface* of PCI function *bdf* (``class/net/<iface>``)."""
        d = self.dirs[_full(bdf)] / "net" / iface
        d.mkdir(parents=True)
        _link(self.sysfs / "class" / "net" / iface, d)
        return d

    def tty(self, name: str, bdf: str | None = None) -> Path:
        """Serial line *name* on PCI card *bdf*, else on the legacy ISA port (``pnp0``)."""
        base = self.dirs[_full(bdf)] if bdf else self.sysfs / "devices" / "pnp0" / "00:05"
        d = base / "tty" / name
        d.mkdir(parents=True)
        _link(self.sysfs / "class" / "tty" / name, d)
        return d

    def acpi_tables(self, *names: str) -> None:
        tables = self.sysfs / "firmware" / "acpi" / "tables"
        tables.mkdir(parents=True, exist_ok=True)
        for n in names:
            (tables / n).write_bytes(n.encode())


def config_space(vendor: int, device: int, cls: int, caps: Sequence[int] = (),
                 port: int | None = None, flr: bool = False, size: int = 256) -> bytes:
    """A config space with capability list *caps* (IDs; 0x10 PCI Express with device/port type
    *port* and FLR if *flr*); *size* 64 is what an unprivileged read of sysfs returns."""
    c = bytearray(256)
    c[0:4] = vendor.to_bytes(2, "little") + device.to_bytes(2, "little")
    c[9:12] = cls.to_bytes(3, "little")
    c[0x0E] = 1 if cls >> 8 == 0x0604 else 0
    if caps:
        c[6] |= 0x10
        c[0x34] = 0x40
    for i, cap in enumerate(caps):
        at = 0x40 + 0x10 * i
        c[at] = cap
        c[at + 1] = at + 0x10 if i + 1 < len(caps) else 0
        if cap == 0x10:
            c[at + 2] = ((port or 0) << 4) | 2
            c[at + 4:at + 8] = ((1 << 28) if flr else 0).to_bytes(4, "little")
    return bytes(c[:size])


def proc_tree(proc: Path, mounts: Sequence[tuple[str, str, str, str]],
              swaps: Sequence[str] = (), mountinfo: bool = True,
              routes: Sequence[tuple[str, str, str]] = (), cmdline: str | None = None) -> Path:
    """A procfs with mount table entries (major:minor, mount point, fstype, source), IPv4
    *routes* (interface, destination, netmask) in ``net/route`` and a ``cmdline``."""
    if routes:
        def hexip(ip: str) -> str:
            return "".join(f"{int(o):02X}" for o in reversed(ip.split(".")))  # host order
        (proc / "net").mkdir(parents=True, exist_ok=True)
        (proc / "net" / "route").write_text(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow"
            "\tIRTT\n" + "".join(
                f"{i}\t{hexip(d)}\t{hexip('10.0.0.1') if d == '0.0.0.0' else '00000000'}\t"
                f"{'0003' if d == '0.0.0.0' else '0001'}\t0\t0\t0\t{hexip(m)}\t0\t0\t0\n"
                for i, d, m in routes))
    if cmdline is not None:
        proc.mkdir(parents=True, exist_ok=True)
        (proc / "cmdline").write_text(cmdline + "\n")
    (proc / "self").mkdir(parents=True, exist_ok=True)
    if mountinfo:
        lines = [f"{20 + i} 1 {mm} / {point.replace(' ', chr(92) + '040')} rw,relatime - "
                 f"{fstype} {source} rw" for i, (mm, point, fstype, source) in enumerate(mounts)]
        (proc / "self" / "mountinfo").write_text("".join(line + "\n" for line in lines))
    else:
        (proc / "mounts").write_text(
            "".join(f"{source} {point} {fstype} rw 0 0\n" for _, point, fstype, source in mounts)
        )
    (proc / "swaps").write_text(
        "Filename\tType\tSize\tUsed\tPriority\n"
        + "".join(f"{s}\tpartition\t1048572\t0\t-2\n" for s in swaps)
    )
    return proc


# ------------------------------------------------------------------------ recorded machines
def q35(sysfs: Path) -> Tree:
    """QEMU q35: PNP0A08 uid 0; a NIC behind root port 1c.0 (two hops), an NVMe behind a
    switch behind root port 1c.1 (four hops), multi-function ICH9 at 1f, SATA disk on 1f.2."""
    t = Tree(sysfs)
    t.root_bus(hid="PNP0A08", uid="0")
    t.dev("00:00.0", HOST_BRIDGE, 0x8086, 0x29C0)
    t.dev("00:01.0", VGA, 0x1234, 0x1111, "bochs-drm")
    t.dev("00:1c.0", PCI_BRIDGE, 0x1B36, 0x000C, "pcieport")
    t.dev("01:00.0", ETHERNET, 0x8086, 0x10D3, "e1000e", parent="00:1c.0")
    t.dev("00:1c.1", PCI_BRIDGE, 0x1B36, 0x000C, "pcieport")
    t.dev("02:00.0", PCI_BRIDGE, 0x104C, 0x8232, "pcieport", parent="00:1c.1")
    t.dev("03:00.0", PCI_BRIDGE, 0x104C, 0x8232, "pcieport", parent="02:00.0")
    t.dev("04:00.0", NVME, 0x1B36, 0x0010, "nvme", parent="03:00.0")
    t.dev("00:1c.2", PCI_BRIDGE, 0x1B36, 0x000C, "pcieport")  # empty slot
    t.dev("00:1f.0", ISA_BRIDGE, 0x8086, 0x2918, "lpc_ich")
    t.dev("00:1f.2", SATA, 0x8086, 0x2922, "ahci")
    t.dev("00:1f.3", SMBUS, 0x8086, 0x2930, "i801_smbus")
    t.disk("00:1f.2", "sda", "8:0", ["sda1", "sda2"])
    t.disk("04:00.0", "nvme0n1", "259:0", ["nvme0n1p1"], via="nvme/nvme0")
    t.acpi_tables("APIC", "DSDT", "FACP", "MCFG", "DMAR")
    return t


def pc(sysfs: Path) -> Tree:
    """QEMU pc (i440FX): PNP0A03 uid 0, PIIX3 multi-function at 01.x, no bridges, no IOMMU."""
    t = Tree(sysfs)
    t.root_bus(hid="PNP0A03", uid="0")
    t.dev("00:00.0", HOST_BRIDGE, 0x8086, 0x1237)
    t.dev("00:01.0", ISA_BRIDGE, 0x8086, 0x7000)
    t.dev("00:01.1", IDE, 0x8086, 0x7010, "ata_piix")
    t.dev("00:01.3", OTHER_BRIDGE, 0x8086, 0x7113, "piix4_smbus")
    t.dev("00:02.0", VGA, 0x1234, 0x1111)
    t.dev("00:03.0", ETHERNET, 0x8086, 0x100E, "e1000")
    t.disk("00:01.1", "sda", "8:0", ["sda1"])
    t.acpi_tables("APIC", "DSDT", "FACP")
    return t


def two_roots(sysfs: Path) -> Tree:
    """q35 with a pxb-pcie expander: root buses 00 (uid 0) and 80 (uid 128), each with a NIC at
    02.0, so only the uid tells them apart."""
    t = Tree(sysfs)
    t.root_bus(bus=0x00, hid="PNP0A08", uid="0")
    t.root_bus(bus=0x80, hid="PNP0A08", uid="128")
    t.dev("00:00.0", HOST_BRIDGE, 0x8086, 0x29C0)
    t.dev("00:02.0", ETHERNET, 0x8086, 0x10D3, "e1000e")
    t.dev("80:02.0", ETHERNET, 0x8086, 0x10D3, "e1000e")
    return t


def no_uid(sysfs: Path) -> Tree:
    """A root bridge whose firmware object has no _UID, and a second root with no ACPI at all."""
    t = Tree(sysfs)
    t.root_bus(hid="PNP0A03", uid=None)
    t.root_bus(domain=1, hid=None)
    t.dev("00:1d.7", 0x0C0320, 0x8086, 0x293A, "ehci-pci")
    t.dev("0001:00:00.0", ETHERNET, 0x8086, 0x10D3)
    return t


def same_root_twice(sysfs: Path) -> Tree:
    """Broken firmware: two root bridges with the same _HID and no _UID."""
    t = Tree(sysfs)
    t.root_bus(bus=0x00, hid="PNP0A03", uid=None)
    t.root_bus(bus=0x40, hid="PNP0A03", uid=None)
    t.dev("00:03.0", ETHERNET, 0x8086, 0x100E)
    t.dev("40:03.0", ETHERNET, 0x8086, 0x100E)
    return t


def ref2009(sysfs: Path) -> Tree:
    """The 2009 mailing-list machine: 82566DM-2 NIC at 00:19.0, IT8212 at 01:01.0 behind the
    ICH's subtractive PCI bridge 00:1e.0, root disk on the ICH SATA controller 00:1f.2."""
    t = Tree(sysfs)
    t.root_bus(hid="PNP0A08", uid="0")
    t.dev("00:00.0", HOST_BRIDGE, 0x8086, 0x29B0)
    t.dev("00:19.0", ETHERNET, 0x8086, 0x10BD, "e1000e")
    t.dev("00:1e.0", SUBTRACTIVE_BRIDGE, 0x8086, 0x244E)
    t.dev("01:01.0", MASS_STORAGE, 0x1283, 0x8212, "pata_it821x", parent="00:1e.0")
    t.dev("00:1f.0", ISA_BRIDGE, 0x8086, 0x2914, "lpc_ich")
    t.dev("00:1f.2", SATA, 0x8086, 0x2922, "ahci")
    t.disk("00:1f.2", "sda", "8:0", ["sda1", "sda2", "sda3"])
    t.acpi_tables("APIC", "DSDT", "FACP", "DMAR")
    return t


MSI, MSIX, PCIE = 0x05, 0x11, 0x10
ROOT_PORT, ENDPOINT = 0x4, 0x0


def checks_box(sysfs: Path) -> Tree:
    """A box for the go/no-go checks: a dual-port NIC (multi-function 01:00.0/.1, MSI-X, FLR)
    on root port 00:1c.0; a conventional PCI card 03:00.0 (MSI only) and 03:01.0 behind a
    PCIe-to-PCI bridge 02:00.0 on root port 00:1c.1; a NIC 04:00.0 with no reset method and
    INTx only on root port 00:1c.2; the root disk on SATA 00:1f.2; the IOMMU's DMAR."""
    t = Tree(sysfs)
    t.root_bus(hid="PNP0A08", uid="0")
    t.dev("00:00.0", HOST_BRIDGE, 0x8086, 0x29C0)
    port = config_space(0x8086, 0x2940, PCI_BRIDGE, [PCIE, MSI], port=ROOT_PORT)
    for fn in (0, 1, 2):
        t.dev(f"00:1c.{fn}", PCI_BRIDGE, 0x8086, 0x2940, "pcieport", config=port)
    nic = config_space(0x8086, 0x10C9, ETHERNET, [PCIE, MSI, MSIX], port=ENDPOINT, flr=True)
    t.dev("01:00.0", ETHERNET, 0x8086, 0x10C9, "igb", parent="00:1c.0", reset="flr bus",
          config=nic)
    t.dev("01:00.1", ETHERNET, 0x8086, 0x10C9, "igb", parent="00:1c.0", reset="flr bus",
          config=nic)
    t.dev("02:00.0", PCI_BRIDGE, 0x104C, 0x8240, parent="00:1c.1",
          config=config_space(0x104C, 0x8240, PCI_BRIDGE, [PCIE], port=0x7))
    t.dev("03:00.0", ETHERNET, 0x10EC, 0x8139, "8139too", parent="02:00.0",
          config=config_space(0x10EC, 0x8139, ETHERNET, [MSI]))
    t.dev("03:01.0", 0x0C0010, 0x1106, 0x3044, "firewire_ohci", parent="02:00.0",
          config=config_space(0x1106, 0x3044, 0x0C0010, [MSI]))
    t.dev("04:00.0", ETHERNET, 0x10EC, 0x8168, "r8169", parent="00:1c.2", reset=None,
          config=config_space(0x10EC, 0x8168, ETHERNET, [PCIE], port=ENDPOINT))
    t.dev("00:1f.0", ISA_BRIDGE, 0x8086, 0x2918, "lpc_ich")
    t.dev("00:1f.2", SATA, 0x8086, 0x2922, "ahci", config=config_space(
        0x8086, 0x2922, SATA, [MSI], size=64))  # an unprivileged read: capabilities unknown
    t.disk("00:1f.2", "sda", "8:0", ["sda1", "sda2"])
    t.acpi_tables("APIC", "DSDT", "FACP", "MCFG", "DMAR")
    return t


SERIAL, ROUTE = 0x070002, [("eth0", "10.0.0.0", "255.255.255.0"), ("eth0", "0.0.0.0", "0.0.0.0"),
                           ("eth1", "192.168.7.0", "255.255.255.0")]


def nic_box(sysfs: Path) -> Tree:
    """checks_box with dom0's own uses: eth0 on 01:00.0 (10.0.0.0/24 and the default route,
    see ROUTE), eth1 on 01:00.1 (192.168.7.0/24), a PCI serial card 03:02.0 (ttyS4) behind
    the PCIe-to-PCI bridge, ttyS0 on the legacy port, and the boot VGA at 00:02.0."""
    t = checks_box(sysfs)
    t.net("01:00.0", "eth0")
    t.net("01:00.1", "eth1")
    t.dev("00:02.0", VGA, 0x1234, 0x1111, "bochs-drm")
    (t.dirs["0000:00:02.0"] / "boot_vga").write_text("1\n")
    t.dev("03:02.0", SERIAL, 0x1415, 0xC158, "serial", parent="02:00.0")
    t.tty("ttyS4", "03:02.0")
    t.tty("ttyS0")
    return t
