"""PCI devices: BDFs, ACPI device paths, the sysfs topology, and the passthrough boot options.

A BDF (``0000:00:19.0``) can change between boots when a card is added; a device path
(``PNP0A08:0-1c.1-00.0``, the 2008 ``guestdev=`` format) names the slot through the ACPI root
bridge and the chain of PCI-PCI bridges, so it stays put. This module converts between the
two using sysfs, warns about devices dom0 cannot give away (the disk holding ``/``), and renders
the dom0 and Xen command-line options for the kernel flavour being built.

``python -m pipeline.pci 07:00.0`` prints the device path of a BDF (what the 2008
``device_path.py`` did); a device path prints its current BDF(s); no argument prints the table.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import DeviceError, XenpipeError, format_error

if TYPE_CHECKING:  # config checks entries with parse_device at load time
    from pipeline.config import Config

FLAVOURS = ("xenlinux", "mainline", "guestdev")
BDF_FORMS = "expected BB:DD.F or DDDD:BB:DD.F (hex, device <= 1f, function <= 7), e.g. 00:19.0"
PATH_FORM = (
    "expected HID[:UID]-DD.F[-DD.F...] (hex hops, device <= 1f, function <= 7), "
    "e.g. PNP0A08:0-1c.1-00.0"
)
RESOURCE_ALIGN_ORDER = 12  # 2**12 = one page: what reassigndev= did on XenLinux
IOMMU_TABLES = ("DMAR", "IVRS", "IORT", "XMAR", "XVRS")  # Xen hides DMAR from dom0 as XMAR
CHECK_BY_HAND = "check by hand before passing storage controllers through"
SYSTEM_MOUNTS = {"/": "the root filesystem", "/boot": "/boot", "/usr": "/usr"}
_BRIDGE_CLASSES = (0x0604, 0x0609)  # PCI-PCI bridge, semi-transparent PCI-PCI bridge
_SYSFS_BDF = re.compile(r"([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")
_SYSFS_ROOT = re.compile(r"pci([0-9a-f]{4,8}):([0-9a-f]{2})")
_HID = re.compile(r"[A-Z]{3}[0-9A-F]{4}|[A-Z0-9]{4}[0-9A-F]{4}")
_UID = re.compile(r"[A-Za-z0-9_.]{1,8}")
_HOP = re.compile(r"([0-9a-fA-F]{1,2})\.([0-9a-fA-F])")


def sysfs_root(sysfs: Path | None = None) -> Path:
    """The sysfs tree to read: the argument, else ``$XENPIPE_SYSFS``, else ``/sys``."""
    return sysfs if sysfs is not None else Path(os.environ.get("XENPIPE_SYSFS") or "/sys")


def proc_root(proc: Path | None = None) -> Path:
    """The procfs tree to read: the argument, else ``$XENPIPE_PROC``, else ``/proc``."""
    return proc if proc is not None else Path(os.environ.get("XENPIPE_PROC") or "/proc")


# ------------------------------------------------------------------------------------ BDFs
@dataclass(frozen=True, order=True)
class Bdf:
    """A PCI address. ``str()`` is the full form Linux and Xen options want."""

    domain: int
    bus: int
    dev: int
    func: int

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.short}"

    @property
    def short(self) -> str:
        return f"{self.bus:02x}:{self.dev:02x}.{self.func:x}"


def _hex(text: str, width: int) -> int | None:
    """*text* as a hex number of exactly *width* digits, else None."""
    if len(text) != width or not re.fullmatch(r"[0-9a-fA-F]+", text):
        return None
    return int(text, 16)


def _entry(kind: str, form: str, text: str) -> tuple[str, Callable[[str], DeviceError]]:
    """*text* stripped, and the error for what is wrong with it (``bad <kind> "<text>": <why>;
    <form>``); an empty entry is refused here."""

    def bad(why: str) -> DeviceError:
        return DeviceError(f'bad {kind} "{text}": {why}; {form}')

    value = text.strip()
    if not value:
        raise bad("it is empty")
    return value, bad


def _slot(bad: Callable[[str], DeviceError], dev_s: str, func_s: str,
          where: str = "") -> tuple[int, int]:
    """The device and function numbers of hex *dev_s* and *func_s*, within PCI's limits."""
    dev, func = int(dev_s, 16), int(func_s, 16)
    if dev > 0x1F:
        raise bad(f"{where}device {dev_s} is above 1f")
    if func > 7:
        raise bad(f"{where}function {func_s} is above 7")
    return dev, func


