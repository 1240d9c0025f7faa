"""``doit boot``: boot the built Xen and dom0 kernel in QEMU and watch the serial console.

Xen is QEMU's ``-kernel`` (multiboot; a gzipped image is decompressed once into the
workspace), the dom0 kernel its first module with the same command line ``doit install``
writes (hide/reassign options included), and the probe initramfs (``probe.py``) the second
module. pexpect follows the console through ordered milestones, each with its time: the Xen
banner, what Xen says about the IOMMU, dom0 construction, the Linux banner, pciback seizing
each passthrough device, the probe's ``/init`` starting and listing each device under pciback,
and the power-off. A panic, a crash, QEMU exiting early, a later milestone coming first or
the ``[boot] timeout`` ends the run at once with the last console lines and one error line
saying which milestone was missed and why.

When the options need the machine's topology (device paths on a kernel without ``guestdev=``,
BDFs for a XenLinux ``guestdev=`` kernel, device paths to realign on a mainline one), a first
boot without passthrough options records the virtual machine's PCI topology from the probe's
dump; the entries are resolved against it exactly as ``doit install`` resolves them against
``/sys`` on a real box, and the second boot uses the resolved options. After the boot, the
seized devices are checked against what the entries name in that boot's own topology, and
xen-pciback's own ``guestdev:`` lines (an entry's device, a path that matches nothing, a
malformed entry) go into the verdict and ``boot.json``.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pexpect

from pipeline import metadata, pci, proc
from pipeline import passthrough as cmdline
from pipeline.boot import guestcheck as guest
from pipeline.boot import probe
from pipeline.config import Config, display
from pipeline.errors import BootError, DeviceError
from pipeline.files import atomic_write, read_json, write_json
from pipeline.workspace import Key, Workspace

XEN_CONSOLE = ("console=com1", "com1=115200")
DOM0_CONSOLE = ("console=hvc0", "earlyprintk=xen")
CPU = "qemu64"  # -cpu max exposes SMAP, which crashes a PV dom0 under TCG
FINGERPRINT_VERSION = 2  # bump when the same inputs would boot differently
TAIL_LINES = 30
EXIT_GRACE = 30.0  # seconds QEMU may take to exit after dom0 powered off
_NL = r"[^\r\n]*\r*\n"  # the rest of a line; the console ends lines with \r\r\n


# ------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class Images:
    """What QEMU boots: the hypervisor ELF, the dom0 kernel and the probe initramfs."""

    xen: Path
    kernel: Path
    initrd: Path


def boot_dir(ws: Workspace) -> Path:
    """Files of the boot stage that are neither artifacts nor logs (caches, the probe)."""
    return ws.dir / "boot"


def kernel_image(ws: Workspace) -> Path:
    """The built dom0 kernel: ``out/vmlinuz-<release>`` of the last kernel build (else the
    newest ``out/vmlinuz-*``)."""
    release = ws.state(Key.build("kernel")).get("release")
    if release and (ws.out / f"vmlinuz-{release}").is_file():
        return ws.out / f"vmlinuz-{release}"
    found = sorted(ws.out.glob("vmlinuz-*"), key=lambda p: p.stat().st_mtime_ns)
    if not found:
        raise BootError(f"no dom0 kernel in {display(ws.out)} (vmlinuz-*): run `doit build`")
    return found[-1]


def hypervisor(cfg: Config, ws: Workspace) -> Path:
    """The Xen image as built or configured (maybe gzipped): out/xen.gz when [xen] is
    configured, else ``[boot] xen``."""
    if cfg.xen is not None:
        for name in ("xen.gz", "xen"):
            if (ws.out / name).is_file():
                return ws.out / name
        raise BootError(f"no hypervisor in {display(ws.out)} (xen.gz): run `doit build`")
    if cfg.boot.xen is None:
        raise BootError("no hypervisor to boot: configure [xen] to build one, or set [boot] xen "
                        '(e.g. "/boot/xen-4.17-amd64.gz" from xen-hypervisor-4.17-amd64)')
    if not cfg.boot.xen.is_file():
        raise BootError(f"[boot] xen: {cfg.boot.xen} not found (apt-get install "
                        "xen-hypervisor-4.17-amd64 provides /boot/xen-4.17-amd64.gz)")
    return cfg.boot.xen


def loadable(image: Path, cache: Path) -> Path:
    """*image* as QEMU's multiboot loader takes it: uncompressed. A gzipped image is
    decompressed once into *cache* (which keeps the image's mtime), again when that changes."""
    with open(image, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return image
    dest = cache / image.name.removesuffix(".gz")
    src = image.stat()
    if dest.is_file() and dest.stat().st_mtime_ns == src.st_mtime_ns:
        return dest
    try:
        data = gzip.decompress(image.read_bytes())
    except (OSError, EOFError) as exc:
        raise BootError(f"{image}: cannot decompress: {exc}") from None
    atomic_write(dest, data)
    os.utime(dest, ns=(src.st_atime_ns, src.st_mtime_ns))
    return dest


def images(cfg: Config, ws: Workspace) -> Images:
    cache = boot_dir(ws)
    return Images(loadable(hypervisor(cfg, ws), cache), kernel_image(ws),
                  probe.build(cache / "probe.cpio.gz"))


def _identity(path: Path) -> list[Any] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [str(path), st.st_size, st.st_mtime_ns]


# ------------------------------------------------------------------------------------ QEMU
def kvm_usable(cpuinfo: Path = Path("/proc/cpuinfo"), dev: Path = Path("/dev/kvm")) -> bool:
    """KVM only when /dev/kvm opens and the CPU has VMX or SVM; TCG otherwise."""
    if not os.access(dev, os.R_OK | os.W_OK):
        return False
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    return bool(m and {"vmx", "svm"} & set(m[1].split()))


def qemu_option(value: str) -> str:
    """A value inside a QEMU option list: every literal comma doubled."""
    return value.replace(",", ",,")


def qemu_argv(cfg: Config, imgs: Images, xen_cmd: str, dom0_cmd: str, kvm: bool) -> list[str]:
    """The QEMU command line: Xen as the multiboot kernel, dom0 and the probe as modules
    (``-initrd 'KERNEL ARGS,INITRD'``), serial on stdio, no reboot, [boot] devices."""
    module = qemu_option(f"{imgs.kernel} {dom0_cmd}")
    argv = [cfg.boot.qemu, "-machine", cfg.boot.machine,
            "-accel", "kvm" if kvm else "tcg", "-cpu", CPU, "-m", str(cfg.boot.memory),
            "-nodefaults", "-nographic", "-serial", "stdio", "-no-reboot",
            "-kernel", str(imgs.xen), "-append", xen_cmd,
            "-initrd", f"{module},{qemu_option(str(imgs.initrd))}"]
    for dev in cfg.boot.devices:
        argv += ["-device", dev]
    return argv


# ------------------------------------------------------------------------------ milestones
@dataclass(frozen=True)
class Milestone:
    """A console line that must come, in order; *missed* and *why* make the error."""

    name: str
    pattern: str  # regex; the line's rest is appended
    missed: str  # "pciback did not seize 0000:00:03.0"
    why: str  # the likely cause

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern + _NL)


FAILURES = (
    ("Xen panicked", r"Panic on CPU \d+"),
    ("Xen reports dom0 crashed", r"Dom0 crashed"),
    ("the dom0 kernel panicked", r"Kernel panic"),
)


def seize_milestone(bdf: pci.Bdf) -> Milestone:
    b = re.escape(str(bdf))
    return Milestone(
        f"pciback seized {bdf}",
        rf"(?:{b}: \S*pciback: seizing device|pciback: seizing device {b})",
        f"pciback did not seize {bdf}",
        f"is {bdf} on the virtual machine ([boot] devices)? is CONFIG_XEN_PCIDEV_BACKEND=y?",
    )


def listed_milestone(bdf: pci.Bdf) -> Milestone:
    return Milestone(
        f"{bdf} under pciback", re.escape(f"{probe.MARK} pciback {bdf}") + r"(?=[\r\n])",
        f"{bdf} is not bound to pciback", "pciback seized it but did not bind it; see the log")


def milestones(seize: Sequence[pci.Bdf]) -> list[list[Milestone]]:
    """The ordered steps of a boot; the devices of one step may come in any order."""
    steps = [
        [Milestone("Xen banner", r"\(XEN\) Xen version \S+", "Xen did not start",
                   "is the hypervisor a multiboot image? does -cpu qemu64 suit it?")],
        [Milestone("Xen IOMMU", r"\(XEN\) I/O virtualisation (?:enabled|disabled)",
                   "Xen did not report on the IOMMU", "Xen stopped during start-up")],
        # Xen 4.17 prints the dom0 ELF notes; "Building a PV Dom0" is newer, "LOADING" 3.x
        [Milestone("dom0 construction",
                   r"(?:\(XEN\)\s+Dom0 kernel: |\*\*\* (?:Building a PV Dom0|LOADING DOMAIN 0))",
                   "Xen did not build dom0",
                   "is the dom0 kernel a Xen PV kernel (CONFIG_XEN_PV=y, CONFIG_XEN_DOM0=y)?")],
        [Milestone("Linux banner", r"Linux version \S+", "the dom0 kernel printed nothing",
                   "CONFIG_HVC_XEN=y and console=hvc0 earlyprintk=xen?")],
    ]
    if seize:
        steps.append([seize_milestone(b) for b in seize])
    steps.append([Milestone("init started", re.escape(f"{probe.MARK} init started"),
                            "the probe's /init did not start",
                            "CONFIG_BLK_DEV_INITRD, CONFIG_RD_GZIP, CONFIG_BINFMT_SCRIPT=y?")])
    if seize:
        steps.append([listed_milestone(b) for b in seize])
    steps.append([Milestone("probe done", re.escape(f"{probe.MARK} done"),
                            "the probe did not finish its device dump", "see the log")])
    steps.append([Milestone("power-off", r"reboot: Power down", "dom0 did not power off",
                            "CONFIG_ACPI=y? busybox poweroff -f failed?")])
    return steps


@dataclass
class Hit:
    name: str
    seconds: float  # since QEMU started
    line: str


@dataclass
class Watch:
    """How far a boot came: the milestones met, the one missed and why."""

    hits: list[Hit] = field(default_factory=list)
    missed: Milestone | None = None
    reason: str = ""
    unreached: list[str] = field(default_factory=list)  # the milestones after the missed one

    @property
    def ok(self) -> bool:
        return self.missed is None

    def records(self) -> list[dict[str, Any]]:
        """Every milestone with its status (passed, missed, pending) for reports."""
        out = [{"name": h.name, "status": "passed", "seconds": round(h.seconds, 2),
                "detail": h.line} for h in self.hits]
        if self.missed is not None:
            out.append({"name": self.missed.name, "status": "missed", "detail": self.reason})
        return out + [{"name": n, "status": "pending"} for n in self.unreached]


def _line(child: Any) -> str:
    """The whole console line of the last match (its start is in ``before``)."""
    head = child.before.rsplit("\n", 1)[-1] if isinstance(child.before, str) else ""
    return (head + child.after).strip()


def _panic_text(child: Any) -> str:
    """The failure line; Xen says why on the line after ``Panic on CPU N:``, so read on
    briefly for it."""
    text = _line(child)
    if text.endswith(":"):
        child.expect([re.compile(r"\S" + _NL), pexpect.EOF, pexpect.TIMEOUT], timeout=2)
        if isinstance(child.after, str):
            text += " " + _line(child).removeprefix("(XEN) ")
    return text


def watch(child: Any, steps: Sequence[Sequence[Milestone]], timeout: float,
          start: float | None = None) -> Watch:
    """Follow *child*'s output through *steps*; stop at the first problem.

    pexpect reports the earliest match in its buffer, so a later milestone or a failure
    that comes first is noticed in console order.
    """
    start = time.monotonic() if start is None else start
    deadline = start + timeout
    out = Watch()
    for i, step in enumerate(steps):
        pending = list(step)
        later = [m for s in steps[i + 1:] for m in s]
        while pending:
            patterns = [m.regex for m in pending] + [m.regex for m in later]
            patterns += [re.compile(p + _NL) for _, p in FAILURES]
            patterns += [pexpect.EOF, pexpect.TIMEOUT]
            remaining = max(0.0, deadline - time.monotonic())
            idx = child.expect(patterns, timeout=remaining)
            now = time.monotonic() - start
            n_pend, n_later, n_fail = len(pending), len(later), len(FAILURES)
            if idx < n_pend:
                out.hits.append(Hit(pending.pop(idx).name, now, _line(child)))
                continue
            out.missed = pending[0]
            out.unreached = [m.name for m in (*pending[1:], *later)]
            if idx < n_pend + n_later:
                out.reason = f"{later[idx - n_pend].name} came first"
            elif idx < n_pend + n_later + n_fail:
                out.reason = f"{FAILURES[idx - n_pend - n_later][0]}: {_panic_text(child)}"
            elif idx == len(patterns) - 2:
                last = proc.last_line(child.before)
                out.reason = f"QEMU exited after {now:.0f} s" + (f": {last}" if last else "")
            else:
                out.reason = f"nothing within the [boot] timeout of {timeout:.0f} s"
            return out
    return out


# ------------------------------------------------------------------------------ sessions
@dataclass
class Session:
    """One QEMU boot: argv, milestones, the console text and what the probe reported."""

    argv: list[str]
    log: Path
    watch: Watch
    console: str
    report: probe.Report
    seconds: float

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        lines = [ln.rstrip("\r") for ln in self.console.split("\n")]
        while lines and not lines[-1].strip():
            lines.pop()
        return lines[-n:]


def run_qemu(argv: Sequence[str], log: Path, steps: Sequence[Sequence[Milestone]],
             timeout: float) -> Session:
    """Start QEMU, watch its console into *log* (replaced), always stop it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {proc.render(argv)}\n")
    console = open(log, "a", encoding="utf-8", newline="")  # noqa: SIM115
    tee = proc.Tee(console)
    start = time.monotonic()
    try:
        try:
            child = pexpect.spawn(argv[0], list(argv[1:]), env=proc.environment(),
                                  encoding="utf-8", codec_errors="replace", timeout=timeout,
                                  maxread=65536, echo=False)
        except pexpect.ExceptionPexpect as exc:
            raise BootError(f"{argv[0]}: cannot start: {exc} (apt-get install "
                            "qemu-system-x86)") from None
        child.logfile_read = tee
        try:
            result = watch(child, steps, timeout, start)
            if result.ok:  # wait for QEMU to exit by itself after the power-off
                child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=EXIT_GRACE)
        finally:  # QEMU leads its own session
            proc.stop_group(child.pid, child.isalive, grace=2.5)
            child.close(force=True)
    finally:
        console.close()
    return Session(list(argv), log, result, tee.text, probe.parse(tee.text),
                   time.monotonic() - start)


# ---------------------------------------------------------------------------------- checks
def expected_bdfs(cfg: Config, topo: pci.Topology | None) -> dict[str, tuple[pci.Bdf, ...]]:
    """The BDFs each passthrough entry stands for; device paths only when *topo* is known."""
    out: dict[str, tuple[pci.Bdf, ...]] = {}
    for entry in cfg.passthrough.devices:
        parsed = pci.parse_device(entry)
        if isinstance(parsed, pci.Bdf) or topo is not None:
            out[entry] = pci.resolve_devices([entry], topo)[entry]
    return out


def named(cfg: Config, topo: pci.Topology) -> dict[str, list[str]]:
    """The BDFs each passthrough entry names in *topo*; entries that name nothing left out."""
    out: dict[str, list[str]] = {}
    for entry in cfg.passthrough.devices:
        try:
            out[entry] = [str(b) for b in pci.resolve_devices([entry], topo)[entry]]
        except DeviceError:
            continue
    return out


def vm_mismatch(cfg: Config, topo: pci.Topology) -> str | None:
    """Why ``[passthrough] devices`` cannot be given away on the virtual machine *topo*
    describes (a device it lacks, a path that leads nowhere), or None."""
    try:
        resolved = pci.resolve_devices(cfg.passthrough.devices, topo)
    except DeviceError as exc:
        return f"{exc} (in the virtual machine, whose devices [boot] devices decides)"
    for entry, bdfs in resolved.items():
        for bdf in bdfs:
            if topo.get(bdf) is None:
                have = ", ".join(d.bdf.short for d in topo.devices)
                return (f"{entry} is not on the virtual machine, which has {have} ([boot] "
                        "devices adds more)")
    return None


def topology(report: probe.Report, dest: Path) -> pci.Topology:
    """The probed machine's topology, through a recorded sysfs tree and ``pci.scan``."""
    return pci.scan(probe.record_sysfs(report, dest))


def seized_in(console: str) -> list[pci.Bdf]:
    """Every device the console says pciback seized."""
    found = re.findall(r"([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])(?:: \S*pciback)?: "
                       r"seizing device|seizing device ([0-9a-f:.]+)", console)
    return [pci.parse_bdf(a or b) for a, b in found]


# ------------------------------------------------------------------------------ guestdev=
_GUESTDEV = re.compile(
    r"^[^\r\n]*?\bguestdev: (?:(\S+) is ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])"
    r"|(\S+) matches no device|malformed device path \"([^\"\r\n]*)\" ignored)\r*$", re.M)


@dataclass(frozen=True)
class GuestdevLog:
    """What xen-pciback (patches/linux) said about each ``guestdev=`` entry: the device an
    entry found (one per matching root bridge), the paths that matched nothing (its pr_warn)
    and the malformed entries it ignored (its pr_err), with the console lines."""

    found: dict[str, tuple[pci.Bdf, ...]]
    unmatched: tuple[str, ...]
    malformed: tuple[str, ...]
    lines: tuple[str, ...]

    def json(self) -> dict[str, Any]:
        return {"found": {e: [str(b) for b in bdfs] for e, bdfs in self.found.items()},
                "unmatched": list(self.unmatched), "malformed": list(self.malformed),
                "lines": list(self.lines)}


def guestdev_log(console: str) -> GuestdevLog:
    """xen-pciback's ``guestdev:`` lines in a console transcript."""
    found: dict[str, list[pci.Bdf]] = {}
    unmatched: list[str] = []
    malformed: list[str] = []
    lines: list[str] = []
    for m in _GUESTDEV.finditer(console):
        lines.append(m[0].strip())
        if m[1]:
            found.setdefault(m[1], []).append(pci.parse_bdf(m[2]))
        elif m[3]:
            unmatched.append(m[3])
        else:
            malformed.append(m[4])
    return GuestdevLog({e: tuple(dict.fromkeys(b)) for e, b in found.items()},
                       tuple(dict.fromkeys(unmatched)), tuple(dict.fromkeys(malformed)),
                       tuple(lines))


def guestdev_problems(cfg: Config, log: GuestdevLog) -> tuple[list[str], list[str]]:
    """(problems, warnings) in *log*. A ``[passthrough]`` path that matched nothing and a
    malformed entry fail the boot: the installed entry would reserve nothing for them. A path
    only ``[install] dom0_cmdline`` adds that matched nothing is a warning: the virtual
    machine lacks the device, the real one may have it."""
    ours = {e.strip() for e in cfg.passthrough.devices}
    problems = [f"guestdev path {e} matched no device" for e in log.unmatched if e in ours]
    problems += [f'guestdev entry "{e}" is malformed: xen-pciback ignored it'
                 + ("" if e in ours else " (it comes from [install] dom0_cmdline)")
                 for e in log.malformed]
    warnings = [f"guestdev path {e} from [install] dom0_cmdline matched no device on the "
                "virtual machine" for e in log.unmatched if e not in ours]
    return problems, warnings


def verify(cfg: Config, session: Session, topo: pci.Topology,
           planned: dict[str, tuple[pci.Bdf, ...]]) -> str | None:
    """After a complete boot: does each entry name, in this boot's own topology, exactly the
    devices pciback seized and holds (and that the options were rendered for), and for a
    guestdev= path the device xen-pciback found? A path xen-pciback said matches nothing is
    guestdev_problems' to report."""
    seized = set(seized_in(session.console))
    held = set(session.report.pciback)
    said = guestdev_log(session.console)
    for entry in cfg.passthrough.devices:
        if entry.strip() in said.unmatched:
            continue
        try:
            now = pci.resolve_devices([entry], topo)[entry]
        except DeviceError as exc:
            return f"{entry}: {exc}"
        if entry in planned and set(planned[entry]) != set(now):
            return (f"{entry} named {', '.join(map(str, planned[entry]))} in the first boot but "
                    f"{', '.join(map(str, now))} in the second")
        found = said.found.get(entry.strip())
        if found is not None:
            bdf = topo.lookup(pci.parse_path(entry)).bdf
            if bdf not in found:
                return (f"xen-pciback took guestdev path {entry.strip()} for "
                        f"{', '.join(map(str, found))}, but it names {bdf} in the probe's dump")
        for bdf in now:
            if bdf not in seized:
                return f"pciback did not seize {bdf} ({entry})"
            if str(bdf) not in held:
                return f"{bdf} ({entry}) is not bound to pciback"
    return None


# ------------------------------------------------------------------------------ the stage
def _fail_message(session: Session, dom0_cmd: str, what: str = "boot",
                  also: Sequence[str] = ()) -> str:
    w = session.watch
    assert w.missed is not None
    more = "".join(f"; {a}" for a in also)
    return (f"{what}: {w.missed.missed} ({w.reason}; {w.missed.why}; dom0 cmdline: {dom0_cmd})"
            f"{more}; console: {display(session.log)}")


def _show_tail(session: Session) -> None:
    sys.stderr.write(f"--- last {TAIL_LINES} console lines ({display(session.log)}) ---\n")
    sys.stderr.write("\n".join(session.tail()) + "\n---\n")
    sys.stderr.flush()


def _session_json(session: Session) -> dict[str, Any]:
    return {
        "qemu": proc.render(session.argv),
        "console": display(session.log),
        "seconds": round(session.seconds, 2),
        "milestones": session.watch.records(),
        "tail": [] if session.watch.ok else session.tail(),
    }


def _publish(ws: Workspace, results: dict[str, Any]) -> None:
    """The results in out/boot.json (what reports read) and metadata.json's boot stage."""
    write_json(ws.out / "boot.json", results)
    rec = metadata.current(ws, "boot")
    if rec is not None:
        runs = (results.get("topology_boot"), results)
        rec.set(**results, commands=[r["qemu"] for r in runs if r and "qemu" in r])
        rec.update()


def _failed(ws: Workspace, results: dict[str, Any], message: str,
            session: Session | None = None) -> BootError:
    """Record a failed boot, show the console's last lines, and make its one-line error."""
    results["verdict"] = "fail"
    _publish(ws, results)
    if session is not None:
        _show_tail(session)
    return BootError(message)


def _topology_boot(cfg: Config, ws: Workspace, imgs: Images, flavour: str, xen_cmd: str,
                   kvm: bool, results: dict[str, Any]) -> pci.Topology:
    """Boot without passthrough options and read the VM's PCI topology from the probe."""
    plain = cmdline.dom0_cmdline(cfg, flavour, None, DOM0_CONSOLE, passthrough=False)
    first = run_qemu(qemu_argv(cfg, imgs, xen_cmd, plain, kvm), ws.log("boot-topology"),
                     milestones(()), cfg.boot.timeout)
    results["topology_boot"] = _session_json(first)
    if not first.watch.ok:
        raise _failed(ws, results, _fail_message(first, plain, "boot (topology run)"), first)
    topo = topology(first.report, boot_dir(ws) / "sysfs-topology")
    problem = vm_mismatch(cfg, topo)
    if problem:
        results["reason"] = problem
        raise _failed(ws, results, f"boot: {problem}; console: {display(first.log)}")
    return topo


@metadata.recorded("boot", BootError)
def boot(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """Boot the built Xen + dom0 in QEMU; pass only when dom0 came up, pciback seized every
    passthrough device and dom0 powered off. Returns (and records) the results.

    ``verdict`` is ``running`` in boot.json and the metadata stage from the start (a killed
    boot leaves no stale verdict); however the boot ends it records its verdict: a failure
    before QEMU starts (no QEMU, an unreadable hypervisor, a probe that cannot be built) as
    ``fail`` with its one-line ``reason``, Ctrl-C or SIGTERM as ``interrupted``."""
    results: dict[str, Any] = {"verdict": "running"}
    _publish(ws, results)
    try:
        return _boot(cfg, ws, results)
    except BaseException as exc:
        if results.get("verdict") == "running":  # nothing recorded a verdict yet
            verdict, reason = metadata.outcome(exc)
            results.update(verdict=verdict, reason=reason.removeprefix("boot: "))
            with contextlib.suppress(OSError):  # out/ refuses writes: exc says more
                _publish(ws, results)
        raise


def _boot(cfg: Config, ws: Workspace, results: dict[str, Any]) -> dict[str, Any]:
    """:func:`boot`'s work; *results* is what boot.json records (published as it goes)."""
    if cfg.kernel is None:
        raise BootError("doit boot needs a dom0 kernel: configure [kernel]")
    for entry in cfg.passthrough.devices:
        pci.parse_device(entry)  # a typo is reported before anything boots
    imgs = images(cfg, ws)
    flavour = cmdline.flavour(cfg, ws)
    kvm = kvm_usable()
    xen_cmd = cmdline.xen_cmdline(cfg, XEN_CONSOLE)
    results.update({"accel": "kvm" if kvm else "tcg", "flavour": flavour,
                    "xen": str(imgs.xen), "kernel": str(imgs.kernel), "xen_cmdline": xen_cmd})
    _publish(ws, results)
    guests = guest.GuestBoot.of(cfg, ws)  # [boot] guest: start [[guests]] under dom0 too
    topo: pci.Topology | None = None
    dom0_cmd: str | None
    try:
        dom0_cmd = cmdline.dom0_cmdline(cfg, flavour, None, DOM0_CONSOLE)
        if guests is not None:
            guests.prepare(None)
    except DeviceError:  # a path for hide= or to realign, a BDF for XenLinux guestdev=
        dom0_cmd = None
    if dom0_cmd is None:
        topo = _topology_boot(cfg, ws, imgs, flavour, xen_cmd, kvm, results)
        dom0_cmd = cmdline.dom0_cmdline(cfg, flavour, topo, DOM0_CONSOLE)
        if guests is not None:
            guests.prepare(topo)
    planned = expected_bdfs(cfg, topo)
    seize = list(dict.fromkeys(b for group in planned.values() for b in group))
    results["dom0_cmdline"] = dom0_cmd
    results["expected"] = {k: [str(b) for b in v] for k, v in planned.items()}
    steps, machine = milestones(seize), cfg
    if guests is not None:  # the Debian dom0 with the toolstack instead of the probe
        imgs = guests.images(imgs, boot_dir(ws) / "dom0-guests.cpio.gz")
        steps, machine = guests.steps(steps), guests.machine(cfg)
    session = run_qemu(qemu_argv(machine, imgs, xen_cmd, dom0_cmd, kvm), ws.log("boot"),
                       steps, cfg.boot.timeout)
    results.update(_session_json(session))
    results["pciback"] = list(session.report.pciback)
    gd = guestdev_log(session.console)
    gd_problems, gd_warnings = guestdev_problems(cfg, gd)
    if gd.lines:
        results["guestdev"] = gd.json()
    if gd_warnings:
        results["warnings"] = gd_warnings
    guest_problem = guests.judge(session, results) if guests is not None else None
    if not session.watch.ok:
        message = _fail_message(session, dom0_cmd, also=gd_problems)
        if guest_problem and guests is not None and guests.owns(session.watch.missed):
            message = f"boot: {guest_problem}; console: {display(session.log)}"
        raise _failed(ws, results, message, session)
    seen = topology(session.report, boot_dir(ws) / "sysfs")
    results["devices"] = {str(d.bdf): {"path": str(d.path) if d.path else None,
                                       "driver": d.driver} for d in seen.devices}
    # what each entry named in this boot (device paths too, when guestdev= took them)
    results["expected"] = named(cfg, seen)
    problems = [*gd_problems, verify(cfg, session, seen, planned), guest_problem]
    problem = "; ".join(p for p in problems if p)
    if problem:
        results["reason"] = problem
        raise _failed(ws, results, f"boot: {problem} (dom0 cmdline: {dom0_cmd}); "
                                   f"console: {display(session.log)}")
    iommu = next(h.line for h in session.watch.hits if h.name == "Xen IOMMU")
    results["iommu"] = "enabled" if iommu.endswith("enabled") else "disabled"
    results["verdict"] = "pass"
    _publish(ws, results)
    times = ", ".join(f"{h.name} {h.seconds:.1f}s" for h in session.watch.hits)
    print(f"boot: PASS in {session.seconds:.0f} s ({results['accel']}): {times}")
    if results["iommu"] == "disabled" and cfg.passthrough.devices:
        print("boot: warning: Xen reports I/O virtualisation disabled: pciback holds the "
              "devices, but no HVM guest could use them (q35 needs -device intel-iommu in "
              "[boot] devices)")
    for text in gd_warnings:
        print(f"boot: warning: {text}")
    for line in guest.summary_lines(results):
        print(f"boot: {line}")
    print(f"boot: console log {display(session.log)}")
    return results


def fingerprint(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """What decides a boot's outcome, cheaply: the artifacts' identity, the command lines'
    inputs, the QEMU machine and devices, and the probe."""
    try:
        kernel = _identity(kernel_image(ws))
    except BootError:
        kernel = None
    try:
        xen = _identity(hypervisor(cfg, ws))
    except BootError:
        xen = None
    try:
        flavour = cmdline.flavour(cfg, ws)
    except DeviceError:
        flavour = None
    return {
        "version": FINGERPRINT_VERSION,
        "kernel": kernel, "xen": xen, "probe": probe.identity(), "flavour": flavour,
        "guest": guest.identity(cfg),
        "xen_cmdline": cmdline.xen_cmdline(cfg, XEN_CONSOLE),
        "dom0_cmdline": cfg.install.dom0_cmdline,
        "passthrough": [list(cfg.passthrough.devices), cfg.passthrough.reassign],
        "qemu": [cfg.boot.qemu, cfg.boot.machine, list(cfg.boot.devices), cfg.boot.memory,
                 kvm_usable()],
    }


# -------------------------------------------------------------------------------------- CLI
def summary(ws: Workspace) -> str:
    """The last boot's verdict in one line (what ``make demo`` ends with)."""
    res = read_json(ws.out / "boot.json")
    if not isinstance(res, dict):
        return f"boot: no result in {display(ws.out / 'boot.json')}: run `doit boot`"
    console = f"; console: {res['console']}" if res.get("console") else ""
    verdict = res.get("verdict")
    if verdict == "running":
        return ("boot: no verdict: a `doit boot` is running, or was killed before it finished "
                f"(run it again){console}")
    if verdict != "pass":
        missed = [m for m in res.get("milestones", []) if m.get("status") == "missed"]
        why = (f"{missed[0]['name']} missed ({missed[0].get('detail')})" if missed
               else res.get("reason") or "see the log")
        if verdict == "interrupted":
            why += "; run `doit boot` again"
        return f"boot: FAIL: {why}{console}"
    seized = ", ".join(f"{entry} = {' '.join(bdfs)}" for entry, bdfs in
                       res.get("expected", {}).items()) or "no passthrough devices"
    took = f" in {res['seconds']:.0f} s" if isinstance(res.get("seconds"), int | float) else ""
    return f"boot: PASS{took} ({res.get('accel')}): pciback seized {seized}{console}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.boot [CONFIG]``: print the last boot's verdict for CONFIG."""
    from pipeline.config import choose_path, load
    from pipeline.errors import XenpipeError, format_error

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print("usage: python -m pipeline.boot [CONFIG]: the last `doit boot` verdict of CONFIG "
              "(default: $XENPIPE_CONFIG, else configs/default.toml)")
        return 0
    try:
        if len(args) > 1:
            raise XenpipeError(f"python -m pipeline.boot takes one CONFIG, got {len(args)}: "
                               f"{' '.join(args)}")
        cfg = load(choose_path(args[0] if args else None))
    except XenpipeError as exc:
        print(format_error(exc), file=sys.stderr)
        return 1
    ws = Workspace(cfg.workspace)
    line = summary(ws)
    print(line)
    for extra in guest.summary_lines(read_json(ws.out / "boot.json")):
        print(f"boot: {extra}")
    return 0 if line.startswith("boot: PASS") else 1
