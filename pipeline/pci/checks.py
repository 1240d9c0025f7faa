"""A go/no-go per passthrough device, read from a sysfs tree before the long build.

Each check gives a finding (``info``, ``warn`` or ``no-go``); a device's verdict is its worst
finding, ``ok`` when it has none worse than ``info``. The checks look at one box's sysfs (the
box examined, :class:`pci.Box`: its ``/sys`` copied over ssh, this machine's, a recorded tree)
and the built kernel's ``.config``; dom0use.py and xenplatform.py add what dom0 uses a device
for and what a running Xen says (through *more*). Callers pass plain values (this package
knows nothing of the config).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import DeviceError
from pipeline.pci.address import Bdf
from pipeline.pci.sysfs import Device, Topology, read_stripped, resolve_devices

INFO, WARN, NOGO = "info", "warn", "no-go"
_RANK = {INFO: 0, WARN: 1, NOGO: 2}
CAP_PCIE, CAP_MSI, CAP_MSIX = 0x10, 0x05, 0x11
PCIE_TO_PCI = 0x7  # PCI Express capability, device/port type: PCIe-to-PCI/PCI-X bridge
PCIBACK_DRIVERS = ("pciback", "xen-pciback")


@dataclass(frozen=True)
class Finding:
    """One failed (or informative) check: its level, the check's name and why."""

    level: str
    check: str
    text: str


@dataclass(frozen=True)
class Verdict:
    """The go/no-go of one device a ``[passthrough] devices`` entry stands for."""

    entry: str
    bdf: Bdf | None  # None: the entry names nothing on the box examined
    findings: tuple[Finding, ...]

    @property
    def verdict(self) -> str:
        worst = max((_RANK[f.level] for f in self.findings), default=0)
        return {0: "ok", 1: WARN, 2: NOGO}[worst]

    @property
    def name(self) -> str:
        if self.bdf is None or self.entry == self.bdf.short or self.entry == str(self.bdf):
            return self.entry if self.bdf is None else str(self.bdf)
        return f"{self.bdf} ({self.entry})"


def config_space(topo: Topology, bdf: Bdf) -> bytes | None:
    """The device's ``config`` file (64 bytes unprivileged, 256 or 4096 as root), or None."""
    try:
        return (topo.sysfs / "bus" / "pci" / "devices" / str(bdf) / "config").read_bytes()
    except OSError:
        return None


def capabilities(config: bytes | None) -> dict[int, int] | None:
    """Capability ID -> offset from the config space's capability list; None when it cannot be
    read (no file, an all-zero placeholder, or a list running past what the file holds)."""
    if config is None or len(config) < 64 or config[0:2] in (b"\0\0", b"\xff\xff"):
        return None
    if not config[6] & 0x10:  # status register: no capabilities list
        return {}
    caps: dict[int, int] = {}
    ptr = config[0x34] & 0xFC
    for _ in range(48):  # at most 48 capabilities fit in 256 bytes: a loop guard
        if not ptr:
            return caps
        if ptr + 1 >= len(config):
            return None  # unprivileged read: the list lies beyond the 64-byte header
        caps.setdefault(config[ptr], ptr)
        ptr = config[ptr + 1] & 0xFC
    return caps


def pcie_type(config: bytes | None) -> int | None:
    """The PCI Express device/port type, or None without a PCIe capability (or unknown)."""
    caps = capabilities(config)
    if not caps or CAP_PCIE not in caps or config is None or caps[CAP_PCIE] + 3 >= len(config):
        return None
    return (config[caps[CAP_PCIE] + 2] >> 4) & 0xF


def has_flr(config: bytes | None) -> bool:
    """Function Level Reset in the PCIe Device Capabilities register (bit 28)."""
    caps = capabilities(config)
    if not caps or CAP_PCIE not in caps or config is None:
        return False
    at = caps[CAP_PCIE] + 4
    return at + 4 <= len(config) and bool(int.from_bytes(config[at:at + 4], "little") >> 28 & 1)


def _device_dir(topo: Topology, bdf: Bdf) -> Path:
    return topo.sysfs / "bus" / "pci" / "devices" / str(bdf)