def parse_bdf(text: str) -> Bdf:
    """Parse ``BB:DD.F`` or ``DDDD:BB:DD.F``; the error names exactly what is wrong."""
    value, bad = _entry("PCI address", BDF_FORMS, text)
    head, dot, func_s = value.rpartition(".")
    if not dot:
        raise bad("no '.' before the function number")
    fields = head.split(":")
    if len(fields) not in (2, 3):
        raise bad(f"{len(fields) - 1} ':' where 1 or 2 belong")
    domain_s = fields[0] if len(fields) == 3 else "0000"
    bus_s, dev_s = fields[-2], fields[-1]
    numbers = []
    for name, s, width in (("domain", domain_s, 4), ("bus", bus_s, 2), ("device", dev_s, 2),
                           ("function", func_s, 1)):
        n = _hex(s, width)
        if n is None:
            raise bad(f'{name} "{s}" is not {width} hex digit{"s" if width > 1 else ""}')
        numbers.append(n)
    return Bdf(numbers[0], numbers[1], *_slot(bad, dev_s, func_s))


# ---------------------------------------------------------------------------- device paths
@dataclass(frozen=True)
class Hop:
    """One ``dev.func`` step of a device path."""

    dev: int
    func: int

    def __str__(self) -> str:
        return f"{self.dev:02x}.{self.func:x}"


@dataclass(frozen=True)
class DevicePath:
    """``<hid>[:<uid>]-<dev>.<func>[-<dev>.<func>...]``; ``str()`` pads like device_path.py."""

    hid: str
    uid: str | None
    hops: tuple[Hop, ...]

    @property
    def root(self) -> str:
        return self.hid if self.uid is None else f"{self.hid}:{self.uid}"

    def __str__(self) -> str:
        return "-".join([self.root, *(str(h) for h in self.hops)])


def parse_path(text: str) -> DevicePath:
    """Parse a 2008-style device path with the kernel's limits (hid and uid <= 8 characters)."""
    value, bad = _entry("device path", PATH_FORM, text)
    root, _, rest = value.partition("-")
    hid, colon, uid = root.partition(":")
    if not hid:
        raise bad("no ACPI _HID before the first ':' or '-'")
    if len(hid) > 8:
        raise bad(f'_HID "{hid}" is longer than 8 characters')
    if not _HID.fullmatch(hid):
        raise bad(f'"{hid}" is not an ACPI _HID such as PNP0A08 or PNP0A03 (upper case)')
    if colon and not uid:
        raise bad("empty _UID after ':' (leave out ':' when the root bridge has no _UID)")
    if colon and len(uid) > 8:
        raise bad(f'_UID "{uid}" is longer than 8 characters')
    if colon and not _UID.fullmatch(uid):
        raise bad(f'_UID "{uid}" may hold only letters, digits, "_" and "."')
    if not rest:
        raise bad(f"no -DD.F hop after the root bridge {root}")
    hops = []
    for n, part in enumerate(rest.split("-"), 1):
        m = _HOP.fullmatch(part)
        if not part:
            raise bad(f"hop {n} is empty (doubled or trailing '-')")
        if m is None:
            raise bad(f'hop {n} "{part}" is not DD.F (hex device, hex function)')
        hops.append(Hop(*_slot(bad, m[1], m[2], f'hop {n} "{part}": ')))
    return DevicePath(hid, uid if colon else None, tuple(hops))


def parse_device(text: str) -> Bdf | DevicePath:
    """A ``[passthrough] devices`` entry: a device path when it has a '-' or starts with a _HID."""
    hexish = re.fullmatch(r"\s*[0-9a-fA-F:.]+\s*", text)
    if "-" in text or (re.match(r"\s*[A-Za-z]{3}", text) and not hexish):
        return parse_path(text)
    return parse_bdf(text)


# -------------------------------------------------------------------------------- topology
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
                f"root bridges here: {known}"
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
            raise DeviceError(f"device path {path} matches nothing: {'; '.join(misses)}")
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
        cmdline.devices_report), which the boot check does not count against the entry.
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


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _hexfile(path: Path) -> int:
    text = _read(path)
    try:
        return int(text, 16) if text else 0
    except ValueError:
        return 0


