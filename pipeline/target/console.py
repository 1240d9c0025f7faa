"""The box's serial console: the ``[target] console`` command (IPMI SOL, conserver, a console
server...) run under pexpect, its output logged and followed through the same boot
milestones as the QEMU boot (:mod:`pipeline.boot.milestone`), minus the probe's own."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect

from pipeline import pci, proc
from pipeline.boot import milestone
from pipeline.errors import TargetError

# the steps only the QEMU boot's probe initramfs prints
_PROBE_ONLY = ("init started", "probe done", "power-off")


def box_milestones(seize: Sequence[pci.Bdf]) -> milestone.Milestones:
    """What a box's console must show: Xen, dom0, Linux, pciback seizing each device."""
    return [step for step in milestone.milestones(seize)
            if step[0].name not in _PROBE_ONLY and not step[0].name.endswith("under pciback")]


@dataclass
class Console:
    """A running console command."""

    argv: tuple[str, ...]
    log: Path
    child: Any = None
    started: float = 0.0

    def start(self) -> Console:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.child = pexpect.spawn(self.argv[0], list(self.argv[1:]), encoding="utf-8",
                                       codec_errors="replace", timeout=None,
                                       logfile=open(self.log, "a"),  # noqa: SIM115
                                       preexec_fn=proc.die_with_parent())
        except pexpect.ExceptionPexpect as exc:
            raise TargetError(f"[target] console {self.argv[0]}: {exc}") from None
        self.started = time.monotonic()
        return self

    def watch(self, steps: milestone.Milestones, timeout: float) -> milestone.Watch:
        return milestone.watch(self.child, steps, timeout, start=self.started)

    def stop(self) -> None:
        if self.child is not None:  # it leads its own session: stop what it started too
            proc.stop_group(self.child.pid, self.child.isalive, grace=2.5)
            self.child.close(force=True)
            if self.child.logfile is not None:
                self.child.logfile.close()
            self.child = None
