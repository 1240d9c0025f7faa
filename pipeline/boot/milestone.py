"""The console milestones of a boot and the watch that follows QEMU's console through them:
one ordered list of steps per boot, so a later milestone or a failure that comes first is
told apart from a timeout or QEMU exiting early."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pexpect

from pipeline import pci, proc
from pipeline.boot import probe

_NL = r"[^\r\n]*\r*\n"  # the rest of a line; the console ends lines with \r\r\n


@dataclass(frozen=True)
class Milestone:
    """A console line that must come, in order; *missed* and *why* make the error."""

    name: str
    pattern: str  # regex; the line's rest is appended
    missed: str  # "pciback did not seize 0000:00:03.0"
    why: str  # the likely cause

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern + _NL)


Milestones = list[list[Milestone]]  # a boot's ordered steps; one step's may come in any order


FAILURES = (
    ("Xen panicked", r"Panic on CPU \d+"),
    ("Xen reports dom0 crashed", r"Dom0 crashed"),
    ("the dom0 kernel panicked", r"Kernel panic"),
)


def seize_milestone(bdf: pci.Bdf) -> Milestone:
    b = re.escape(str(bdf))
    return Milestone(
        f"pciback seized {bdf}",
        rf"(?:{b}: \S*pciback: seizing device|pciback: seizing device {b})",
        f"pciback did not seize {bdf}",
        f"is {bdf} on the virtual machine ([boot] devices)? is CONFIG_XEN_PCIDEV_BACKEND=y?",
    )


def listed_milestone(bdf: pci.Bdf) -> Milestone:
    return Milestone(
        f"{bdf} under pciback", re.escape(f"{probe.MARK} pciback {bdf}") + r"(?=[\r\n])",
        f"{bdf} is not bound to pciback", "pciback seized it but did not bind it; see the log")


def milestones(seize: Sequence[pci.Bdf]) -> Milestones:
    """The ordered steps of a boot; the devices of one step may come in any order."""
    steps = [
        [Milestone("Xen banner", r"\(XEN\) Xen version \S+", "Xen did not start",
                   "is the hypervisor a multiboot image? does -cpu qemu64 suit it?")],
        [Milestone("Xen IOMMU", r"\(XEN\) I/O virtualisation (?:enabled|disabled)",
                   "Xen did not report on the IOMMU", "Xen stopped during start-up")],
        # Xen 4.17 prints the dom0 ELF notes; "Building a PV Dom0" is newer, "LOADING" 3.x
        [Milestone("dom0 construction",
                   r"(?:\(XEN\)\s+Dom0 kernel: |\*\*\* (?:Building a PV Dom0|LOADING DOMAIN 0))",
                   "Xen did not build dom0",
                   "is the dom0 kernel a Xen PV kernel (CONFIG_XEN_PV=y, CONFIG_XEN_DOM0=y)?")],
        [Milestone("Linux banner", r"Linux version \S+", "the dom0 kernel printed nothing",
                   "CONFIG_HVC_XEN=y and console=hvc0 earlyprintk=xen?")],
    ]
    if seize:
        steps.append([seize_milestone(b) for b in seize])
    steps.append([Milestone("init started", re.escape(f"{probe.MARK} init started"),
                            "the probe's /init did not start",
                            "CONFIG_BLK_DEV_INITRD, CONFIG_RD_GZIP, CONFIG_BINFMT_SCRIPT=y?")])
    if seize:
        steps.append([listed_milestone(b) for b in seize])
    steps.append([Milestone("probe done", re.escape(f"{probe.MARK} done"),
                            "the probe did not finish its device dump", "see the log")])
    steps.append([Milestone("power-off", r"reboot: Power down", "dom0 did not power off",
                            "CONFIG_ACPI=y? busybox poweroff -f failed?")])
    return steps


@dataclass
class Hit:
    name: str
    seconds: float  # since QEMU started
    line: str


@dataclass
class Watch:
    """How far a boot came: the milestones met, the one missed and why."""

    hits: list[Hit] = field(default_factory=list)
    missed: Milestone | None = None
    reason: str = ""
    unreached: list[str] = field(default_factory=list)  # the milestones after the missed one

    @property
    def ok(self) -> bool:
        return self.missed is None

    def records(self) -> list[dict[str, Any]]:
        """Every milestone with its status (passed, missed, pending) for reports."""
        out = [{"name": h.name, "status": "passed", "seconds": round(h.seconds, 2),
                "detail": h.line} for h in self.hits]
        if self.missed is not None:
            out.append({"name": self.missed.name, "status": "missed", "detail": self.reason})
        return out + [{"name": n, "status": "pending"} for n in self.unreached]


def _line(child: Any) -> str:
    """The whole console line of the last match (its start is in ``before``)."""
    head = child.before.rsplit("\n", 1)[-1] if isinstance(child.before, str) else ""
    return (head + child.after).strip()


def _panic_text(child: Any) -> str:
    """The failure line; Xen says why on the line after ``Panic on CPU N:``, so read on
    briefly for it."""
    text = _line(child)
    if text.endswith(":"):
        child.expect([re.compile(r"\S" + _NL), pexpect.EOF, pexpect.TIMEOUT], timeout=2)
        if isinstance(child.after, str):
            text += " " + _line(child).removeprefix("(XEN) ")
    return text


def watch(child: Any, steps: Sequence[Sequence[Milestone]], timeout: float,
          start: float | None = None) -> Watch:
    """Follow *child*'s output through *steps*; stop at the first problem.

    pexpect reports the earliest match in its buffer, so a later milestone or a failure
    that comes first is noticed in console order.
    """
    start = time.monotonic() if start is None else start
    deadline = start + timeout
    out = Watch()
    for i, step in enumerate(steps):
        pending = list(step)
        later = [m for s in steps[i + 1:] for m in s]
        while pending:
            patterns = [m.regex for m in pending] + [m.regex for m in later]
            patterns += [re.compile(p + _NL) for _, p in FAILURES]
            patterns += [pexpect.EOF, pexpect.TIMEOUT]
            remaining = max(0.0, deadline - time.monotonic())
            idx = child.expect(patterns, timeout=remaining)
            now = time.monotonic() - start
            n_pend, n_later, n_fail = len(pending), len(later), len(FAILURES)
            if idx < n_pend:
                out.hits.append(Hit(pending.pop(idx).name, now, _line(child)))
                continue
            out.missed = pending[0]
            out.unreached = [m.name for m in (*pending[1:], *later)]
            if idx < n_pend + n_later:
                out.reason = f"{later[idx - n_pend].name} came first"
            elif idx < n_pend + n_later + n_fail:
                out.reason = f"{FAILURES[idx - n_pend - n_later][0]}: {_panic_text(child)}"
            elif idx == len(patterns) - 2:
                last = proc.last_line(child.before)
                out.reason = f"QEMU exited after {now:.0f} s" + (f": {last}" if last else "")
            else:
                out.reason = f"nothing within the [boot] timeout of {timeout:.0f} s"
            return out
    return out

