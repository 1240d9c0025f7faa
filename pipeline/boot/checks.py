"""After a boot: what each ``[passthrough]`` entry names in the machine's topology, which
devices the console says pciback seized, and what xen-pciback said about ``guestdev=``
entries; the checks that turn those into the verdict's problems."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import passthrough, pci
from pipeline.boot import probe
from pipeline.boot.qemu import Session
from pipeline.config import Config
from pipeline.errors import DeviceError


# ---------------------------------------------------------------------------------- checks
def expected_bdfs(cfg: Config, topo: pci.Topology | None) -> dict[str, tuple[pci.Bdf, ...]]:
    """The BDFs each passthrough entry stands for; device paths only when *topo* is known."""
    out: dict[str, tuple[pci.Bdf, ...]] = {}
    for entry in cfg.passthrough.devices:
        parsed = pci.parse_device(entry)
        if isinstance(parsed, pci.Bdf) or topo is not None:
            out[entry] = pci.resolve_devices([entry], topo)[entry]
    return out


def named(cfg: Config, topo: pci.Topology) -> dict[str, list[str]]:
    """The BDFs each passthrough entry names in *topo*; entries that name nothing left out."""
    out: dict[str, list[str]] = {}
    for entry in cfg.passthrough.devices:
        try:
            out[entry] = [str(b) for b in pci.resolve_devices([entry], topo)[entry]]
        except DeviceError:
            continue
    return out


def vm_mismatch(cfg: Config, topo: pci.Topology) -> str | None:
    """Why ``[passthrough] devices`` cannot be given away on the virtual machine *topo*
    describes (a device it lacks, a path that leads nowhere), or None."""
    try:
        resolved = pci.resolve_devices(cfg.passthrough.devices, topo)
    except DeviceError as exc:
        return f"{exc} (in the virtual machine, whose devices [boot] devices decides)"
    for entry, bdfs in resolved.items():
        for bdf in bdfs:
            if topo.get(bdf) is None:
                have = ", ".join(d.bdf.short for d in topo.devices)
                return (f"{entry} is not on the virtual machine, which has {have} ([boot] "
                        "devices adds more)")
    return None


def topology(report: probe.Report, dest: Path) -> pci.Topology:
    """The probed machine's topology, through a recorded sysfs tree and ``pci.scan``."""
    return pci.scan(probe.record_sysfs(report, dest))


def seized_in(console: str) -> list[pci.Bdf]:
    """Every device the console says pciback seized."""
    found = re.findall(r"([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])(?:: \S*pciback)?: "
                       r"seizing device|seizing device ([0-9a-f:.]+)", console)
    return [pci.parse_bdf(a or b) for a, b in found]


# ------------------------------------------------------------------------------ guestdev=
_GUESTDEV = re.compile(
    r"^[^\r\n]*?\bguestdev: (?:(\S+) is ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])"
    r"|(\S+) matches no device|malformed device path \"([^\"\r\n]*)\" ignored)\r*$", re.M)


@dataclass(frozen=True)
class GuestdevLog:
    """What xen-pciback (patches/linux) said about each ``guestdev=`` entry: the device an
    entry found (one per matching root bridge), the paths that matched nothing (its pr_warn)
    and the malformed entries it ignored (its pr_err), with the console lines."""

    found: dict[str, tuple[pci.Bdf, ...]]
    unmatched: tuple[str, ...]
    malformed: tuple[str, ...]
    lines: tuple[str, ...]

    def json(self) -> dict[str, Any]:
        return {"found": {e: [str(b) for b in bdfs] for e, bdfs in self.found.items()},
                "unmatched": list(self.unmatched), "malformed": list(self.malformed),
                "lines": list(self.lines)}