def _pci_components(real: str) -> tuple[str, str, list[str]] | None:
    """Split a resolved sysfs path into (root dir, root name, BDF names below it)."""
    parts = real.split("/")
    for i in range(len(parts) - 1, -1, -1):
        if _SYSFS_ROOT.fullmatch(parts[i]):
            below = [p for p in parts[i + 1:] if _SYSFS_BDF.fullmatch(p)]
            return "/".join(parts[: i + 1]), parts[i], below
    return None


def _bdf_name(name: str) -> Bdf:
    m = _SYSFS_BDF.fullmatch(name)
    assert m is not None
    return Bdf(*(int(g, 16) for g in m.groups()))


def _root_bus(root_dir: Path, name: str) -> RootBus:
    m = _SYSFS_ROOT.fullmatch(name)
    assert m is not None
    fw = root_dir / "firmware_node"
    hid = _read(fw / "hid") if fw.exists() else None
    uid = _read(fw / "uid") if hid else None
    return RootBus(name, int(m[1], 16), int(m[2], 16), hid or None, uid or None)


def scan(sysfs: Path | None = None) -> Topology:
    """Read every PCI device from ``<sysfs>/bus/pci/devices`` and the tree it links into."""
    root = sysfs_root(sysfs)
    bus_dir = root / "bus" / "pci" / "devices"
    if not bus_dir.is_dir():
        raise DeviceError(f"{bus_dir} not found: no PCI bus here, or {root} is not a sysfs tree")
    roots: dict[str, RootBus] = {}
    devices = []
    for entry in bus_dir.iterdir():
        real = os.path.realpath(entry)
        split = _pci_components(real)
        if split is None or not _SYSFS_BDF.fullmatch(entry.name):
            continue
        root_dir, root_name, chain = split
        if root_dir not in roots:
            roots[root_dir] = _root_bus(Path(root_dir), root_name)
        d = Path(real)
        link = d / "driver"
        driver = os.path.basename(os.readlink(link)) if link.is_symlink() else None
        devices.append(Device(
            bdf=_bdf_name(entry.name),
            cls=_hexfile(d / "class"),
            vendor=_hexfile(d / "vendor"),
            device=_hexfile(d / "device"),
            driver=driver,
            root=roots[root_dir],
            parents=tuple(_bdf_name(p) for p in chain[:-1]),
        ))
    return Topology(root, tuple(sorted(devices, key=lambda d: d.bdf)))


# --------------------------------------------------------------- configured devices, safety
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


def _unique(items: Iterable[Bdf]) -> list[Bdf]:
    return list(dict.fromkeys(items))


def _block_targets(sysfs: Path, majmin: str | None, source: str) -> list[Path]:
    """The sysfs directories of the block device behind a mount, or [] when it has none."""
    start: Path | None = None
    if majmin and not majmin.startswith("0:"):
        start = sysfs / "dev" / "block" / majmin
    elif source.startswith("/dev/mapper/"):
        want = source.removeprefix("/dev/mapper/")
        start = next((p for p in (sysfs / "class" / "block").glob("dm-*")
                      if _read(p / "dm" / "name") == want), None)
    elif source.startswith("/dev/"):
        start = sysfs / "class" / "block" / source.removeprefix("/dev/")
    if start is None or not start.exists():
        return []
    todo, seen = [Path(os.path.realpath(start))], []
    while todo:  # dm and md devices sit on their "slaves"
        cur = todo.pop()
        if cur in seen:
            continue
        seen.append(cur)
        slaves = cur / "slaves"
        if slaves.is_dir():
            todo.extend(Path(os.path.realpath(s)) for s in slaves.iterdir())
    return seen


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _mounts(proc: Path) -> list[tuple[str, str | None, str, str]] | None:
    """(mount point, major:minor or None, source, fstype) per mount, or None if unreadable."""
    text = _read(proc / "self" / "mountinfo")
    if text is not None:
        out = []
        for line in text.splitlines():
            pre, _, post = line.partition(" - ")
            a, b = pre.split(), post.split()
            if len(a) >= 5 and len(b) >= 2:
                out.append((_unescape(a[4]), a[2], _unescape(b[1]), b[0]))
        return out
    text = _read(proc / "mounts")
    if text is None:
        return None
    return [(_unescape(f[1]), None, _unescape(f[0]), f[2])
            for f in (line.split() for line in text.splitlines()) if len(f) >= 3]


