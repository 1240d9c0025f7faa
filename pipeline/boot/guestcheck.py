"""The guest half of ``doit boot`` (``[boot] guest = true``): start each ``[[guests]]`` domain
under the booted dom0 and check, from inside the guest, that it sees its devices.

dom0 boots the Debian userland of ``rootfs.py`` (Xen toolstack included) instead of the
busybox probe. Its ``/init`` first runs the probe's dump (so the pciback milestones and the
topology check of the boot stage work unchanged), then starts Debian's own ``/etc/init.d/xen``
(xenstored, xenconsoled), loads the kernel's modules (the NIC drivers: pciback holds the
passed-through devices, so they bind only the NICs dom0 keeps) and brings its NICs up, prints
``xl info`` and ``xl pci-assignable-list``, and starts each guest with ``xl create -c``,
following its console, twice (the second assignment: pciback resets the devices in between),
then gives each device back to dom0 (``xl pci-assignable-remove -r``, then dom0's drivers
probe it and its NIC comes up), then powers off with ``busybox poweroff -f`` (minbase has no
poweroff, and an init that exits makes the hypervisor report a crash).

Each guest is a PV guest, or HVM for ``[[guests]] type = "hvm"`` (README, "HVM guests": TCG's
SVM with nested paging, Debian's qemu-system-xen in dom0 as its device model): the dom0 kernel
itself (it has xen-pcifront) with a tiny busybox initramfs that waits for
pcifront's devices, prints each one's vendor, device and class from sysfs, runs pciutils'
``lspci -nn``, loads the kernel's modules, prints each device's driver and interrupt mode,
pings dom0's NIC over IPv6 link-local from each of its NICs (``[boot] devices`` with
``netdev=`` share QEMU's internal hub: see ``qemu.hubports``; dom0 passes its NIC's address as
``xenpipe.peer=``), then idles: dom0 detaches its devices while it runs and destroys it. Its
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

from pipeline import build, digest, passthrough, pci, proc
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
XEN_LOG_DIR = "/var/log/xen"  # where libxl has an HVM guest's device model log, inside dom0
GUEST_MEMORY = 256  # MiB per guest (swiotlb-xen takes up to 64 MiB of it for DMA)
GUEST_TIMEOUT = 120  # seconds dom0 gives each guest, from xl create to its end
# an HVM guest under TCG: hvmloader, SeaBIOS and the kernel run on QEMU's emulated SVM and
# nested paging, and every byte of its serial console is a round trip to its device model in
# dom0 (measured: 209 to 318 s a run; README, "HVM guests")
HVM_TIMEOUT = 900
# dom0's userland for an HVM guest: Debian's qemu-system-xen is its device model (xl's
# device_model_version = "qemu-xen"), which pulls in SeaBIOS; PV guests do without
HVM_PACKAGES = (*rootfs.PACKAGES, "qemu-system-xen")
BOOT_MEMORY = 3072  # MiB of QEMU memory at least: Xen, dom0 (dom0_mem=1024M), the guests
NIGHTLY_ENV = "XENPIPE_NIGHTLY"  # set by doit nightly for its child doit
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# shell functions dom0's /init and the guest's share (both run busybox sh; busybox's ip)
NET_FUNCS = r"""modnames() {  # the names of the modules in depmod's $1/modules.dep (none without)
    [ -f "$1/modules.dep" ] || return 0
    sed -e 's/:.*//' -e 's#.*/##' -e 's/\.ko.*//' "$1/modules.dep"
}
driver() {  # the driver bound to PCI device $1 (its sysfs directory), else -
    if [ -e "$1/driver" ]; then basename "$(readlink "$1/driver")"; else echo -; fi
}
nic_up() {  # NIC $1 up without duplicate address detection: its link-local address is usable
    for c in all "$1"; do echo 0 2>/dev/null >"/proc/sys/net/ipv6/conf/$c/accept_dad"; done
    busybox ip link set dev "$1" up
}
carrier() { cat "/sys/class/net/$1/carrier" 2>/dev/null || echo -; }
linklocal() {  # NIC $1's IPv6 link-local address (scope 20 in /proc/net/if_inet6), else -
    a=$(awk -v n="$1" '$6 == n && $4 == "20" {print $1; exit}' /proc/net/if_inet6 2>/dev/null)
    if [ -n "$a" ]; then echo "$a" | sed -e 's/..../&:/g' -e 's/:$//'; else echo -; fi
}
has_carrier() { [ "$(carrier "$1")" = 1 ]; }
has_linklocal() { [ "$(linklocal "$1")" != - ]; }
waitfor() {  # run "$@" every 0.1 s until it succeeds, 10 s at most: a milestone, not a sleep
    w=0
    until "$@"; do [ $w -ge 100 ] && return 1; sleep 0.1; w=$((w + 1)); done
}
irqs() {  # the interrupts NIC $1 took: the /proc/interrupts lines named after it, all CPUs
    awk -v n="$1" '$NF == n || index($NF, n "-") == 1 {
        for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i } END { print s + 0 }' \
        /proc/interrupts
}"""

GUEST_INIT = f"""#!/bin/busybox sh
# xenpipe guest: list the PCI devices pcifront gives this PV guest, load the kernel's modules
# (the NIC drivers), show each device's driver and interrupt mode, ping dom0 from each NIC,
# then idle until dom0 destroys it
/bin/busybox mkdir -p /proc /sys /dev /bin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
name=guest
want=1
peer=-
for word in $(cat /proc/cmdline); do
    case "$word" in
    xenpipe.name=*) name=${{word#*=}} ;;
    xenpipe.devices=*) want=${{word#*=}} ;;
    xenpipe.peer=*) peer=${{word#*=}} ;;
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
{NET_FUNCS}
mods=/lib/modules/$(uname -r)
for m in $(modnames "$mods"); do
    modprobe "$m" 2>/dev/null
    echo "{GUEST} $name module $m rc=$?"
done
for d in /sys/bus/pci/devices/*; do
    [ -e "$d" ] || continue
    for n in "$d"/net/*; do [ -e "$n" ] && nic_up "${{n##*/}}"; done
done
for d in /sys/bus/pci/devices/*; do
    [ -e "$d" ] || continue
    nic=-
    for n in "$d"/net/*; do [ -e "$n" ] && nic=${{n##*/}} && break; done
    [ "$nic" = - ] || {{ waitfor has_carrier "$nic" && waitfor has_linklocal "$nic"; }}
    mode=intx
    for f in "$d"/msi_irqs/*; do [ -e "$f" ] && mode=$(cat "$f") && break; done
    echo "{GUEST} $name driver ${{d##*/}} driver=$(driver "$d") irq=$mode nic=$nic\
 carrier=$(carrier "$nic") addr=$(linklocal "$nic")"
    [ "$nic" = - ] && continue
    if [ "$peer" = - ]; then
        echo "{GUEST} $name ping $nic skipped: dom0 has no NIC with a link-local address"
        continue
    fi
    ping -6 -c 10 -i 0.2 -w 20 "$peer%$nic" 2>&1 | while read -r line; do
        echo "{GUEST} $name ping $nic $line"
    done
    echo "{GUEST} $name irqs $nic $(irqs "$nic")"
