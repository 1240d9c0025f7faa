"""GRUB legacy (0.97): the entry in ``/boot/grub/grub.conf`` (else ``menu.lst``), the 2009 way,
with boot-once through ``default saved`` and ``savedefault``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.install.bootloader.base import (
    Bootloader,
    Entry,
    block_body,
    blocks,
    file_bytes,
    file_lines,
    find_block,
    set_block,
)

if TYPE_CHECKING:
    from pipeline.install.plan import Plan

_TITLE = re.compile(r"^\s*title[\s=]")
_DEFAULT = re.compile(r"^\s*default[\s=]+(\S+)")
_ROOT = re.compile(r"^\s*root[\s=]+(\(.*\))\s*$")
_KERNEL = re.compile(r"^\s*kernel[\s=]+(?:--\S+\s+)*(\S+)")
DEFAULT_FILE_PAD = [
    *["#"] * 10,
    "# WARNING: If you want to edit this file directly, do not remove any line",
    "# from this file, including this warning. Using `grub-set-default' is",
    "# strongly recommended.",
]


class GrubLegacy(Bootloader):
    """GRUB 0.97: ``/boot/grub/grub.conf`` (else ``menu.lst``), as in the 2009 procedure.

    Boot once: GRUB legacy has no one-shot entry in its config language, but it has a saved
    default: ``default saved`` boots the entry whose number is in ``/boot/grub/default``
    (written here, in ``grub-set-default``'s format), and ``savedefault N`` in an entry stores
    N there when that entry boots. So the xenpipe entry is booted next, and on the way it puts
    the previous default back: the boot after that, or after a hang and a reset, is the old
    system. (Red Hat's GRUB keeps the saved default inside stage2 instead; there use
    ``savedefault --default=N --once`` in the grub shell, as the plan notes on a live root.)
    """

    name = "grub-legacy"

    def conf(self, plan: Plan) -> str:
        for rel in ("/boot/grub/grub.conf", "/boot/grub/menu.lst"):
            if plan.exists(rel):
                return rel
        return "/boot/grub/grub.conf"

    def plan(self, plan: Plan, e: Entry, once: bool) -> None:
        rel = self.conf(plan)
        where = plan.show(rel)
        lines = file_lines(plan.read(rel))
        ours = {i for a, b in blocks(lines) for i in range(a, b + 1)}
        user = [(i, ln) for i, ln in enumerate(lines) if i not in ours]
        previous = self._previous(plan, lines, e.name, where, user)
        root_dev, prefix, indent = self._style(user, previous)

        body = [f"title Xen-{e.xen_version.title()} ({e.release})",
                f"{indent}root {root_dev}",
                f"{indent}kernel {prefix}/{e.xen} {e.xen_args}".rstrip(),
                f"{indent}module {prefix}/{e.kernel} {e.kernel_args}".rstrip()]
        if e.initrd:
            body.append(f"{indent}module {prefix}/{e.initrd}")
        if once:
            body.append(f"{indent}savedefault {previous}")
        lines = set_block(lines, e.name, body, where)

        # the default, before the first entry (a later `default` line overrides an earlier one)
        span = find_block(lines, e.name, where)
        assert span is not None
        index = sum(1 for ln in lines[: span[0]] if _TITLE.match(ln))
        gname = f"{e.name}:default"
        if once:
            glob = [f"# xenpipe: boot entry {index} ({e.name}) once: `default saved` reads "
                    "/boot/grub/default,",
                    f"# and that entry's `savedefault {previous}` restores the previous default",
                    "default saved"]
        else:
            glob = [f"# xenpipe: boot entry {index} ({e.name}) by default", f"default {index}"]
        existing = find_block(lines, gname, where)
        at = None
        if existing is None:
            at = next((i for i, ln in enumerate(lines)
                       if _TITLE.match(ln) or ln.lstrip().startswith("### BEGIN xenpipe ")),
                      len(lines))
        lines = set_block(lines, gname, glob, where, at)
        plan.write(rel, file_bytes(lines), f"bootloader: {e.name} entry in {rel}", owned=False)
        if once:
            default = "\n".join([str(index), *DEFAULT_FILE_PAD]) + "\n"
            plan.write("/boot/grub/default", default,
                       f"bootloader: boot entry {index} once (/boot/grub/default)", owned=True)
            if plan.live:
                plan.note(f"GRUB legacy builds that keep the saved default in stage2 (Red Hat) "
                          f"ignore /boot/grub/default: there run `savedefault --default={index} "
                          "--once` in the grub shell")

    @staticmethod
    def _previous(plan: Plan, lines: Sequence[str], name: str, where: str,
                  user: Sequence[tuple[int, str]]) -> int:
        """The default to fall back to: kept from our entry's ``savedefault`` on a rerun,
        else the user's ``default`` (a number, or the saved one)."""
        for ln in block_body(lines, name, where):
            m = re.match(r"\s*savedefault\s+(\d+)\s*$", ln)
            if m:
                return int(m[1])
        value = None
        for _, ln in user:
            if _TITLE.match(ln):
                break
            m = _DEFAULT.match(ln)
            if m:
                value = m[1]
        if value == "saved":
            saved = (plan.read("/boot/grub/default") or b"").decode(errors="replace")
            m = re.match(r"\s*(\d+)", saved)
            return int(m[1]) if m else 0
        return int(value) if value and value.isdigit() else 0

    @staticmethod
    def _style(user: Sequence[tuple[int, str]], previous: int) -> tuple[str, str, str]:
        """The GRUB root device, the /boot prefix and the indentation, as the user's own
        entries (the default one, else the first) have them; else the 2009 ones."""
        entries: list[list[str]] = []
        for _, ln in user:
            if _TITLE.match(ln):
                entries.append([])
            elif entries:
                entries[-1].append(ln)
        ref = entries[previous] if previous < len(entries) else (entries[0] if entries else [])
        root_dev, prefix, indent = "(hd0,0)", "/boot", " " * 8
        for ln in ref:
            if m := _ROOT.match(ln):
                root_dev = m[1]
            if m := _KERNEL.match(ln):
                path = re.sub(r"^\(.*?\)", "", m[1])  # (hd0,0)/vmlinuz
                prefix = "/boot" if path.startswith("/boot/") else ""
            if ln.strip() and ln[0] in " \t":
                indent = ln[: len(ln) - len(ln.lstrip())]
        return root_dev, prefix, indent