def _system_needs(topo: Topology, proc: Path | None) -> tuple[dict[Bdf, str], list[str]]:
    """PCI devices holding /, /boot, /usr or swap (and the bridges in front of them), and a
    warning for each thing that could not be checked."""
    proc = proc_root(proc)
    mounts = _mounts(proc)
    if mounts is None:
        return {}, [f"cannot read {proc}/self/mountinfo or {proc}/mounts, so the device "
                    f"holding / is unknown; {CHECK_BY_HAND}"]
    last: dict[str, tuple[str | None, str, str]] = {}
    for point, majmin, source, fstype in mounts:
        if point in SYSTEM_MOUNTS:
            last[point] = (majmin, source, fstype)  # the topmost mount wins
    wanted = [(SYSTEM_MOUNTS[p], p, *last[p]) for p in SYSTEM_MOUNTS if p in last]
    swaps = _read(proc / "swaps") or ""
    for line in swaps.splitlines()[1:]:
        f = line.split()
        if len(f) >= 2 and f[1] == "partition":
            wanted.append(("swap", "swap", None, _unescape(f[0]), "swap"))
    needs: dict[Bdf, str] = {}
    untraced: list[str] = []
    for what, point, majmin, source, fstype in wanted:
        holders = []
        for target in _block_targets(topo.sysfs, majmin, source):
            split = _pci_components(str(target))
            if split and split[2]:
                holders.append(split[2])
        if not holders and point == "/":
            untraced.append(f"cannot tell which PCI device holds {what} ({source}, {fstype}); "
                            + CHECK_BY_HAND)
        for chain in holders:
            ctrl = _bdf_name(chain[-1])
            needs.setdefault(ctrl, f"holds {what} ({source} on {point})")
            for bridge in chain[:-1]:
                needs.setdefault(_bdf_name(bridge), f"is the bridge to {ctrl}, which holds {what}")
    return needs, untraced


def system_devices(topo: Topology, proc: Path | None = None) -> dict[Bdf, str]:
    """Devices the running dom0 needs (BDF -> why): above all the root filesystem's controller."""
    return _system_needs(topo, proc)[0]


def _assess(cfg: Config, topo: Topology, needs: dict[Bdf, str]) -> tuple[list[Bdf], list[str]]:
    """The current BDFs of ``[passthrough] devices`` and every reason not to pass them through."""
    bdfs: list[Bdf] = []
    problems: list[str] = []
    for entry in cfg.passthrough.devices:
        try:
            group = resolve_devices([entry], topo)[entry]
        except DeviceError as exc:
            problems.append(str(exc))
            continue
        for b in group:
            if topo.get(b) is None:
                problems.append(f"{entry} is not present on this machine ({topo.sysfs})")
            elif b in needs and not cfg.install.allow_system_devices:
                problems.append(f"{b} {needs[b]}, so dom0 needs it; remove it from "
                                "passthrough.devices or set install.allow_system_devices = true")
        bdfs.extend(group)
    return _unique(bdfs), problems


def check_passthrough(cfg: Config, topo: Topology, proc: Path | None = None) -> list[Bdf]:
    """The current BDFs of ``[passthrough] devices`` for the install stage; refuses malformed
    or absent devices and, unless ``install.allow_system_devices``, devices dom0 needs."""
    bdfs, problems = _assess(cfg, topo, system_devices(topo, proc))
    if problems:
        raise DeviceError(f"passthrough.devices: {'; '.join(problems)}")
    return bdfs


def iommu_warning(sysfs: Path | None = None) -> str | None:
    """A warning when the firmware reports no IOMMU (no DMAR/IVRS/IORT ACPI table)."""
    tables = sysfs_root(sysfs) / "firmware" / "acpi" / "tables"
    if not tables.is_dir():
        return (f"no ACPI tables under {tables}: cannot tell whether this machine has an IOMMU; "
                "without one, passthrough to HVM guests will not work")
    if any((tables / name).exists() for name in IOMMU_TABLES):
        return None
    return (f"no DMAR or IVRS table under {tables}: this machine reports no IOMMU (VT-d/AMD-Vi "
            "off or absent in the firmware), so passthrough to HVM guests will not work")


# ------------------------------------------------------------------------------- reporting
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


