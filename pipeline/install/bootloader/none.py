"""``bootloader = none``: no entry is written; the plan notes what to boot by hand."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.install.bootloader.base import Bootloader, Entry

if TYPE_CHECKING:
    from pipeline.install.plan import Plan


class NoBootloader(Bootloader):
    name = "none"

    def plan(self, plan: Plan, e: Entry, once: bool) -> None:
        plan.note(f"bootloader = none: no entry written; boot /boot/{e.xen} {e.xen_args} with "
                  f"module /boot/{e.kernel} {e.kernel_args}"
                  + (f" and module /boot/{e.initrd}" if e.initrd else ""))

