"""The guest boot's console read back (``[boot] guest = true``): the guest milestones, dom0's
and each guest's lines (:data:`~pipeline.boot.guestcheck.DOM0`,
:data:`~pipeline.boot.guestcheck.GUEST`), and the verdict that tells the failures apart, each
as one line: the Xen daemons did not start, a device was not hidden (xl refuses to assign
it), xl create failed otherwise, the guest crashed, a device is missing in the guest, a
timeout. Devices are matched by vendor:device and class against dom0's own view of the same
boot, since pciback's virtual PCI bus renumbers them in the guest."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline import pci
from pipeline.boot import probe
from pipeline.boot.guestcheck import DOM0, GUEST, GuestPlan
from pipeline.boot.guestuse import Returned, Use, device_line
from pipeline.boot.milestone import Milestone, Milestones


# ----------------------------------------------------------------------------- milestones
def milestones(plans: Sequence[GuestPlan], assign: bool = False) -> Milestones:
    """The guest part of a boot's milestones, after the probe's and before the power-off;
    *assign*: dom0 makes the devices assignable first (``[passthrough] mode = "assignable"``)."""
    steps = [[Milestone("Xen daemons started", re.escape(f"{DOM0} xen started"),
                        "the Xen daemons did not start in dom0",
                        "see /etc/init.d/xen start on the console")]]
    if assign:
        steps.append([Milestone(f"{bdf} made assignable",
                                re.escape(f"{DOM0} assignable-add {bdf} rc="),
                                f"dom0 did not run xl pci-assignable-add {bdf}",
                                "see the console")
                      for bdf in dict.fromkeys(str(b) for p in plans for b in p.bdfs)])
    for p in plans:
        n = p.name
        steps += [
            [Milestone(f"guest {n} started", re.escape(f"{GUEST} {n} init started"),
                       f"guest {n} did not start", "see xl create on the console")],
            [Milestone(f"guest {n} listed its devices", re.escape(f"{GUEST} {n} done"),
                       f"guest {n} did not list its devices", "see the guest's console")],
            [Milestone(f"guest {n} shut down", re.escape(f"{DOM0} guest {n} exit rc="),
                       f"guest {n} did not shut down", "see the guest's console")],
            # the second assignment: the same devices after xl destroy (pciback's reset path)
            [Milestone(f"guest {n} started again", re.escape(f"{GUEST} {n} init started"),
                       f"guest {n} did not start a second time", "see xl create on the console")],
            [Milestone(f"guest {n} listed its devices again", re.escape(f"{GUEST} {n} done"),
                       f"guest {n} did not list its devices the second time",
                       "see the guest's console")],
            [Milestone(f"guest {n} shut down again", re.escape(f"{DOM0} guest {n} again exit rc="),
                       f"guest {n} did not shut down the second time",
                       "see the guest's console")],
        ]
    for bdf in dict.fromkeys(str(b) for p in plans for b in p.bdfs):
        steps.append([Milestone(f"{bdf} back in dom0", re.escape(f"{DOM0} returned {bdf} "),
                                f"{bdf} did not go back to dom0",
                                "see xl pci-assignable-remove on the console")])
    return steps


# ------------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class SeenDevice:
    """A PCI function as the guest (or dom0) saw it."""

    bdf: str
    cls: str
    vendor: str
    device: str

    @property
    def ids(self) -> tuple[str, str, str]:
        return (self.vendor.lower(), self.device.lower(), self.cls.lower())

    def __str__(self) -> str:
        v, d = (x.lower().removeprefix("0x") for x in (self.vendor, self.device))
        return f"{self.bdf} [{v}:{d}] class {self.cls.lower().removeprefix('0x')}"


@dataclass
class GuestRun:
    """What the console says one guest did."""

    name: str
    created: bool = False  # dom0 ran xl create
    started: bool = False  # the guest's /init ran
    done: bool = False  # it listed its devices
    rc: int | None = None  # xl create -c's exit status (124: dom0's timeout)
    state: str | None = None  # xl list's state afterwards ("-" gone, "c" crashed)
    devices: list[SeenDevice] = field(default_factory=list)
    lspci: list[str] = field(default_factory=list)
    use: Use = field(default_factory=Use)  # drivers, interrupt modes, pings
    errors: list[str] = field(default_factory=list)  # xl/libxl error lines
    detached: dict[str, int | None] = field(default_factory=dict)  # xl pci-detach's rc per BDF
    panic: str | None = None
    last: str = ""  # the guest's last console line


@dataclass
class Transcript:
    """dom0's and the guests' lines of a guest boot's console."""

    xen_started: bool = False
    xen_rc: int | None = None  # /etc/init.d/xen start's failing status
    assignable: list[str] = field(default_factory=list)
    assigned: dict[str, int | None] = field(default_factory=dict)  # xl pci-assignable-add's rc
    guests: dict[str, GuestRun] = field(default_factory=dict)
    again: dict[str, GuestRun] = field(default_factory=dict)  # the second assignment
    nics: list[dict[str, str]] = field(default_factory=list)  # dom0's own NICs
    returned: dict[str, Returned] = field(default_factory=dict)  # devices back in dom0
    done: bool = False


