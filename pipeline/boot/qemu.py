"""What QEMU boots and how: the images (Xen decompressed once, the dom0 kernel, the probe),
KVM or TCG, the QEMU command line, and one QEMU run watched into a :class:`Session`."""

from __future__ import annotations

import gzip
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect

from pipeline import proc
from pipeline.boot import probe
from pipeline.boot.milestone import Milestone, Watch, watch
from pipeline.config import Config, display
from pipeline.errors import BootError
from pipeline.files import atomic_write
from pipeline.workspace import Key, Workspace

CPU = "qemu64"  # -cpu max exposes SMAP, which crashes a PV dom0 under TCG
# an HVM guest needs Xen's HVM support: qemu64 offers SVM, and +npt its nested paging (HAP),
# without which Debian's Xen (built without CONFIG_SHADOW_PAGING) starts no HVM guest:
# xl create says "neither hap nor shadow paging available" (README, "HVM guests")
HVM_CPU = f"{CPU},+svm,+npt"
TAIL_LINES = 30
EXIT_GRACE = 30.0  # seconds QEMU may take to exit after dom0 powered off


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


def file_identity(path: Path) -> list[Any] | None:
    """*path*, its size and mtime (what a fingerprint compares), or None when it is gone."""
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


def hubports(devices: Sequence[str]) -> list[str]:
    """The ``-netdev`` options for [boot] devices' ``netdev=NAME``: each NAME a port of QEMU's
    internal hub 0, so the NICs on it reach each other and nothing else (no user or tap
    netdev: no packet leaves QEMU)."""
    names = re.findall(r"(?:^|,)netdev=([^,]+)", ",".join(devices))
    return [arg for name in dict.fromkeys(names)
            for arg in ("-netdev", f"hubport,hubid=0,id={name}")]


def qemu_argv(cfg: Config, imgs: Images, xen_cmd: str, dom0_cmd: str, kvm: bool) -> list[str]:
    """The QEMU command line: Xen as the multiboot kernel, dom0 and the probe as modules
    (``-initrd 'KERNEL ARGS,INITRD'``), serial on stdio, no reboot, [boot] devices (their
    ``netdev=`` names joined by QEMU's internal hub)."""
    module = qemu_option(f"{imgs.kernel} {dom0_cmd}")
    return machine_argv(cfg, kvm, ["-kernel", str(imgs.xen), "-append", xen_cmd,
                                   "-initrd", f"{module},{qemu_option(str(imgs.initrd))}"])


def accel(cfg: Config, kvm: bool) -> str:
    """QEMU's ``-accel``: KVM, else TCG with one host thread per vCPU (``thread=multi``) or
    one for all (``[boot] tcg = "single"``); bench/boot.py compares the two."""
    if kvm:
        return "kvm"
    return f"tcg,thread={cfg.boot.tcg}"


def cpu(cfg: Config, kvm: bool) -> str:
    """QEMU's ``-cpu``: :data:`HVM_CPU` under TCG when a ``[[guests]]`` entry is HVM (QEMU's
    TCG emulates SVM and its nested paging; under KVM the host decides), else :data:`CPU`."""
    if not kvm and any(g.type == "hvm" for g in cfg.guests):
        return HVM_CPU
    return CPU


def machine_argv(cfg: Config, kvm: bool, boot: Sequence[str]) -> list[str]:
    """QEMU with the machine, serial on stdio, no reboot (a reboot ends QEMU), what to boot
    (*boot*: ``-kernel ...`` or a disk) and [boot] devices."""
    argv = [cfg.boot.qemu, "-machine", cfg.boot.machine, "-accel", accel(cfg, kvm),
            "-cpu", cpu(cfg, kvm), "-smp", str(cfg.boot.cpus), "-m", str(cfg.boot.memory),
            "-nodefaults", "-nographic", "-serial", "stdio", "-no-reboot", *boot]
    argv += hubports(cfg.boot.devices)
    for dev in cfg.boot.devices:
        argv += ["-device", dev]
    return argv


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
                                  maxread=65536, echo=False,
                                  preexec_fn=proc.die_with_parent())
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

