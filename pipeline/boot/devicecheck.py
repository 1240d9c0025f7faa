"""The go/no-go per device of ``doit devices``, made inside the dom0 ``doit boot`` booted:
into boot.json (``checks``) and the nightly report.

The probe prints dom0's ``/sys`` and ``/proc`` as the ``pci/box.py`` listing (``snap`` lines),
the boot's console is Xen's console ring (what ``xl dmesg`` prints: ``I/O virtualisation
enabled``, interrupt remapping, RMRR scopes) and, when the guest check ran, dom0's ``xl info``
(``virt_caps``). So the checks that predict a guest start failing are made on the very boot
the guest starts in, and a failed start points at the check that predicted it. Without the
listing (an older probe's console) only the running Xen's checks are made, on the probe's
topology.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import passthrough, pci
from pipeline.boot import probe
from pipeline.boot.checks import topology
from pipeline.build import kernel_build_dir
from pipeline.config import Config
from pipeline.errors import DeviceError, XenpipeError
from pipeline.pci import box as pcibox
from pipeline.pci import xenplatform
from pipeline.workspace import Workspace

_INFO_LINE = re.compile(r"^([a-z_]+)\s+: (.*)$")


def xen_console(console: str) -> str:
    """Xen's own lines of the console, from their ``(XEN)``: what ``xl dmesg`` shows."""
    lines = (ln.rstrip("\r") for ln in console.split("\n"))
    return "\n".join(ln[ln.index("(XEN)"):] for ln in lines if "(XEN)" in ln)


def xl_info(console: str) -> str | None:
    """The ``xl info`` dom0 printed on the console (the guest check runs it), or None."""
    lines = [ln.rstrip("\r") for ln in console.split("\n")]
    found = [ln for ln in lines if _INFO_LINE.match(ln)]
    return "\n".join(found) if any(ln.startswith("virt_caps") for ln in found) else None


def _as_json(v: pci.Verdict) -> dict[str, Any]:
    return {"entry": v.entry, "bdf": str(v.bdf) if v.bdf else None, "verdict": v.verdict,
            "findings": [{"level": f.level, "check": f.check, "text": f.text}
                         for f in v.findings]}


def verdicts(cfg: Config, ws: Workspace, box: pci.Box) -> list[dict[str, Any]]:
    """Per ``[passthrough] devices`` device: its verdict on *box* (a booted dom0's trees, or
    a ``[target]`` box over ssh), as boot.json records it."""
    dotconfig = kernel_build_dir(ws) / ".config"
    return [_as_json(v) for v in passthrough.device_verdicts(cfg, ws, dotconfig, box)]


def record(cfg: Config, ws: Workspace, console: str, report: probe.Report,
           dest: Path) -> list[dict[str, Any]]:
    """Per ``[passthrough] devices`` device: its verdict in the booted dom0, for boot.json
    (*dest*: where dom0's trees are rebuilt). The checks never decide the boot's own verdict:
    one that cannot be made is a warning line, and no verdicts."""
    try:
        return _record(cfg, ws, console, report, dest)
    except (XenpipeError, OSError) as exc:
        print(f"boot: warning: the device checks in dom0 were not made: {exc}", flush=True)
        return []


def _record(cfg: Config, ws: Workspace, console: str, report: probe.Report,
            dest: Path) -> list[dict[str, Any]]:
    dmesg = xen_console(console) or None
    info = xl_info(console)
    if "xenpipe-snapshot-end" in report.snapshot:
        snap = pcibox.unpack(report.snapshot, dest)
        texts = {"info": info, "dmesg": dmesg}

        def seen(argv: Sequence[str], what: str) -> str | None:
            """dom0's ``xl info`` and Xen's ``xl dmesg``, as this boot's console has them."""
            return texts.get(argv[-1])

        box = pci.Box(snap.sysfs, snap.proc, "the booted dom0's /sys", is_target=True,
                      run=seen, shown="dom0:/sys")
        return verdicts(cfg, ws, box)
    topo = topology(report, dest) if report.devices else None
    hvm = passthrough.hvm_devices(cfg, topo) if topo is not None else None
    out: list[dict[str, Any]] = []
    for entry in cfg.passthrough.devices:
        try:
            bdfs: tuple[pci.Bdf | None, ...] = pci.resolve_devices([entry], topo)[entry]
            error = ""
        except DeviceError as exc:
            bdfs, error = (None,), str(exc)
        for bdf in bdfs:
            found = [] if bdf is None else xenplatform.check_xen(
                info, dmesg, bdf, None if hvm is None else hvm.get(bdf))
            absent = error or (f"{entry} is not on the virtual machine" if bdf is not None
                               and topo is not None and topo.get(bdf) is None else "")
            if absent:
                found.insert(0, pci.Finding(pci.NOGO, "present", absent))
            out.append(_as_json(pci.Verdict(entry, bdf, tuple(found))))
    return out
