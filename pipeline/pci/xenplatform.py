"""The platform checks of a running Xen, from ``xl info`` and ``xl dmesg`` (Xen's console ring).

A box already running Xen says what a firmware table cannot: whether Xen turned its IOMMU on
(``I/O virtualisation enabled``), remaps interrupts, can give devices to HVM and PV guests
(``virt_caps``: ``hvm_directio``, ``pv_directio``), and which devices share a reserved memory
region (RMRR) with another, which Xen refuses to assign. The texts come from the caller's
runner (this machine or the box over ssh); None means Xen is not running there.
"""

from __future__ import annotations

import re

from pipeline.pci.address import Bdf, parse_bdf
from pipeline.pci.checks import INFO, NOGO, WARN, Finding

_BDF = r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]"
_SHARED = re.compile(rf"cannot assign ({_BDF}) with shared RMRR", re.I)
_RMRR = re.compile(r"found ACPI_DMAR_RMRR|RMRR region", re.I)
_ENDPOINT = re.compile(rf"endpoint:\s*({_BDF})", re.I)
_HVM_ON = re.compile(r"HVM: (?:SVM|VMX) enabled")


def info_fields(text: str) -> dict[str, str]:
    """``xl info``'s ``key : value`` lines."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def rmrr_sharers(dmesg: str) -> dict[Bdf, set[Bdf]]:
    """Each device in a shared RMRR and the others in it: from the RMRR scopes Xen lists
    (``iommu=verbose``: an RMRR line, then one ``endpoint:`` line per device) and from an
    earlier ``cannot assign ... with shared RMRR``."""
    groups: list[set[Bdf]] = []
    current: set[Bdf] | None = None
    out: dict[Bdf, set[Bdf]] = {}
    for line in dmesg.splitlines():
        if _RMRR.search(line):
            current = set()
            groups.append(current)
            continue
        m = _ENDPOINT.search(line)
        if m and current is not None:
            current.add(parse_bdf(m[1]))
        elif not line.strip().startswith("(XEN)") or "[VT-D]" not in line:
            current = None
        shared = _SHARED.search(line)
        if shared:
            out.setdefault(parse_bdf(shared[1]), set())
    for group in groups:
        if len(group) > 1:
            for b in group:
                out.setdefault(b, set()).update(group - {b})
    return out


def no_hvm(dmesg: str) -> str | None:
    """Why this Xen starts no HVM guest, from its boot messages: no ``HVM: SVM enabled`` nor
    ``HVM: VMX enabled`` (the CPU offers neither; under QEMU's TCG, VT-x is never offered:
    ``TCG doesn't support requested feature: CPUID.01H:ECX.vmx``). None when it does, or when
    the ring no longer holds the boot (no ``Command line:`` line) to tell."""
    if _HVM_ON.search(dmesg) or "Command line:" not in dmesg:
        return None
    return ("Xen found no SVM or VT-x (no \"HVM: SVM enabled\" or \"HVM: VMX enabled\" "
            "line): it starts no HVM guest")


def check_xen(info: str | None, dmesg: str | None, bdf: Bdf,
              hvm: bool | None) -> list[Finding]:
    """The findings for device *bdf* on a running Xen; *hvm*: whether an HVM guest
    gets it (None: unknown, no [[guests]] says). Nothing when Xen is not running there."""
    out: list[Finding] = []
    if info is not None:
        caps = info_fields(info).get("virt_caps", "").split()
        if hvm and "hvm" not in caps:
            out.append(Finding(NOGO, "xen", f"xl info: virt_caps is \"{' '.join(caps)}\", "
                               "without hvm: this Xen starts no HVM guest (no SVM or VT-x), "
                               "and the device goes to one"))
        elif "hvm_directio" not in caps:
            why = f"xl info: virt_caps is \"{' '.join(caps)}\", without hvm_directio"
            if hvm:
                out.append(Finding(NOGO, "xen", f"{why}: this Xen cannot give a device to an HVM "
                            "guest (no IOMMU in use), and the device goes to one"))
            elif "pv_directio" not in caps:
                out.append(Finding(NOGO, "xen", f"{why} or pv_directio: this Xen cannot give "
                            "devices to any guest"))
            elif hvm is None:  # no [[guests]] says which guest gets it
                out.append(Finding(WARN, "xen", f"{why}: only a PV guest can have the device"))
    if dmesg is not None:
        if hvm and info is None and (why := no_hvm(dmesg)) is not None:
            out.append(Finding(NOGO, "xen", f"xl dmesg: {why}, and the device goes to an HVM "
                               "guest"))
        if "I/O virtualisation enabled" in dmesg:
            out.append(Finding(INFO, "xen", "xl dmesg: I/O virtualisation enabled"))
        elif "I/O virtualisation disabled" in dmesg:
            out.append(Finding(NOGO if hvm else WARN, "xen", "xl dmesg: I/O virtualisation "
                        "disabled: no IOMMU protects dom0 and Xen from the guest's DMA"
                        + (", and an HVM guest gets no device" if hvm else "")))
        if re.search(r"^[^\n]*Interrupt remapping (?:not enabled|disabled)", dmesg, re.M | re.I):
            out.append(Finding(WARN, "xen", "xl dmesg: interrupt remapping is not enabled: the "
                        "guest's device can send any interrupt (MSI) it likes"))
        sharers = rmrr_sharers(dmesg).get(bdf)
        if sharers is not None:
            others = ", ".join(str(b) for b in sorted(sharers))
            out.append(Finding(NOGO, "rmrr", "xl dmesg: shares an RMRR (firmware-reserved memory "
                        f"for DMA){' with ' + others if others else ''}: Xen refuses to "
                        "assign it unless rdm_policy = \"relaxed\" in the guest"))
    return out
