"""The disk image ``doit boot`` boots with ``[boot] via = "disk"``: an MBR with one
partition whose filesystem holds the base root and, on top of it, exactly what ``doit
install`` wrote into ``install.root``.

The filesystem is made by ``mke2fs -d TREE`` at the partition's offset inside the image file,
from a scratch copy of the tree (hard links would let mke2fs read what we then change, so it
is a copy) removed in a ``finally``; the host's ``/boot`` is never involved. What must run in
the image's own root (``grub-mkconfig``, which asks ``grub-probe`` for the device holding
``/``) runs in :func:`mounted`: a loop device for the partition at its offset (this sandbox
makes no partition nodes), the filesystem mounted on a directory of the workspace, a ``/dev``
of its own, ``/proc`` and ``/sys`` under it for the chroot; all unmounted and the loop device
detached and removed on every exit path, with SIGINT and SIGTERM held off while that runs,
and whatever a killed run left (``losetup -j``, mounts below the directory) cleared before the
next one. Each boot runs on a qcow2 overlay (``qemu-img create -b``) of that image, so the two
boots of a one-shot check share one disk (a power cycle) and the image itself stays as built,
to compare with the overlay afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import signal
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import proc
from pipeline.boot.rootfs import CHROOT_PATH, mounts_below
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
    uuid: str | None = None  # the filesystem's UUID (grub-mkconfig names root= by it)

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
    """*src*'s files onto *dest* byte for byte (modes, owners, times, links), over what is
    there; a directory of *src* where *dest* has a symlink to a directory goes through the
    link, as installing onto a merged-/usr root does (``/lib -> usr/lib``: ``cp -a`` refuses
    it). tar, by way of an archive file in *dest*'s parent."""
    if not src.is_dir():
        raise DiskError("install.root", f"{src} is not a directory: run `doit install` first")
    tar = need("tar", "tar")
    archive = dest.with_name(f".{dest.name}.tar")
    try:
        _run([tar, "-C", src, "-cf", archive, "."], f"copying {src} (tar)", None)
        _run([tar, "-C", dest, "-xpf", archive, "--keep-directory-symlink",
              "--same-owner"], f"copying {src} (tar)", None)
    finally:
        archive.unlink(missing_ok=True)


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
        uuid = ["-U", layout.uuid] if layout.uuid else []
        _run([need(f"mkfs.{layout.fstype}", "e2fsprogs"), "-q", "-F", "-L", "xenpipe-root",
              *uuid, "-E", f"offset={layout.offset}", "-d", tree, tmp,
              f"{layout.fs_bytes // 1024}k"],
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


def size_mb(tree: Path, spare_mb: int = 256) -> int:
    """An image size that holds *tree* (its blocks, plus room for the filesystem's own
    structures and for what is written in the mounted image: mkinitramfs's scratch tree in
    /var/tmp, the initramfs), in MiB. The file is sparse: the room costs no disk."""
    used = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in filenames + dirnames:
            with contextlib.suppress(OSError):
                used += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return (used * 5 // 4) // (1024 * 1024) + spare_mb + START * SECTOR // (1024 * 1024)


def _loops(backing: Path | str) -> list[str]:
    """The loop devices attached to *backing* (a file or a loop device; a killed run may have
    left some)."""
    target = backing if isinstance(backing, str) else backing.resolve()
    res = proc.run([need("losetup", "mount"), "-j", target], capture=True, check=False)
    return [ln.split(":", 1)[0] for ln in res.stdout.splitlines() if ln.startswith("/dev/")]


def _release(where: Path, image: Path, log: Path) -> None:
    """Unmount everything at or below *where* (deepest first) and detach *image*'s loop
    devices, with SIGINT/SIGTERM held off so a second Ctrl-C cannot cut it short."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        for point in mounts_below(where):
            proc.run(["umount", point], log=log, check=False)
        for point in mounts_below(where):  # still busy: detach it lazily
            proc.run(["umount", "-l", point], log=log, check=False)
        for dev in _loops(image):
            _detach(dev, log)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    if mounts_below(where) or _loops(image):
        raise DiskError("releasing the image", f"still mounted at {where} or attached to a "
                        f"loop device ({image}): umount / losetup -d it by hand")


LOOP_CTL_ADD = 0x4C80  # linux/loop.h
LOOP_CTL_REMOVE = 0x4C81
FIRST_LOOP = 40


def _attach(image: Path, layout: Layout, log: Path) -> str:
    """A loop device for the image's partition (at its offset: this sandbox makes no
    partition nodes), numbered 40 or more: grub-mkconfig's scripts take a root on
    ``/dev/loop[0-9]`` for a loop-mounted file and make no entry for it (10_linux) or a
    ``loopback`` one. The device is made with loop-control's LOOP_CTL_ADD; the node appears
    in devtmpfs."""
    fd = os.open("/dev/loop-control", os.O_RDWR)
    try:
        for n in range(FIRST_LOOP, FIRST_LOOP + 200):
            try:
                fcntl.ioctl(fd, LOOP_CTL_ADD, n)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise DiskError("making a loop device (loop-control)", str(exc)) from None
                continue  # someone else's
            dev = f"/dev/loop{n}"
            res = proc.run([need("losetup", "mount"), "-o", str(layout.offset), "--sizelimit",
                            str(layout.fs_bytes), "--show", dev, image.resolve()], log=log,
                           capture=True, check=False)
            if res.returncode == 0:
                return dev
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, LOOP_CTL_REMOVE, n)
            raise DiskError("attaching a loop device (losetup)",
                            proc.last_line(res.stdout) or f"exit {res.returncode}")
    finally:
        os.close(fd)
    raise DiskError("attaching a loop device (losetup)", "no free loop device number")


def _detach(dev: str, log: Path) -> None:
    """Detach *dev* and remove it when it is one of ours (numbered 40 or more)."""
    proc.run([need("losetup", "mount"), "-d", dev], log=log, check=False)
    n = dev.removeprefix("/dev/loop")
    if n.isdigit() and int(n) >= FIRST_LOOP:
        with contextlib.suppress(OSError):
            fd = os.open("/dev/loop-control", os.O_RDWR)
            try:
                fcntl.ioctl(fd, LOOP_CTL_REMOVE, int(n))
            finally:
                os.close(fd)


DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
             "urandom": (1, 9), "tty": (5, 0)}


def _devices(dev: Path, loops: Sequence[str], uuid: str | None) -> None:
    """The chroot's /dev (a tmpfs of its own: the host's /dev is never written): the usual
    character devices, the image's loop devices and the ``/dev/disk/by-uuid`` link udev would
    make, which grub-mkconfig's 10_linux needs to name the root ``root=UUID=``."""
    for name, (major, minor) in DEV_NODES.items():
        os.mknod(dev / name, 0o666 | 0o020000, os.makedev(major, minor))
    for loop in loops:
        st = os.stat(loop)
        os.mknod(dev / Path(loop).name, 0o660 | 0o060000, st.st_rdev)
    if uuid:
        (dev / "disk" / "by-uuid").mkdir(parents=True)
        (dev / "disk" / "by-uuid" / uuid).symlink_to(f"../../{Path(loops[0]).name}")
    (dev / "fd").symlink_to("/proc/self/fd")


