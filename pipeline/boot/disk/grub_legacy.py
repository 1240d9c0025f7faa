"""GRUB Legacy 0.97 into the disk image: Debian's ``grub-legacy`` package, downloaded and
unpacked into the workspace (the host's bootloader packages stay as they are), its stage
files copied into the root's ``/boot/grub``, then its own ``grub --batch`` shell runs
``setup (hd0)`` on the image file (stage1 into the MBR, e2fs_stage1_5 embedded after it).

The menu is the root's own ``grub.conf`` / ``menu.lst`` as ``doit install`` left it: GRUB
Legacy has no generator, the box's file is the menu. :func:`user_menu` is the file a box has
before ``doit install`` (the serial console, the known-good entry) for a staging root."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pipeline import proc
from pipeline.boot.disk.image import DiskError, Layout, need

PACKAGE = "grub-legacy"
STAGES = ("stage1", "stage2", "e2fs_stage1_5")
MENUS = ("/boot/grub/grub.conf", "/boot/grub/menu.lst")


def user_menu(kernel: str, initrd: str, title: str) -> str:
    """A box's menu before xenpipe's entry: the serial console (so the boot log shows the
    menu and the entry booted), and one plain Linux entry, the default."""
    return ("serial --unit=0 --speed=115200\nterminal --timeout=0 serial\ntimeout 1\n"
            f"default 0\n\ntitle {title}\n\troot (hd0,0)\n"
            f"\tkernel /boot/{kernel} console=ttyS0,115200\n\tinitrd /boot/{initrd}\n")


class GrubLegacy:
    """GRUB 0.97 on ext2 (it reads no ext4): the loader interface :mod:`.boots` uses."""

    name = "grub-legacy"
    layout = Layout(fstype="ext2")
    menu_file = None  # the root's own
    state_file = "/boot/grub/default"

    def __init__(self, work: Path, log: Path) -> None:
        self.work, self.log = work, log
        self.pkg = work / PACKAGE

    def _unpacked(self) -> Path:
        """The package's files under the workspace, downloaded once (apt-get download)."""
        root = self.pkg / "root"
        if (root / "usr/sbin/grub").is_file():
            return root
        dl = self.pkg / "download"
        shutil.rmtree(dl, ignore_errors=True)
        dl.mkdir(parents=True)
        res = proc.run([need("apt-get", "apt"), "download", PACKAGE], cwd=dl, log=self.log,
                       capture=True, check=False, timeout=600)
        debs = sorted(dl.glob(f"{PACKAGE}_*.deb"))
        if res.returncode != 0 or not debs:
            raise DiskError(f"apt-get download {PACKAGE}",
                            proc.last_line(res.stdout) or "no package downloaded")
        tmp = self.pkg / "root.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        res = proc.run([need("dpkg-deb", "dpkg"), "-x", debs[-1], tmp], log=self.log,
                       capture=True, check=False)
        if res.returncode != 0:
            raise DiskError(f"dpkg-deb -x {debs[-1].name}", proc.last_line(res.stdout))
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        (self.pkg / "version").write_text(debs[-1].name)
        shutil.rmtree(dl, ignore_errors=True)
        return root

    def version(self) -> str:
        self._unpacked()
        return (self.pkg / "version").read_text()

    def install_files(self, tree: Path) -> None:
        src = self._unpacked() / "usr/lib/grub/x86_64-pc"
        dest = tree / "boot" / "grub"
        dest.mkdir(parents=True, exist_ok=True)
        for name in STAGES:
            shutil.copy2(src / name, dest / name)

    def menu(self, tree: Path, known: tuple[str, str, str]) -> str:
        """The root's grub.conf (else menu.lst) as it is. Debian's stage2 reads menu.lst: a
        grub.conf alone gets the ``menu.lst -> grub.conf`` link Red Hat's boxes have."""
        for rel in MENUS:
            f = tree / rel.lstrip("/")
            if f.is_file():
                lst = tree / MENUS[1].lstrip("/")
                if not lst.exists() and not lst.is_symlink():
                    lst.symlink_to(f.name)
                return f.read_text(errors="replace")
        raise DiskError("the GRUB Legacy menu", "install.root has no /boot/grub/grub.conf or "
                        "menu.lst: run `doit install`")

    @staticmethod
    def entry_title(menu: str, name: str) -> str | None:
        """The title of xenpipe's entry *name* in the menu (the first in its block)."""
        m = re.search(rf"^### BEGIN xenpipe {re.escape(name)} ###\s*^\s*title[\s=]+(.*?)\s*$",
                      menu, re.M)
        return m[1] if m else None

    def boot_sectors(self, tree: Path | None = None) -> list[tuple[int, bytes]]:
        return []  # grub's setup writes them

    def setup(self, image: Path) -> None:
        """``setup (hd0)`` by GRUB's own shell, on the image file (an i386 binary: it needs
        libc6-i386)."""
        grub = self._unpacked() / "usr/sbin/grub"
        script = f"device (hd0) {image}\nroot (hd0,0)\nsetup (hd0)\nquit\n"
        res = proc.run([grub, "--batch", "--no-floppy", "--device-map=/dev/null"],
                       input=script, log=self.log, capture=True, check=False, timeout=120)
        if res.returncode != 0 or "succeeded" not in res.stdout:
            detail = next((ln.strip() for ln in res.stdout.splitlines()
                           if "Error" in ln or "error" in ln), proc.last_line(res.stdout))
            raise DiskError("grub --batch setup (hd0)", detail or f"exit {res.returncode} "
                            "(is libc6-i386 installed?)")