def report(cfg: Config, sysfs: Path | None = None, proc: Path | None = None) -> str:
    """The ``doit devices`` output: the table, then one ``warning:`` line per problem."""
    topo = scan(sysfs)
    needs, untraced = _system_needs(topo, proc)
    chosen, problems = _assess(cfg, topo, needs)
    # pciback's hide= also seizes everything behind a hidden bridge: mark that too
    seized = chosen + [d.bdf for b in chosen for d in topo.behind(b)]
    warnings = [f"passthrough.devices: {p}" for p in problems]
    warnings += untraced
    iommu = iommu_warning(topo.sysfs)
    if iommu:
        warnings.append(iommu)
    if iommu_disabled(cfg.install.xen_cmdline):
        warnings.append("install.xen_cmdline turns the IOMMU off, so passthrough to HVM "
                        "guests will not work")
    if not topo.devices:
        warnings.append(f"no PCI devices under {topo.sysfs}")
    return "\n".join([table(topo, seized, needs), *(f"warning: {w}" for w in warnings)])


# ------------------------------------------------------------------------- boot parameters
def _kernel_version(tree: Path) -> str | None:
    text = _read(tree / "Makefile") or ""
    v = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d*)", text, re.M))
    if "VERSION" not in v:
        return None
    return ".".join(x for x in (v["VERSION"], v.get("PATCHLEVEL"), v.get("SUBLEVEL")) if x)


_GUESTDEV_SETUP = re.compile(
    r'(__setup|early_param)\(\s*"guestdev=?"|module_param\w*\(\s*guestdev\b|^\s*guestdev=', re.M
)


def _has_guestdev(tree: Path) -> bool:
    if (tree / "drivers" / "pci" / "guestdev.c").is_file():
        return True
    files = [*tree.glob("drivers/xen/pciback/*.c"), *tree.glob("drivers/xen/xen-pciback/*.c"),
             *tree.glob("drivers/pci/*.c"), tree / "Documentation" / "kernel-parameters.txt",
             tree / "Documentation" / "admin-guide" / "kernel-parameters.txt"]
    for f in files:
        try:
            if _GUESTDEV_SETUP.search(f.read_text(errors="replace")):
                return True
        except OSError:
            continue
    return False


def kernel_family(tree: Path) -> str | None:
    """``xenlinux`` (``drivers/xen/pciback/``: ``pciback.hide=``), ``mainline``
    (``drivers/xen/xen-pciback/``: ``xen-pciback.hide=``), or None for neither: what a
    ``guestdev=`` kernel is built on decides its hide option and how it realigns BARs."""
    if (tree / "drivers" / "xen" / "pciback").is_dir():
        return "xenlinux"
    if (tree / "drivers" / "xen" / "xen-pciback").is_dir():
        return "mainline"
    return None


def detect_flavour(tree: Path, override: str = "auto") -> str:
    """``xenlinux``, ``mainline`` or ``guestdev`` for the kernel tree (``[kernel] flavour``
    other than ``auto`` wins): decides which hide/reassign options the dom0 line gets."""
    if override != "auto":
        if override not in FLAVOURS:
            raise DeviceError(f'kernel flavour "{override}": expected auto, {", ".join(FLAVOURS)}')
        return override
    family = kernel_family(tree)
    if family is not None:
        return "guestdev" if _has_guestdev(tree) else family
    version = _kernel_version(tree)
    what = f"Linux {version}" if version else "not a kernel tree"
    raise DeviceError(
        f"cannot tell the kernel flavour of {tree} ({what}): it has neither "
        "drivers/xen/pciback/ (XenLinux) nor drivers/xen/xen-pciback/ (mainline, 3.1+); "
        'set [kernel] flavour = "xenlinux", "mainline" or "guestdev"'
    )


def _hide(family: str, bdfs: Sequence[Bdf]) -> list[str]:
    """The hide option of *family*'s pciback for *bdfs* (none for no BDF)."""
    if not bdfs:
        return []
    name = "pciback.hide" if family == "xenlinux" else "xen-pciback.hide"
    return [f"{name}=" + "".join(f"({b})" for b in bdfs)]


def _realign(family: str, bdfs: Sequence[Bdf]) -> list[str]:
    """The option that page-aligns *bdfs*' BARs: reassigndev= on XenLinux, else
    pci=resource_alignment= (none for no BDF)."""
    if not bdfs:
        return []
    if family == "xenlinux":
        return [f"reassigndev={','.join(str(b) for b in bdfs)}"]
    return ["pci=resource_alignment=" + ";".join(f"{RESOURCE_ALIGN_ORDER}@{b}" for b in bdfs)]


