"""guestdev= (patches/linux) in ``doit boot``: how the dom0 line is rendered for a guestdev
kernel, and what xen-pciback's own ``guestdev:`` console lines make of the verdict.

The fast tests read a console transcript recorded from the slow test's real boot
(tests/data/boot/guestdev-problems.log). The slow test boots the shared real kernel once with a
bridge path, a path the VM lacks and a malformed entry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import boot, config, pci
from pipeline import passthrough as cmdline
from pipeline.boot import probe
from pipeline.errors import BootError, format_error
from pipeline.workspace import Workspace

from .support.boot import private_boot, read
from .support.doit import write_config
from .support.realkernel import RealKernel
from .support.tools import REPO, need

BRIDGE = "PNP0A08:0-1c.0"  # the PCIe root port: reserves the e1000e behind it
NOWHERE = "PNP0A08:0-1f.6"  # q35 has no 00:1f.6
MALFORMED = "PNP0A08:0-1c"  # a hop without ".<func>"
RECORDED = "guestdev-problems.log"
MILESTONES = ["Xen banner", "Xen IOMMU", "dom0 construction", "Linux banner", "init started",
              "probe done", "power-off"]
PROBLEMS = (f"guestdev path {NOWHERE} matched no device; guestdev entry \"{MALFORMED}\" is "
            "malformed: xen-pciback ignored it (it comes from [install] dom0_cmdline)")


def site(tmp_path: Path, devices: list[str], dom0: str = "console=hvc0",
         reassign: bool = False) -> config.Config:
    body = (f"[passthrough]\ndevices = {json.dumps(devices)}\n"
            f"reassign = {str(reassign).lower()}\n"
            f"[install]\ndom0_cmdline = {json.dumps(dom0)}\n")
    return config.load(write_config(tmp_path, body))


# ------------------------------------------------------------------------ rendering (fast)
def test_mainline_guestdev_kernel_hides_bdfs_and_passes_paths_without_a_topology(tmp_path):
    cfg = site(tmp_path, ["00:03.0", "PNP0A08:0-1c.0-0.0", "0000:00:03.0"])
    assert cmdline.dom0_cmdline(cfg, "guestdev", None) == (
        "console=hvc0 xen-pciback.hide=(0000:00:03.0) guestdev=PNP0A08:0-1c.0-0.0")
    assert pci.dom0_params("guestdev", [BRIDGE], False) == [f"guestdev={BRIDGE}"]
    assert pci.dom0_params("guestdev", ["00:19.0"], False) == ["xen-pciback.hide=(0000:00:19.0)"]


def test_guestdev_reassign_aligns_bdfs_and_paths_through_the_topology(tmp_path):
    topo = boot.topology(probe.parse(read("pass.log")), tmp_path / "sysfs")
    entries = ["00:03.0", BRIDGE]
    assert pci.dom0_params("guestdev", entries, True, topo) == [
        "pci=resource_alignment=12@0000:00:03.0;12@0000:01:00.0",
        "xen-pciback.hide=(0000:00:03.0)", f"guestdev={BRIDGE}"]
    with pytest.raises(pci.DeviceError) as exc:
        pci.dom0_params("guestdev", entries, True, None)
    assert str(exc.value) == (
        f"{BRIDGE}: reassign = true realigns with pci=resource_alignment=, which takes BDFs "
        "(guestdev= cannot realign), so this device path needs the machine's PCI topology; "
        "run on the target machine, or use a BDF")


def test_dom0_cmdline_folds_the_users_guestdev_and_hide_into_ours(tmp_path):
    """The kernel keeps only the last guestdev= (and hide=): one of each, the user's first."""
    cfg = site(tmp_path, ["00:03.0", BRIDGE],
               f"console=hvc0 guestdev={MALFORMED},{BRIDGE} xen-pciback.hide=(0000:00:19.0) ro")
    line = cmdline.dom0_cmdline(cfg, "guestdev", None)
    assert line == (f"console=hvc0 ro xen-pciback.hide=(0000:00:19.0)(0000:00:03.0) "
                    f"guestdev={MALFORMED},{BRIDGE}")
    assert cmdline.guestdev_entries(line) == [MALFORMED, BRIDGE]
    # without passthrough options (the topology boot) the user's words stay as written
    assert cmdline.dom0_cmdline(cfg, "guestdev", None, passthrough=False) == (
        f"console=hvc0 guestdev={MALFORMED},{BRIDGE} xen-pciback.hide=(0000:00:19.0) ro")
    # a kernel without guestdev= gets the user's guestdev= as written, and one hide=
    topo = boot.topology(probe.parse(read("pass.log")), tmp_path / "sysfs")
    assert cmdline.dom0_cmdline(cfg, "mainline", topo) == (
        f"console=hvc0 guestdev={MALFORMED},{BRIDGE} ro "
        "xen-pciback.hide=(0000:00:19.0)(0000:00:03.0)(0000:01:00.0)")
    assert cmdline.fold(["xen_pciback.guestdev=A-1.0"], ["guestdev=B-1.0"]) == (
        [], ["guestdev=A-1.0,B-1.0"])


