"""The PCI topology of a sysfs tree: root bridges, devices, bridges, and device-path lookup.

A BDF can change between boots when a card is added; a device path names the slot through the
ACPI root bridge and the chain of PCI-PCI bridges. ``scan`` reads ``/sys`` (or a recorded
tree) so the two can be converted; ``table`` is what ``doit devices`` prints.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import DeviceError
from pipeline.pci.address import Bdf, DevicePath, Hop, parse_device

_BRIDGE_CLASSES = (0x0604, 0x0609)  # PCI-PCI bridge, semi-transparent PCI-PCI bridge
_SYSFS_BDF = re.compile(r"([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")
_SYSFS_ROOT = re.compile(r"pci([0-9a-f]{4,8}):([0-9a-f]{2})")


def sysfs_root(sysfs: Path | None = None) -> Path:
    """The sysfs tree to read: the argument, else ``$XENPIPE_SYSFS``, else ``/sys``."""
    return sysfs if sysfs is not None else Path(os.environ.get("XENPIPE_SYSFS") or "/sys")



@dataclass(frozen=True)
class RootBus:
    """A PCI root bus and its ACPI companion (the root bridge's _HID and _UID)."""

    name: str  # sysfs directory name, e.g. pci0000:00
    domain: int
    bus: int
    hid: str | None  # None: no ACPI companion (no firmware_node)
    uid: str | None  # None: the firmware object has no _UID

    @property
    def label(self) -> str:
        if self.hid is None:
            return f"{self.name} (no ACPI companion)"
        return self.hid if self.uid is None else f"{self.hid}:{self.uid}"


@dataclass(frozen=True)
class Device:
    """One PCI function as sysfs shows it."""

    bdf: Bdf
    cls: int  # 24-bit class code, e.g. 0x020000
    vendor: int
    device: int
    driver: str | None
    root: RootBus
    parents: tuple[Bdf, ...]  # the bridges from the root bus down to this device's bus

    @property
    def is_bridge(self) -> bool:
        return self.cls >> 8 in _BRIDGE_CLASSES

    @property
    def ids(self) -> str:
        return f"{self.vendor:04x}:{self.device:04x}"

    @property
    def path(self) -> DevicePath | None:
        """The device path, or None when the root bus has no ACPI companion."""
        if self.root.hid is None:
            return None
        hops = tuple(Hop(b.dev, b.func) for b in (*self.parents, self.bdf))
        return DevicePath(self.root.hid, self.root.uid, hops)


@dataclass(frozen=True)
class Topology:
    """Every PCI device under one sysfs tree, sorted by BDF."""

    sysfs: Path
    devices: tuple[Device, ...]
    # which box's sysfs this is and how else to give one (pci.Box.whence), for the errors
    # about a device it lacks; None: a virtual machine's or a test's, nothing to add
    whence: str | None = None

    def _read(self) -> str:
        return f" ({self.whence})" if self.whence else ""

    def get(self, bdf: Bdf) -> Device | None:
        return next((d for d in self.devices if d.bdf == bdf), None)

    @property
    def roots(self) -> tuple[RootBus, ...]:
        return tuple(dict.fromkeys(d.root for d in self.devices))

    def children(self, root: RootBus, chain: tuple[Bdf, ...]) -> list[Device]:
        """Devices on the bus below *chain* (the root bus itself when *chain* is empty)."""
        return [d for d in self.devices if d.root == root and d.parents == chain]

    def behind(self, bridge: Bdf) -> list[Device]:
        """Every device below *bridge*, at any depth."""
        return [d for d in self.devices if bridge in d.parents]

    def path_of(self, bdf: Bdf) -> DevicePath:
        dev = self.get(bdf)
        if dev is None:
            raise DeviceError(f"no PCI device {bdf} under {self.sysfs}; `doit devices` lists them")
        if dev.path is None:
            raise DeviceError(
                f"{bdf} has no device path: its root bus {dev.root.name} has no ACPI companion "
                f"({self.sysfs}/devices/{dev.root.name}/firmware_node); use its BDF instead"
            )
        return dev.path

    def lookup(self, path: DevicePath) -> Device:
        """The one device *path* names; walks hop by hop so the error says where it stops."""
        roots = [r for r in self.roots if r.hid == path.hid and r.uid == path.uid]
        if not roots:
            known = ", ".join(f"{r.label} ({r.name})" for r in self.roots) or "none"
            same = [r.label for r in self.roots if r.hid == path.hid]
            hint = f" (did you mean {same[0]}?)" if len(same) == 1 else ""
            raise DeviceError(
                f"device path {path} matches nothing: no PCI root bridge {path.root}{hint}; "
                f"root bridges here: {known}{self._read()}"
            )
        found: list[Device] = []
        misses: list[str] = []
        for root in roots:
            dev, miss = self._walk(root, path.hops)
            if dev is not None:
                found.append(dev)
            else:
                misses.append(miss)
        if len(found) > 1:
            bdfs = ", ".join(str(d.bdf) for d in found)
            raise DeviceError(
                f"device path {path} matches several devices ({bdfs}): {len(roots)} root "
                f"bridges are {path.root}; name the device by BDF instead"
            )
        if not found:
            raise DeviceError(f"device path {path} matches nothing: {'; '.join(misses)}"
                              + self._read())
        return found[0]

    def _walk(self, root: RootBus, hops: tuple[Hop, ...]) -> tuple[Device | None, str]:
        chain: tuple[Bdf, ...] = ()
        where = f"the root bus of {root.label} ({root.name})"
        dev: Device | None = None
        for n, hop in enumerate(hops, 1):
            if dev is not None and not dev.is_bridge:
                return None, (f"{dev.bdf} (hop {n - 1}) is not a PCI-PCI bridge, "
                              f"so hop {n} {hop} cannot be behind it")
            on_bus = self.children(root, chain)
            dev = next((d for d in on_bus if Hop(d.bdf.dev, d.bdf.func) == hop), None)
            if dev is None:
                return None, f"no device {hop} (hop {n}) on {where}"
            chain = (*chain, dev.bdf)
            where = f"the secondary bus of bridge {dev.bdf}"
        return dev, ""

    def covered(self, path: DevicePath) -> tuple[Bdf, ...]:
        """The devices *path* gives away: the device, or for a bridge every device behind it.

        The bridge is not among them: the toolstacks do not pass bridges through. Rendered
        as hide= BDFs it stays with dom0; a guestdev= kernel seizes it too (see
        passthrough.devices_report), which the boot check does not count against the entry.
        """
        dev = self.lookup(path)
        if not dev.is_bridge:
            return (dev.bdf,)
        behind = tuple(d.bdf for d in self.behind(dev.bdf) if not d.is_bridge)
        if not behind:
            raise DeviceError(
                f"device path {path} names bridge {dev.bdf}, which has no devices behind it"
            )
        return behind


def read_stripped(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _hexfile(path: Path) -> int:
    text = read_stripped(path)
    try:
        return int(text, 16) if text else 0
    except ValueError:
        return 0


def pci_chain(real: str) -> tuple[str, str, list[str]] | None:
    """Split a resolved sysfs path into (root dir, root name, BDF names below it)."""
    parts = real.split("/")
    for i in range(len(parts) - 1, -1, -1):
        if _SYSFS_ROOT.fullmatch(parts[i]):
            below = [p for p in parts[i + 1:] if _SYSFS_BDF.fullmatch(p)]
            return "/".join(parts[: i + 1]), parts[i], below
    return None


def sysfs_bdf(name: str) -> Bdf:
    m = _SYSFS_BDF.fullmatch(name)
    assert m is not None
    return Bdf(*(int(g, 16) for g in m.groups()))


def _root_bus(root_dir: Path, name: str) -> RootBus:
    m = _SYSFS_ROOT.fullmatch(name)
    assert m is not None
    fw = root_dir / "firmware_node"
    hid = read_stripped(fw / "hid") if fw.exists() else None
    uid = read_stripped(fw / "uid") if hid else None
    return RootBus(name, int(m[1], 16), int(m[2], 16), hid or None, uid or None)


def scan(sysfs: Path | None = None, whence: str | None = None) -> Topology:
    """Read every PCI device from ``<sysfs>/bus/pci/devices`` and the tree it links into;
    *whence*: which box's it is, for errors (Topology.whence)."""
    root = sysfs_root(sysfs)
    bus_dir = root / "bus" / "pci" / "devices"
    if not bus_dir.is_dir():
        raise DeviceError(f"{bus_dir} not found: no PCI bus here, or {root} is not a sysfs tree"
                          + (f" ({whence})" if whence else ""))
    roots: dict[str, RootBus] = {}
    devices = []
    for entry in bus_dir.iterdir():
        real = os.path.realpath(entry)
        split = pci_chain(real)
        if split is None or not _SYSFS_BDF.fullmatch(entry.name):
            continue
        root_dir, root_name, chain = split
        if root_dir not in roots:
            roots[root_dir] = _root_bus(Path(root_dir), root_name)
        d = Path(real)
        link = d / "driver"
        driver = os.path.basename(os.readlink(link)) if link.is_symlink() else None
        devices.append(Device(
            bdf=sysfs_bdf(entry.name),
            cls=_hexfile(d / "class"),
            vendor=_hexfile(d / "vendor"),
            device=_hexfile(d / "device"),
            driver=driver,
            root=roots[root_dir],
            parents=tuple(sysfs_bdf(p) for p in chain[:-1]),
        ))
    return Topology(root, tuple(sorted(devices, key=lambda d: d.bdf)), whence)



def resolve_devices(devices: Sequence[str], topo: Topology | None) -> dict[str, tuple[Bdf, ...]]:
    """Each ``[passthrough] devices`` entry with the current BDF(s) it stands for.

    A BDF stands for itself; a device path is resolved through *topo* (the running machine),
    which the install stage shows in its plan for kernels without ``guestdev=``.
    """
    out: dict[str, tuple[Bdf, ...]] = {}
    for entry in devices:
        parsed = parse_device(entry)
        if isinstance(parsed, Bdf):
            out[entry] = (parsed,)
        elif topo is None:
            raise DeviceError(
                f"device path {entry} needs this machine's PCI topology to become a BDF; "
                "run on the target machine, use a BDF, or a kernel with guestdev="
            )
        else:
            out[entry] = topo.covered(parsed)
    return out



_CLASS_NAMES = {
    0x0100: "SCSI storage", 0x0101: "IDE interface", 0x0104: "RAID controller",
    0x0106: "SATA controller", 0x0107: "SAS controller", 0x0108: "NVMe controller",
    0x0180: "Mass storage", 0x0200: "Ethernet", 0x0280: "Network", 0x0300: "VGA",
    0x0403: "Audio", 0x0600: "Host bridge", 0x0601: "ISA bridge", 0x0604: "PCI bridge",
    0x0609: "PCI bridge", 0x0680: "Bridge", 0x0c03: "USB controller", 0x0c05: "SMBus",
}
_BASE_NAMES = {0x01: "Storage", 0x02: "Network", 0x03: "Display", 0x04: "Multimedia",
               0x06: "Bridge", 0x08: "System", 0x0C: "Serial bus", 0xFF: "Unassigned"}


def class_name(cls: int) -> str:
    name = _CLASS_NAMES.get(cls >> 8) or _BASE_NAMES.get(cls >> 16, "")
    return f"{cls >> 8:04x} {name}".rstrip()


def table(
    topo: Topology, passthrough: Iterable[Bdf] = (), notes: dict[Bdf, str] | None = None
) -> str:
    """The device table ``doit devices`` prints."""
    marked, notes = set(passthrough), notes or {}
    rows = [("BDF", "DEVICE PATH", "CLASS", "VENDOR:DEV", "DRIVER", "PASSTHROUGH", "NOTES")]
    for d in topo.devices:
        rows.append((str(d.bdf), str(d.path) if d.path else "-", class_name(d.cls), d.ids,
                     d.driver or "-", "yes" if d.bdf in marked else "", notes.get(d.bdf, "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)

