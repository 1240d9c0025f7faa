"""doit boot: QEMU command line, console milestones, the probe initramfs and its dump.

The fast tests replay console transcripts recorded from real QEMU boots of the demo
(tests/data/boot/, captured by this stage: Debian's Xen 4.17, a tinyconfig + xen-dom0 6.1
dom0, q35 + intel-iommu) through a real process and real pexpect. The slow tests build and boot
the real thing.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from pipeline import boot, config, pci
from pipeline import passthrough as cmdline
from pipeline.boot import probe
from pipeline.errors import BootError, ConfigError, format_error
from pipeline.files import write_json
from pipeline.workspace import Workspace

from .support.boot import DATA, private_boot, read
from .support.doit import run_doit, write_config
from .support.realkernel import RealKernel
from .support.tools import REPO, need

E1000 = pci.parse_bdf("00:03.0")
E1000E = pci.parse_bdf("01:00.0")
MISSING = pci.parse_bdf("00:1f.6")
PATH = "PNP0A08:0-1c.0-0.0"

DEMO_BODY = f"""
[sources.linux]
vcs = "tarball"
url = "/usr/src/linux-source-6.1.tar.xz"

[kernel]
source = "linux"
base = "tinyconfig"
fragments = ["configs/kernel/xen-dom0.config"]

[install]
xen_cmdline = "iommu=1 dom0_mem=1024M"
dom0_cmdline = "console=hvc0"

[passthrough]
devices = ["00:03.0", "{PATH}"]

[boot]
xen = "/boot/xen-4.17-amd64.gz"
devices = ["intel-iommu", "e1000,addr=03.0", "pcie-root-port,id=rp1,bus=pcie.0,addr=1c.0",
           "e1000e,bus=rp1"]