def check_reset(topo: Topology, dev: Device) -> Finding:
    """``reset_method`` (kernel 5.15+, hidden when the device has none), else ``reset``."""
    d = _device_dir(topo, dev.bdf)
    methods = read_stripped(d / "reset_method")
    if methods:
        return Finding(INFO, "reset", f"reset methods: {methods}")
    if methods is None and ((d / "reset").exists() or has_flr(config_space(topo, dev.bdf))):
        return Finding(INFO, "reset", "resettable (sysfs reset file or FLR capability)")
    return Finding(WARN, "reset", f"no reset method (no reset_method or reset file in {d}): "
                   "the second assignment may fail, with the device still in the state the "
                   "last guest left it")


def check_msi(topo: Topology, dev: Device) -> Finding:
    caps = capabilities(config_space(topo, dev.bdf))
    if caps is None:
        return Finding(INFO, "msi", "MSI/MSI-X unknown: the config space's capability list is "
                       "not readable here (run as root)")
    found = [n for n, c in (("MSI", CAP_MSI), ("MSI-X", CAP_MSIX)) if c in caps]
    if found:
        return Finding(INFO, "msi", "/".join(found))
    return Finding(WARN, "msi", "no MSI or MSI-X capability: the guest gets a legacy INTx "
                   "line, which may be shared with dom0's devices")


def check_siblings(topo: Topology, dev: Device, named: set[Bdf]) -> Finding | None:
    sibs = [d.bdf for d in topo.devices if d.root == dev.root and d.bdf != dev.bdf
            and (d.bdf.domain, d.bdf.bus, d.bdf.dev) == (dev.bdf.domain, dev.bdf.bus, dev.bdf.dev)]
    missing = [b for b in sibs if b not in named]
    if not missing:
        return None
    return Finding(WARN, "functions", "multi-function device: its functions "
                   f"{', '.join(str(b) for b in missing)} are not in passthrough.devices; "
                   "they share its reset and may share its IOMMU context: name them too")


def _aliasing(topo: Topology, bridge: Bdf) -> str | None:
    """What kind of bridge *bridge* is when the devices behind it share its requester ID."""
    dev = topo.get(bridge)
    config = config_space(topo, bridge)
    caps = capabilities(config)
    if caps is None:  # unknown, but a subtractive bridge is a conventional PCI bridge
        return "subtractive PCI bridge" if dev is not None and dev.cls == 0x060401 else None
    if CAP_PCIE not in caps:
        return "PCI-PCI bridge"
    return "PCIe-to-PCI bridge" if pcie_type(config) == PCIE_TO_PCI else None


def check_bridge(topo: Topology, dev: Device, named: set[Bdf]) -> Finding | None:
    for bridge in dev.parents:  # the topmost aliasing bridge decides the shared ID
        kind = _aliasing(topo, bridge)
        if kind is None:
            continue
        others = [d.bdf for d in topo.behind(bridge) if not d.is_bridge and d.bdf != dev.bdf]
        share = (f"; co-assign {', '.join(str(b) for b in others)}"
                 + (" (not all in passthrough.devices)" if set(others) - named else "")
                 if others else "")
        return Finding(WARN, "bridge", f"behind {kind} {bridge}: every device behind it uses "
                       f"one requester ID, so they go to the same guest{share}")
    return None


def check_dom0(dev: Device, needs: dict[Bdf, str], allow_system_devices: bool) -> list[Finding]:
    out = []
    if dev.bdf in needs:
        why = f"{dev.bdf} {needs[dev.bdf]}, so dom0 needs it"
        out.append(Finding(WARN, "dom0", f"{why} (install.allow_system_devices is set)")
                   if allow_system_devices else
                   Finding(NOGO, "dom0", f"{why}; remove it from passthrough.devices or set "
                           "install.allow_system_devices = true"))
    if dev.driver in PCIBACK_DRIVERS:
        out.append(Finding(INFO, "driver", f"held by {dev.driver}"))
    elif dev.driver:
        out.append(Finding(INFO, "driver", f"bound to {dev.driver} in dom0 (pciback takes it "
                           "at boot)"))
    return out


_PCIBACK = re.compile(
    r"^(?:CONFIG_XEN_PCIDEV_BACKEND=(\w+)|# CONFIG_XEN_PCIDEV_BACKEND is not set)", re.M)


