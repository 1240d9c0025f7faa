"""The guest half of ``doit boot`` (``[boot] guest = true``): start each ``[[guests]]`` domain
under the booted dom0 and check, from inside the guest, that it sees its devices.

dom0 boots the Debian userland of ``rootfs.py`` (Xen toolstack included) instead of the
busybox probe. Its ``/init`` first runs the probe's dump (so the pciback milestones and the
topology check of the boot stage work unchanged), then starts Debian's own ``/etc/init.d/xen``
(xenstored, xenconsoled), prints ``xl info`` and ``xl pci-assignable-list``, and starts each
guest with ``xl create -c``, following its console, then powers off with ``busybox poweroff
-f`` (minbase has no poweroff, and an init that exits makes the hypervisor report a crash).

Each guest is a PV guest (HVM needs hardware virtualisation, which TCG does not offer): the
dom0 kernel itself (it has xen-pcifront) with a tiny busybox initramfs that waits for
pcifront's devices, prints each one's vendor, device and class from sysfs, runs pciutils'
``lspci -nn``, and halts (``halt``: a guest's "Power down" line would look like dom0's). Its
xl config is rendered for the boot VM from the guest config ``doit install`` wrote into
``install.root`` (its ``pci = [...]`` list as written there), or, when there is none, from the
one ``doit install`` would write (``pipeline.install.guestcfg``). pciback's virtual PCI bus
renumbers the devices in the guest (host ``00:03.0`` shows up as ``00:00.0``), so they are matched
by vendor:device and class against dom0's own view of the same boot.

Every line dom0's /init prints starts with :data:`DOM0`, every guest line with :data:`GUEST`
and the guest's name; ``guestverdict.py`` reads them back, ``guestboot.py`` runs the whole.
This module is the plan: which guests, their xl configs, dom0's /init and initramfs.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import build, digest, pci, proc
from pipeline.boot import probe, rootfs
from pipeline.build import modules
from pipeline.config import Config, GuestCfg, display
from pipeline.errors import BootError, DeviceError
from pipeline.files import atomic_write
from pipeline.install import guestcfg
from pipeline.workspace import Key, Workspace

DOM0 = "xenpipe-dom0:"
GUEST = "xenpipe-guest:"
GUEST_DIR = "/var/lib/xenpipe/guest"  # the guest kernel and initramfs, inside dom0
CONFIG_DIR = "/etc/xen/xenpipe"  # the rendered guest configs, inside dom0
GUEST_MEMORY = 128  # MiB per guest
GUEST_TIMEOUT = 120  # seconds dom0 gives each guest, from xl create to its end
BOOT_MEMORY = 3072  # MiB of QEMU memory at least: Xen, dom0 (dom0_mem=1024M), the guests
NIGHTLY_ENV = "XENPIPE_NIGHTLY"  # set by doit nightly for its child doit
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

GUEST_INIT = f"""#!/bin/busybox sh
# xenpipe guest: list the PCI devices pcifront gives this PV guest, then halt
/bin/busybox mkdir -p /proc /sys /dev /bin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
name=guest
want=1
for word in $(cat /proc/cmdline); do
    case "$word" in
    xenpipe.name=*) name=${{word#*=}} ;;
    xenpipe.devices=*) want=${{word#*=}} ;;
    esac
done
echo "{GUEST} $name init started"
modprobe xen-pcifront 2>/dev/null
# pcifront connects to dom0's pciback in its own time: wait for the devices (20 s at most)
i=0
while [ "$want" -gt 0 ] && [ $i -lt 200 ]; do
    set -- /sys/bus/pci/devices/*
    [ -e "$1" ] && [ $# -ge "$want" ] && break
    sleep 0.1
    i=$((i + 1))
done
for d in /sys/bus/pci/devices/*; do
    [ -e "$d" ] || continue
    echo "{GUEST} $name dev ${{d##*/}} class=$(cat "$d/class") vendor=$(cat "$d/vendor")\
 device=$(cat "$d/device")"
done
lspci -nn 2>&1 | while read -r line; do echo "{GUEST} $name lspci $line"; done
echo "{GUEST} $name done"
halt -f
"""

_DOM0_TAIL = """
# xenpipe guest boot: Debian's Xen toolstack, then each guest on the console, then power off
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /dev/pts /run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mkdir -p /run/lock /var/lock
mount -t xenfs xenfs /proc/xen
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd; do
    modprobe -q "$m" 2>/dev/null
done
if /etc/init.d/xen start; then
    echo "{dom0} xen started"
    xl info
    xl pci-assignable-list | while read -r bdf; do echo "{dom0} assignable $bdf"; done
    for name in {names}; do
        echo "{dom0} guest $name create"
        timeout {timeout} xl create -c "{config_dir}/$name.cfg"
        rc=$?
        stty sane 2>/dev/null
        state=$(xl list "$name" 2>/dev/null | awk 'NR == 2 {{print $5}}')
        echo "{dom0} guest $name exit rc=$rc state=${{state:--}}"
        xl destroy "$name" 2>/dev/null
    done
else
    echo "{dom0} xen failed rc=$?"
fi
echo "{dom0} done"
sync
busybox poweroff -f
"""


# ---------------------------------------------------------------------------------- plan
def enabled(cfg: Config) -> bool:
    """``[boot] guest`` when set; unset, on in ``doit nightly`` when ``[[guests]]`` exist."""
    explicit = cfg.boot.guest
    if explicit is not None:
        return bool(explicit)
    return bool(cfg.guests) and os.environ.get(NIGHTLY_ENV) == "1"


def installed(cfg: Config, g: GuestCfg) -> Path:
    """Where ``doit install`` writes *g*'s config."""
    return cfg.install.root / g.config.lstrip("/")


@dataclass(frozen=True)
class GuestPlan:
    """One guest of the boot: its pci list, where that came from, and its xl config."""

    name: str
    origin: str  # where the pci list comes from
    entries: tuple[str, ...]  # the pci list as written there
    bdfs: tuple[pci.Bdf, ...]
    config: str  # the xl config dom0 starts it from

    @property
    def path(self) -> str:
        return f"{CONFIG_DIR}/{self.name}.cfg"


def _source(cfg: Config, g: GuestCfg, topo: pci.Topology | None) -> tuple[str, str]:
    """(config text, origin): the installed config, else the one doit install would write."""
    path = installed(cfg, g)
    if path.is_file():
        return path.read_text(errors="replace"), display(path)
    if topo is None and any(not isinstance(pci.parse_device(d), pci.Bdf) for d in g.devices):
        raise DeviceError(f"[[guests]] {g.name}: a device path needs the machine's topology")
    bdfs = guestcfg.check(cfg, topo)[g.name]
    text = guestcfg.update(None, g, bdfs, display(cfg.path))
    return text, f"rendered as doit install writes {display(path)} (not installed yet)"


def plan(cfg: Config, topo: pci.Topology | None) -> list[GuestPlan]:
    """Each ``[[guests]]`` entry's boot plan. Raises DeviceError when a guest names a device
    path and *topo* (the virtual machine's topology) is not known yet."""
    out = []
    for g in cfg.guests:
        if not _NAME.fullmatch(g.name):
            raise BootError(f'[[guests]] name "{g.name}": the boot check needs a name of '
                            "letters, digits, '.', '_' and '-'")
        text, origin = _source(cfg, g, topo)
        entries = guestcfg.entries(text)
        if entries is None:
            raise BootError(f"[[guests]] {g.name}: {origin} has no pci = [...] list: run "
                            "doit install")
        bdfs = []
        for entry in entries:
            bdf = guestcfg.entry_bdf(entry)
            if bdf is None:
                raise BootError(f"[[guests]] {g.name}: {origin}: pci entry '{entry}' has no "
                                "BDF")
            bdfs.append(bdf)
        out.append(GuestPlan(g.name, origin, tuple(entries), tuple(bdfs),
                             render(g.name, entries, bdfs, origin)))
    return out


def render(name: str, entries: Sequence[str], bdfs: Sequence[pci.Bdf], origin: str) -> str:
    """The xl config of the boot VM's guest *name*: the test guest, with the pci list of
    *origin* as written there (``guestcfg.render`` keeps each entry's own spelling)."""
    return (
        f"# xenpipe boot check: [[guests]] {name}, started by dom0's /init (xl create -c).\n"
        f"# pci: from {origin}. The rest is the test guest: a PV guest running the dom0\n"
        "# kernel with a busybox initramfs that lists its PCI devices, then halts.\n"
        f'name = "{name}"\n'
        'type = "pv"\n'
        f'kernel = "{GUEST_DIR}/vmlinuz"\n'
        f'ramdisk = "{GUEST_DIR}/initrd.gz"\n'
        f'extra = "console=hvc0 xenpipe.name={name} xenpipe.devices={len(bdfs)}"\n'
        f"memory = {GUEST_MEMORY}\n"
        "vcpus = 1\n"
        'on_poweroff = "destroy"\n'
        'on_reboot = "destroy"\n'
        'on_crash = "preserve"\n'
        f"{guestcfg.render(bdfs, entries)}\n"
    )


def dom0_init(plans: Sequence[GuestPlan]) -> str:
    """dom0's /init: the probe's dump (without its power-off), then the toolstack and guests."""
    head, sep, tail = probe.INIT.rpartition("sync\npoweroff -f\n")
    if not sep or tail.strip():
        raise AssertionError("probe.INIT no longer ends with sync and poweroff -f")
    return head + _DOM0_TAIL.format(dom0=DOM0, names=" ".join(p.name for p in plans) or "",
                                    timeout=GUEST_TIMEOUT, config_dir=CONFIG_DIR)


# ------------------------------------------------------------------------------ initramfs
def guest_initramfs(tools: Path) -> bytes:
    """The guest's initramfs: busybox, /init and /dev/console (the probe's archive), then the
    borrowed lspci archive, in one gzip stream: libxenguest unpacks a gzipped ramdisk itself
    and stops after the first gzip member."""
    first = gzip.decompress(probe.archive(probe.busybox().read_bytes(), GUEST_INIT))
    return gzip.compress(first + gzip.decompress(tools.read_bytes()), mtime=0)


def _modules(cfg: Config, ws: Workspace, stage: Path, log: Path) -> None:
    """The dom0 kernel's loadable modules, if it has any, into *stage*'s /usr/lib/modules
    (/lib is a link to usr/lib in the Debian root)."""

    assert cfg.kernel is not None
    kbuild = build.kernel_build_dir(ws)
    order = kbuild / "modules.order"
    if not order.is_file() or not order.read_text().split():
        return
    src = ws.source_dir(cfg.kernel.source).resolve()
    base = stage / "usr"
    proc.run(modules.modules_install_argv(cfg, src, kbuild.resolve(), base), log=log,
             error=BootError, what="make modules_install (dom0 initramfs)")
    release = ws.state(Key.build("kernel")).get("release")
    system_map = ws.out / f"System.map-{release}"
    if release and system_map.is_file():
        proc.run(modules.depmod_argv(base, system_map, release), log=log, error=BootError,
                 what="depmod (dom0 initramfs)")


def initramfs(cfg: Config, ws: Workspace, plans: Sequence[GuestPlan], kernel: Path,
              dest: Path) -> Path:
    """dom0's initramfs for a guest boot at *dest*: the cached Debian root, then a small
    archive with /init, the guests' configs, their kernel and initramfs, and modules."""
    rfs = rootfs.build(ws)
    log = ws.log("boot")
    stage = dest.with_name(f"{dest.name}.d")
    rootfs.remove_tree(stage, log)
    try:
        atomic_write(stage / "init", dom0_init(plans), mode=0o755)
        for p in plans:
            atomic_write(stage / p.path.lstrip("/"), p.config)
        gdir = stage / GUEST_DIR.lstrip("/")
        gdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kernel, gdir / "vmlinuz")
        atomic_write(gdir / "initrd.gz", guest_initramfs(rfs.tools))
        _modules(cfg, ws, stage, log)
        overlay = dest.with_name(f"{dest.name}.overlay")
        rootfs.pack(stage, overlay, log)
    finally:
        rootfs.remove_tree(stage, log)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with open(tmp, "wb") as out:
        for part in (rfs.image, overlay):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    os.replace(tmp, dest)
    overlay.unlink()
    return dest


def identity(cfg: Config) -> dict[str, Any] | None:
    """What a guest boot depends on beyond the dom0 boot, cheaply (None: no guest boot)."""
    if not enabled(cfg):
        return None
    configs = []
    for g in cfg.guests:
        try:
            st = installed(cfg, g).stat()
            configs.append([g.name, g.config, list(g.devices), st.st_size, st.st_mtime_ns])
        except OSError:
            configs.append([g.name, g.config, list(g.devices), None, None])
    scripts = digest.of_text(f"{GUEST_INIT}\0{_DOM0_TAIL}")
    return {"rootfs": rootfs.identity(), "scripts": scripts, "guests": configs,
            "memory": GUEST_MEMORY, "timeout": GUEST_TIMEOUT}
