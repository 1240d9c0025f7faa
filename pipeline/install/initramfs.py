"""The initramfs tools ``doit install`` knows, and the file name each gives its image.

The names differ by tool and era, and the bootloader entry must use the right one:
``mkinitrd`` (Red Hat, the 2009 procedure) writes ``/boot/initrd-<release>.img``, ``dracut``
``/boot/initramfs-<release>.img``, Debian's ``update-initramfs`` ``/boot/initrd.img-<release>``.
All three build for the system they run on, so they run only when installing into ``/``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InstallError

AUTO_ORDER = ("dracut", "update-initramfs", "mkinitrd")
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin")


def which(tool: str) -> str | None:
    """*tool* on PATH or in the sbin directories (where root's tools live)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(tool, path=path)


@dataclass(frozen=True)
class Tool:
    """An initramfs tool as data: its image's name in /boot and the command that builds it.
    In the argv templates ``{image}`` is ``/boot/<image>`` and ``{r}`` the kernel release."""

    name: str
    pattern: str  # the image's name in /boot, {r} = kernel release
    create: tuple[str, ...]  # the command when there is no image yet
    update: tuple[str, ...]  # the command when the image exists

    def image(self, release: str) -> str:
        return self.pattern.format(r=release)

    def argv(self, release: str, exists: bool) -> list[str]:
        """The command that builds the image for *release* on the running system."""
        image = f"/boot/{self.image(release)}"
        return [a.format(image=image, r=release) for a in (self.update if exists else self.create)]


_DRACUT = ("dracut", "--force", "{image}", "{r}")
_MKINITRD = ("mkinitrd", "-f", "{image}", "{r}")
TOOLS = {t.name: t for t in (
    Tool("dracut", "initramfs-{r}.img", create=_DRACUT, update=_DRACUT),
    Tool("update-initramfs", "initrd.img-{r}", create=("update-initramfs", "-c", "-k", "{r}"),
         update=("update-initramfs", "-u", "-k", "{r}")),
    Tool("mkinitrd", "initrd-{r}.img", create=_MKINITRD, update=_MKINITRD),
)}


def present(tool: str, root: Path, live: bool) -> bool:
    """Whether the target system has *tool*: on PATH for ``/``, in the root's sbin/bin
    directories for a staging root (a link there counts, even one that only resolves on the
    target)."""
    if live:
        return which(tool) is not None
    return any(os.path.lexists(root / d.lstrip("/") / tool) for d in SBIN)


def choose(setting: str, root: Path, live: bool) -> Tool | None:
    """The tool for ``[install] initramfs``: ``auto`` picks the first the target system has
    (None when it has none), ``none`` is None; a named tool must exist on the running system."""
    if setting == "none":
        return None
    if setting == "auto":
        return next((TOOLS[t] for t in AUTO_ORDER if present(t, root, live)), None)
    if live and which(setting) is None:
        raise InstallError(f'initramfs = "{setting}" but {setting} is not installed here; '
                           'install it, or set initramfs = "auto" or "none"')
    return TOOLS[setting]
