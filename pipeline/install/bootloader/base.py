"""What every bootloader shares: the :class:`Entry` it writes, the ``### BEGIN xenpipe <name>
###`` / ``### END xenpipe ###`` blocks that are all xenpipe owns in a user's file, the
:class:`Bootloader` interface, and ``grub-script-check``.
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pipeline import proc
from pipeline.errors import InstallError
from pipeline.install.initramfs import which

if TYPE_CHECKING:
    from pipeline.install.plan import Plan

BEGIN = "### BEGIN xenpipe {} ###"
END = "### END xenpipe ###"


@dataclass(frozen=True)
class Entry:
    """What the entry boots. File names are relative to /boot."""

    name: str
    xen_version: str
    release: str
    xen: str
    xen_args: str
    kernel: str
    kernel_args: str
    initrd: str | None


class Bootloader(ABC):
    """One ``[install] bootloader`` kind: adds the steps that make *Entry* bootable (and,
    with *once*, booted once) to an install plan."""

    name: ClassVar[str]  # the [install] bootloader value

    @abstractmethod
    def plan(self, plan: Plan, e: Entry, once: bool) -> None:
        """Add this bootloader's steps for *e* to *plan*."""


# ------------------------------------------------------------------------- marked blocks
def file_lines(data: bytes | None) -> list[str]:
    # surrogateescape: bytes that are not UTF-8 come back out unchanged
    return (data or b"").decode(errors="surrogateescape").splitlines(keepends=True)


def file_bytes(lines: Sequence[str]) -> bytes:
    return "".join(lines).encode(errors="surrogateescape")


def _newline(lines: Sequence[str]) -> str:
    return "\r\n" if lines and lines[0].endswith("\r\n") else "\n"


def find_block(lines: Sequence[str], name: str, where: str) -> tuple[int, int] | None:
    """Line indices of the BEGIN and END markers of block *name*, or None."""
    begin = BEGIN.format(name)
    for i, line in enumerate(lines):
        if line.strip() != begin:
            continue
        for j in range(i + 1, len(lines)):
            if lines[j].strip() == END:
                return i, j
            if lines[j].lstrip().startswith("### BEGIN xenpipe "):
                break
        raise InstallError(f"{where}: '{begin}' has no '{END}' after it; restore the file from "
                           "its .xenpipe-*.bak backup or add the END line by hand")
    return None


def blocks(lines: Sequence[str]) -> list[tuple[int, int]]:
    """Every xenpipe block (any name) as (BEGIN, END) line indices."""
    out = []
    for i, line in enumerate(lines):
        if line.lstrip().startswith("### BEGIN xenpipe "):
            j = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == END), None)
            if j is not None:
                out.append((i, j))
    return out


def set_block(lines: list[str], name: str, body: Sequence[str], where: str,
              at: int | None = None) -> list[str]:
    """*lines* with block *name* holding *body*: replaced where it is, else inserted at line
    *at* (default: appended after a blank line)."""
    nl = _newline(lines)
    block = [BEGIN.format(name) + nl, *(b + nl for b in body), END + nl]
    span = find_block(lines, name, where)
    if span is not None:
        return [*lines[: span[0]], *block, *lines[span[1] + 1:]]
    if at is not None:
        return [*lines[:at], *block, *lines[at:]]
    out = list(lines)
    if out and not out[-1].endswith("\n"):
        out[-1] += nl  # the last user line gets its missing newline; its text is unchanged
    if out and out[-1].strip():
        out.append(nl)
    return [*out, *block]


def block_body(lines: Sequence[str], name: str, where: str) -> list[str]:
    span = find_block(lines, name, where)
    return [] if span is None else [ln.rstrip("\r\n") for ln in lines[span[0] + 1: span[1]]]


# ----------------------------------------------------------------------------- checking
def script_check(plan: Plan, text: str, what: str) -> None:
    """Run ``grub-script-check`` on GRUB script *text*; a rejection is an error. Without the
    tool (grub-common) the plan says it could not check."""
    tool = which("grub-script-check")
    if tool is None:
        plan.note(f"grub-script-check not found (package grub-common): {what} not validated")
        return
    with tempfile.TemporaryDirectory(prefix="xenpipe-grub-") as tmp:
        path = Path(tmp) / "check.cfg"
        path.write_text(text)
        res = proc.run([tool, path], capture=True, check=False, timeout=60)
    if res.returncode != 0:
        detail = " ".join(res.stdout.split())[:200]
        raise InstallError(f"grub-script-check rejects the {what} xenpipe generated: {detail}")


