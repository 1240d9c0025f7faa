"""GRUB 2 (i386-pc) into the disk image, with GRUB's own tools: ``grub-mkimage`` makes
core.img (``grub-install`` needs partition device nodes, which a loop device here lacks),
boot.img goes to the MBR and core.img after it, the modules to ``/boot/grub/i386-pc``.

grub.cfg is made the way ``grub-mkconfig`` makes it: a header like ``00_header``'s (serial
terminal, ``load_env``, ``next_entry`` once, else ``saved_entry`` when ``GRUB_DEFAULT=saved``),
then the output of every ``/etc/grub.d`` script of the image's root, which holds the one
``doit install`` wrote (``42_xenpipe``)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from pipeline import proc
from pipeline.boot.disk.image import EMBED, SECTOR, DiskError, Layout, need
from pipeline.install.bootloader import shell_assignments

PLATFORM = Path("/usr/lib/grub/i386-pc")
PREFIX = "(hd0,msdos1)/boot/grub"
MODULES = ("biosdisk", "part_msdos", "ext2")
SERIAL = "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"


class Grub2:
    """GRUB 2 (i386-pc) on ext4: the loader interface :mod:`.boots` uses."""

    name = "grub2"
    layout = Layout(fstype="ext4")
    menu_file = "/boot/grub/grub.cfg"
    state_file = "/boot/grub/grubenv"

    def __init__(self, work: Path, log: Path) -> None:
        self.work, self.log = work, log

    def version(self) -> str:
        res = proc.run([need("grub-mkimage", "grub-pc-bin"), "--version"], capture=True,
                       check=False)
        return res.stdout.strip()

    def install_files(self, tree: Path) -> None:
        install_files(tree)

    def menu(self, tree: Path, known: tuple[str, str, str]) -> str:
        """grub.cfg, made from the root as grub-mkconfig would."""
        return grub_cfg(tree, known_good(*known), self.log)

    @staticmethod
    def entry_title(menu: str, name: str) -> str | None:
        """The title of xenpipe's entry *name* (``--id xenpipe-NAME``) in grub.cfg."""
        m = re.search(rf"^menuentry '([^']*)' --id '?xenpipe-{re.escape(name)}'? ", menu, re.M)
        return m[1] if m else None

    def boot_sectors(self) -> list[tuple[int, bytes]]:
        return boot_sectors(self.work, self.log)

    def setup(self, image: Path) -> None:
        """Nothing after the image is written: the boot sectors went in with it."""


def install_files(tree: Path) -> None:
    """GRUB's i386-pc modules into the root's /boot/grub (what grub-install copies)."""
    if not (PLATFORM / "boot.img").is_file():
        raise DiskError("installing GRUB 2", f"{PLATFORM}/boot.img missing: apt-get install "
                        "grub-pc-bin")
    dest = tree / "boot" / "grub" / "i386-pc"
    dest.mkdir(parents=True, exist_ok=True)
    for f in PLATFORM.iterdir():
        if f.suffix in (".mod", ".lst", ".img"):
            shutil.copy2(f, dest / f.name)


def boot_sectors(work: Path, log: Path) -> list[tuple[int, bytes]]:
    """boot.img's first 440 bytes for sector 0 (the partition table stays) and core.img from
    sector 1."""
    core = work / "core.img"
    res = proc.run([need("grub-mkimage", "grub-pc-bin"), "-O", "i386-pc", "-o", core,
                    "-p", PREFIX, *MODULES], log=log, capture=True, check=False)
    if res.returncode != 0:
        raise DiskError("grub-mkimage", proc.last_line(res.stdout) or "failed")
    data = core.read_bytes()
    if len(data) > EMBED * SECTOR:
        raise DiskError("grub-mkimage", f"core.img is {len(data)} bytes, more than the "
                        f"{EMBED} sectors before the partition")
    return [(0, (PLATFORM / "boot.img").read_bytes()[:440]), (1, data)]


def _default_saved(tree: Path) -> bool:
    value = None
    files = [tree / "etc/default/grub",
             *sorted((tree / "etc/default/grub.d").glob("*.cfg"))]
    for f in files:
        if f.is_file():
            value = shell_assignments(f.read_bytes(), "GRUB_DEFAULT") or value
    return value == "saved"


def header(tree: Path) -> str:
    """What ``00_header`` writes for this root: the serial terminal, the saved default."""
    default = ('  set default="${saved_entry}"\n' if _default_saved(tree)
               else "  set default=0\n")
    return (f"# made by xenpipe's disk boot as grub-mkconfig would (00_header, then "
            f"/etc/grub.d)\n{SERIAL}"
            "if [ -s $prefix/grubenv ]; then\n  load_env\nfi\n"
            'if [ "${next_entry}" ] ; then\n  set default="${next_entry}"\n  set next_entry=\n'
            f"  save_env next_entry\nelse\n{default}fi\nset timeout=1\n")


def known_good(kernel: str, initrd: str, title: str) -> str:
    """The plain Linux entry the base root has (no Xen): what boots when xenpipe's does not."""
    return (f"menuentry '{title}' --id known-good {{\n"
            f"\tlinux /boot/{kernel} console=ttyS0,115200\n\tinitrd /boot/{initrd}\n}}\n")


def grub_cfg(tree: Path, known: str, log: Path) -> str:
    """grub.cfg for *tree*: the header, the known-good entry, each /etc/grub.d script's
    output (sorted, executable ones, as grub-mkconfig runs them)."""
    parts = [header(tree), known]
    d = tree / "etc" / "grub.d"
    for script in sorted(d.iterdir()) if d.is_dir() else []:
        if not script.is_file() or not os.access(script, os.X_OK):
            continue
        res = proc.run(["sh", script], capture=True, check=False, log=log,
                       env={"pkgdatadir": ""})
        if res.returncode != 0:
            raise DiskError(f"running /etc/grub.d/{script.name}",
                            proc.last_line(res.stdout) or f"exit status {res.returncode}")
        parts.append(res.stdout)
    return "".join(parts)