timeout = 60
"""


def demo_cfg(tmp_path: Path, body: str = DEMO_BODY) -> config.Config:
    return config.load(write_config(tmp_path, body))


@pytest.fixture
def replay(tmp_path: Path) -> Iterator[Callable[..., pexpect.spawn]]:
    """Start a real process printing a recorded console: ``cat`` (it ends like QEMU exiting),
    or with *hold* a shell that keeps the console open afterwards (a hung boot). *upto* cuts
    the transcript before its first occurrence. Every process is stopped afterwards."""
    children: list[pexpect.spawn] = []

    def start(name: str, hold: bool = False, upto: str | None = None) -> pexpect.spawn:
        path = DATA / name
        if upto is not None:
            text = read(name)
            path = tmp_path / f"cut-{name}"
            with open(path, "w", newline="") as f:
                f.write(text[: text.index(upto)])
        argv = ["sh", "-c", 'cat "$1"; sleep 60', "sh", str(path)] if hold else ["cat", str(path)]
        children.append(pexpect.spawn(argv[0], argv[1:], encoding="utf-8",
                                      codec_errors="replace"))
        return children[-1]

    yield start
    for child in children:
        child.close(force=True)


def names(w: boot.Watch) -> list[str]:
    return [h.name for h in w.hits]


# ------------------------------------------------------------------------ QEMU command line
def test_qemu_option_doubles_every_comma():
    assert boot.qemu_option("a,b,,c") == "a,,b,,,,c"
    assert boot.qemu_option("no commas") == "no commas"


def test_qemu_argv_passes_dom0_and_probe_as_modules(tmp_path):
    cfg = demo_cfg(tmp_path)
    imgs = boot.Images(Path("/x/xen-4.17-amd64"), Path("/o/vmlinuz-6.1,x"), Path("/b/p,i.gz"))
    argv = boot.qemu_argv(cfg, imgs, "console=com1 iommu=1", "console=hvc0 guestdev=A,B",
                          kvm=False)
    assert argv[0] == "qemu-system-x86_64"
    opt = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("-")}
    assert opt["-kernel"] == "/x/xen-4.17-amd64"
    assert opt["-append"] == "console=com1 iommu=1"
    # the one unescaped comma separates the modules; every literal comma is doubled
    assert opt["-initrd"] == "/o/vmlinuz-6.1,,x console=hvc0 guestdev=A,,B,/b/p,,i.gz"
    assert re.split(r"(?<!,),(?!,)", opt["-initrd"]) == [
        "/o/vmlinuz-6.1,,x console=hvc0 guestdev=A,,B", "/b/p,,i.gz"]
    assert opt["-machine"] == "q35" and opt["-cpu"] == "qemu64"
    assert opt["-accel"] == "tcg,thread=multi" and opt["-smp"] == str(cfg.boot.cpus)
    assert opt["-m"] == "2048"
    assert {"-nographic", "-no-reboot", "-nodefaults"} <= set(argv)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-device"] == list(cfg.boot.devices)
    kvm = boot.qemu_argv(cfg, imgs, "x", "y", kvm=True)
    assert kvm[kvm.index("-accel") + 1] == "kvm" and kvm[kvm.index("-cpu") + 1] == "qemu64"


def test_boot_cpus_and_tcg_threads_reach_qemu(tmp_path):
    """[boot] cpus is QEMU's -smp; tcg = "single" runs all vCPUs on one host thread (what
    bench/boot.py compares with one thread per vCPU); KVM takes no TCG option."""
    cfg = demo_cfg(tmp_path, DEMO_BODY.replace("[boot]\n", '[boot]\ncpus = 2\ntcg = "single"\n'))
    imgs = boot.Images(Path("/x/xen"), Path("/o/vmlinuz"), Path("/b/p.gz"))
    argv = boot.qemu_argv(cfg, imgs, "x", "y", kvm=False)
    assert argv[argv.index("-smp") + 1] == "2"
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"
    kvm = boot.qemu_argv(cfg, imgs, "x", "y", kvm=True)
    assert kvm[kvm.index("-accel") + 1] == "kvm" and kvm[kvm.index("-smp") + 1] == "2"


def test_kvm_only_with_a_usable_device_and_vmx_or_svm(tmp_path):
    dev, info = tmp_path / "kvm", tmp_path / "cpuinfo"
    dev.write_text("")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 lm\n")
    assert not boot.kvm_usable(info, dev)
    info.write_text("processor\t: 0\nflags\t\t: fpu vmx lm\n")
    assert boot.kvm_usable(info, dev)
    assert not boot.kvm_usable(info, tmp_path / "no-kvm")
    info.write_text("processor\t: 0\nflags\t\t: fpu svm lm\n")
    assert boot.kvm_usable(info, dev)


def test_gzipped_hypervisor_is_decompressed_once(tmp_path):
    elf = b"\x7fELF" + os.urandom(4000)
    gz = tmp_path / "xen-4.17-amd64.gz"
    gz.write_bytes(gzip.compress(elf))
    cache = tmp_path / "cache"
    out = boot.loadable(gz, cache)
    assert out == cache / "xen-4.17-amd64" and out.read_bytes() == elf
    stamp = out.stat().st_ino
    assert boot.loadable(gz, cache).stat().st_ino == stamp  # cached: not rewritten
    gz.write_bytes(gzip.compress(elf + b"new"))
    os.utime(gz, ns=(1, 10**18))
    assert boot.loadable(gz, cache).read_bytes() == elf + b"new"
    plain = tmp_path / "xen"
    plain.write_bytes(elf)
    assert boot.loadable(plain, cache) == plain  # already an ELF: used in place
    bad = tmp_path / "broken.gz"
    bad.write_bytes(gzip.compress(elf)[:100])
    with pytest.raises(BootError, match="cannot decompress"):
        boot.loadable(bad, cache)


# ------------------------------------------------------------------------ command lines
def test_boot_and_install_share_the_dom0_command_line(tmp_path):
    cfg = demo_cfg(tmp_path)
    topo = boot.topology(probe.parse(read("pass.log")), tmp_path / "sysfs")
    line = cmdline.dom0_cmdline(cfg, "mainline", topo, boot.DOM0_CONSOLE)
    assert line == ("console=hvc0 earlyprintk=xen xen-pciback.hide=(0000:00:03.0)(0000:01:00.0)")
    assert cmdline.dom0_cmdline(cfg, "mainline", topo) == (
        "console=hvc0 xen-pciback.hide=(0000:00:03.0)(0000:01:00.0)")
    assert cmdline.dom0_cmdline(cfg, "mainline", None, passthrough=False) == "console=hvc0"
    with pytest.raises(pci.DeviceError, match="needs this machine's PCI topology"):
        cmdline.dom0_cmdline(cfg, "mainline", None)
    # guestdev= takes the path as written, xen-pciback.hide= the BDF: no topology needed
    assert cmdline.dom0_cmdline(cfg, "guestdev", None).endswith(
        f" xen-pciback.hide=(0000:00:03.0) guestdev={PATH}")
    assert cmdline.xen_cmdline(cfg, boot.XEN_CONSOLE) == (
        "console=com1 com1=115200 iommu=1 dom0_mem=1024M")


# --------------------------------------------------------------------------- the probe
def test_probe_initramfs_holds_busybox_init_and_console(tmp_path):
    need("cpio")
    need("busybox")
    dest = probe.build(tmp_path / "probe.cpio.gz")
    listing = subprocess.run(["cpio", "-itv"], input=gzip.decompress(dest.read_bytes()),
                             capture_output=True, check=True).stdout.decode()
    rows = {ln.split()[-1]: ln for ln in listing.splitlines()}
    assert set(rows) == {"bin", "dev", "dev/console", "bin/busybox", "init"}
    assert rows["dev/console"].startswith("crw-------") and re.search(r"\b5,\s*1\b",
                                                                      rows["dev/console"])
    assert rows["init"].startswith("-rwxr-xr-x")
    mtime = dest.stat().st_mtime_ns
    assert probe.build(dest).stat().st_mtime_ns == mtime  # same bytes: left alone
    assert probe.archive(b"x") == probe.archive(b"x")  # deterministic


def test_probe_init_is_valid_shell():
    sh = need("busybox")
    subprocess.run([sh, "sh", "-n", "-c", probe.INIT], check=True)


def test_probe_dump_round_trips_to_the_vm_topology(tmp_path):
    report = probe.parse(read("pass.log"))
    assert report.started and report.done
    assert report.pciback == ("0000:00:03.0", "0000:01:00.0")
    assert [(r.name, r.hid, r.uid) for r in report.roots] == [("pci0000:00", "PNP0A08", "0")]
    topo = boot.topology(report, tmp_path / "sysfs")
    dev = topo.get(E1000E)
    assert dev is not None and dev.driver == "pciback" and dev.ids == "8086:10d3"
    assert str(dev.path) == "PNP0A08:0-1c.0-00.0"  # two hops: root port, then the NIC
    assert dev.parents == (pci.parse_bdf("00:1c.0"),)
    assert topo.lookup(pci.parse_path(PATH)).bdf == E1000E
    assert topo.get(E1000).driver == "pciback"
    assert topo.get(pci.parse_bdf("00:1c.0")).is_bridge
    # rebuilt in place: a second dump replaces the first tree
    assert boot.topology(report, tmp_path / "sysfs").devices == topo.devices


def test_probe_parse_ignores_kernel_noise_and_broken_lines():
    text = ("[    1.0] random: crng init done\r\r\n"
            f"{probe.MARK} init started\r\r\n"
            f"{probe.MARK} pciback 0000:00:03.0\r\r\n"
            f"{probe.MARK} pciback\r\r\n"
            f"{probe.MARK} dev ../../etc/passwd class=0x0 driver=x\r\r\n"
            f"{probe.MARK} dev pci0000:00/0000:00:03.0 class=0x020000 vendor=0x8086 "
            "device=0x100e driver=pciback\r\r\n"
            f"{probe.MARK} dev pci0000:00/0000:00:1f.0 class=0x060100 vendor=0x8086 "
            "device=0x2918 driver=-\r\r\n")
    rep = probe.parse(text)
    assert rep.started and not rep.done
    assert rep.pciback == ("0000:00:03.0",)
    assert [(d.name, d.driver) for d in rep.devices] == [("0000:00:03.0", "pciback"),
                                                         ("0000:00:1f.0", None)]


# -------------------------------------------------------------------------- milestones
def test_recorded_boot_meets_every_milestone_in_order(replay):
    w = boot.watch(replay("pass.log"), boot.milestones([E1000, E1000E]), timeout=20)
    assert w.ok, w.reason
    assert names(w) == [
        "Xen banner", "Xen IOMMU", "dom0 construction", "Linux banner",
        "pciback seized 0000:00:03.0", "pciback seized 0000:01:00.0", "init started",
        "0000:00:03.0 under pciback", "0000:01:00.0 under pciback", "probe done", "power-off"]
    times = [h.seconds for h in w.hits]
    assert times == sorted(times)
    lines = {h.name: h.line for h in w.hits}
    assert lines["Xen IOMMU"] == "(XEN) I/O virtualisation enabled"
    assert lines["pciback seized 0000:01:00.0"].endswith(
        "pciback 0000:01:00.0: xen_pciback: seizing device")
    assert "\r" not in "".join(lines.values())
    assert [r["status"] for r in w.records()] == ["passed"] * 11


def test_guestdev_boot_recorded_with_doubled_commas(replay):
    """A dom0 with the guestdev= patch (patches/linux, flavour guestdev): the first line of
    the log is the QEMU command line, with the commas of guestdev= doubled in -initrd; the
    kernel got them single."""
    text = read("guestdev.log")
    argv = shlex.split(text.splitlines()[0].removeprefix("$ "))
    module = re.split(r"(?<!,),(?!,)", argv[argv.index("-initrd") + 1])[0]
    assert module.endswith("guestdev=PNP0A08:0-03.0,,PNP0A08:0-1c.0-0.0")
    kernel_args = re.search(r"Kernel command line: ([^\r\n]*)", text)[1]
    assert kernel_args == module.split(" ", 1)[1].replace(",,", ",")
    w = boot.watch(replay("guestdev.log"), boot.milestones([E1000, E1000E]), timeout=20)
    assert w.ok, w.reason
    assert boot.seized_in(text) == [E1000, E1000E]


def test_devices_of_one_step_may_come_in_any_order(replay):
    w = boot.watch(replay("pass.log"), boot.milestones([E1000E, E1000]), timeout=20)
    assert w.ok, w.reason


def test_a_device_pciback_never_seized_is_the_missed_milestone(replay):
    w = boot.watch(replay("wrong-bdf.log"), boot.milestones([MISSING]), timeout=20)
    assert not w.ok
    assert w.missed.missed == "pciback did not seize 0000:00:1f.6"
    assert w.reason == "init started came first"
    assert names(w) == ["Xen banner", "Xen IOMMU", "dom0 construction", "Linux banner"]
    recs = w.records()
    assert recs[4] == {"name": "pciback seized 0000:00:1f.6", "status": "missed",
                       "detail": w.reason}
    assert [r["status"] for r in recs[5:]] == ["pending"] * 4


def test_kernel_panic_ends_the_watch(replay):
    w = boot.watch(replay("kernel-panic.log", hold=True), boot.milestones([E1000]), timeout=30)
    assert names(w)[-1] == "pciback seized 0000:00:03.0"
    assert w.missed.name == "init started"
    assert w.reason == ("the dom0 kernel panicked: Kernel panic - not syncing: No working init "
                        "found.  Try passing init= option to kernel. See Linux "
                        "Documentation/admin-guide/init.rst for guidance.")


def test_dom0_crash_ends_the_watch(replay):
    """Recorded with -cpu max: why boot.CPU is qemu64."""
    w = boot.watch(replay("dom0-crash.log", hold=True), boot.milestones([]), timeout=30)
    assert names(w) == ["Xen banner", "Xen IOMMU", "dom0 construction"]
    assert w.missed.missed == "the dom0 kernel printed nothing"
    assert w.reason == ("Xen reports dom0 crashed: (XEN) Hardware Dom0 crashed: rebooting "
                        "machine in 5 seconds.")


def test_xen_panic_ends_the_watch(replay):
    w = boot.watch(replay("xen-panic.log", hold=True), boot.milestones([]), timeout=30)
    assert names(w) == ["Xen banner"]
    assert w.missed.name == "Xen IOMMU"
    assert w.reason == ("Xen panicked: (XEN) Panic on CPU 0: dom0 kernel not specified. "
                        "Check bootloader configuration")


def test_a_hung_console_times_out(replay):
    """The console stays open and says nothing after its last line: the watch ends at the
    timeout, naming the first milestone it did not see. How far the replay got within 1 s
    depends on the machine's load (it is read and matched inside that second; under -n auto
    it once stopped before the last line), so the guard is the order: the milestones seen
    are the first ones of the boot, the missed one comes next, no later than the transcript's
    end (init started), and the console is still open (a timeout, not QEMU exiting)."""
    child = replay("pass.log", hold=True, upto="xenpipe-probe: init")
    w = boot.watch(child, boot.milestones([E1000]), timeout=1)
    order = ["Xen banner", "Xen IOMMU", "dom0 construction", "Linux banner",
             "pciback seized 0000:00:03.0", "init started"]
    seen = names(w)
    assert seen == order[:len(seen)] and len(seen) < len(order), seen
    assert w.missed.name == order[len(seen)]
    assert w.reason == "nothing within the [boot] timeout of 1 s"
    assert child.isalive()


def test_qemu_exiting_early_is_reported(replay):
    child = replay("pass.log", upto="Linux version")
    w = boot.watch(child, boot.milestones([]), timeout=20)
    assert w.missed.name == "Linux banner"
    # the seconds depend on the machine's load: the order and the message are the guard
    assert re.fullmatch(r"QEMU exited after \d+ s: about to get started\.\.\.", w.reason), w.reason


def test_qemu_errors_end_the_boot_with_qemus_message(tmp_path):
    qemu = need("qemu-system-x86_64")
    log = tmp_path / "boot.log"
    s = boot.run_qemu([qemu, "-nodefaults", "-nographic", "-device", "no-such-nic"], log,
                      boot.milestones([]), timeout=30)
    assert s.watch.missed.name == "Xen banner"
    assert re.match(r"QEMU exited after \d+ s: ", s.watch.reason), s.watch.reason
    assert "'no-such-nic' is not a valid device model name" in s.watch.reason
    assert log.read_text().startswith(f"$ {qemu} -nodefaults -nographic -device no-such-nic\n")
    with pytest.raises(BootError, match="no-such-qemu: cannot start: .*qemu-system-x86"):
        boot.run_qemu(["no-such-qemu"], log, boot.milestones([]), timeout=30)


def test_seized_devices_are_read_from_the_console():
    assert boot.seized_in(read("pass.log")) == [E1000, E1000E]
    assert boot.seized_in("pciback: seizing device 0000:00:19.0\r\n") == [
        pci.parse_bdf("00:19.0")]  # XenLinux 2.6.18 wording


# ------------------------------------------------------------------------ stage (no QEMU)
def test_boot_without_a_built_kernel_says_what_to_run(tmp_path):
    cfg = demo_cfg(tmp_path)
    with pytest.raises(BootError, match=r"no dom0 kernel in .*vmlinuz-\*\): run `doit build`"):
        boot.boot(cfg, Workspace(cfg.workspace))


def test_boot_needs_a_hypervisor(tmp_path):
    cfg = demo_cfg(tmp_path, DEMO_BODY.replace('xen = "/boot/xen-4.17-amd64.gz"\n', ""))
    ws = Workspace(cfg.workspace)
    with pytest.raises(BootError, match=r"configure \[xen\] to build one, or set \[boot\] xen"):
        boot.images(cfg, ws)
    cfg = demo_cfg(tmp_path, DEMO_BODY.replace("/boot/xen-4.17-amd64.gz", "/nonexistent.gz"))
    with pytest.raises(BootError, match="/nonexistent.gz not found"):
        boot.images(cfg, ws)


def built(tmp_path: Path, body: str = DEMO_BODY) -> tuple[config.Config, Workspace]:
    """The demo config with a built kernel, a hypervisor file (not gzipped: QEMU's -kernel
    takes it as it is) and a QEMU that is not installed."""
    (tmp_path / "xen").write_bytes(b"\x7fELF xen")
    body = body.replace('xen = "/boot/xen-4.17-amd64.gz"',
                        f'xen = "{tmp_path / "xen"}"\nqemu = "no-such-qemu-system-x86_64"')
    body = body.replace("[kernel]\n", '[kernel]\nflavour = "mainline"\n')
    cfg = demo_cfg(tmp_path, body)
    ws = Workspace(cfg.workspace)
    ws.out.mkdir(parents=True)
    (ws.out / "vmlinuz-6.1.0").write_bytes(b"kernel")
    return cfg, ws


def broken_hypervisor(tmp_path: Path, ws: Workspace) -> str:
    (tmp_path / "xen").write_bytes(gzip.compress(b"\x7fELF" + os.urandom(4000))[:64])
    return f"{tmp_path / 'xen'}: cannot decompress"


def probe_unbuildable(tmp_path: Path, ws: Workspace) -> str:
    boot.boot_dir(ws).write_text("a file where the boot's directory belongs")
    return f"{boot.boot_dir(ws)}: File exists"


@pytest.mark.parametrize("breakage", [
    lambda tmp_path, ws: "no-such-qemu-system-x86_64: cannot start: ",
    broken_hypervisor, probe_unbuildable], ids=["no-qemu", "hypervisor", "probe"])
def test_a_boot_that_fails_before_qemu_starts_records_why(tmp_path, capsys, breakage):
    """boot.json and metadata.json's boot stage get the verdict fail and the one-line reason
    (not the "running" the boot starts with), and python -m pipeline.boot prints it."""
    need("busybox")
    cfg, ws = built(tmp_path)
    write_json(ws.out / "boot.json", {"verdict": "pass", "accel": "tcg"})  # the last boot's
    expect = breakage(tmp_path, ws)
    with pytest.raises((BootError, OSError)) as exc:
        boot.boot(cfg, ws)
    error = format_error(exc.value)
    assert expect in error
    res = json.loads((ws.out / "boot.json").read_text())
    assert res["verdict"] == "fail" and res["reason"] == error.removeprefix("xenpipe: error: ")
    stage = json.loads((ws.out / "metadata.json").read_text())["stages"]["boot"]
    assert stage["status"] == "fail" and stage["verdict"] == "fail"
    assert stage["reason"] == res["reason"] and expect in stage["error"]
    capsys.readouterr()
    assert boot.main([str(cfg.path)]) == 1
    assert capsys.readouterr().out == f"boot: FAIL: {res['reason']}\n"


def test_doit_boot_without_qemu_is_one_line_and_recorded(tmp_path):
    need("busybox")
    cfg, ws = built(tmp_path)
    res = run_doit("-s", "boot", config=cfg.path, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("xenpipe: error: no-such-qemu-system-x86_64: cannot start: ")
    assert line.endswith("(apt-get install qemu-system-x86)")
    shown = subprocess.run([sys.executable, "-m", "pipeline.boot", str(cfg.path)], cwd=REPO,
                           capture_output=True, text=True)
    assert shown.returncode == 1
    assert shown.stdout == f"boot: FAIL: {line.removeprefix('xenpipe: error: ')}\n"


@pytest.mark.parametrize("args, status, out", [
    (["--help"], 0, "usage: python -m pipeline.boot [CONFIG]"),
    (["a.toml", "b.toml"], 1, "xenpipe: error: python -m pipeline.boot takes one CONFIG, got 2"),
])
def test_boot_summary_arguments(args, status, out):
    res = subprocess.run([sys.executable, "-m", "pipeline.boot", *args], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == status
    assert (res.stdout + res.stderr).startswith(out) and (res.stdout + res.stderr).count("\n") == 1


def test_a_malformed_device_fails_before_anything_boots(tmp_path):
    with pytest.raises(ConfigError) as exc:  # refused as the config is loaded
        demo_cfg(tmp_path, DEMO_BODY.replace('"00:03.0"', '"00:3.0"'))
    assert '[passthrough] devices: bad PCI address "00:3.0"' in format_error(exc.value)


def test_verify_checks_the_seized_devices_against_the_paths(tmp_path):
    cfg = demo_cfg(tmp_path)
    console = read("pass.log")
    report = probe.parse(console)
    topo = boot.topology(report, tmp_path / "sysfs")
    session = boot.Session([], tmp_path / "boot.log", boot.Watch(), console, report, 1.0)
    planned = boot.expected_bdfs(cfg, topo)
    assert planned == {"00:03.0": (E1000,), PATH: (E1000E,)}
    assert boot.verify(cfg, session, topo, planned) is None
    moved = {**planned, PATH: (pci.parse_bdf("02:00.0"),)}
    assert "named 0000:02:00.0 in the first boot but 0000:01:00.0" in boot.verify(
        cfg, session, topo, moved)
    assert boot.expected_bdfs(cfg, None) == {"00:03.0": (E1000,)}


def test_devices_the_vm_lacks_are_named_after_the_topology_boot(tmp_path):
    topo = boot.topology(probe.parse(read("pass.log")), tmp_path / "sysfs")
    assert boot.vm_mismatch(demo_cfg(tmp_path), topo) is None
    cfg = demo_cfg(tmp_path, DEMO_BODY.replace('"00:03.0", ', '"00:1f.6", '))
    assert boot.vm_mismatch(cfg, topo) == (
        "00:1f.6 is not on the virtual machine, which has 00:00.0, 00:03.0, 00:1c.0, 00:1f.0, "
        "00:1f.2, 00:1f.3, 01:00.0 ([boot] devices adds more)")
    cfg = demo_cfg(tmp_path, DEMO_BODY.replace(PATH, "PNP0A08:0-1c.1-0.0"))
    assert boot.vm_mismatch(cfg, topo) == (
        "device path PNP0A08:0-1c.1-00.0 matches nothing: no device 1c.1 (hop 1) on the root "
        "bus of PNP0A08:0 (pci0000:00) (in the virtual machine, whose devices [boot] devices "
        "decides)")


def test_fingerprint_is_cheap_and_follows_its_inputs(tmp_path):
    cfg = demo_cfg(tmp_path)
    ws = Workspace(cfg.workspace)
    first = boot.fingerprint(cfg, ws)
    assert first == boot.fingerprint(cfg, ws)
    assert first["kernel"] is None  # nothing built yet: still a fingerprint, no error
    ws.out.mkdir(parents=True)
    (ws.out / "vmlinuz-6.1.0").write_bytes(b"k")
    assert boot.fingerprint(cfg, ws)["kernel"] != first["kernel"]
    other = demo_cfg(tmp_path, DEMO_BODY.replace('"00:03.0", ', ""))
    assert boot.fingerprint(other, ws)["passthrough"] != first["passthrough"]


def test_summary_line(tmp_path):
    cfg = demo_cfg(tmp_path)
    ws = Workspace(cfg.workspace)
    assert "no result" in boot.summary(ws)
    ws.out.mkdir(parents=True)
    res = {"verdict": "pass", "accel": "tcg", "console": "build/demo/logs/boot.log",
           "seconds": 18.4, "expected": {"00:03.0": ["0000:00:03.0"], PATH: ["0000:01:00.0"]},
           "milestones": [{"name": "power-off", "status": "passed", "seconds": 17.9}]}
    write_json(ws.out / "boot.json", res)
    assert boot.summary(ws) == (
        f"boot: PASS in 18 s (tcg): pciback seized 00:03.0 = 0000:00:03.0, {PATH} = "
        "0000:01:00.0; console: build/demo/logs/boot.log")
    res.update(verdict="fail", milestones=[{"name": "pciback seized 0000:00:03.0",
                                            "status": "missed", "detail": "init started came "
                                            "first"}])
    write_json(ws.out / "boot.json", res)
    assert boot.summary(ws) == ("boot: FAIL: pciback seized 0000:00:03.0 missed (init started "
                                "came first); console: build/demo/logs/boot.log")
    write_json(ws.out / "boot.json", {"verdict": "running"})  # killed, or still running
    assert boot.summary(ws) == ("boot: no verdict: a `doit boot` is running, or was killed "
                                "before it finished (run it again)")
    write_json(ws.out / "boot.json", {"verdict": "interrupted", "reason": "interrupted by SIGINT",
                                      "console": "build/demo/logs/boot.log"})
    assert boot.summary(ws) == ("boot: FAIL: interrupted by SIGINT; run `doit boot` again; "
                                "console: build/demo/logs/boot.log")


# ----------------------------------------------------------------------- real boots (slow)
MAINLINE = ('frontend = "oldconfig"\n', 'frontend = "oldconfig"\nflavour = "mainline"\n')
PASSED = ["Xen banner", "Xen IOMMU", "dom0 construction", "Linux banner",
          "pciback seized 0000:00:03.0", "pciback seized 0000:01:00.0", "init started",
          "0000:00:03.0 under pciback", "0000:01:00.0 under pciback", "probe done", "power-off"]


GUEST_PASSED = ["Xen daemons started", "guest demo started", "guest demo listed its devices",
                "guest demo shut down", "guest demo started again",
                "guest demo listed its devices again", "guest demo shut down again",
                "0000:00:03.0 back in dom0", "0000:01:00.0 back in dom0"]
GUEST_RECORDS = [f"guest demo{again} {what} {bdf}" for again in ("", " again")
                 for bdf in ("0000:00:03.0", "0000:01:00.0") for what in ("sees", "uses")]


@pytest.mark.slow
def test_real_build_and_boot(real_kernel: RealKernel, real_rootfs: Path):  # noqa: F811
    """The issue's chain as `make demo` runs it: Debian's linux-source-6.1 + patches/linux
    (guestdev=) -> doit build (tinyconfig + the dom0 fragment) -> doit boot with Debian's Xen
    4.17 on q35 + intel-iommu, one NIC named by BDF and one by a two-hop device path: pciback
    seizes both, then dom0 (the Debian root with Xen's toolstack) starts the demo guest from
    the config doit install would write, and the guest's lspci -nn lists both NICs, their
    drivers bind, and each pings dom0's own NIC over QEMU's internal hub; the guest runs a
    second time with the same checks, then both NICs go back to dom0's e1000/e1000e; then
    `python -m pipeline.boot` prints the verdict, the guest's lspci lines and each device at
    work."""
    need("qemu-system-x86_64")
    need("busybox")
    rk = real_kernel
    assert rk.cfg.boot.guest is True  # real.toml is the demo's config
    with rk.lock():
        run_doit("forget", "boot", config=rk.config, env=rk.env)  # boot for real this time
        res = run_doit("boot", config=rk.config, env=rk.env, timeout=1800)
        assert res.returncode == 0, "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        again = run_doit("boot", config=rk.config, env=rk.env, timeout=600)
    assert "boot: PASS" in res.stdout
    assert again.returncode == 0 and "-- boot" in again.stdout  # up to date: no QEMU
    out = json.loads((rk.ws.out / "boot.json").read_text())
    assert out["verdict"] == "pass" and out["flavour"] == "guestdev" and out["iommu"] == "enabled"
    names = [m["name"] for m in out["milestones"]]
    assert names[:4] == PASSED[:4] and names[-9:] == ["power-off", *GUEST_RECORDS]
    assert [n for n in names if n in GUEST_PASSED] == GUEST_PASSED
    assert {m["status"] for m in out["milestones"]} == {"passed"}
    assert out["topology_boot"]["milestones"][-1]["name"] == "power-off"  # the guest names a path
    assert out["expected"] == {"00:03.0": ["0000:00:03.0"], PATH: ["0000:01:00.0"]}
    assert "guestdev=" in out["dom0_cmdline"] and PATH in out["dom0_cmdline"]
    assert out["pciback"] == ["0000:00:03.0", "0000:01:00.0"]
    assert out["devices"]["0000:01:00.0"] == {"path": "PNP0A08:0-1c.0-00.0", "driver": "pciback"}
    assert out["devices"]["0000:00:1c.0"]["driver"] == "pcieport"
    console = (rk.ws.logs / "boot.log").read_text(errors="replace")
    assert f"Kernel command line: {out['dom0_cmdline']}" in console
    assert f"xen_pciback: guestdev: {PATH} is 0000:01:00.0" in console
    view = out["guests"]["demo"]
    assert view["verdict"] == "pass" and view["pci"] == ["00:03.0", "01:00.0"]
    assert [d["ids"] for d in view["devices"]] == ["[8086:100e] class 020000",
                                                   "[8086:10d3] class 020000"]
    for run in (view, view["again"]):  # the first and the second assignment
        assert run["verdict"] == "pass"
        assert run["modules"]["e1000"] == run["modules"]["e1000e"] == 0
        assert [d["driver"] for d in run["devices"]] == ["e1000", "e1000e"]
        for d in run["devices"]:
            assert d["irq"] in ("msix", "msi", "intx") and d["carrier"] is True
            assert d["ping"]["sent"] == 10 and d["ping"]["received"] > 0, d
            assert d["interrupts"] > 0
    assert [n["driver"] for n in out["dom0_nics"]] == ["e1000"]
    assert {b: (r["rc"], r["driver"], r["carrier"]) for b, r in out["returned"].items()} == {
        "0000:00:03.0": (0, "e1000", True), "0000:01:00.0": (0, "e1000e", True)}
    assert "-netdev hubport,hubid=0,id=dom0" in out["qemu"]
    stage = rk.metadata()["stages"]["boot"]
    assert stage["status"] == "pass" and stage["verdict"] == "pass" and stage["duration"] > 0
    assert stage["guests"]["demo"]["verdict"] == "pass" and len(stage["commands"]) == 2
    summary = subprocess.run([sys.executable, "-m", "pipeline.boot", str(rk.config)], cwd=REPO,
                             capture_output=True, text=True)
    lines = summary.stdout.splitlines()
    assert summary.returncode == 0 and lines[0].startswith("boot: PASS"), summary.stdout
    assert lines[1].startswith("boot: guest demo: PASS: pci from ")
    assert [ln[:ln.index(" Ethernet")] for ln in lines[2:4]] == [
        "boot: guest demo: lspci 00:00.0", "boot: guest demo: lspci 00:01.0"], summary.stdout
    assert "[8086:100e]" in lines[2] and "[8086:10d3]" in lines[3]
    assert lines[4].startswith("boot: guest demo: 0000:00:03.0 as 0000:00:00.0: driver e1000, ")
    assert "ping eth0 -> dom0: 10 sent, " in lines[4]
    assert lines[5].startswith("boot: guest demo: 0000:01:00.0 as 0000:00:01.0: driver e1000e")
    assert "boot: guest demo again (second assignment): PASS" in lines[6:]
    assert lines[-2:] == ["boot: dom0: 0000:00:03.0 back in dom0: driver e1000, eth1 link up",
                          "boot: dom0: 0000:01:00.0 back in dom0: driver e1000e, eth2 link up"]


@pytest.mark.slow
def test_real_boot_resolves_device_paths_for_hide(real_kernel: RealKernel, tmp_path):
    """The same kernel treated as plain mainline (xen-pciback.hide= takes BDFs only): the
    topology boot's dump resolves the two-hop path to 01:00.0 as doit install would on a
    real box, and the second boot seizes exactly that device."""
    need("qemu-system-x86_64")
    cfg = private_boot(real_kernel, tmp_path, {MAINLINE[0]: MAINLINE[1]})
    ws = Workspace(cfg.workspace)
    out = boot.boot(cfg, ws)
    assert out["verdict"] == "pass" and out["flavour"] == "mainline"
    assert out["dom0_cmdline"].endswith("xen-pciback.hide=(0000:00:03.0)(0000:01:00.0)")
    assert [m["name"] for m in out["milestones"]] == PASSED
    assert out["expected"] == {"00:03.0": ["0000:00:03.0"], PATH: ["0000:01:00.0"]}
    first = (ws.logs / "boot-topology.log").read_text(errors="replace")
    assert "seizing device" not in first  # the topology boot hands nothing to pciback
    assert pci.scan(boot.boot_dir(ws) / "sysfs-topology").get(E1000E).driver is None
    # the go/no-go per device made inside the booted dom0 (its /sys listing, Xen's console)
    checks = {c["bdf"]: c for c in out["checks"]}
    assert set(checks) == {"0000:00:03.0", "0000:01:00.0"}, out["checks"]
    for c in checks.values():
        assert {"reset", "msi", "driver", "xen"} <= {f["check"] for f in c["findings"]}, c
        assert {"level": "info", "check": "xen",
                "text": "xl dmesg: I/O virtualisation enabled"} in c["findings"]
        assert {"level": "info", "check": "driver", "text": "held by pciback"} in c["findings"]
    assert "MSI" in next(f["text"] for f in checks["0000:01:00.0"]["findings"]
                         if f["check"] == "msi")  # the e1000e's MSI/MSI-X, from its config


@pytest.mark.slow
def test_real_boot_of_a_device_the_vm_lacks_names_the_missed_milestone(real_kernel, tmp_path,
                                                                       capsys):
    """00:1f.6 is not on the q35 VM: the boot stops when /init starts without pciback having
    seized it, and says so in one line. The dom0 line's comma reaches the kernel intact."""
    need("qemu-system-x86_64")
    cfg = private_boot(real_kernel, tmp_path, {
        MAINLINE[0]: MAINLINE[1],
        'devices = ["00:03.0", "PNP0A08:0-1c.0-0.0"]': 'devices = ["00:1f.6"]',
        'dom0_cmdline = "console=hvc0"': 'dom0_cmdline = "console=hvc0 xenpipe.check=a,b"'})
    ws = Workspace(cfg.workspace)
    with pytest.raises(BootError) as exc:
        boot.boot(cfg, ws)
    line = format_error(exc.value)
    assert "\n" not in line
    assert line == (
        "xenpipe: error: boot: pciback did not seize 0000:00:1f.6 (init started came first; "
        "is 0000:00:1f.6 on the virtual machine ([boot] devices)? is "
        "CONFIG_XEN_PCIDEV_BACKEND=y?; dom0 cmdline: console=hvc0 earlyprintk=xen "
        f"xenpipe.check=a,b xen-pciback.hide=(0000:00:1f.6)); console: {ws.logs / 'boot.log'}")
    err = capsys.readouterr().err
    assert f"--- last 30 console lines ({ws.logs / 'boot.log'}) ---" in err
    assert err.rstrip().splitlines()[-2] == f"{probe.MARK} init started"
    console = (ws.logs / "boot.log").read_text(errors="replace")
    assert re.search(r"Kernel command line: .*xenpipe\.check=a,b", console)
    out = json.loads((ws.out / "boot.json").read_text())
    assert out["verdict"] == "fail" and "topology_boot" not in out
    status = {m["name"]: m["status"] for m in out["milestones"]}
    assert status["Linux banner"] == "passed"
    assert status["pciback seized 0000:00:1f.6"] == "missed"
    assert status["power-off"] == "pending"
    stage = json.loads((ws.out / "metadata.json").read_text())["stages"]["boot"]
    assert stage["status"] == "fail" and stage["verdict"] == "fail"