_DOM0_LINE = re.compile(re.escape(DOM0) + r" (.*)$")
_GUEST_LINE = re.compile(re.escape(GUEST) + r" (\S+) (.*)$")
_FIELDS = re.compile(r"(\w+)=(\S*)")
_XL_ERROR = re.compile(r"libxl: error|xl: error|^Error|\berror\b.*(?:domain|pci|PCI)", re.I)
# libxl logs this as an error for every PV passthrough, then carries on
_HARMLESS = re.compile(r"doesn't support reset from sysfs")


def parse(console: str) -> Transcript:
    """Read a guest boot's console (``\\r\\r\\n`` line ends, kernel and Xen lines around)."""
    t = Transcript()
    current: GuestRun | None = None
    for raw in console.split("\n"):
        line = raw.replace("\r", "").strip()
        if m := _DOM0_LINE.search(line):
            words = m[1].split()
            fields = dict(_FIELDS.findall(m[1]))
            if words[:2] == ["xen", "started"]:
                t.xen_started = True
            elif words[:2] == ["xen", "failed"]:
                t.xen_rc = _int(fields.get("rc"))
            elif words[:1] == ["assignable"] and len(words) == 2:
                t.assignable.append(words[1])
            elif words[:1] == ["assignable-add"] and len(words) >= 2:
                t.assigned[words[1]] = _int(fields.get("rc"))
            elif words[:1] == ["nic"] and len(words) >= 2:
                t.nics.append({"nic": words[1], **fields})
            elif words[:1] == ["returned"] and len(words) >= 2:
                t.returned[words[1]] = Returned.of(words)
            elif words[:1] == ["guest"] and len(words) >= 3:
                again = len(words) >= 4 and words[2] == "again"  # the second assignment
                runs = t.again if again else t.guests
                run = runs.setdefault(words[1], GuestRun(words[1]))
                event = words[3] if again else words[2]
                if event == "create":
                    run.created, current = True, run
                elif event == "exit":
                    run.rc, run.state = _int(fields.get("rc")), fields.get("state")
                    current = None
                elif event == "detached" and len(words) >= (5 if again else 4):
                    run.detached[words[4 if again else 3]] = _int(fields.get("rc"))
            elif words[:1] == ["done"]:
                t.done = True
            continue
        if m := _GUEST_LINE.search(line):
            run = t.again.get(m[1]) or t.guests.setdefault(m[1], GuestRun(m[1]))
            what = m[2]
            run.last = line
            if what == "init started":
                run.started = True
            elif what == "done":
                run.done = True
            elif what.startswith("dev "):
                words = what.split()
                fields = dict(_FIELDS.findall(what))
                if len(words) >= 2:
                    run.devices.append(SeenDevice(words[1], fields.get("class", "?"),
                                                  fields.get("vendor", "?"),
                                                  fields.get("device", "?")))
            elif what.startswith("lspci "):
                run.lspci.append(what.removeprefix("lspci "))
            else:
                run.use.take(what)
            continue
        if current is None or not line:
            continue
        if "Kernel panic" in line and current.panic is None:
            current.panic = line[line.index("Kernel panic"):]
        elif _XL_ERROR.search(line) and not _HARMLESS.search(line):
            current.errors.append(line)
        if not line.startswith("(XEN)"):
            current.last = line
    return t


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _refused(run: GuestRun, p: GuestPlan, t: Transcript) -> str | None:
    """The devices xl refused to assign because pciback does not hold them (xl's "is not
    assignable", or a failed xl create and devices missing from xl pci-assignable-list)."""
    line = next((ln for ln in run.errors if "not assignable" in ln), None)
    if line is None and run.rc in (0, 124, None):
        return None
    missing = [b for b in p.bdfs if str(b) not in t.assignable]
    named = [b for b in p.bdfs if line is not None and _mentions(line, b)] or missing
    if line is None and not missing:
        return None
    what = ", ".join(map(str, named)) or "a device"
    return what + (f" ({line})" if line else " (not in xl pci-assignable-list)")