done
echo "{GUEST} $name done"
# dom0 now detaches the devices (pcifront must answer each: a guest that halts meanwhile
# leaves pciback reconfiguring, and libxl waits 10 s for it) and always destroys this guest:
# idle until then
while :; do sleep 3600; done
"""

# dom0's shell function that runs one guest: its console followed on dom0's until the guest's
# last line, then its devices detached (``xl pci-detach`` while the guest runs: libxl's removal
# from a halted or paused PV guest waits 10 s per device for a pcifront that cannot answer)
# and ``xl destroy`` (no wait for the guest to halt and for xl to notice); xl create -c's exit
# status comes through a file, as busybox sh has no PIPESTATUS
RUN_GUEST = r"""release() {{  # guest $1 (run $2): devices detached while pcifront answers
    # (PV; an HVM guest's removal is an ACPI hot-unplug its kernel does not answer: xl destroy
    # takes its devices back at once)
    grep -q '^type = "hvm"' "{config_dir}/$1.cfg" ||
    for bdf in $(xl pci-list "$1" 2>/dev/null | awk 'NR > 1 {{print $2}}'); do
        xl pci-detach "$1" "$bdf"
        echo "{dom0} guest $1 ${{2}}detached $bdf rc=$?"
    done
    xl destroy "$1" 2>/dev/null
}}
run_guest() {{  # $1: the guest's name, $2: "" or "again " (the second assignment), $3: the
    # seconds it may take (default {timeout})
    t=${{3:-{timeout}}}
    sed -i "s/xenpipe\.peer=[^ \"]*/xenpipe.peer=$peer/" "{config_dir}/$1.cfg"
    echo "{dom0} guest $1 ${{2}}create"
    rm -f "{config_dir}/$1.rc"
    # xl's creating child shares the pipe: a creation that hangs past the timeout keeps it open,
    # so the domain is destroyed then, and the reader gives up after longer without a line;
    # timeout runs in a subshell of its own (busybox's applet may exec the command in place)
    {{ (timeout "$t" xl create -c "{config_dir}/$1.cfg" 2>&1)
      echo $? >"{config_dir}/$1.rc"
      xl destroy "$1" >/dev/null 2>&1; }} | while IFS= read -r -t $((t + 10)) line; do
        printf '%s\n' "$line"
        case "$line" in *"{guest} $1 done"*) release "$1" "$2" ;; esac
    done
    rc=$(cat "{config_dir}/$1.rc" 2>/dev/null || echo -)
    stty sane 2>/dev/null
    # an HVM guest's device model (qemu-system-xen) logs apart: its last lines when xl failed
    [ "$rc" = 0 ] || [ ! -s "{log_dir}/qemu-dm-$1.log" ] ||
        tail -n 20 "{log_dir}/qemu-dm-$1.log" | sed "s/^/{dom0} guest $1 ${{2}}dm: /"
    state=$(xl list "$1" 2>/dev/null | awk 'NR == 2 {{print $5}}')
    echo "{dom0} guest $1 ${{2}}exit rc=$rc state=${{state:--}}"
    xl destroy "$1" 2>/dev/null
}}"""


def run_guest(config_dir: str = CONFIG_DIR, timeout: int = GUEST_TIMEOUT,
              log_dir: str = XEN_LOG_DIR) -> str:
    """dom0's ``run_guest`` shell function, with the guest configs in *config_dir* and xl's
    logs in *log_dir*."""
    return RUN_GUEST.format(dom0=DOM0, guest=GUEST, config_dir=config_dir, timeout=timeout,
                            log_dir=log_dir)


_DOM0_TAIL = """
# xenpipe guest boot: Debian's Xen toolstack, then each guest on the console (twice: the
# second assignment), then the devices back to dom0, then power off
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /dev/pts /run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mkdir -p /run/lock /var/lock
mount -t xenfs xenfs /proc/xen
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd; do
    modprobe -q "$m" 2>/dev/null
