"""The guest half of ``doit boot`` (``[boot] guest = true``): start each ``[[guests]]`` domain
under the booted dom0 and check, from inside the guest, that it sees its devices.

dom0 boots the Debian userland of ``rootfs.py`` (Xen toolstack included) instead of the
busybox probe. Its ``/init`` first runs the probe's dump (so the pciback milestones and the
topology check of ``boot.py`` work unchanged), then starts Debian's own ``/etc/init.d/xen``
(xenstored, xenconsoled), prints ``xl info`` and ``xl pci-assignable-list``, and starts each
guest with ``xl create -c``, following its console, then powers off with ``busybox poweroff
-f`` (minbase has no poweroff, and an init that exits makes the hypervisor report a crash).

Each guest is a PV guest (HVM needs hardware virtualisation, which TCG does not offer): the
dom0 kernel itself (it has xen-pcifront) with a tiny busybox initramfs that waits for
pcifront's devices, prints each one's vendor, device and class from sysfs, runs pciutils'
``lspci -nn``, and halts (``halt``: a guest's "Power down" line would look like dom0's). Its
xl config is rendered for the boot VM from the guest config ``doit install`` wrote into
``install.root`` (its ``pci = [...]`` list as written there), or, when there is none, from the
one ``doit install`` would write (``guests.py``). pciback's virtual PCI bus renumbers the
devices in the guest (host ``00:03.0`` shows up as ``00:00.0``), so they are matched by
vendor:device and class against dom0's own view of the same boot.

Every line dom0's /init prints starts with :data:`DOM0`, every guest line with :data:`GUEST`
and the guest's name. :func:`verdict` reads them back and tells the failures apart, each as
one line: the Xen daemons did not start, a device was not hidden (xl refuses to assign it),
xl create failed otherwise, the guest crashed, a device is missing in the guest, a timeout.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import build as build_mod
from pipeline import digest, pci, proc
from pipeline.boot import probe, rootfs
from pipeline.config import Config, GuestCfg, display
from pipeline.errors import BootError, DeviceError
from pipeline.files import atomic_write
from pipeline.install import guestcfg as guests
from pipeline.workspace import Key, Workspace

if TYPE_CHECKING:
    from pipeline.boot import Milestone

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
    bdfs = guests.check(cfg, topo)[g.name]
    text = guests.update(None, g, bdfs, display(cfg.path))
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
        entries = guests.entries(text)
        if entries is None:
            raise BootError(f"[[guests]] {g.name}: {origin} has no pci = [...] list: run "
                            "doit install")
        bdfs = []
        for entry in entries:
            bdf = guests.entry_bdf(entry)
            if bdf is None:
                raise BootError(f"[[guests]] {g.name}: {origin}: pci entry '{entry}' has no "
                                "BDF")
            bdfs.append(bdf)
        out.append(GuestPlan(g.name, origin, tuple(entries), tuple(bdfs),
                             render(g.name, entries, bdfs, origin)))
    return out


def render(name: str, entries: Sequence[str], bdfs: Sequence[pci.Bdf], origin: str) -> str:
    """The xl config of the boot VM's guest *name*: the test guest, with the pci list of
    *origin* as written there (``guests.render`` keeps each entry's own spelling)."""
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
        f"{guests.render(bdfs, entries)}\n"
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
    from pipeline.build import modules as build_modules  # lead: hoist to the imports

    assert cfg.kernel is not None
    kbuild = build_mod.kernel_build_dir(ws)
    order = kbuild / "modules.order"
    if not order.is_file() or not order.read_text().split():
        return
    src = ws.source_dir(cfg.kernel.source).resolve()
    base = stage / "usr"
    proc.run(build_modules.modules_install_argv(cfg, src, kbuild.resolve(), base), log=log,
             error=BootError, what="make modules_install (dom0 initramfs)")
    release = ws.state(Key.build("kernel")).get("release")
    system_map = ws.out / f"System.map-{release}"
    if release and system_map.is_file():
        proc.run(build_modules.depmod_argv(base, system_map, release), log=log, error=BootError,
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


# ----------------------------------------------------------------------------- milestones
def milestones(plans: Sequence[GuestPlan]) -> list[list[Milestone]]:
    """The guest part of a boot's milestones, after the probe's and before the power-off."""
    from pipeline.boot import Milestone

    steps = [[Milestone("Xen daemons started", re.escape(f"{DOM0} xen started"),
                        "the Xen daemons did not start in dom0",
                        "see /etc/init.d/xen start on the console")]]
    for p in plans:
        n = p.name
        steps += [
            [Milestone(f"guest {n} started", re.escape(f"{GUEST} {n} init started"),
                       f"guest {n} did not start", "see xl create on the console")],
            [Milestone(f"guest {n} listed its devices", re.escape(f"{GUEST} {n} done"),
                       f"guest {n} did not list its devices", "see the guest's console")],
            [Milestone(f"guest {n} shut down", re.escape(f"{DOM0} guest {n} exit rc="),
                       f"guest {n} did not shut down", "see the guest's console")],
        ]
    return steps


# ------------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class SeenDevice:
    """A PCI function as the guest (or dom0) saw it."""

    bdf: str
    cls: str
    vendor: str
    device: str

    @property
    def ids(self) -> tuple[str, str, str]:
        return (self.vendor.lower(), self.device.lower(), self.cls.lower())

    def __str__(self) -> str:
        v, d = (x.lower().removeprefix("0x") for x in (self.vendor, self.device))
        return f"{self.bdf} [{v}:{d}] class {self.cls.lower().removeprefix('0x')}"


@dataclass
class GuestRun:
    """What the console says one guest did."""

    name: str
    created: bool = False  # dom0 ran xl create
    started: bool = False  # the guest's /init ran
    done: bool = False  # it listed its devices
    rc: int | None = None  # xl create -c's exit status (124: dom0's timeout)
    state: str | None = None  # xl list's state afterwards ("-" gone, "c" crashed)
    devices: list[SeenDevice] = field(default_factory=list)
    lspci: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # xl/libxl error lines
    panic: str | None = None
    last: str = ""  # the guest's last console line


@dataclass
class Transcript:
    """dom0's and the guests' lines of a guest boot's console."""

    xen_started: bool = False
    xen_rc: int | None = None  # /etc/init.d/xen start's failing status
    assignable: list[str] = field(default_factory=list)
    guests: dict[str, GuestRun] = field(default_factory=dict)
    done: bool = False


_DOM0_LINE = re.compile(re.escape(DOM0) + r" (.*)$")
_GUEST_LINE = re.compile(re.escape(GUEST) + r" (\S+) (.*)$")
_FIELDS = re.compile(r"(\w+)=(\S*)")
_XL_ERROR = re.compile(r"libxl: error|xl: error|^Error|\berror\b.*(?:domain|pci|PCI)", re.I)
# libxl logs this as an error for every PV passthrough, then carries on
_HARMLESS = re.compile(r"doesn't support reset from sysfs")


def parse(console: str) -> Transcript:
    """Read a guest boot's console (``\\r\\r\\n`` line ends, kernel and Xen lines around)."""
    t = Transcript()
    current: GuestRun | None = None
    for raw in console.split("\n"):
        line = raw.replace("\r", "").strip()
        if m := _DOM0_LINE.search(line):
            words = m[1].split()
            fields = dict(_FIELDS.findall(m[1]))
            if words[:2] == ["xen", "started"]:
                t.xen_started = True
            elif words[:2] == ["xen", "failed"]:
                t.xen_rc = _int(fields.get("rc"))
            elif words[:1] == ["assignable"] and len(words) == 2:
                t.assignable.append(words[1])
            elif words[:1] == ["guest"] and len(words) >= 3:
                run = t.guests.setdefault(words[1], GuestRun(words[1]))
                if words[2] == "create":
                    run.created, current = True, run
                elif words[2] == "exit":
                    run.rc, run.state = _int(fields.get("rc")), fields.get("state")
                    current = None
            elif words[:1] == ["done"]:
                t.done = True
            continue
        if m := _GUEST_LINE.search(line):
            run = t.guests.setdefault(m[1], GuestRun(m[1]))
            what = m[2]
            run.last = line
            if what == "init started":
                run.started = True
            elif what == "done":
                run.done = True
            elif what.startswith("dev "):
                words = what.split()
                fields = dict(_FIELDS.findall(what))
                if len(words) >= 2:
                    run.devices.append(SeenDevice(words[1], fields.get("class", "?"),
                                                  fields.get("vendor", "?"),
                                                  fields.get("device", "?")))
            elif what.startswith("lspci "):
                run.lspci.append(what.removeprefix("lspci "))
            continue
        if current is None or not line:
            continue
        if "Kernel panic" in line and current.panic is None:
            current.panic = line[line.index("Kernel panic"):]
        elif _XL_ERROR.search(line) and not _HARMLESS.search(line):
            current.errors.append(line)
        if not line.startswith("(XEN)"):
            current.last = line
    return t


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _refused(run: GuestRun, p: GuestPlan, t: Transcript) -> str | None:
    """The devices xl refused to assign because pciback does not hold them (xl's "is not
    assignable", or a failed xl create and devices missing from xl pci-assignable-list)."""
    line = next((ln for ln in run.errors if "not assignable" in ln), None)
    if line is None and run.rc in (0, 124, None):
        return None
    missing = [b for b in p.bdfs if str(b) not in t.assignable]
    named = [b for b in p.bdfs if line is not None and _mentions(line, b)] or missing
    if line is None and not missing:
        return None
    what = ", ".join(map(str, named)) or "a device"
    return what + (f" ({line})" if line else " (not in xl pci-assignable-list)")


def _mentions(line: str, bdf: pci.Bdf) -> bool:
    """Whether an xl message names *bdf* (as 0000:00:04.0, 00:04.0 or 0:0:4.0)."""
    forms = (str(bdf), bdf.short, f"{bdf.domain:x}:{bdf.bus:x}:{bdf.dev:x}.{bdf.func:x}")
    return any(re.search(rf"(?<![0-9a-fA-F:]){re.escape(f)}(?![0-9a-fA-F])", line, re.I)
               for f in forms)


def _problem(run: GuestRun, p: GuestPlan, t: Transcript, dom0: dict[str, SeenDevice],
             ) -> str | None:
    """The one-line verdict on one guest, or None when it saw all its devices."""
    n = p.name
    if not run.created:
        return None  # dom0 never got that far: the milestones say why
    if run.panic is not None:
        return f"guest {n} crashed: {run.panic}"
    if run.state and "c" in run.state:
        return f"guest {n} crashed (xl list state {run.state}; last guest line: {run.last})"
    if not run.started:
        if (what := _refused(run, p, t)) is not None:
            return (f"guest {n}: device not hidden: xl refused to assign {what}; dom0 hides "
                    "only [passthrough] devices at boot")
        if run.rc == 124 or run.rc is None:
            return (f"guest {n}: timeout: its /init did not start within {GUEST_TIMEOUT} s of "
                    f"xl create (last line: {run.last or 'none'})")
        detail = run.errors[-1] if run.errors else run.last or "no error message"
        return f"guest {n}: xl create failed with exit status {run.rc}: {detail}"
    if not run.done:
        if run.rc == 124 or run.rc is None:
            return (f"guest {n}: timeout: it started but did not list its devices within "
                    f"{GUEST_TIMEOUT} s (last line: {run.last})")
        return (f"guest {n} crashed: it stopped before listing its devices (xl exit status "
                f"{run.rc}, state {run.state}; last line: {run.last})")
    left = list(run.devices)
    for bdf in p.bdfs:
        want = dom0.get(str(bdf))
        if want is None:
            return f"guest {n}: {bdf} is not on the virtual machine ([boot] devices)"
        match = next((d for d in left if d.ids == want.ids), None)
        if match is None:
            seen = ", ".join(map(str, run.devices)) or "no PCI devices"
            return f"guest {n} started but {want} is missing in the guest (it sees {seen})"
        left.remove(match)
    return None


@dataclass
class Verdict:
    """The guests' part of a boot's result."""

    problem: str | None  # the first failure, one line
    records: list[dict[str, Any]]  # milestone records: which device each guest saw, and how
    guests: dict[str, dict[str, Any]]  # per guest: origin, pci list, devices, lspci, verdict


def verdict(console: str, plans: Sequence[GuestPlan]) -> Verdict:
    """Judge a guest boot from its console: dom0's view of each assigned device (the probe's
    dump) against what each guest listed, matched by vendor:device and class."""
    t = parse(console)
    dom0 = {d.name: SeenDevice(d.name, d.cls, d.vendor, d.device)
            for d in probe.parse(console).devices}
    problem = None
    if not t.xen_started and t.xen_rc is not None:
        problem = f"dom0: the Xen daemons did not start (/etc/init.d/xen start: exit {t.xen_rc})"
    records: list[dict[str, Any]] = []
    views: dict[str, dict[str, Any]] = {}
    for p in plans:
        run = t.guests.get(p.name, GuestRun(p.name))
        why = _problem(run, p, t, dom0) if problem is None else None
        problem = problem or why
        left = list(run.devices)
        seen = []
        for bdf in p.bdfs:
            want = dom0.get(str(bdf))
            match = next((d for d in left if want and d.ids == want.ids), None)
            if match is not None:
                left.remove(match)
            seen.append({"host": str(bdf), "guest": match.bdf if match else None,
                         "ids": str(want).split(" ", 1)[1] if want else None})
            if not run.created:
                continue  # dom0 did not get that far: boot.py's milestones say why
            records.append({
                "name": f"guest {p.name} sees {bdf}",
                "status": "passed" if match is not None and run.done else "missed",
                "detail": f"as {match}" if match is not None else (why or "not seen")})
        views[p.name] = {
            "origin": p.origin, "pci": list(p.entries), "config": p.config,
            "verdict": "pass" if run.done and why is None else "fail", "reason": why,
            "devices": seen, "lspci": run.lspci, "xl_rc": run.rc, "state": run.state,
        }
    return Verdict(problem, records, views)


def summary_lines(results: Any) -> list[str]:
    """What each guest's lspci printed (what ``make demo`` ends with), from boot.json."""
    out: list[str] = []
    views = results.get("guests") if isinstance(results, dict) else None
    for name, view in (views if isinstance(views, dict) else {}).items():
        verdict_ = str(view.get("verdict", "fail")).upper()
        out.append(f"guest {name}: {verdict_}: pci from {view.get('origin')}")
        out += [f"guest {name}: lspci {line}" for line in view.get("lspci") or []]
        if view.get("reason"):
            out.append(str(view["reason"]))
    return out


# ---------------------------------------------------------------------------- in doit boot
@dataclass
class GuestBoot:
    """The guest part of one ``doit boot``, in the order boot.py needs it: plan the guests
    (with the topology run's topology when a device path needs it), swap the probe for the
    Debian dom0, add the guest milestones, judge the console."""

    cfg: Config
    ws: Workspace
    plans: list[GuestPlan] = field(default_factory=list)

    @classmethod
    def of(cls, cfg: Config, ws: Workspace) -> GuestBoot | None:
        """The guest part of this config's boot, or None when it boots no guests."""
        return cls(cfg, ws) if enabled(cfg) else None

    def prepare(self, topo: pci.Topology | None) -> None:
        """Plan the guests; DeviceError when a device path needs the topology run first."""
        if not self.cfg.guests:
            raise BootError("[boot] guest = true but no [[guests]] are configured")
        self.plans = plan(self.cfg, topo)

    def machine(self, cfg: Config) -> Config:
        """*cfg* with at least :data:`BOOT_MEMORY` MiB for the QEMU machine."""
        if cfg.boot.memory >= BOOT_MEMORY:
            return cfg
        return replace(cfg, boot=replace(cfg.boot, memory=BOOT_MEMORY))

    def images(self, imgs: Any, dest: Path) -> Any:
        """boot.Images with dom0's initramfs (at *dest*) swapped for the Debian one."""
        return replace(imgs, initrd=initramfs(self.cfg, self.ws, self.plans, imgs.kernel, dest))

    def steps(self, steps: list[list[Milestone]]) -> list[list[Milestone]]:
        """The dom0 milestones with the guests' before the last (dom0's power-off)."""
        return [*steps[:-1], *milestones(self.plans), *steps[-1:]]

    def owns(self, milestone: Any) -> bool:
        """Whether *milestone* (a missed one) is one of the guest part's."""
        names = {m.name for step in milestones(self.plans) for m in step}
        return getattr(milestone, "name", None) in names

    def judge(self, session: Any, results: dict[str, Any]) -> str | None:
        """Record what each guest saw into *results* (``guests``, more ``milestones``, the
        verdict as the missed guest milestone's detail) from a boot.Session; the first
        problem, one line, or None."""
        v = verdict(session.console, self.plans)
        results["guests"] = v.guests
        marks = results.setdefault("milestones", [])
        missed = session.watch.missed
        if v.problem is not None and missed is not None and self.owns(missed):
            for m in marks:
                if m.get("name") == missed.name and m.get("status") == "missed":
                    m["detail"] = v.problem
        marks.extend(v.records)
        return v.problem
