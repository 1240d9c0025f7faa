"""What only the box can run after the files arrive: ``depmod`` for the new kernel, its
initramfs tool, ``update-grub``/``grub-mkconfig`` and the one-shot ``grub-reboot``.

Each step is an argv for the box (run through :class:`pipeline.target.ssh.Ssh`); the
choices that depend on the box (which initramfs tool it has, ``update-grub`` or
``grub-mkconfig``) are fixed sh scripts that test for the tool there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.config import Config
from pipeline.errors import TargetError
from pipeline.install import initramfs
from pipeline.install.bootloader import grub2
from pipeline.target.ssh import sh

# files the box makes itself: never overwritten from the staging root
BOX_OWNED = re.compile(
    r"^/boot/grub/(grub\.cfg|grubenv|menu\.lst|grub\.conf)$"
    r"|^/lib/modules/[^/]+/modules\.(alias|alias\.bin|builtin\.alias\.bin|builtin\.bin|dep"
    r"|dep\.bin|devname|softdep|symbols|symbols\.bin|weakdep)$"
    r"|\.xenpipe-[0-9T]+(-\d+)?\.bak$")
_INITRAMFS = ('for t in "$@"; do if command -v "$t" >/dev/null 2>&1; then echo "$t"; exit 0; '
              'fi; done')
_MKCONFIG = ("if command -v update-grub >/dev/null 2>&1; then update-grub; "
             "else grub-mkconfig -o " + grub2.GRUB_DIR + "/grub.cfg; fi")


@dataclass(frozen=True)
class BoxStep:
    """One command for the box."""

    what: str
    argv: list[str]


def depmod(release: str) -> BoxStep:
    return BoxStep(f"kernel {release}: depmod on the box",
                   ["depmod", "-a", "-F", f"/boot/System.map-{release}", release])


def initramfs_probe() -> list[str]:
    """The box command that prints the first initramfs tool it has (``auto``)."""
    return sh(_INITRAMFS, *initramfs.AUTO_ORDER)


def initramfs_step(tool: str, release: str, exists: bool) -> BoxStep:
    return BoxStep(f"initramfs: {tool} on the box", initramfs.TOOLS[tool].argv(release, exists))


def once_id(name: str) -> str:
    """The GRUB 2 entry id ``doit install`` gives this config's entry."""
    return f"xenpipe-{name}"


def bootloader_steps(cfg: Config, name: str) -> list[BoxStep]:
    """The bootloader's commands on the box, the one-shot last (``[install] once``)."""
    kind = cfg.install.bootloader
    if kind == "none":
        return []
    if kind != "grub2":
        raise TargetError(f'[target]: bootloader = "{kind}" is not supported on a box yet '
                          '(grub2 or none)')
    steps = [BoxStep("bootloader: update-grub (grub-mkconfig) on the box", sh(_MKCONFIG))]
    if cfg.install.once:
        ident = once_id(name)
        steps.append(BoxStep(f"bootloader: boot {ident} once (grub-reboot)",
                             ["grub-reboot", ident]))
    return steps