done
{funcs}
# the kernel's own modules (the NIC drivers): pciback holds the passed-through devices, so
# they bind only the NICs dom0 keeps; each comes up, the guests ping its link-local address
for m in $(modnames "/lib/modules/$(uname -r)"); do
    modprobe -q "$m"
    echo "{dom0} module $m rc=$?"
done
peer=-
for n in /sys/class/net/*; do
    nic=${{n##*/}}
    [ "$nic" = lo ] || [ ! -e "$n/device" ] && continue
    case " {bdfs} " in *" $(basename "$(readlink -f "$n/device")") "*) continue ;; esac
    nic_up "$nic"
    waitfor has_carrier "$nic" && waitfor has_linklocal "$nic"
    addr=$(linklocal "$nic")
    [ "$peer" = - ] && [ "$addr" != - ] && peer=$addr
    echo "{dom0} nic $nic bdf=$(basename "$(readlink -f "$n/device")")\\
 driver=$(driver "$n/device") carrier=$(carrier "$nic") addr=$addr"
done
{run_guest}
if /etc/init.d/xen start; then
    echo "{dom0} xen started"
    xl info
{assign}    xl pci-assignable-list | while read -r bdf; do echo "{dom0} assignable $bdf"; done
{runs}    # back to dom0: out of pciback (-r: to the driver it had), then probed by dom0's drivers
    for bdf in {bdfs}; do
        xl pci-assignable-remove -r "$bdf"
        rc=$?
        d=/sys/bus/pci/devices/$bdf
        [ "$(driver "$d")" = - ] && echo "$bdf" 2>/dev/null >/sys/bus/pci/drivers_probe
        nic=-
        for n in "$d"/net/*; do [ -e "$n" ] && nic=${{n##*/}} && break; done
        [ "$nic" = - ] || {{ nic_up "$nic"; waitfor has_carrier "$nic"; }}
        echo "{dom0} returned $bdf rc=$rc driver=$(driver "$d") nic=$nic carrier=$(carrier "$nic")"
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
    kind: str = "pv"  # [[guests]] type: "pv" or "hvm"

    @property
    def path(self) -> str:
        return f"{CONFIG_DIR}/{self.name}.cfg"

    @property
    def timeout(self) -> int:
        """The seconds dom0 gives each run of this guest, from xl create to its end."""
        return HVM_TIMEOUT if self.kind == "hvm" else GUEST_TIMEOUT