def _guestdev_params(base: str, devices: Sequence[str], reassign: bool,
                     topo: Topology | None) -> list[str]:
    """guestdev= for the device paths. On a mainline base the BDFs go to xen-pciback.hide=
    (the patch lets both seize), so no topology is needed; the XenLinux series realigns only
    guestdev= devices (reassign_resources), so there BDFs become paths through *topo*."""
    parsed = {entry: parse_device(entry) for entry in devices}
    paths: list[str] = []
    bdfs: list[Bdf] = []
    align: list[Bdf] = []
    for entry, item in parsed.items():
        if isinstance(item, DevicePath):
            paths.append(entry.strip())
            if reassign and base == "mainline":
                if topo is None:
                    raise DeviceError(
                        f"{entry}: reassign = true realigns with pci=resource_alignment=, "
                        "which takes BDFs (guestdev= cannot realign), so this device path "
                        "needs the machine's PCI topology; run on the target machine, or use "
                        "a BDF")
                align.extend(topo.covered(item))
        elif base == "mainline":
            bdfs.append(item)
            align.append(item)
        elif topo is None:
            raise DeviceError(
                f"{entry}: a XenLinux guestdev= kernel takes device paths and this BDF cannot "
                "be converted without the machine's PCI topology; write its device path "
                "(python -m pipeline.pci BDF on that machine prints it)")
        else:
            paths.append(str(topo.path_of(item)))
    guestdev = ["guestdev=" + ",".join(dict.fromkeys(paths))] if paths else []
    if base == "xenlinux":
        return [*(["reassign_resources"] if reassign else []), *guestdev]
    return [*(_realign(base, _unique(align)) if reassign else []),
            *_hide(base, _unique(bdfs)), *guestdev]


def dom0_params(flavour: str, devices: Sequence[str], reassign: bool,
                topo: Topology | None = None, base: str = "mainline") -> list[str]:
    """The dom0 kernel options that hand *devices* to pciback at boot, reassign first.

    xenlinux and mainline take BDFs (device paths become today's BDFs through *topo*).
    guestdev (on *base*, what kernel_family says the tree is) takes device paths in
    guestdev= as written; see _guestdev_params for its BDFs. Note for GRUB 2: the
    mainline ``pci=resource_alignment=`` value contains ';' and must be quoted.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour {flavour!r}: resolve it with detect_flavour() first")
    if base not in ("xenlinux", "mainline"):
        raise ValueError(f"base {base!r}: expected xenlinux or mainline")
    if not devices:
        return []
    if flavour == "guestdev":
        return _guestdev_params(base, devices, reassign, topo)
    bdfs = _unique(b for group in resolve_devices(devices, topo).values() for b in group)
    return [*(_realign(flavour, bdfs) if reassign else []), *_hide(flavour, bdfs)]


def iommu_disabled(cmdline: str) -> bool:
    """True when the Xen options turn the IOMMU off (``iommu=0``, ``iommu=off,verbose``, ...)."""
    off = {"0", "no", "off", "false", "disable"}
    return any(w.startswith("iommu=") and off & set(w[6:].split(",")) for w in cmdline.split())


def xen_cmdline(cmdline: str) -> str:
    """The hypervisor options with ``iommu=1`` added unless the user chose an iommu setting
    (any ``iommu=...``, or the bare 2009-style ``iommu``)."""
    words = cmdline.split()
    if any(w == "iommu" or w.startswith("iommu=") for w in words):
        return " ".join(words)
    return " ".join([*words, "iommu=1"])


# -------------------------------------------------------------------------------------- CLI
USAGE = "usage: python -m pipeline.pci [BDF|DEVICE-PATH ...]"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the device path of each BDF (or the BDFs of each device path); no argument:
    the device table. Reads ``$XENPIPE_SYSFS`` (default /sys)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        parsed = [parse_device(a) for a in args]  # reject typos before touching sysfs
        topo = scan()
        if not args:
            print(table(topo, notes=system_devices(topo)))
        for item in parsed:
            if isinstance(item, Bdf):
                print(topo.path_of(item))
            else:
                print(" ".join(str(b) for b in topo.covered(item)))
    except XenpipeError as exc:
        print(format_error(exc), file=sys.stderr)
        return 1
    return 0