def _mentions(line: str, bdf: pci.Bdf) -> bool:
    """Whether an xl message names *bdf* (as 0000:00:04.0, 00:04.0 or 0:0:4.0)."""
    forms = (str(bdf), bdf.short, f"{bdf.domain:x}:{bdf.bus:x}:{bdf.dev:x}.{bdf.func:x}")
    return any(re.search(rf"(?<![0-9a-fA-F:]){re.escape(f)}(?![0-9a-fA-F])", line, re.I)
               for f in forms)


def _problem(run: GuestRun, p: GuestPlan, t: Transcript, dom0: dict[str, SeenDevice],
             label: str) -> str | None:
    """The one-line verdict on one guest run (*label*: its name, and which run), or None
    when it saw all its devices."""
    n = label
    if not run.created:
        return None  # dom0 never got that far: the milestones say why
    if run.panic is not None:
        return f"guest {n} crashed: {run.panic}"
    if run.state and "c" in run.state:
        return f"guest {n} crashed (xl list state {run.state}; last guest line: {run.last})"
    if not run.started:
        if (what := _refused(run, p, t)) is not None:
            return (f"guest {n}: device not hidden: xl refused to assign {what}; dom0 hides "
                    "only [passthrough] devices at boot")
        if run.rc == 124 or run.rc is None:
            return (f"guest {n}: timeout: its /init did not start within {p.timeout} s of "
                    f"xl create (last line: {run.last or 'none'})")
        detail = run.errors[-1] if run.errors else run.last or "no error message"
        return f"guest {n}: xl create failed with exit status {run.rc}: {detail}"
    if not run.done:
        if run.rc == 124 or run.rc is None:
            return (f"guest {n}: timeout: it started but did not list its devices within "
                    f"{p.timeout} s (last line: {run.last})")
        return (f"guest {n} crashed: it stopped before listing its devices (xl exit status "
                f"{run.rc}, state {run.state}; last line: {run.last})")
    left = list(run.devices)
    for bdf in p.bdfs:
        want = dom0.get(str(bdf))
        if want is None:
            return f"guest {n}: {bdf} is not on the virtual machine ([boot] devices)"
        match = next((d for d in left if d.ids == want.ids), None)
        if match is None:
            seen = ", ".join(map(str, run.devices)) or "no PCI devices"
            return f"guest {n} started but {want} is missing in the guest (it sees {seen})"
        left.remove(match)
    return None


@dataclass
class Verdict:
    """The guests' part of a boot's result."""

    problem: str | None  # the first failure, one line
    records: list[dict[str, Any]]  # milestone records: which device each guest saw, and how
    guests: dict[str, dict[str, Any]]  # per guest: origin, pci list, devices, lspci, verdict
    warnings: list[str] = field(default_factory=list)  # e.g. a device on legacy INTx
    returned: dict[str, dict[str, Any]] = field(default_factory=dict)  # devices back in dom0
    nics: list[dict[str, str]] = field(default_factory=list)  # dom0's own NICs


