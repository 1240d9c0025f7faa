"""GRUB 2 (i386-pc) into the disk image, with the image root's own GRUB (Debian's
``grub-pc-bin`` and ``grub2-common`` in the base root, :mod:`.root`): its ``grub-mkimage``
(run in a chroot of the tree) makes core.img (``grub-install`` needs partition device nodes,
which a loop device here lacks), its boot.img goes to the MBR and core.img after it, its
modules to ``/boot/grub/i386-pc``.

grub.cfg is made the way a box makes it: the root's own ``grub-mkconfig -o
/boot/grub/grub.cfg`` in a chroot of the mounted image (:func:`.image.mounted`: grub-mkconfig
asks ``grub-probe`` for the device holding ``/`` and its UUID, and offers no override), so
``00_header`` reads the box's ``/etc/default/grub`` (the serial terminal) and xenpipe's
``GRUB_DEFAULT=saved``, ``10_linux`` makes the known-good entry of Debian's kernel, and
``42_xenpipe`` the entry ``doit install`` wrote. The grub.cfg a staging root got directly
from ``doit install`` is replaced by that output, as on the box."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pipeline import proc
from pipeline.boot.disk.image import EMBED, SECTOR, DiskError, Layout, chroot, need
from pipeline.install.bootloader import shell_assignments

PLATFORM = Path("/usr/lib/grub/i386-pc")
PREFIX = "(hd0,msdos1)/boot/grub"
MODULES = ("biosdisk", "part_msdos", "ext2")
SERIAL = "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
CFG = "/boot/grub/grub.cfg"


class Grub2:
    """GRUB 2 (i386-pc) on ext4: the loader interface :mod:`.boots` uses."""

    name = "grub2"
    layout = Layout(fstype="ext4")
    menu_file = CFG
    state_file = "/boot/grub/grubenv"

    def __init__(self, work: Path, log: Path) -> None:
        self.work, self.log = work, log

    def version(self) -> str:
        """The GRUB of the image's root is the base root's (its key covers the packages)."""
        return "grub-pc-bin of the base root"

    def install_files(self, tree: Path) -> None:
        install_files(tree, own=True)

    def menu(self, tree: Path, known: tuple[str, str, str]) -> str | None:
        """None: grub.cfg is made in the mounted image (:meth:`configure`)."""
        return None

    def configure(self, where: Path) -> str:
        """grub.cfg by the root's own grub-mkconfig in the chroot of the mounted image (and
        an empty grubenv, which ``save_env`` needs, when ``doit install`` left none)."""
        if not (where / self.state_file.lstrip("/")).is_file():
            chroot(where, ["grub-editenv", self.state_file, "create"],
                   "grub-editenv create (in the image's root)", self.log)
        chroot(where, ["grub-mkconfig", "-o", CFG], "grub-mkconfig (in the image's root)",
               self.log)
        return (where / CFG.lstrip("/")).read_text(errors="replace")

    @staticmethod
    def entry_title(menu: str, name: str) -> str | None:
        """The title of xenpipe's entry *name* (``--id xenpipe-NAME``) in grub.cfg."""
        m = re.search(rf"^menuentry '([^']*)' --id '?xenpipe-{re.escape(name)}'? ", menu, re.M)
        return m[1] if m else None

    @staticmethod
    def title_of(menu: str, ident: str) -> str | None:
        """The title of the entry whose id grub-mkconfig's scripts gave as *ident*
        (``$menuentry_id_option 'ID'``)."""
        m = re.search(rf"^\s*menuentry '([^']*)' [^\n]*?\$menuentry_id_option "
                      rf"'{re.escape(ident)}'", menu, re.M)
        return m[1] if m else None

    def boot_sectors(self, tree: Path | None = None) -> list[tuple[int, bytes]]:
        return boot_sectors(self.work, self.log, tree)

    def setup(self, image: Path) -> None:
        """Nothing after the image is written: the boot sectors went in with it."""


def install_files(tree: Path, own: bool = False) -> None:
    """GRUB's i386-pc modules into the root's /boot/grub (what grub-install copies): the
    host's, or with *own* the root's when it has grub-pc-bin (core.img must come from the
    same GRUB: :func:`boot_sectors` with the tree)."""
    src = tree / PLATFORM.relative_to("/")
    if not own or not (src / "boot.img").is_file():
        src = PLATFORM
    if not (src / "boot.img").is_file():
        raise DiskError("installing GRUB 2", f"{PLATFORM}/boot.img missing: apt-get install "
                        "grub-pc-bin")
    dest = tree / "boot" / "grub" / "i386-pc"
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix in (".mod", ".lst", ".img"):
            shutil.copy2(f, dest / f.name)


def _default_saved(tree: Path) -> bool:
    value = None
    files = [tree / "etc/default/grub",
             *sorted((tree / "etc/default/grub.d").glob("*.cfg"))]
    for f in files:
        if f.is_file():
            value = shell_assignments(f.read_bytes(), "GRUB_DEFAULT") or value
    return value == "saved"


def header(tree: Path) -> str:
    """What ``00_header`` writes for this root (the serial terminal, ``load_env``,
    ``next_entry`` once, the saved default with ``GRUB_DEFAULT=saved``): for a grub.cfg
    written before the root's own grub-mkconfig ever ran (the test box's first boot); the
    disk boot's grub.cfg is grub-mkconfig's."""
    default = ('  set default="${saved_entry}"\n' if _default_saved(tree)
               else "  set default=0\n")
    return (f"# written by xenpipe as grub-mkconfig's 00_header would\n{SERIAL}"
            "if [ -s $prefix/grubenv ]; then\n  load_env\nfi\n"
            'if [ "${next_entry}" ] ; then\n  set default="${next_entry}"\n  set next_entry=\n'
            f"  save_env next_entry\nelse\n{default}fi\nset timeout=1\n")


def boot_sectors(work: Path, log: Path, tree: Path | None = None) -> list[tuple[int, bytes]]:
    """boot.img's first 440 bytes for sector 0 (the partition table stays) and core.img from
    sector 1: by the grub-mkimage of *tree* (in a chroot of it, so that core.img matches the
    modules it installs), else the host's."""
    own = tree is not None and (tree / PLATFORM.relative_to("/") / "boot.img").is_file()
    args = ["-O", "i386-pc", "-p", PREFIX, *MODULES]
    if own:
        assert tree is not None
        core = tree / "tmp" / "xenpipe-core.img"
        core.parent.mkdir(exist_ok=True)
        try:
            chroot(tree, ["grub-mkimage", "-o", "/tmp/xenpipe-core.img", *args],
                   "grub-mkimage (in the image's root)", log)
            data = core.read_bytes()
        finally:
            core.unlink(missing_ok=True)
        boot_img = tree / PLATFORM.relative_to("/") / "boot.img"
    else:
        core = work / "core.img"
        res = proc.run([need("grub-mkimage", "grub-pc-bin"), "-o", core, *args], log=log,
                       capture=True, check=False)
        if res.returncode != 0:
            raise DiskError("grub-mkimage", proc.last_line(res.stdout) or "failed")
        data = core.read_bytes()
        boot_img = PLATFORM / "boot.img"
    if len(data) > EMBED * SECTOR:
        raise DiskError("grub-mkimage", f"core.img is {len(data)} bytes, more than the "
                        f"{EMBED} sectors before the partition")
    return [(0, boot_img.read_bytes()[:440]), (1, data)]
