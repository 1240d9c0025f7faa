"""The disk image ``doit boot`` boots with ``[boot] via = "disk"``: an MBR with one
partition whose filesystem holds the base root and, on top of it, exactly what ``doit
install`` wrote into ``install.root``.

The filesystem is made by ``mke2fs -d TREE`` at the partition's offset inside the image file:
no loop device, no mount, so nothing can be left behind on the host whatever way the build
ends (Ctrl-C included), and the host's ``/boot`` is never involved. The tree is a scratch copy
(hard links would let mke2fs read what we then change, so it is a copy) removed in a
``finally``. Each boot runs on a qcow2 overlay (``qemu-img create -b``) of that image, so the
two boots of a one-shot check share one disk (a power cycle) and the image itself stays as
built, to compare with the overlay afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline import proc
from pipeline.errors import BootError
from pipeline.install.initramfs import which

SECTOR = 512
START = 2048  # the partition's first sector (1 MiB), as fdisk puts it
EMBED = START - 1  # sectors between the MBR and the partition, where core.img goes


class DiskError(BootError):
    """Building the disk image failed: *step* names what failed."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"disk image: {step}: {detail}")
        self.step = step
        self.detail = detail


@dataclass(frozen=True)
class Layout:
    """The image's shape: total size, the one partition's filesystem."""

    size_mb: int = 256
    fstype: str = "ext4"  # "ext2" for GRUB Legacy, which reads no ext4

    @property
    def offset(self) -> int:
        return START * SECTOR

    @property
    def fs_bytes(self) -> int:
        return self.size_mb * 1024 * 1024 - self.offset

    def sfdisk_script(self) -> str:
        return f"label: dos\nstart={START}, type=83, bootable\n"


def _run(argv: list[str | os.PathLike[str]], step: str, log: Path | None,
         stdin: str | None = None) -> proc.Result:
    res = proc.run(argv, log=log, capture=True, check=False, input=stdin, timeout=600)
    if res.returncode != 0:
        raise DiskError(step, proc.last_line(res.stdout) or f"exit status {res.returncode}")
    return res


def need(tool: str, package: str) -> str:
    """The path of *tool* (PATH or the sbin directories), else the one line that says which
    package has it."""
    path = which(tool)
    if path is None:
        raise DiskError(f"{tool} not found", f"apt-get install {package}")
    return path


def copy_tree(src: Path, dest: Path) -> None:
    """*src*'s files onto *dest* byte for byte (modes, times, links), over what is there."""
    if not src.is_dir():
        raise DiskError("install.root", f"{src} is not a directory: run `doit install` first")
    _run(["cp", "-a", "--", f"{src}/.", dest], f"copying {src}", None)


def make_image(tree: Path, image: Path, layout: Layout, log: Path,
               mbr: Iterable[tuple[int, bytes]] = ()) -> None:
    """Write *image*: the partition table, the filesystem made from *tree* at the partition's
    offset, then each (sector, bytes) of *mbr* (the bootloader's boot sectors)."""
    image.parent.mkdir(parents=True, exist_ok=True)
    tmp = image.with_name(image.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        with open(tmp, "wb") as f:
            f.truncate(layout.size_mb * 1024 * 1024)
        _run([need("sfdisk", "fdisk"), "-q", tmp], "partitioning (sfdisk)", log,
             layout.sfdisk_script())
        _run([need(f"mkfs.{layout.fstype}", "e2fsprogs"), "-q", "-F", "-L", "xenpipe-root",
              "-E", f"offset={layout.offset}", "-d", tree, tmp, f"{layout.fs_bytes // 1024}k"],
             f"making the {layout.fstype} filesystem (mke2fs -d)", log)
        with open(tmp, "r+b") as f:
            for sector, data in mbr:
                f.seek(sector * SECTOR)
                f.write(data)
        os.replace(tmp, image)
    finally:
        tmp.unlink(missing_ok=True)


def read_file(image: Path, layout: Layout, path: str) -> bytes | None:
    """A file of the image's filesystem (debugfs, read-only), or None when it is absent."""
    code, out, err = proc.output([need("debugfs", "e2fsprogs"), "-c", "-R", f"cat {path}",
                                  f"{image}?offset={layout.offset}"])
    if code != 0 or b"File not found" in err:
        return None
    return out


def overlay(base: Path, dest: Path, log: Path) -> Path:
    """A fresh qcow2 overlay *dest* on *base* (raw): what one boot writes goes there."""
    dest.unlink(missing_ok=True)
    _run([need("qemu-img", "qemu-utils"), "create", "-q", "-f", "qcow2", "-b", base.resolve(),
          "-F", "raw", dest], "creating the overlay (qemu-img create -b)", log)
    return dest


def flatten(disk: Path, dest: Path, log: Path) -> Path:
    """*disk* (an overlay) as one raw image at *dest*, to read its files after a boot."""
    dest.unlink(missing_ok=True)
    _run([need("qemu-img", "qemu-utils"), "convert", "-O", "raw", disk, dest],
         "reading the overlay back (qemu-img convert)", log)
    return dest


def drive_argv(disk: Path) -> list[str]:
    """The QEMU options that make *disk* the first hard disk SeaBIOS boots from."""
    return ["-drive", f"file={disk},format=qcow2,if=none,id=disk0",
            "-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=0"]
