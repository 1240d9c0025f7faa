"""What the serial console says about the bootloader: the entries GRUB booted, in order.

GRUB 2 prints ``Booting `TITLE'`` and GRUB Legacy ``Booting 'TITLE'`` (both between
terminal escape sequences) just before loading the entry, so the boot log tells which
entry ran; Xen's banner tells whether the entry started Xen."""

from __future__ import annotations

import re

from pipeline.boot.milestone import Milestone

_ESC = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BOOTING = re.compile(r"Booting [`']([^'\r\n]*)'")
_XEN = re.compile(r"\(XEN\) Xen version \S+")
ENTRY = Milestone("bootloader entry", r"Booting [`'][^'\r\n]*'",
                  "the bootloader booted no entry",
                  "is the bootloader in the image's MBR? does its menu reach the serial line?")


def plain(console: str) -> str:
    """*console* without terminal escape sequences (GRUB's menu draws with them)."""
    return _ESC.sub("", console)


def entries(console: str) -> list[str]:
    """The titles of the entries the bootloader booted, in console order."""
    return _BOOTING.findall(plain(console))


def started_xen(console: str) -> bool:
    """Whether Xen's banner is on the console (the entry booted Xen, not Linux alone)."""
    return _XEN.search(console) is not None