def _source(cfg: Config, g: GuestCfg, topo: pci.Topology | None) -> tuple[str, str]:
    """(config text, origin): the installed config, else the one doit install would write."""
    path = installed(cfg, g)
    if path.is_file():
        return path.read_text(errors="replace"), display(path)
    if topo is None and any(not isinstance(pci.parse_entry(d).device, pci.Bdf)
                              for d in g.devices):
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
                             render(g.name, entries, bdfs, origin, g.type), g.type))
    return out


# an HVM guest (``[[guests]] type = "hvm"``): Debian's qemu-system-xen in dom0 is its device
# model, the same kernel and initramfs boot directly (QEMU's -kernel), its console is the
# emulated serial port that ``xl create -c`` follows; Xen needs HVM support with HAP (under
# TCG: ``qemu.HVM_CPU``) and an IOMMU it uses for the devices (README, "HVM guests")
HVM = (
    'type = "hvm"\n'
    'device_model_version = "qemu-xen"\n'
    'serial = "pty"\n'
    'vga = "none"\n'
    "vnc = 0\n"
    "sdl = 0\n"
)


def render(name: str, entries: Sequence[str], bdfs: Sequence[pci.Bdf], origin: str,
           kind: str = "pv") -> str:
    """The xl config of the boot VM's guest *name*: the test guest (PV, or HVM for *kind*
    ``hvm``), with the pci list of *origin* as written there (``guestcfg.render`` keeps each
    entry's own spelling)."""
    hvm = kind == "hvm"
    return (
        f"# xenpipe boot check: [[guests]] {name}, started by dom0's /init (xl create -c).\n"
        f"# pci: from {origin}. The rest is the test guest: a{'n HVM' if hvm else ' PV'} guest "
        "running the dom0\n"
        "# kernel with a busybox initramfs that lists its PCI devices, loads their drivers,\n"
        "# pings dom0 from each NIC, then waits for dom0 to destroy it.\n"
        f'name = "{name}"\n'
        + (HVM if hvm else 'type = "pv"\n')
        + f'kernel = "{GUEST_DIR}/vmlinuz"\n'
        f'ramdisk = "{GUEST_DIR}/initrd.gz"\n'
        f'extra = "console={"ttyS0" if hvm else "hvc0"} xenpipe.name={name} '
        f'xenpipe.devices={len(bdfs)} xenpipe.peer=-"\n'  # dom0's /init puts its NIC's address
        f"memory = {GUEST_MEMORY}\n"
        "vcpus = 1\n"
        'on_poweroff = "destroy"\n'
        'on_reboot = "destroy"\n'
        'on_crash = "preserve"\n'
        f"{guestcfg.render(bdfs, entries)}\n"
    )


# [passthrough] mode = "assignable": dom0's drivers keep the devices until the guests need them
ASSIGN = """    for bdf in {bdfs}; do
        xl pci-assignable-add "$bdf"
        echo "{dom0} assignable-add $bdf rc=$?"
    done
"""