def guestdev_log(console: str) -> GuestdevLog:
    """xen-pciback's ``guestdev:`` lines in a console transcript."""
    found: dict[str, list[pci.Bdf]] = {}
    unmatched: list[str] = []
    malformed: list[str] = []
    lines: list[str] = []
    for m in _GUESTDEV.finditer(console):
        lines.append(m[0].strip())
        if m[1]:
            found.setdefault(m[1], []).append(pci.parse_bdf(m[2]))
        elif m[3]:
            unmatched.append(m[3])
        else:
            malformed.append(m[4])
    return GuestdevLog({e: tuple(dict.fromkeys(b)) for e, b in found.items()},
                       tuple(dict.fromkeys(unmatched)), tuple(dict.fromkeys(malformed)),
                       tuple(lines))


def guestdev_problems(cfg: Config, log: GuestdevLog) -> tuple[list[str], list[str]]:
    """(problems, warnings) in *log*. A ``[passthrough]`` path that matched nothing and a
    malformed entry fail the boot: the installed entry would reserve nothing for them. A path
    only ``[install] dom0_cmdline`` adds that matched nothing is a warning: the virtual
    machine lacks the device, the real one may have it."""
    ours = {e.strip() for e in cfg.passthrough.devices}
    problems = [f"guestdev path {e} matched no device" for e in log.unmatched if e in ours]
    problems += [f'guestdev entry "{e}" is malformed: xen-pciback ignored it'
                 + ("" if e in ours else " (it comes from [install] dom0_cmdline)")
                 for e in log.malformed]
    warnings = [f"guestdev path {e} from [install] dom0_cmdline matched no device on the "
                "virtual machine" for e in log.unmatched if e not in ours]
    return problems, warnings


def verify(cfg: Config, session: Session, topo: pci.Topology,
           planned: dict[str, tuple[pci.Bdf, ...]]) -> str | None:
    """After a complete boot: does each entry name, in this boot's own topology, exactly the
    devices pciback seized and holds (and that the options were rendered for), and for a
    guestdev= path the device xen-pciback found? In assignable mode pciback must not hold
    them at boot (dom0 keeps them until a guest starts). A path xen-pciback said matches nothing is
    guestdev_problems' to report."""
    seized = set(seized_in(session.console))
    held = set(session.report.pciback)
    said = guestdev_log(session.console)
    for entry in cfg.passthrough.devices:
        if entry.strip() in said.unmatched:
            continue
        try:
            now = pci.resolve_devices([entry], topo)[entry]
        except DeviceError as exc:
            return f"{entry}: {exc}"
        if entry in planned and set(planned[entry]) != set(now):
            return (f"{entry} named {', '.join(map(str, planned[entry]))} in the first boot but "
                    f"{', '.join(map(str, now))} in the second")
        found = said.found.get(entry.strip())
        if found is not None:
            bdf = topo.lookup(pci.parse_path(entry)).bdf
            if bdf not in found:
                return (f"xen-pciback took guestdev path {entry.strip()} for "
                        f"{', '.join(map(str, found))}, but it names {bdf} in the probe's dump")
        for bdf in now:
            if not passthrough.hides(cfg):
                if bdf in seized or str(bdf) in held:
                    return (f"pciback took {bdf} ({entry}) at boot, but [passthrough] mode = "
                            '"assignable" leaves it to dom0 until xl pci-assignable-add')
                continue
            if bdf not in seized:
                return f"pciback did not seize {bdf} ({entry})"
            if str(bdf) not in held:
                return f"{bdf} ({entry}) is not bound to pciback"
    return None



def xen_identity(console: str) -> dict[str, str | None]:
    """Which hypervisor booted, as it says itself: its banner (``Xen version ...``) and
    build-id, to be matched against ``out/xen-syms`` (pipeline.build.buildid)."""
    banner = re.search(r"\(XEN\) (Xen version [^\r\n]*)", console)
    build_id = re.search(r"\(XEN\) build-id: ([0-9a-f]+)", console)
    return {"banner": banner[1].strip() if banner else None,
            "build_id": build_id[1] if build_id else None}
