"""The bootloader entry for the installed Xen and dom0 kernel: GRUB legacy (``grub.conf`` /
``menu.lst``, the 2009 way) or GRUB 2 (an ``/etc/grub.d`` script for ``grub-mkconfig``).

xenpipe owns only what it writes between ``### BEGIN xenpipe <name> ###`` and
``### END xenpipe ###``; a second install replaces that block and leaves every other line of the
file byte-for-byte as the user wrote it. ``<name>`` is the config file's name, so two configs
installing into one root keep one entry each.

One module per loader, each a :class:`~.base.Bootloader`; :data:`LOADERS` maps the
``[install] bootloader`` value to its class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.install.bootloader.base import (
    BEGIN,
    END,
    Bootloader,
    Entry,
    block_body,
    blocks,
    find_block,
    script_check,
    set_block,
)
from pipeline.install.bootloader.grub2 import (
    DEFAULTS,
    GRUB_DIR,
    SCRIPT,
    Grub2,
    grub_word,
    read_env,
    shell_assignments,
)
from pipeline.install.bootloader.grub_legacy import GrubLegacy
from pipeline.install.bootloader.none import NoBootloader

if TYPE_CHECKING:
    from pipeline.install.plan import Plan

LOADERS: dict[str, type[Bootloader]] = {
    cls.name: cls for cls in (GrubLegacy, Grub2, NoBootloader)
}


def plan(kind: str, install_plan: Plan, e: Entry, once: bool) -> None:
    """Add the bootloader steps for *kind* (``[install] bootloader``) to the plan."""
    LOADERS[kind]().plan(install_plan, e, once)


__all__ = [
    "BEGIN", "DEFAULTS", "END", "GRUB_DIR", "LOADERS", "SCRIPT", "Bootloader", "Entry",
    "Grub2", "GrubLegacy", "NoBootloader", "block_body", "blocks", "find_block", "grub_word",
    "plan", "read_env", "script_check", "set_block", "shell_assignments",
]