def dom0_init(plans: Sequence[GuestPlan], assign: bool = False) -> str:
    """dom0's /init: the probe's dump (without its power-off), then the toolstack and guests;
    *assign*: ``xl pci-assignable-add`` of the guests' devices first (assignable mode; the NICs
    among them are not dom0's to ping meanwhile)."""
    head, sep, tail = probe.INIT.rpartition("sync\npoweroff -f\n")
    if not sep or tail.strip():
        raise AssertionError("probe.INIT no longer ends with sync and poweroff -f")
    bdfs = dict.fromkeys(str(b) for p in plans for b in p.bdfs)
    assign_sh = ASSIGN.format(dom0=DOM0, bdfs=" ".join(bdfs)) if assign and bdfs else ""
    runs = "".join(f'    run_guest {p.name} "{again}" {p.timeout}\n'
                   for p in plans for again in ("", "again "))
    return head + _DOM0_TAIL.format(dom0=DOM0, runs=runs, bdfs=" ".join(bdfs), funcs=NET_FUNCS,
                                    run_guest=run_guest(), assign=assign_sh)


# ------------------------------------------------------------------------------ initramfs
def guest_initramfs(tools: Path, mods: Path | None = None) -> bytes:
    """The guest's initramfs: busybox, /init and /dev/console (the probe's archive), the
    borrowed lspci archive and the kernel's modules (*mods*, a packed ``lib/modules`` tree),
    in one gzip stream: libxenguest unpacks a gzipped ramdisk itself and stops after the
    first gzip member."""
    parts = [probe.archive(probe.busybox().read_bytes(), GUEST_INIT), tools.read_bytes()]
    if mods is not None:
        parts.append(mods.read_bytes())
    return gzip.compress(b"".join(gzip.decompress(x) for x in parts), mtime=0)


def _guest_modules(stage: Path, dest: Path, log: Path) -> Path | None:
    """The modules installed into dom0's *stage* (usr/lib/modules) packed at *dest* as the
    guest's ``/lib/modules`` (the guest's root has no merged-/usr links); None: no modules."""
    installed_ = stage / "usr" / "lib" / "modules"
    if not installed_.is_dir():
        return None
    tree = dest.with_name(f"{dest.name}.d")
    rootfs.remove_tree(tree, log)
    try:
        shutil.copytree(installed_, tree / "lib" / "modules", symlinks=True,
                        ignore=shutil.ignore_patterns("build", "source"))
        rootfs.pack(tree, dest, log)
    finally:
        rootfs.remove_tree(tree, log)
    return dest


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
    rfs = rootfs.build(ws, packages(any(p.kind == "hvm" for p in plans)))
    log = ws.log("boot")
    stage = dest.with_name(f"{dest.name}.d")
    rootfs.remove_tree(stage, log)
    try:
        atomic_write(stage / "init", dom0_init(plans, not passthrough.hides(cfg)), mode=0o755)
        for p in plans:
            atomic_write(stage / p.path.lstrip("/"), p.config)
        gdir = stage / GUEST_DIR.lstrip("/")
        gdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kernel, gdir / "vmlinuz")
        _modules(cfg, ws, stage, log)
        mods = _guest_modules(stage, dest.with_name(f"{dest.name}.guest-modules"), log)
        atomic_write(gdir / "initrd.gz", guest_initramfs(rfs.tools, mods))
        if mods is not None:
            mods.unlink()
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


def packages(hvm: bool) -> tuple[str, ...]:
    """dom0's Debian packages: the device model too when a guest is HVM (*hvm*)."""
    return HVM_PACKAGES if hvm else rootfs.PACKAGES


def identity(cfg: Config) -> dict[str, Any] | None:
    """What a guest boot depends on beyond the dom0 boot, cheaply (None: no guest boot)."""
    if not enabled(cfg):
        return None
    configs = []
    for g in cfg.guests:
        try:
            st = installed(cfg, g).stat()
            configs.append([g.name, g.config, list(g.devices), st.st_size, st.st_mtime_ns,
                            g.type])
        except OSError:
            configs.append([g.name, g.config, list(g.devices), None, None, g.type])
    scripts = digest.of_text(f"{GUEST_INIT}\0{_DOM0_TAIL}\0{NET_FUNCS}\0{RUN_GUEST}\0{ASSIGN}")
    try:
        root: str | None = rootfs.key(packages(any(g.type == "hvm" for g in cfg.guests)))
    except BootError:  # apt has no sources: the build says so
        root = None
    return {"rootfs": root, "scripts": scripts, "guests": configs,
            "memory": GUEST_MEMORY, "timeout": [GUEST_TIMEOUT, HVM_TIMEOUT]}
