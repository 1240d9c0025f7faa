"""The guest part of one ``doit boot`` (``[boot] guest = true``), in the order the stage needs
it: plan (guestcheck), swap the probe for the Debian dom0, add the guest milestones, judge
the console (guestverdict)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline import passthrough, pci
from pipeline.boot.guestcheck import BOOT_MEMORY, GuestPlan, enabled, initramfs, plan
from pipeline.boot.guestverdict import milestones, verdict
from pipeline.boot.milestone import Milestone, Milestones
from pipeline.boot.qemu import Images, Session
from pipeline.config import Config
from pipeline.errors import BootError
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class GuestBoot:
    """The guest part of one ``doit boot``, in the order the stage needs it: plan the guests
    (with the topology run's topology when a device path needs it), swap the probe for the
    Debian dom0, add the guest milestones, judge the console."""

    cfg: Config
    ws: Workspace
    plans: Sequence[GuestPlan] = ()

    @classmethod
    def of(cls, cfg: Config, ws: Workspace) -> GuestBoot | None:
        """The guest part of this config's boot, or None when it boots no guests."""
        return cls(cfg, ws) if enabled(cfg) else None

    def planned(self, topo: pci.Topology | None) -> GuestBoot:
        """With the guests planned; DeviceError when a device path needs the topology run
        first."""
        if not self.cfg.guests:
            raise BootError("[boot] guest = true but no [[guests]] are configured")
        return replace(self, plans=tuple(plan(self.cfg, topo)))

    def machine(self, cfg: Config) -> Config:
        """*cfg* with at least :data:`BOOT_MEMORY` MiB for the QEMU machine."""
        if cfg.boot.memory >= BOOT_MEMORY:
            return cfg
        return replace(cfg, boot=replace(cfg.boot, memory=BOOT_MEMORY))

    def images(self, imgs: Images, dest: Path) -> Images:
        """*imgs* with dom0's initramfs (at *dest*) swapped for the Debian one."""
        return replace(imgs, initrd=initramfs(self.cfg, self.ws, self.plans, imgs.kernel, dest))

    def _milestones(self) -> Milestones:
        return milestones(self.plans, assign=not passthrough.hides(self.cfg))

    def steps(self, steps: Milestones) -> Milestones:
        """The dom0 milestones with the guests' before the last (dom0's power-off)."""
        return [*steps[:-1], *self._milestones(), *steps[-1:]]

    def owns(self, milestone: Milestone | None) -> bool:
        """Whether *milestone* (a missed one) is one of the guest part's."""
        names = {m.name for step in self._milestones() for m in step}
        return getattr(milestone, "name", None) in names

    def judge(self, session: Session, results: dict[str, Any]) -> str | None:
        """Record what each guest saw into *results* (``guests``, more ``milestones``, the
        verdict as the missed guest milestone's detail) from the boot's session; the first
        problem, one line, or None."""
        v = verdict(session.console, self.plans)
        results["guests"] = v.guests
        if v.returned:
            results["returned"] = v.returned
        if v.nics:
            results["dom0_nics"] = v.nics
        if v.warnings:
            results["warnings"] = [*results.get("warnings", []), *v.warnings]
        marks = results.setdefault("milestones", [])
        missed = session.watch.missed
        if v.problem is not None and missed is not None and self.owns(missed):
            for m in marks:
                if m.get("name") == missed.name and m.get("status") == "missed":
                    m["detail"] = v.problem
        marks.extend(v.records)
        return v.problem
