"""What dom0 uses a device for besides its disks: the NIC with the default route, the NIC the
ssh session came in on, the console (a PCI serial card, the boot VGA).

Given away, the first cuts the box off its network, the second the session installing it,
the third the screen or serial line a failed boot would be read on. Read from the box's
sysfs (``class/net``, ``class/tty``, ``boot_vga``), procfs (``net/route``, ``cmdline``) and
its ``$SSH_CONNECTION``; callers pass the trees.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pipeline.pci.address import Bdf
from pipeline.pci.checks import NOGO, WARN, Finding
from pipeline.pci.sysfs import pci_chain, read_stripped, sysfs_bdf


def _pci_of(link: Path) -> Bdf | None:
    """The PCI function a class device (``class/net/eth0``) sits on, or None (virtual)."""
    split = pci_chain(os.path.realpath(link))
    return sysfs_bdf(split[2][-1]) if split and split[2] else None


def interfaces(sysfs: Path) -> dict[str, Bdf]:
    """Network interface -> its PCI function."""
    base = sysfs / "class" / "net"
    out = {}
    for link in sorted(base.iterdir()) if base.is_dir() else []:
        bdf = _pci_of(link)
        if bdf is not None:
            out[link.name] = bdf
    return out


def routes(proc: Path) -> list[tuple[str, ipaddress.IPv4Network]]:
    """(interface, destination network) per IPv4 route of ``net/route`` (hex, host order)."""
    text = read_stripped(proc / "net" / "route") or ""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            dest = ipaddress.IPv4Address(int(f[1], 16).to_bytes(4, "little"))
            mask = ipaddress.IPv4Address(int(f[7], 16).to_bytes(4, "little"))
            out.append((f[0], ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)))
        except ValueError:
            continue
    return out


def _ssh_interface(proc: Path, ssh_connection: str | None) -> tuple[str, str] | None:
    """(interface, address) the ssh session came in on: the most specific route to the box's
    own address of ``$SSH_CONNECTION`` (client ip, port, server ip, port)."""
    fields = (ssh_connection or "").split()
    if len(fields) != 4:
        return None
    try:
        server = ipaddress.ip_address(fields[2])
    except ValueError:
        return None
    if not isinstance(server, ipaddress.IPv4Address) or server.is_loopback:
        return None
    best = max(((net.prefixlen, iface) for iface, net in routes(proc) if server in net),
               default=None)
    return (best[1], str(server)) if best else None


def _consoles(proc: Path) -> list[str]:
    words = (read_stripped(proc / "cmdline") or "").split()
    return [w.partition("=")[2].split(",")[0] for w in words if w.startswith("console=")]


def uses(sysfs: Path, proc: Path | None, ssh_connection: str | None,
         xen_cmdline: str = "") -> dict[Bdf, list[tuple[str, str]]]:
    """Per PCI function dom0 uses this way: (kind, why); kind ``ssh``, ``route`` or
    ``console``. *xen_cmdline*: the running Xen's options (``xl info``), for ``console=vga``."""
    out: dict[Bdf, list[tuple[str, str]]] = {}
    nics = interfaces(sysfs)
    if proc is not None:
        for iface, net in routes(proc):
            if net.prefixlen == 0 and iface in nics:
                out.setdefault(nics[iface], []).append(
                    ("route", f"is {iface}, which carries the default route"))
        came = _ssh_interface(proc, ssh_connection)
        if came and came[0] in nics:
            out.setdefault(nics[came[0]], []).append(
                ("ssh", f"is {came[0]}, which has {came[1]}, the address this ssh session "
                        "came in on"))
        consoles = _consoles(proc)
    else:
        consoles = []
    for name in consoles:
        if name.startswith("ttyS"):
            bdf = _pci_of(sysfs / "class" / "tty" / name)
            if bdf is not None:
                out.setdefault(bdf, []).append(("console", f"is {name}, dom0's console= "
                                                "(a PCI serial card)"))
    vga = (proc is not None and (not consoles or any(c.startswith("tty") and c[3:].isdigit()
                                                        for c in consoles))) \
        or any(w.startswith("console=") and "vga" in w.split("=", 1)[1].split(",")
               for w in xen_cmdline.split())
    if vga:
        devices = sysfs / "bus" / "pci" / "devices"
        for d in sorted(devices.iterdir()) if devices.is_dir() else []:
            if read_stripped(d / "boot_vga") == "1":
                out.setdefault(sysfs_bdf(d.name), []).append(
                    ("console", "is the boot VGA, and the console is on the screen"))
    return out


def findings(use: list[tuple[str, str]], allow_system_devices: bool) -> list[Finding]:
    """A finding per use: the ssh session's NIC is a no-go (the install would cut itself
    off) unless ``install.allow_system_devices``; the default route and the console warn."""
    out = []
    for kind, why in use:
        if kind == "ssh" and not allow_system_devices:
            out.append(Finding(NOGO, "use", f"{why}; remove it from passthrough.devices or set "
                        "install.allow_system_devices = true"))
        else:
            out.append(Finding(WARN, "use", f"{why}: dom0 loses it when pciback takes the device"))
    return out