def _judge_run(run: GuestRun, p: GuestPlan, t: Transcript, dom0: dict[str, SeenDevice],
               label: str, records: list[dict[str, Any]], warnings: list[str],
               ) -> tuple[str | None, dict[str, Any]]:
    """(the run's problem, its view for boot.json): the devices it saw, matched by
    vendor:device and class, and whether each worked; records and warnings appended."""
    why = _problem(run, p, t, dom0, label)
    mine: list[str] = []
    left = list(run.devices)
    seen = []
    for bdf in p.bdfs:
        want = dom0.get(str(bdf))
        match = next((d for d in left if want and d.ids == want.ids), None)
        if match is not None:
            left.remove(match)
        dev: dict[str, Any] = {"host": str(bdf), "guest": match.bdf if match else None,
                               "ids": str(want).split(" ", 1)[1] if want else None}
        dev.update(run.use.view(dev["guest"]))
        seen.append(dev)
        if not run.created:
            continue  # dom0 did not get that far: the stage's milestones say why
        use, warn = (run.use.judge(label, match.bdf, str(want)) if match and run.done
                     else (None, []))
        why = why or use
        mine += warn
        if run.detached.get(str(bdf), 0) != 0:  # xl destroy took it all the same
            mine.append(f"guest {label}: xl pci-detach {bdf} from the running guest failed "
                        f"(exit {run.detached[str(bdf)]}); xl destroy released it")
        records.append({
            "name": f"guest {label} sees {bdf}",
            "status": "passed" if match is not None and run.done else "missed",
            "detail": f"as {match}" if match is not None else (why or "not seen")})
        if match is not None and run.done:
            records.append({"name": f"guest {label} uses {bdf}",
                            "status": "missed" if use else "passed",
                            "detail": use or device_line(label, dev).split(": ", 2)[-1]})
    view = {"verdict": "pass" if run.done and why is None else "fail", "reason": why,
            "devices": seen, "lspci": run.lspci, "xl_rc": run.rc, "state": run.state,
            "modules": run.use.modules, "detached": run.detached, "warnings": mine}
    warnings += mine
    return why, view


def verdict(console: str, plans: Sequence[GuestPlan]) -> Verdict:
    """Judge a guest boot from its console: dom0's view of each assigned device (the probe's
    dump) against what each guest listed, matched by vendor:device and class, each device
    at work in the guest, on both runs, and each device back in dom0."""
    t = parse(console)
    dom0 = {d.name: SeenDevice(d.name, d.cls, d.vendor, d.device)
            for d in probe.parse(console).devices}
    problem = None
    if not t.xen_started and t.xen_rc is not None:
        problem = f"dom0: the Xen daemons did not start (/etc/init.d/xen start: exit {t.xen_rc})"
    for bdf, rc in t.assigned.items():
        if rc != 0 and problem is None:
            problem = (f"dom0: xl pci-assignable-add {bdf} failed (exit {rc}): pciback could "
                       "not take it from dom0's driver")
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    views: dict[str, dict[str, Any]] = {}
    for p in plans:
        run = t.guests.get(p.name, GuestRun(p.name))
        why, view = _judge_run(run, p, t, dom0, p.name, records, warnings)
        problem = problem or why
        again = t.again.get(p.name, GuestRun(p.name))
        why2, view2 = _judge_run(again, p, t, dom0, f"{p.name} again", records, warnings)
        if again.created:
            problem = problem or why2
        views[p.name] = {"origin": p.origin, "pci": list(p.entries), "config": p.config,
                         **view, "again": view2}
    for back in t.returned.values():
        problem = problem or back.problem()
    return Verdict(problem, records, views, warnings,
                   {b: r.json() for b, r in t.returned.items()}, t.nics)


def summary_lines(results: Any) -> list[str]:
    """What each guest's lspci printed and how each device worked, on both runs, and each
    device's way back to dom0 (what ``make demo`` ends with), from boot.json."""
    out: list[str] = []
    views = results.get("guests") if isinstance(results, dict) else None
    for name, view in (views if isinstance(views, dict) else {}).items():
        verdict_ = str(view.get("verdict", "fail")).upper()
        out.append(f"guest {name}: {verdict_}: pci from {view.get('origin')}")
        out += [f"guest {name}: lspci {line}" for line in view.get("lspci") or []]
        out += [device_line(name, d) for d in view.get("devices") or [] if "driver" in d]
        out += [f"warning: {w}" for w in view.get("warnings") or []]
        if view.get("reason"):
            out.append(str(view["reason"]))
        again = view.get("again")
        if isinstance(again, dict) and again.get("xl_rc") is not None:
            out.append(f"guest {name} again (second assignment): "
                       f"{str(again.get('verdict', 'fail')).upper()}")
            out += [device_line(f"{name} again", d) for d in again.get("devices") or []
                    if "driver" in d]
            out += [f"warning: {w}" for w in again.get("warnings") or []]
            if again.get("reason"):
                out.append(str(again["reason"]))
    returned = results.get("returned") if isinstance(results, dict) else None
    for back in (returned if isinstance(returned, dict) else {}).values():
        out.append(Returned(**{**back, "carrier": "1" if back.get("carrier") else "0"}).line())
    return out