def check_kernel(dotconfig: str | None, where: str, hide: bool | None) -> Finding | None:
    """pciback in the built ``.config`` (*dotconfig* its text, None: no build yet). *hide*:
    the kernel takes ``hide=`` (True), ``guestdev=`` (False) or unknown (None)."""
    if dotconfig is None:
        return None
    m = _PCIBACK.search(dotconfig)
    value = m[1] if m and m[1] else "n"
    if value == "y":
        return None
    if value == "m" and hide is False:
        return Finding(INFO, "kernel", f"CONFIG_XEN_PCIDEV_BACKEND=m in {where}")
    if value == "m":
        return Finding(NOGO if hide else WARN, "kernel", f"CONFIG_XEN_PCIDEV_BACKEND=m in "
                       f"{where}: a module cannot take xen-pciback.hide= from the kernel "
                       "command line; build it in (=y)")
    return Finding(NOGO, "kernel", f"CONFIG_XEN_PCIDEV_BACKEND is not set in {where}: "
                   "no pciback to seize the devices")


def verdicts(entries: Sequence[str], topo: Topology, needs: dict[Bdf, str], *,
             allow_system_devices: bool = False, absent_hint: str | None = None,
             platform: Iterable[Finding] = (),
             more: Callable[[Device], Iterable[Finding]] | None = None) -> list[Verdict]:
    """A verdict per device the ``[passthrough] devices`` *entries* stand for on *topo*.

    *needs*: the devices dom0 needs (safety.system_devices). *absent_hint* None: *topo* is the
    box itself, so an absent device is a no-go; else a warning ending with the hint (how to
    give the box's sysfs). *platform*: findings every device shares (IOMMU, kernel); *more*:
    a device's findings from outside its sysfs (dom0's use of it, the running Xen)."""
    platform = tuple(platform)
    groups: list[tuple[str, tuple[Bdf, ...] | None, str]] = []
    for entry in entries:
        try:
            groups.append((entry, resolve_devices([entry], topo)[entry], ""))
        except DeviceError as exc:
            groups.append((entry, None, str(exc)))
    named = {b for _, bdfs, _ in groups for b in bdfs or ()}
    out = []
    for entry, bdfs, error in groups:
        for bdf in bdfs if bdfs is not None else (None,):
            dev = topo.get(bdf) if bdf is not None else None
            if dev is None:
                if absent_hint is None:  # the box itself (a path error says which sysfs)
                    absent = Finding(NOGO, "present", error or f"{entry} is not present on "
                                     f"the box examined ({topo.whence or topo.sysfs})")
                else:
                    absent = Finding(WARN, "present", error or f"{entry} is not present on "
                                     f"the box examined ({topo.sysfs}); {absent_hint}")
                out.append(Verdict(entry, bdf, (absent, *platform)))
                continue
            found = [*check_dom0(dev, needs, allow_system_devices), check_reset(topo, dev),
                     check_msi(topo, dev), check_siblings(topo, dev, named),
                     check_bridge(topo, dev, named),
                     *(more(dev) if more is not None else ())]
            out.append(Verdict(entry, bdf, (*platform, *(f for f in found if f))))
    return out


def render(results: Sequence[Verdict]) -> str:
    """The verdict block ``doit devices`` prints: a line per device, a line per finding."""
    lines = ["go/no-go per device:"]
    for v in results:
        lines.append(f"  {v.name}: {v.verdict}")
        lines += [f"    {f.level}: {f.check}: {f.text}" for f in v.findings]
    return "\n".join(lines) if results else "go/no-go per device: no [passthrough] devices"


def nogo_error(results: Sequence[Verdict]) -> DeviceError | None:
    """The one-line error for the no-go devices (None when there are none)."""
    bad = [v for v in results if v.verdict == NOGO]
    if not bad:
        return None
    why = "; ".join(f"{v.name}: " + ", ".join(f.check for f in v.findings if f.level == NOGO)
                    for v in bad)
    return DeviceError(f"passthrough.devices: no-go for {len(bad)} device(s) ({why}); see "
                       "`doit devices`, or go on with force=1")

