"""The boot options that hand devices to pciback, for the kernel flavour being built.

XenLinux (``pciback.hide=``, ``reassigndev=``), mainline (``xen-pciback.hide=``,
``pci=resource_alignment=``) and ``guestdev=`` kernels each want their own words; the Xen
line gets ``iommu=1`` unless the user chose an IOMMU setting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import DeviceError
from pipeline.pci.address import Bdf, DevicePath, parse_device, unique_bdfs
from pipeline.pci.sysfs import Topology, read_stripped, resolve_devices

FLAVOURS = ("xenlinux", "mainline", "guestdev")
RESOURCE_ALIGN_ORDER = 12  # 2**12 = one page: what reassigndev= did on XenLinux


def _kernel_version(tree: Path) -> str | None:
    text = read_stripped(tree / "Makefile") or ""
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
    return [*(_realign(base, unique_bdfs(align)) if reassign else []),
            *_hide(base, unique_bdfs(bdfs)), *guestdev]


HIDE_OPTIONS = ("pciback.hide", "xen-pciback.hide", "guestdev", "reassign_resources")


def dom0_params(flavour: str, devices: Sequence[str], reassign: bool,
                topo: Topology | None = None, base: str = "mainline",
                hide: bool = True) -> list[str]:
    """The dom0 kernel options that hand *devices* to pciback at boot, reassign first; with
    *hide* false (``[passthrough] mode = "assignable"``: dom0 keeps them until
    ``xl pci-assignable-add``) only the realignment (XenLinux's ``reassign_resources``
    realigns guestdev= devices only, so it goes too).

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
    if flavour == "guestdev" and base == "xenlinux" and not hide:
        return []  # its only realignment is reassign_resources, of guestdev= devices
    if flavour == "guestdev":
        params = _guestdev_params(base, devices, reassign, topo)
    else:
        bdfs = unique_bdfs(b for group in resolve_devices(devices, topo).values() for b in group)
        params = [*(_realign(flavour, bdfs) if reassign else []), *_hide(flavour, bdfs)]
    return params if hide else [p for p in params if p.partition("=")[0] not in HIDE_OPTIONS]


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