def test_xenlinux_guestdev_tree_turns_bdfs_into_paths(tmp_path):
    """The 2008 series on 2.6.18-xen realigns guestdev= devices only: BDFs become paths."""
    cfg = site(tmp_path, ["00:03.0"])
    tree = Workspace(cfg.workspace).source_dir("linux")
    (tree / "drivers" / "xen" / "pciback").mkdir(parents=True)
    body = (tmp_path / "site.toml").read_text() + '[kernel]\nsource = "linux"\n'
    body += '[sources.linux]\nvcs = "tarball"\nurl = "/nonexistent.tar"\n'
    cfg = config.load(write_config(tmp_path, body, "xl.toml"))
    assert cmdline.base(cfg) == "xenlinux"
    with pytest.raises(pci.DeviceError, match="XenLinux guestdev= kernel takes device paths"):
        cmdline.dom0_cmdline(cfg, "guestdev", None)
    topo = boot.topology(probe.parse(read("pass.log")), tmp_path / "sysfs")
    assert cmdline.dom0_cmdline(cfg, "guestdev", topo) == "console=hvc0 guestdev=PNP0A08:0-03.0"
    assert pci.dom0_params("guestdev", ["00:03.0"], True, topo, "xenlinux") == [
        "reassign_resources", "guestdev=PNP0A08:0-03.0"]


# ------------------------------------------------------------------ console verdict (fast)
def test_guestdev_lines_are_read_from_the_console():
    log = boot.guestdev_log(read(RECORDED))
    assert log.found == {BRIDGE: (pci.parse_bdf("00:1c.0"),)}
    assert log.unmatched == (NOWHERE,)
    assert log.malformed == (MALFORMED,)
    assert log.lines == (
        f'xen_pciback: guestdev: malformed device path "{MALFORMED}" ignored',
        f"xen_pciback: guestdev: {BRIDGE} is 0000:00:1c.0",
        f"xen_pciback: guestdev: {NOWHERE} matches no device")
    demo = boot.guestdev_log(read("guestdev.log"))
    assert demo.found == {"PNP0A08:0-03.0": (pci.parse_bdf("00:03.0"),),
                          "PNP0A08:0-1c.0-0.0": (pci.parse_bdf("01:00.0"),)}
    assert not demo.unmatched and not demo.malformed
    assert boot.guestdev_log(read("pass.log")).lines == ()


def test_guestdev_problems_fail_ours_and_warn_about_the_users_paths(tmp_path):
    log = boot.guestdev_log(read(RECORDED))
    cfg = site(tmp_path, [BRIDGE, NOWHERE], f"console=hvc0 guestdev={MALFORMED}")
    assert boot.guestdev_problems(cfg, log) == (PROBLEMS.split("; "), [])
    # the same path added in [install] dom0_cmdline: the real machine may have it
    cfg = site(tmp_path, [BRIDGE], f"console=hvc0 guestdev={MALFORMED},{NOWHERE}")
    problems, warnings = boot.guestdev_problems(cfg, log)
    assert problems == [PROBLEMS.split("; ")[1]]
    assert warnings == [f"guestdev path {NOWHERE} from [install] dom0_cmdline matched no "
                        "device on the virtual machine"]


def test_the_bridge_path_is_verified_by_what_is_behind_it(tmp_path):
    """The bridge entry names 01:00.0, which pciback seized and holds; the path the kernel
    said matched nothing is left to guestdev_problems, not reported twice."""
    console = read(RECORDED)
    report = probe.parse(console)
    topo = boot.topology(report, tmp_path / "sysfs")
    cfg = site(tmp_path, [BRIDGE, NOWHERE])

    def verify(text: str) -> str | None:
        session = boot.Session([], tmp_path / "boot.log", boot.Watch(), text, report, 1.0)
        return boot.verify(cfg, session, topo, {})

    assert boot.named(cfg, topo) == {BRIDGE: ["0000:01:00.0"]}
    assert {"0000:00:1c.0", "0000:01:00.0"} <= set(report.pciback)
    assert verify(console) is None
    # without xen-pciback's word for it, the path that leads nowhere is verify's to report
    quiet = console.replace(f"guestdev: {NOWHERE} matches no device", "")
    assert verify(quiet) == (f"{NOWHERE}: device path {NOWHERE} matches nothing: no device "
                             "1f.6 (hop 1) on the root bus of PNP0A08:0 (pci0000:00)")
    # xen-pciback and the probe's topology must agree on the device a path names
    other = console.replace(f"guestdev: {BRIDGE} is 0000:00:1c.0", f"guestdev: {BRIDGE} is "
                            "0000:00:1f.0")
    assert verify(other) == (f"xen-pciback took guestdev path {BRIDGE} for 0000:00:1f.0, but "
                             "it names 0000:00:1c.0 in the probe's dump")


