"""What dom0 cannot give away: the devices holding /, /boot, /usr or swap, and a missing IOMMU.

The install stage refuses such ``[passthrough] devices`` (unless allowed); ``doit devices``
reports them as warnings under the device table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import DeviceError
from pipeline.pci.address import Bdf, unique_bdfs
from pipeline.pci.bootargs import iommu_disabled
from pipeline.pci.sysfs import (
    Topology,
    pci_chain,
    read_stripped,
    resolve_devices,
    scan,
    sysfs_bdf,
    sysfs_root,
    table,
)

# Xen hides DMAR from dom0: Xen 4.17 as "RMAD" (tests/data/boot/dom0-snapshot.log), older as XMAR
IOMMU_TABLES = ("DMAR", "IVRS", "IORT", "RMAD", "XMAR", "XVRS")
CHECK_BY_HAND = "check by hand before passing storage controllers through"
SYSTEM_MOUNTS = {"/": "the root filesystem", "/boot": "/boot", "/usr": "/usr"}


def proc_root(proc: Path | None = None) -> Path:
    """The procfs tree to read: the argument, else ``$XENPIPE_PROC``, else ``/proc``."""
    return proc if proc is not None else Path(os.environ.get("XENPIPE_PROC") or "/proc")



def _block_targets(sysfs: Path, majmin: str | None, source: str) -> list[Path]:
    """The sysfs directories of the block device behind a mount, or [] when it has none."""
    start: Path | None = None
    if majmin and not majmin.startswith("0:"):
        start = sysfs / "dev" / "block" / majmin
    elif source.startswith("/dev/mapper/"):
        want = source.removeprefix("/dev/mapper/")
        start = next((p for p in (sysfs / "class" / "block").glob("dm-*")
                      if read_stripped(p / "dm" / "name") == want), None)
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
    text = read_stripped(proc / "self" / "mountinfo")
    if text is not None:
        out = []
        for line in text.splitlines():
            pre, _, post = line.partition(" - ")
            a, b = pre.split(), post.split()
            if len(a) >= 5 and len(b) >= 2:
                out.append((_unescape(a[4]), a[2], _unescape(b[1]), b[0]))
        return out
    text = read_stripped(proc / "mounts")
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
    swaps = read_stripped(proc / "swaps") or ""
    for line in swaps.splitlines()[1:]:
        f = line.split()
        if len(f) >= 2 and f[1] == "partition":
            wanted.append(("swap", "swap", None, _unescape(f[0]), "swap"))
    needs: dict[Bdf, str] = {}
    untraced: list[str] = []
    for what, point, majmin, source, fstype in wanted:
        holders = []
        for target in _block_targets(topo.sysfs, majmin, source):
            split = pci_chain(str(target))
            if split and split[2]:
                holders.append(split[2])
        if not holders and point == "/":
            untraced.append(f"cannot tell which PCI device holds {what} ({source}, {fstype}); "
                            + CHECK_BY_HAND)
        for chain in holders:
            ctrl = sysfs_bdf(chain[-1])
            needs.setdefault(ctrl, f"holds {what} ({source} on {point})")
            for bridge in chain[:-1]:
                needs.setdefault(sysfs_bdf(bridge), f"is the bridge to {ctrl}, which holds {what}")
    return needs, untraced


def system_devices(topo: Topology, proc: Path | None = None) -> dict[Bdf, str]:
    """Devices the running dom0 needs (BDF -> why): above all the root filesystem's controller."""
    return _system_needs(topo, proc)[0]


def _assess(devices: Sequence[str], allow_system_devices: bool, topo: Topology,
            needs: dict[Bdf, str]) -> tuple[list[Bdf], list[str]]:
    """The current BDFs of the ``[passthrough] devices`` entries *devices* and every reason not
    to pass them through (a device dom0 needs, unless *allow_system_devices*)."""
    bdfs: list[Bdf] = []
    problems: list[str] = []
    for entry in devices:
        try:
            group = resolve_devices([entry], topo)[entry]
        except DeviceError as exc:
            problems.append(str(exc))
            continue
        for b in group:
            if topo.get(b) is None:
                problems.append(f"{entry} is not present on this machine ({topo.sysfs})")
            elif b in needs and not allow_system_devices:
                problems.append(f"{b} {needs[b]}, so dom0 needs it; remove it from "
                                "passthrough.devices or set install.allow_system_devices = true")
        bdfs.extend(group)
    return unique_bdfs(bdfs), problems


def check_passthrough(devices: Sequence[str], topo: Topology, proc: Path | None = None, *,
                      allow_system_devices: bool = False) -> list[Bdf]:
    """The current BDFs of ``[passthrough] devices`` for the install stage; refuses malformed
    or absent devices and, unless ``install.allow_system_devices``, devices dom0 needs."""
    bdfs, problems = _assess(devices, allow_system_devices, topo, system_devices(topo, proc))
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



def report(devices: Sequence[str], *, allow_system_devices: bool = False, xen_cmdline: str = "",
           sysfs: Path | None = None, proc: Path | None = None) -> str:
    """The ``doit devices`` output for the ``[passthrough] devices`` entries *devices* and the
    ``install.xen_cmdline`` *xen_cmdline*: the table, then one ``warning:`` line per problem."""
    topo = scan(sysfs)
    needs, untraced = _system_needs(topo, proc)
    chosen, problems = _assess(devices, allow_system_devices, topo, needs)
    # pciback's hide= also seizes everything behind a hidden bridge: mark that too
    seized = chosen + [d.bdf for b in chosen for d in topo.behind(b)]
    warnings = [f"passthrough.devices: {p}" for p in problems]
    warnings += untraced
    iommu = iommu_warning(topo.sysfs)
    if iommu:
        warnings.append(iommu)
    if iommu_disabled(xen_cmdline):
        warnings.append("install.xen_cmdline turns the IOMMU off, so passthrough to HVM "
                        "guests will not work")
    if not topo.devices:
        warnings.append(f"no PCI devices under {topo.sysfs}")
    return "\n".join([table(topo, seized, needs), *(f"warning: {w}" for w in warnings)])

