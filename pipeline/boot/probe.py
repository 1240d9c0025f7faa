"""The boot probe: the small busybox initramfs ``doit boot`` gives the dom0 kernel, and the
host-side reading of what it reports.

Its ``/init`` mounts proc, sys and devtmpfs, prints a start marker, lists
``/sys/bus/pci/drivers/pciback/``, dumps every PCI device (its sysfs path, class, ids and driver)
and each root bus's ACPI ``_HID``/``_UID``, then powers off. Every line it prints starts with
:data:`MARK`, so kernel messages on the same console cannot be mistaken for it.

The dump is enough to rebuild a sysfs tree of the same shape (:func:`record_sysfs`), which
``pci.scan`` reads like the real ``/sys``: device paths are resolved against a virtual machine
exactly as ``doit install`` resolves them on a real box.

The archive is written here (newc cpio, gzip) rather than with cpio(1): it needs a
``/dev/console`` device node, which only root may create on disk, and a fixed mtime keeps the
archive byte-identical for identical inputs.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from pipeline import digest
from pipeline.errors import BootError
from pipeline.files import atomic_write
from pipeline.pci.box import SNAPSHOT

MARK = "xenpipe-probe:"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
INIT = f"""#!/bin/busybox sh
# xenpipe boot probe: report what dom0 sees, then power off
/bin/busybox mkdir -p /proc /sys /dev /bin /sbin /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "{MARK} init started"
# later kernel messages must not split the dump's lines
echo 1 > /proc/sys/kernel/printk
for d in /sys/bus/pci/drivers/pciback/*:*; do
    [ -e "$d" ] && echo "{MARK} pciback ${{d##*/}}"
done
echo "{MARK} pciback-end"
for r in /sys/devices/pci*:*; do
    [ -d "$r" ] || continue
    hid=-; uid=-
    [ -r "$r/firmware_node/hid" ] && hid=$(cat "$r/firmware_node/hid")
    [ -r "$r/firmware_node/uid" ] && uid=$(cat "$r/firmware_node/uid")
    echo "{MARK} root ${{r##*/}} hid=${{hid:--}} uid=${{uid:--}}"
done
for d in /sys/bus/pci/devices/*; do
    [ -e "$d" ] || continue
    p=$(readlink -f "$d"); drv=-
    [ -L "$d/driver" ] && drv=$(readlink "$d/driver") && drv=${{drv##*/}}
    echo "{MARK} dev ${{p#/sys/devices/}} class=$(cat "$d/class") vendor=$(cat "$d/vendor")\
 device=$(cat "$d/device") driver=$drv"