def test_devices_report_ends_with_the_dom0_line(tmp_path, monkeypatch):
    sysfs = probe.record_sysfs(probe.parse(read("pass.log")), tmp_path / "sysfs")
    monkeypatch.setenv("XENPIPE_SYSFS", str(sysfs))
    monkeypatch.setenv("XENPIPE_PROC", str(tmp_path / "noproc"))
    body = ('[passthrough]\ndevices = ["00:03.0", "PNP0A08:0-1c.0-0.0"]\n'
            '[kernel]\nsource = "linux"\nflavour = "guestdev"\n'
            '[sources.linux]\nvcs = "tarball"\nurl = "/nonexistent.tar"\n')
    cfg = config.load(write_config(tmp_path, body))
    box = pci.Box(sysfs, tmp_path / "noproc", "the probe's tree", is_target=True)
    out = cmdline.devices_report(cfg, Workspace(cfg.workspace), box).splitlines()
    assert out[-1] == ("dom0 command line (guestdev kernel): ro root=LABEL=/ "
                       "xen-pciback.hide=(0000:00:03.0) guestdev=PNP0A08:0-1c.0-0.0")
    cfg = config.load(write_config(tmp_path, body.replace("PNP0A08:0-1c.0-0.0", BRIDGE)))
    out = cmdline.devices_report(cfg, Workspace(cfg.workspace), box).splitlines()
    assert out[-2:] == [
        "dom0 command line (guestdev kernel): ro root=LABEL=/ xen-pciback.hide=(0000:00:03.0) "
        f"guestdev={BRIDGE}",
        f"note: guestdev path {BRIDGE} names bridge 0000:00:1c.0: xen-pciback seizes the bridge "
        "too, so dom0's PCIe port services (AER, hotplug, PME) stop for it"]
    cfg = config.load(write_config(tmp_path, body.replace('flavour = "guestdev"\n', "")))
    last = cmdline.devices_report(cfg, Workspace(cfg.workspace), box).splitlines()[-1]
    assert last.startswith("dom0 command line: not known: cannot tell the kernel flavour of ")


# ------------------------------------------------------------------------- real boot (slow)
@pytest.mark.slow
def test_real_guestdev_bridge_nowhere_and_malformed_in_one_boot(real_kernel: RealKernel,
                                                                tmp_path: Path):
    """One boot of the shared guestdev kernel, three entries: the bridge path reserves the
    e1000e behind the root port; the path the VM lacks gets xen-pciback's warning and the
    malformed one (from [install] dom0_cmdline) its error, the boot goes on to /init and the
    power-off, and the verdict names both problems in one line."""
    need("qemu-system-x86_64")
    need("busybox")
    cfg = private_boot(real_kernel, tmp_path, {
        'devices = ["00:03.0", "PNP0A08:0-1c.0-0.0"]': f'devices = ["{BRIDGE}", "{NOWHERE}"]',
        'dom0_cmdline = "console=hvc0"': f'dom0_cmdline = "console=hvc0 guestdev={MALFORMED}"'})
    ws = Workspace(cfg.workspace)
    with pytest.raises(BootError) as exc:
        boot.boot(cfg, ws)
    dom0 = f"console=hvc0 earlyprintk=xen guestdev={MALFORMED},{BRIDGE},{NOWHERE}"
    assert format_error(exc.value) == (f"xenpipe: error: boot: {PROBLEMS} (dom0 cmdline: {dom0}); "
                                       f"console: {ws.logs / 'boot.log'}")
    console = (ws.logs / "boot.log").read_text(errors="replace")
    assert f"Kernel command line: {dom0}\n" in console
    assert f'xen_pciback: guestdev: malformed device path "{MALFORMED}" ignored' in console
    assert f"xen_pciback: guestdev: {NOWHERE} matches no device" in console
    assert f"xen_pciback: guestdev: {BRIDGE} is 0000:00:1c.0" in console
    assert "0000:01:00.0: xen_pciback: seizing device" in console
    out = json.loads((ws.out / "boot.json").read_text())
    assert out["verdict"] == "fail" and out["reason"] == PROBLEMS and out["flavour"] == "guestdev"
    assert "topology_boot" not in out  # guestdev= takes the paths as written
    assert [m["name"] for m in out["milestones"]] == MILESTONES  # the boot went on to the end
    assert {m["status"] for m in out["milestones"]} == {"passed"}
    assert out["guestdev"]["unmatched"] == [NOWHERE]
    assert out["guestdev"]["malformed"] == [MALFORMED]
    assert out["guestdev"]["found"] == {BRIDGE: ["0000:00:1c.0"]}
    assert out["expected"] == {BRIDGE: ["0000:01:00.0"]}
    assert out["devices"]["0000:01:00.0"] == {"path": "PNP0A08:0-1c.0-00.0", "driver": "pciback"}
    assert "0000:01:00.0" in out["pciback"]
    summary = subprocess.run([sys.executable, "-m", "pipeline.boot", str(cfg.path)], cwd=REPO,
                             capture_output=True, text=True)
    assert (summary.returncode, summary.stdout) == (
        1, f"boot: FAIL: {PROBLEMS}; console: {ws.logs / 'boot.log'}\n")