@contextlib.contextmanager
def mounted(image: Path, layout: Layout, where: Path, log: Path) -> Iterator[Path]:
    """*image*'s filesystem mounted read-write at *where*, with ``/dev``, ``/proc`` and
    ``/sys`` mounted under it for a chroot; released on every exit path.

    The loop device is :func:`_attach`'s; ``/dev`` is a tmpfs of the chroot's own
    (:func:`_devices`)."""
    _release(where, image, log)  # what a killed run left
    where.mkdir(parents=True, exist_ok=True)
    try:
        part = _attach(image, layout, log)
        _run(["mount", "-t", layout.fstype, part, where], f"mounting {part}", log)
        for fs, sub in (("tmpfs", "dev"), ("proc", "proc"), ("sysfs", "sys")):
            (where / sub).mkdir(exist_ok=True)
            _run(["mount", "-t", fs, "-o", "mode=0755" if fs == "tmpfs" else "defaults", fs,
                  where / sub], f"mounting {fs} on /{sub} of the image", log)
        _devices(where / "dev", [part], layout.uuid)
        yield where
    finally:
        _release(where, image, log)


def chroot(where: Path, argv: Sequence[str], step: str, log: Path) -> proc.Result:
    """*argv* run in the chroot of the mounted image (its own tools), output captured; a
    failure is one line naming *step* and the line that says why (a tool's ``E:`` or
    ``error`` line before its closing summary)."""
    res = proc.run(["chroot", where, *argv], log=log, capture=True, check=False, timeout=600,
                   env={"PATH": CHROOT_PATH, "LC_ALL": "C"})
    if res.returncode != 0:
        lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
        why = [ln for ln in lines if _WHY.search(ln)]
        raise DiskError(step, (why or lines or [f"exit status {res.returncode}"])[-1])
    return res


_WHY = re.compile(r"^E: |error|No space left", re.I)
