"""The Debian root the disk image holds: the dom0 userland the guest boot builds
(:mod:`pipeline.boot.rootfs`, debootstrap from apt's mirror) plus what the box needs to boot
from its disk: GRUB 2's own packages (``grub-mkconfig``, ``/etc/grub.d``, the i386-pc
modules), ``initramfs-tools`` (``update-initramfs``) and Debian's own kernel, whose plain
Linux entry ``10_linux`` makes: the known-good entry. Built once per workspace (minutes: it
needs root and the mirror), cached by :func:`pipeline.boot.rootfs.key` of this package list,
next to the guest's archives (``<workspace>/rootfs/disk/``), unpacked once per base image."""

from __future__ import annotations

import gzip
import re
import shutil
import uuid
from pathlib import Path

from pipeline import proc
from pipeline.boot import probe, rootfs
from pipeline.workspace import Workspace

# the image's filesystem UUID: fixed, so that the known-good entry's id (which grub-mkconfig
# makes from it) is known before the image is (the box's GRUB_DEFAULT names it)
UUID = str(uuid.uuid5(uuid.NAMESPACE_URL, "xenpipe:disk-image-root"))
INIT = "/usr/local/sbin/xenpipe-known-good"
UP = "xenpipe-known-good: up"
# The box's init for the known-good boot: the root has no init system (debootstrap minbase),
# and a whole one would take minutes under TCG; this says that Debian's kernel and initramfs
# brought the disk's root up, then powers off.
# The box's initramfs-tools configuration: xenpipe's boot probe as an init-top script, so that
# the initramfs update-initramfs makes in the image's root for the dom0 kernel reports what
# dom0 sees (the same milestones as the probe of a direct boot), then powers off. mkinitramfs
# runs each script with "prereqs" while it builds: that answer comes first.
PROBE_HOOK = "/etc/initramfs-tools/scripts/init-top/xenpipe-probe"
PROBE_TEXT = ('#!/bin/sh\nPREREQ=""\ncase "$1" in\n  prereqs) echo "$PREREQ"; exit 0 ;;\nesac\n'
              + probe.INIT.split("\n", 1)[1])
INIT_TEXT = f"""#!/bin/sh
mount -t proc proc /proc
echo "{UP}: Linux $(uname -r), $(grep -o 'root=[^ ]*' /proc/cmdline) mounted"
exec busybox poweroff -f
"""

PACKAGES = (*rootfs.PACKAGES, "grub-pc-bin", "grub2-common", "initramfs-tools",
            "linux-image-amd64")


def workspace(ws: Workspace) -> Workspace:
    """Where the disk root's archives are kept: a workspace of their own under rootfs/, so
    that the guest's archives (another package list) stay."""
    return Workspace(rootfs.cache_dir(ws) / "disk")


def archive(ws: Workspace) -> Path:
    """The disk root's cpio archive, built now if it is not cached (minutes)."""
    return rootfs.build(workspace(ws), PACKAGES).image


def identity() -> str | None:
    """The archive's cache key (its packages, apt sources, architecture), without building."""
    try:
        return rootfs.key(PACKAGES)
    except rootfs.BootError:
        return None


def unpack(archive_path: Path, dest: Path, log: Path) -> None:
    """The archive's files into *dest* (owners, modes, device nodes: as root)."""
    dest.mkdir(parents=True, exist_ok=True)
    raw = dest.with_name(dest.name + ".cpio")
    try:
        with gzip.open(archive_path, "rb") as src, open(raw, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        proc.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames", "-F", raw],
                 cwd=dest, log=log, error=rootfs.BootError,
                 what="unpacking the disk root (cpio)")
    finally:
        raw.unlink(missing_ok=True)


def release(tree: Path) -> str:
    """The release of Debian's kernel in the unpacked root (``vmlinuz-6.1.0-41-amd64``)."""
    found = sorted(p.name[len("vmlinuz-"):] for p in (tree / "boot").glob("vmlinuz-*-amd64"))
    if not found:
        raise rootfs.BootError(f"the disk root has no Debian kernel in {tree / 'boot'}")
    return found[-1]


def release_of(manifest: dict[str, object]) -> str:
    """The same, from the archive's manifest (its package list), without unpacking."""
    versions = manifest.get("versions")
    names = sorted(n for n in (versions if isinstance(versions, dict) else {})
                   if re.fullmatch(r"linux-image-\d\S*-amd64", str(n)))
    if not names:
        raise rootfs.BootError("the disk root's manifest names no linux-image package")
    return str(names[-1])[len("linux-image-"):]


def known_id(rel: str) -> str:
    """The id 10_linux gives the plain entry of kernel *rel* (GRUB_DISABLE_SUBMENU=y)."""
    return f"gnulinux-{rel}-advanced-{UUID}"


def grub_defaults(rel: str) -> str:
    """The box's /etc/default/grub: the serial console for GRUB and Linux, one level of
    entries, and the known-good plain Linux entry of Debian's kernel as the default (what
    ``doit install`` keeps as saved_entry when it sets GRUB_DEFAULT=saved)."""
    return ("# The box's GRUB settings (xenpipe's disk image: the root before doit install)\n"
            f"GRUB_DEFAULT={known_id(rel)}\n"
            "GRUB_TIMEOUT=1\n"
            "GRUB_DISTRIBUTOR=Debian\n"
            "GRUB_CMDLINE_LINUX_DEFAULT=\"\"\n"
            f"GRUB_CMDLINE_LINUX=\"console=ttyS0,115200 init={INIT} panic=-1\"\n"
            "GRUB_TERMINAL=serial\n"
            "GRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n"
            "GRUB_DISABLE_SUBMENU=y\n"
            "GRUB_DISABLE_RECOVERY=true\n"
            "GRUB_DISABLE_OS_PROBER=true\n")


def box_defaults(ws: Workspace) -> str:
    """:func:`grub_defaults` for the disk root of *ws* (built now if need be): what a box's
    install.root holds before ``doit install``."""
    return grub_defaults(release_of(rootfs.build(workspace(ws), PACKAGES).manifest))


def dress(tree: Path) -> str:
    """The box's own settings into the unpacked root: /etc/default/grub, the known-good
    init and the probe for initramfs-tools; Debian's kernel's module tree goes (~400 MB, two
    thirds of the root: the known-good boot loads only what its initramfs holds, and every
    image build copies and writes the whole tree). Returns Debian's kernel release."""
    rel = release(tree)
    for moddir in (tree / "usr/lib/modules" / rel / "kernel", tree / "lib/modules" / rel /
                   "kernel"):
        if moddir.is_dir() and not moddir.is_symlink():
            shutil.rmtree(moddir)
    (tree / "etc" / "default").mkdir(parents=True, exist_ok=True)
    (tree / "etc" / "default" / "grub").write_text(grub_defaults(rel))
    init = tree / INIT.lstrip("/")
    init.parent.mkdir(parents=True, exist_ok=True)
    init.write_text(INIT_TEXT)
    init.chmod(0o755)
    hook = tree / PROBE_HOOK.lstrip("/")
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(PROBE_TEXT)
    hook.chmod(0o755)
    return rel