done
"""
# the part of /sys and /proc the go/no-go checks read (pci/box.py), one "snap" line each
INIT += ("cat > /tmp/xenpipe-snapshot <<'XENPIPE_SNAPSHOT'\n" + SNAPSHOT + "XENPIPE_SNAPSHOT\n"
         f"sh /tmp/xenpipe-snapshot /sys /proc | sed 's/^/{MARK} snap /'\n"
         f'echo "{MARK} done"\nsync\npoweroff -f\n')
_LINE = re.compile(re.escape(MARK) + r" (\S+)(?: (.*?))?\r*$", re.M)
_FIELDS = re.compile(r"(\w+)=(\S*)")
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_RELPATH = re.compile(  # below /sys/devices: the root bus, then one BDF per bridge
    r"pci[0-9a-f]{4,8}:[0-9a-f]{2}(?:/[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])+"
)


# ------------------------------------------------------------------------------ initramfs
def busybox() -> Path:
    """The statically linked busybox (Debian's busybox-static) the probe runs."""
    for cand in BUSYBOX_CANDIDATES:
        if os.access(cand, os.X_OK):
            return Path(cand)
    raise BootError("busybox not found (/bin/busybox): apt-get install busybox-static, "
                    "or run `make setup` as root")


def _newc(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
          ino: int = 0) -> bytes:
    """One entry of a "newc" cpio archive (the format the kernel unpacks), mtime 0."""
    # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
    pad = b"\0" * (-len(head) % 4)
    return head + pad + data + b"\0" * (-len(data) % 4)


def archive(busybox_bin: bytes, init: str = INIT) -> bytes:
    """The gzip-compressed initramfs: busybox, /init and /dev/console; deterministic."""
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        ("bin", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ("bin/busybox", stat.S_IFREG | 0o755, busybox_bin, (0, 0)),
        ("init", stat.S_IFREG | 0o755, init.encode(), (0, 0)),
    ]
    body = b"".join(_newc(n, m, d, r, ino=i) for i, (n, m, d, r) in enumerate(entries, 1))
    body += _newc("TRAILER!!!", 0)
    return gzip.compress(body, mtime=0)


def build(dest: Path) -> Path:
    """Write the probe initramfs to *dest* unless it already holds the same bytes."""
    data = archive(busybox().read_bytes())
    if not dest.is_file() or dest.read_bytes() != data:
        atomic_write(dest, data)
    return dest


def identity() -> str:
    """What the probe is, cheaply (for the boot fingerprint): the /init text and busybox."""
    try:
        bb = busybox().stat()
        bb_id = f"{bb.st_size}:{bb.st_mtime_ns}"
    except BootError:
        bb_id = "missing"
    return digest.of_text(f"{INIT}\0{bb_id}")


# ---------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class ProbeDevice:
    """One PCI function as the probe saw it."""

    relpath: str  # below /sys/devices, e.g. pci0000:00/0000:00:1c.0/0000:01:00.0
    cls: str
    vendor: str
    device: str
    driver: str | None

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ProbeRoot:
    """A root bus and its ACPI companion (None: no firmware_node, or no _UID)."""

    name: str
    hid: str | None
    uid: str | None


@dataclass(frozen=True)
class Report:
    """Everything the probe printed: init start, the pciback listing, the dump, the end."""

    started: bool
    done: bool
    pciback: tuple[str, ...]
    roots: tuple[ProbeRoot, ...]
    devices: tuple[ProbeDevice, ...]
    snapshot: str = ""  # the pci/box.py listing of dom0's /sys and /proc ("snap" lines)


def _opt(value: str) -> str | None:
    return None if value in ("", "-") else value


def parse(console: str) -> Report:
    """Read the probe's lines out of a console transcript (``\\r\\r\\n`` line ends and kernel
    messages around them are fine); malformed probe lines are ignored."""
    started = done = False
    pciback: list[str] = []
    roots: dict[str, ProbeRoot] = {}
    devices: dict[str, ProbeDevice] = {}
    snap: list[str] = []
    for m in _LINE.finditer(console):
        kind, rest = m[1], (m[2] or "").strip()
        words = rest.split()
        fields = dict(_FIELDS.findall(rest))
        if kind == "init":
            started = True
        elif kind == "done":
            done = True
        elif kind == "snap":
            snap.append(rest)
        elif kind == "pciback" and len(words) == 1 and _NAME.fullmatch(words[0]):
            pciback.append(words[0])
        elif kind == "root" and words and _NAME.fullmatch(words[0]):
            roots[words[0]] = ProbeRoot(words[0], _opt(fields.get("hid", "-")),
                                        _opt(fields.get("uid", "-")))
        elif kind == "dev" and words and _RELPATH.fullmatch(words[0]):
            dev = ProbeDevice(words[0], fields.get("class", "0"), fields.get("vendor", "0"),
                              fields.get("device", "0"), _opt(fields.get("driver", "-")))
            devices[dev.name] = dev
    return Report(started, done, tuple(dict.fromkeys(pciback)), tuple(roots.values()),
                  tuple(devices.values()), "\n".join(snap))


def _link(link: Path, target: Path) -> None:
    """A relative symlink, as sysfs has them."""
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def record_sysfs(report: Report, dest: Path) -> Path:
    """Recreate the probed machine's PCI part of sysfs under *dest* (replacing it), in the
    layout ``pci.scan`` reads: ``bus/pci/devices`` links into ``devices/pci*``, ``driver``
    links, and each root bus's ``firmware_node`` with ``hid`` and ``uid``."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "bus" / "pci" / "devices").mkdir(parents=True)
    acpi_bus = dest / "devices" / "LNXSYSTM:00" / "LNXSYBUS:00"
    for n, root in enumerate(report.roots):
        rdir = dest / "devices" / root.name
        rdir.mkdir(parents=True, exist_ok=True)
        if root.hid is None:
            continue
        fw = acpi_bus / f"{root.hid}:{n:02x}"
        fw.mkdir(parents=True)
        (fw / "hid").write_text(root.hid + "\n")
        if root.uid is not None:
            (fw / "uid").write_text(root.uid + "\n")
        _link(rdir / "firmware_node", fw)
    for dev in report.devices:
        d = dest / "devices" / dev.relpath
        d.mkdir(parents=True, exist_ok=True)
        for name, value in (("class", dev.cls), ("vendor", dev.vendor), ("device", dev.device)):
            (d / name).write_text(value + "\n")
        if dev.driver:
            drv = dest / "bus" / "pci" / "drivers" / dev.driver
            drv.mkdir(parents=True, exist_ok=True)
            _link(d / "driver", drv)
            _link(drv / dev.name, d)
        _link(dest / "bus" / "pci" / "devices" / dev.name, d)
    return dest

