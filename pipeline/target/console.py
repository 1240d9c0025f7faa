"""The box's serial console: the ``[target] console`` command (IPMI SOL, conserver, a console
server...) run under pexpect, its output logged and followed through the same boot
milestones as the QEMU boot (:mod:`pipeline.boot.milestone`), minus the probe's own."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    failure: str | None = None  # what follow() saw: "the dom0 kernel panicked: Kernel panic..."
    _stop: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

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

    def follow(self) -> None:
        """After the milestones: keep reading the console (the box must never stall on a full
        console pipe) and note the first failure (a panic, dom0 crashed) while the caller
        waits for ssh: a dom0 that panics after its last milestone is named, not taken for a
        slow boot, even when Xen's reboot brings the box back on its own."""
        patterns = [re.compile(p + r"[^\r\n]*\r*\n") for _, p in milestone.FAILURES]

        def read() -> None:
            while not self._stop.is_set():
                try:
                    idx = self.child.expect([*patterns, pexpect.EOF, pexpect.TIMEOUT],
                                            timeout=1)
                except (OSError, ValueError):
                    return
                if idx < len(patterns) and self.failure is None:
                    self.failure = f"{milestone.FAILURES[idx][0]}: {self.child.after.strip()}"
                elif idx == len(patterns):
                    return

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def stop(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None
        if self.child is not None:  # it leads its own session: stop what it started too
            proc.stop_group(self.child.pid, self.child.isalive, grace=2.5)
            self.child.close(force=True)
            if self.child.logfile is not None:
                self.child.logfile.close()
            self.child = None
