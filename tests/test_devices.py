"""The go/no-go per passthrough device (pipeline/pci/checks.py) on recorded sysfs trees, and
``doit devices`` printing it and refusing a no-go unless force=1."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from pipeline import install, passthrough, pci, target
from pipeline.config import load
from pipeline.errors import XenpipeError
from pipeline.pci import box as pcibox
from pipeline.pci import checks, dom0use, xenplatform
from pipeline.workspace import Workspace

from .support import sysfs_trees
from .support.boot import private_boot
from .support.doit import run_doit, write_config
from .support.realkernel import RealKernel
from .support.tools import need

PATH = "PNP0A08:0-1c.0-0.0"  # the demo's e1000e behind root port 1c.0 of its q35 machine


@pytest.fixture
def box(tmp_path: Path) -> pci.Topology:
    return pci.scan(sysfs_trees.checks_box(tmp_path / "sys").sysfs)


def one(topo: pci.Topology, entries: list[str], entry: str | None = None,
        **kw: object) -> pci.Verdict:
    found = pci.verdicts(entries, topo, kw.pop("needs", {}), **kw)  # type: ignore[arg-type]
    return next(v for v in found if v.entry == (entry or entries[0]))


def finding(v: pci.Verdict, check: str) -> pci.Finding | None:
    return next((f for f in v.findings if f.check == check), None)


def test_a_healthy_function_pair_is_ok(box: pci.Topology) -> None:
    """Both functions named, FLR, MSI-X, behind a PCIe root port: nothing worse than info."""
    for entry in ("01:00.0", "01:00.1"):
        v = one(box, ["01:00.0", "01:00.1"], entry)
        assert v.verdict == "ok", v.findings
        assert finding(v, "reset").text == "reset methods: flr bus"  # type: ignore[union-attr]
        assert finding(v, "msi").text == "MSI/MSI-X"  # type: ignore[union-attr]
        assert finding(v, "driver").text.startswith("bound to igb")  # type: ignore[union-attr]
        assert finding(v, "functions") is finding(v, "bridge") is None


def test_an_unnamed_sibling_function_is_a_warning(box: pci.Topology) -> None:
    v = one(box, ["01:00.0"])
    assert v.verdict == "warn"
    assert "its functions 0000:01:00.1 are not in passthrough.devices" in finding(
        v, "functions").text  # type: ignore[union-attr]


def test_no_reset_method_and_no_msi_are_warnings(box: pci.Topology) -> None:
    v = one(box, ["04:00.0"])
    assert v.verdict == "warn"
    assert "the second assignment may fail" in finding(v, "reset").text  # type: ignore[union-attr]
    assert "no MSI or MSI-X capability" in finding(v, "msi").text  # type: ignore[union-attr]


def test_flr_in_config_space_counts_without_reset_method(tmp_path: Path) -> None:
    """An older kernel (no reset_method file): the PCIe capability's FLR bit says resettable."""
    t = sysfs_trees.Tree(tmp_path / "sys")
    t.root_bus()
    t.dev("00:03.0", sysfs_trees.ETHERNET, 0x8086, 0x10D3, reset=None,
          config=sysfs_trees.config_space(0x8086, 0x10D3, sysfs_trees.ETHERNET,
                                          [sysfs_trees.PCIE, sysfs_trees.MSIX], flr=True))
    v = one(pci.scan(t.sysfs), ["00:03.0"])
    assert finding(v, "reset").level == "info"  # type: ignore[union-attr]


def test_capabilities_not_readable_are_unknown_not_a_warning(box: pci.Topology) -> None:
    """64 bytes (an unprivileged read) leave the capability list unknown: no verdict change."""
    v = one(box, ["00:1f.2"])
    msi = finding(v, "msi")
    assert msi is not None and msi.level == "info" and "unknown" in msi.text
    assert checks.capabilities(b"\0" * 64) is None


def test_a_device_behind_a_pcie_to_pci_bridge_shares_its_requester_id(box: pci.Topology) -> None:
    v = one(box, ["03:00.0"])
    bridge = finding(v, "bridge")
    assert v.verdict == "warn" and bridge is not None
    assert bridge.text == ("behind PCIe-to-PCI bridge 0000:02:00.0: every device behind it uses "
                           "one requester ID, so they go to the same guest; co-assign "
                           "0000:03:01.0 (not all in passthrough.devices)")
    both = one(box, ["03:00.0", "03:01.0"])
    assert finding(both, "bridge").text.endswith("co-assign 0000:03:01.0")  # type: ignore[union-attr]


def test_a_subtractive_pci_bridge_aliases_too_a_root_port_does_not(tmp_path: Path) -> None:
    topo = pci.scan(sysfs_trees.ref2009(tmp_path / "ref").sysfs)
    assert "subtractive PCI bridge 0000:00:1e.0" in finding(
        one(topo, ["01:01.0"]), "bridge").text  # type: ignore[union-attr]
    q35 = pci.scan(sysfs_trees.q35(tmp_path / "q35").sysfs)  # root ports: config unknown
    assert finding(one(q35, ["01:00.0"]), "bridge") is None


def test_a_device_dom0_needs_is_a_no_go_unless_allowed(tmp_path: Path, box: pci.Topology) -> None:
    proc = sysfs_trees.proc_tree(tmp_path / "proc", [("8:1", "/", "ext4", "/dev/sda1")])
    needs = pci.system_devices(box, proc)
    v = one(box, ["00:1f.2"], needs=needs)
    assert v.verdict == "no-go"
    assert "holds the root filesystem (/dev/sda1 on /), so dom0 needs it" in finding(
        v, "dom0").text  # type: ignore[union-attr]
    allowed = one(box, ["00:1f.2"], needs=needs, allow_system_devices=True)
    assert allowed.verdict == "warn"
    assert one(box, ["04:00.0"], needs=needs).verdict == "warn"  # not a no-go: dom0 lets it go


def test_an_absent_device_is_a_no_go_on_the_box_a_warning_elsewhere(box: pci.Topology) -> None:
    v = one(box, ["00:1f.6", "PNP0A08:0-1c.3-00.0"])
    assert v.verdict == "no-go" and v.bdf is not None
    path = one(box, ["PNP0A08:0-1c.3-00.0"])
    assert path.verdict == "no-go" and "matches nothing" in path.findings[0].text
    hint = "give a copy of the box's /sys as XENPIPE_SYSFS=<tree>"
    there = one(box, ["00:1f.6"], absent_hint=hint)
    assert there.verdict == "warn" and there.findings[0].text.endswith(hint)


@pytest.mark.parametrize(("text", "hide", "level"), [
    (None, True, None),  # no build yet: no verdict
    ("CONFIG_XEN_PCIDEV_BACKEND=y\n", True, None),
    ("CONFIG_XEN_PCIDEV_BACKEND=m\n", True, "no-go"),
    ("CONFIG_XEN_PCIDEV_BACKEND=m\n", False, "info"),  # guestdev= is the kernel's, not pciback's
    ("CONFIG_XEN_PCIDEV_BACKEND=m\n", None, "warn"),
    ("# CONFIG_XEN_PCIDEV_BACKEND is not set\n", False, "no-go"),
    ("CONFIG_XEN=y\n", True, "no-go"),
])
def test_pciback_in_the_built_kernel(text: str | None, hide: bool | None,
                                     level: str | None) -> None:
    f = pci.check_kernel(text, "out/kernel-build/.config", hide)
    assert (f.level if f else None) == level


def test_nogo_error_is_one_line_naming_each_device(box: pci.Topology) -> None:
    found = pci.verdicts(["00:1f.6", "04:00.0"], box, {})
    err = pci.nogo_error(found)
    assert err is not None
    assert str(err) == ("passthrough.devices: no-go for 1 device(s) (0000:00:1f.6: "
                        "present); see `doit devices`, or go on with force=1")
    assert pci.nogo_error(pci.verdicts(["04:00.0"], box, {})) is None


def _doit(tmp_path: Path, tree: sysfs_trees.Tree, devices: str, *args: str):  # type: ignore[no-untyped-def]
    proc = sysfs_trees.proc_tree(tmp_path / "proc", [("8:1", "/", "ext4", "/dev/sda1")])
    cfg = write_config(tmp_path, f"[passthrough]\ndevices = {devices}\n")
    return run_doit("devices", *args, config=cfg,
                    env={"XENPIPE_SYSFS": str(tree.sysfs), "XENPIPE_PROC": str(proc)})


def test_doit_devices_refuses_a_no_go_unless_forced(tmp_path: Path) -> None:
    tree = sysfs_trees.checks_box(tmp_path / "sys")
    res = _doit(tmp_path, tree, '["01:00.0", "01:00.1", "00:1f.2"]')
    assert res.returncode == 1
    assert "  0000:00:1f.2: no-go\n" in res.stdout
    assert "  0000:01:00.0: ok\n" in res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("xenpipe: error:")]
    assert errors == ["xenpipe: error: passthrough.devices: no-go for 1 device(s) "
                      "(0000:00:1f.2: dom0); see `doit devices`, or go on with force=1"]
    assert "Traceback" not in res.stderr
    forced = _doit(tmp_path, tree, '["01:00.0", "01:00.1", "00:1f.2"]', "force=1")
    assert forced.returncode == 0, forced.stderr
    assert "force=1: going on despite: passthrough.devices: no-go" in forced.stdout


def test_doit_devices_warns_of_a_missing_iommu(tmp_path: Path) -> None:
    """QEMU pc has no DMAR: every device gets the platform warning, and no no-go for it."""
    res = _doit(tmp_path, sysfs_trees.pc(tmp_path / "sys"), '["00:03.0"]')
    assert res.returncode == 0, res.stderr
    assert "  0000:00:03.0: warn\n    warn: iommu: no DMAR or IVRS table" in res.stdout


def test_doit_devices_warns_when_xen_cmdline_turns_the_iommu_off(tmp_path: Path) -> None:
    tree = sysfs_trees.checks_box(tmp_path / "sys")
    proc = sysfs_trees.proc_tree(tmp_path / "proc", [("8:1", "/", "ext4", "/dev/sda1")])
    cfg = write_config(tmp_path, '[install]\nxen_cmdline = "iommu=0"\n'
                                 '[passthrough]\ndevices = ["04:00.0"]\n')
    res = run_doit("devices", config=cfg,
                   env={"XENPIPE_SYSFS": str(tree.sysfs), "XENPIPE_PROC": str(proc)})
    assert res.returncode == 0, res.stderr
    assert "    warn: iommu: install.xen_cmdline turns the IOMMU off\n" in res.stdout
    assert "warn: iommu: no DMAR" not in res.stdout  # checks_box has its DMAR


@pytest.mark.parametrize(("root", "rc"), [("/", 1), (None, 0)])
def test_an_absent_device_on_this_machine(tmp_path: Path, root: str | None, rc: int) -> None:
    """This machine's own /sys (no XENPIPE_SYSFS): with install.root "/" it is the box, so an
    absent device is a no-go; installing into a staging root it warns how to give the box's.
    PCI domain abcd stands for a device no machine here has."""
    body = (f'[install]\nroot = "{root}"\n' if root else "") + \
        '[passthrough]\ndevices = ["abcd:00:00.0"]\n'
    res = run_doit("devices", config=write_config(tmp_path, body), env={"XENPIPE_SYSFS": ""})
    assert res.returncode == rc, res.stderr
    line = next(v for v in res.stdout.splitlines() if ": present: " in v)
    where = ("(read this machine's /sys (install.root is /); other ways to give the box's: "
             if root else "(/sys); /sys is this build host's")
    assert f"abcd:00:00.0 is not present on the box examined {where}" in line
    assert ("/sys is this build host's, not the box's that install.root" in line) == \
        (root is None)
    assert '[target] ssh = "root@box" (its /sys over ssh)' in line
    assert "XENPIPE_SYSFS=<a copy of its /sys>" in line


# ------------------------------------------------------------ the box examined, its copy
DATA = Path(__file__).parent / "data" / "xen"
XL_INFO = (DATA / "xl-info.txt").read_text()
XL_DMESG = (DATA / "xl-dmesg.txt").read_text()
SSH_IN = "10.0.0.9 51000 10.0.0.2 22"  # client, port, the box's eth0 address, port


def nic_machine(tmp_path: Path, cmdline: str = "root=/dev/sda1 console=hvc0"
                ) -> tuple[sysfs_trees.Tree, Path]:
    tree = sysfs_trees.nic_box(tmp_path / "sys")
    proc = sysfs_trees.proc_tree(tmp_path / "proc", [("8:1", "/", "ext4", "/dev/sda1")],
                                 routes=sysfs_trees.ROUTE, cmdline=cmdline)
    return tree, proc


def test_the_snapshot_listing_rebuilds_what_the_checks_read(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """pci.box.SNAPSHOT is what runs on the box over ssh; here the real sh runs it on a
    recorded tree: the copy gives the same topology, dom0 needs, uses and verdicts."""
    tree, proc = nic_machine(tmp_path, "root=/dev/sda1 console=ttyS4")
    monkeypatch.setenv("SSH_CONNECTION", SSH_IN)
    listing = pci.local_runner(pcibox.snapshot_argv(str(tree.sysfs), str(proc)), "snapshot")
    assert listing is not None
    snap = pcibox.unpack(listing, tmp_path / "copy")
    assert snap.ssh_connection == SSH_IN
    a, b = pci.scan(tree.sysfs), pci.scan(snap.sysfs)
    assert [(d.bdf, d.driver, d.cls, d.parents, d.path) for d in a.devices] == \
        [(d.bdf, d.driver, d.cls, d.parents, d.path) for d in b.devices]
    assert pci.system_devices(b, snap.proc) == pci.system_devices(a, proc)
    assert dom0use.uses(snap.sysfs, snap.proc, SSH_IN) == dom0use.uses(tree.sysfs, proc, SSH_IN)
    entries = ["01:00.0", "03:00.0", "04:00.0", "00:1f.2"]

    def seen(topo: pci.Topology, procfs: Path) -> str:
        found = pci.verdicts(entries, topo, pci.system_devices(topo, procfs))
        return pci.render(found).replace(str(topo.sysfs), "SYSFS")

    assert seen(b, snap.proc) == seen(a, proc)
    assert "0000:00:1f.2: no-go" in seen(b, snap.proc)
    assert pci.iommu_warning(snap.sysfs) is None  # the DMAR table's name came along


def test_a_listing_cut_short_or_leaving_the_tree_is_not_unpacked(tmp_path: Path) -> None:
    with pytest.raises(XenpipeError, match="ended early"):
        pcibox.unpack("D bus\n", tmp_path / "a")
    snap = pcibox.unpack("F ../../evil 41\nL bus/x /etc/passwd\nL bus/y ../../../../etc\n"
                         "F bus/ok 41\nxenpipe-snapshot-end\n", tmp_path / "b")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "b" / "evil").exists()
    assert not (snap.sysfs / "bus" / "x").is_symlink()
    assert not (snap.sysfs / "bus" / "y").is_symlink()
    assert (snap.sysfs / "bus" / "ok").read_bytes() == b"A"


def uses_of(tree: sysfs_trees.Tree, proc: Path, bdf: str, ssh: str | None = None,
            xen_cmdline: str = "", allowed: bool = False) -> list[pci.Finding]:
    found = dom0use.uses(tree.sysfs, proc, ssh, xen_cmdline)
    return dom0use.findings(found.get(pci.parse_bdf(bdf), []), allowed)


def test_the_nic_with_the_default_route_warns_another_does_not(tmp_path: Path) -> None:
    tree, proc = nic_machine(tmp_path)
    [route] = uses_of(tree, proc, "01:00.0")
    assert (route.level, route.check) == ("warn", "use")
    assert route.text == ("is eth0, which carries the default route: dom0 loses it when "
                          "pciback takes the device")
    assert uses_of(tree, proc, "01:00.1") == []


def test_the_nic_ssh_came_in_on_is_a_no_go_unless_allowed(tmp_path: Path) -> None:
    tree, proc = nic_machine(tmp_path)
    on_eth1 = "192.168.7.50 40000 192.168.7.3 22"
    [ssh] = uses_of(tree, proc, "01:00.1", on_eth1)
    assert ssh.level == "no-go" and ssh.text.startswith(
        "is eth1, which has 192.168.7.3, the address this ssh session came in on; remove it")
    assert [f.level for f in uses_of(tree, proc, "01:00.1", on_eth1, allowed=True)] == ["warn"]
    assert uses_of(tree, proc, "01:00.1", SSH_IN) == []  # came in on eth0
    assert uses_of(tree, proc, "01:00.1", "::1 4000 ::1 22") == []


def test_the_console_device_warns(tmp_path: Path) -> None:
    tree, proc = nic_machine(tmp_path, "root=/dev/sda1 console=ttyS4,115200n8")
    [serial] = uses_of(tree, proc, "03:02.0")
    assert serial.level == "warn" and serial.text.startswith("is ttyS4, dom0's console=")
    assert uses_of(tree, proc, "00:02.0") == []  # the console is not on the screen
    legacy = sysfs_trees.proc_tree(tmp_path / "p2", [], cmdline="console=ttyS0")
    assert uses_of(tree, legacy, "03:02.0") == []  # ttyS0 is the ISA port
    vga = sysfs_trees.proc_tree(tmp_path / "p3", [], cmdline="root=/dev/sda1 console=tty0")
    assert [f.level for f in uses_of(tree, vga, "00:02.0")] == ["warn"]
    hvc = sysfs_trees.proc_tree(tmp_path / "p4", [], cmdline="console=hvc0")
    assert uses_of(tree, hvc, "00:02.0") == []
    assert [f.text for f in uses_of(tree, hvc, "00:02.0", xen_cmdline="console=vga,com1")] == [
        "is the boot VGA, and the console is on the screen: dom0 loses it when pciback takes "
        "the device"]


def xen(info: str | None, dmesg: str | None, hvm: bool | None,
        bdf: str = "01:00.0") -> list[tuple[str, str]]:
    return [(f.level, f.text) for f in xenplatform.check_xen(info, dmesg, pci.parse_bdf(bdf),
                                                             hvm)]


def test_a_running_xen_with_directio_and_the_iommu_on_passes() -> None:
    """The recorded xl info / xl dmesg of the demo's Xen 4.17 (tests/data/xen)."""
    for hvm in (True, False, None):
        assert xen(XL_INFO, XL_DMESG, hvm) == [("info", "xl dmesg: I/O virtualisation enabled")]
    assert xen(None, None, True) == []  # no running Xen: nothing said


def test_virt_caps_without_hvm_directio() -> None:
    """The recorded xl info with the one line a Xen without a usable IOMMU prints differently."""
    pv_only = XL_INFO.replace("hvm hvm_directio pv_directio", "hvm pv_directio")
    assert "hvm_directio" not in pv_only
    [(level, text)] = xen(pv_only, None, True)
    assert level == "no-go" and "cannot give a device to an HVM guest" in text
    assert [lv for lv, _ in xen(pv_only, None, False)] == []
    assert [lv for lv, _ in xen(pv_only, None, None)] == ["warn"]
    none = XL_INFO.replace("hvm hvm_directio pv_directio", "hvm")
    assert [lv for lv, _ in xen(none, None, False)] == ["no-go"]


def test_io_virtualisation_disabled_and_no_interrupt_remapping() -> None:
    """The recorded xl dmesg with Xen's lines for an IOMMU it did not turn on."""
    off = XL_DMESG.replace("I/O virtualisation enabled", "I/O virtualisation disabled")
    assert [lv for lv, _ in xen(None, off, False)] == ["warn"]
    assert [lv for lv, _ in xen(None, off, True)] == ["no-go"]
    no_ir = XL_DMESG.replace("(XEN) Interrupt remapping enabled",
                             "(XEN) Interrupt remapping disabled")
    assert xen(None, no_ir, None)[1:] == [("warn", "xl dmesg: interrupt remapping is not "
                                           "enabled: the guest's device can send any "
                                           "interrupt (MSI) it likes")]


def test_a_shared_rmrr_is_a_no_go_an_own_one_is_not() -> None:
    """The RMRR scopes Xen prints with iommu=verbose, added to the recorded xl dmesg (the demo's
    QEMU has no RMRR): a USB controller and the IGD in one region, the NIC in its own."""
    scopes = ("(XEN) [VT-D]found ACPI_DMAR_RMRR:\n(XEN) [VT-D] endpoint: 0000:00:14.0\n"
              "(XEN) [VT-D] endpoint: 0000:00:02.0\n(XEN) [VT-D]found ACPI_DMAR_RMRR:\n"
              "(XEN) [VT-D] endpoint: 0000:01:00.0\n(XEN) Xen heap: 1MB\n")
    dmesg = XL_DMESG + scopes
    [(level, text)] = [f for f in xen(None, dmesg, None, "00:14.0") if f[0] != "info"]
    assert level == "no-go" and "shares an RMRR (firmware-reserved memory for DMA) with " \
        "0000:00:02.0" in text
    assert [f for f in xen(None, dmesg, None, "01:00.0") if f[0] != "info"] == []
    tried = XL_DMESG + "(XEN) [VT-D] cannot assign 0000:01:00.0 with shared RMRR at ae000000\n"
    assert [lv for lv, _ in xen(None, tried, None)] == ["info", "no-go"]


def _recorded_xen(argv: Sequence[str], what: str) -> str | None:
    """Stands in for the box's runner: Xen cannot run here, so `xl info` and `xl dmesg` answer
    with the recorded outputs of the demo's dom0 (virt_caps without hvm_directio)."""
    return {"info": XL_INFO.replace("hvm_directio ", ""), "dmesg": XL_DMESG}[argv[1]]


def test_verdicts_on_a_box_running_xen_take_the_guest_type(tmp_path: Path) -> None:
    """device_verdicts with a box's runner and dom0's uses: the NIC for an HVM guest is a
    no-go on a Xen without hvm_directio; the ssh NIC a no-go; the PV guest's NIC a warning."""
    tree, proc = nic_machine(tmp_path)
    root = tmp_path / "root"
    (root / "etc" / "xen").mkdir(parents=True)
    (root / "etc" / "xen" / "hvm.cfg").write_text('builder = "hvm"\nmemory = 512\n')
    (root / "etc" / "xen" / "pv.cfg").write_text('type = "pv"\n')
    cfg = load(write_config(tmp_path, f'[install]\nroot = "{root}"\n[passthrough]\n'
                            'devices = ["01:00.0", "01:00.1", "04:00.0"]\n'
                            '[[guests]]\nname = "h"\nconfig = "/etc/xen/hvm.cfg"\n'
                            'devices = ["04:00.0"]\n[[guests]]\nname = "p"\n'
                            'config = "/etc/xen/pv.cfg"\ndevices = ["01:00.1"]\n'))
    box = pci.Box(tree.sysfs, proc, "a recorded box", is_target=True, run=_recorded_xen,
                  ssh_connection=SSH_IN)
    found = {str(v.bdf): v for v in passthrough.device_verdicts(cfg, Workspace(cfg.workspace),
                                                                None, box)}
    assert found["0000:04:00.0"].verdict == "no-go"
    assert "cannot give a device to an HVM guest" in finding(found["0000:04:00.0"], "xen").text  # type: ignore[union-attr]
    assert found["0000:01:00.0"].verdict == "no-go"  # eth0: the ssh session's
    assert [f.text for f in found["0000:01:00.1"].findings if f.check == "xen"] == [
        "xl dmesg: I/O virtualisation enabled"]  # the PV guest's: no hvm_directio needed
    assert found["0000:01:00.1"].verdict == "ok"  # eth1: neither the route nor ssh's
    assert [f.text for f in found["0000:01:00.0"].findings if f.check == "xen"][0] == (
        'xl info: virt_caps is "pv hvm pv_directio gnttab-v1 gnttab-v2", without '
        "hvm_directio: only a PV guest can have the device")


# ------------------------------------------------------------------- doit install
def _install(tmp: Path, *args: str):  # type: ignore[no-untyped-def]
    """`doit install` of a config without [kernel] (no build runs first) on checks_box, the
    root disk's controller 00:1f.2 among the devices: the go/no-go comes before the plan."""
    tmp_path = tmp / "-".join(args or ("plain",))
    tree = sysfs_trees.checks_box(tmp_path / "sys")
    proc = sysfs_trees.proc_tree(tmp_path / "proc", [("8:1", "/", "ext4", "/dev/sda1")])
    cfg = write_config(tmp_path, f'[install]\nroot = "{tmp_path / "root"}"\n'
                                 '[passthrough]\ndevices = ["01:00.0", "01:00.1", "00:1f.2"]\n')
    return run_doit("install", *args, config=cfg, timeout=120,
                    env={"XENPIPE_SYSFS": str(tree.sysfs), "XENPIPE_PROC": str(proc)})


def test_doit_install_refuses_a_no_go_unless_forced(tmp_path: Path) -> None:
    res = _install(tmp_path)
    assert res.returncode == 1
    assert "  0000:00:1f.2: no-go\n" in res.stdout and "  0000:01:00.0: ok\n" in res.stdout
    assert res.stderr.strip().splitlines() == [
        "xenpipe: error: passthrough.devices: no-go for 1 device(s) (0000:00:1f.2: dom0); see "
        "`doit devices`, or go on with force=1"]
    forced = _install(tmp_path, "force=1")
    assert "force=1: going on despite: passthrough.devices: no-go" in forced.stdout
    # past the check, the install itself: this config has no kernel to install
    assert forced.stderr.strip().splitlines() == [
        "xenpipe: error: no [kernel] configured: there is no dom0 kernel to install"]


def test_doit_install_dry_run_shows_the_verdicts(tmp_path: Path) -> None:
    res = _install(tmp_path, "--dry-run")
    lines = res.stdout.splitlines()
    first = lines.index("install: dry run: the build is up to date")
    assert lines[first + 1] == "go/no-go per device:"
    assert "  0000:00:1f.2: no-go" in lines
    assert ("a real install refuses: passthrough.devices: no-go for 1 device(s) (0000:00:1f.2: "
            "dom0); see `doit devices`, or go on with force=1") in lines
    assert "xenpipe: error: passthrough.devices" not in res.stderr


# ------------------------------------------------------------- which box, and its errors
def test_which_box_is_examined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = sysfs_trees.q35(tmp_path / "sys")
    staging = load(write_config(tmp_path, f'[install]\nroot = "{tmp_path / "root"}"\n'))
    ws = Workspace(staging.workspace)
    monkeypatch.setenv("XENPIPE_SYSFS", str(tree.sysfs))
    with target.examined(staging, ws) as box:
        assert (box.sysfs, box.is_target, box.run) == (tree.sysfs, True, None)
        assert box.origin == f"the recorded tree XENPIPE_SYSFS={tree.sysfs}"
    monkeypatch.delenv("XENPIPE_SYSFS")
    with target.examined(staging, ws) as box:
        assert (box.sysfs, box.is_target) == (Path("/sys"), False)
        assert box.hint == (f"/sys is this build host's, not the box's that install.root "
                            f"{tmp_path / 'root'} is for; give the box's own: {pcibox.OTHER_WAYS}")
    here = load(write_config(tmp_path, '[install]\nroot = "/"\n', "here.toml"))
    with target.examined(here, ws) as box:
        assert (box.sysfs, box.is_target, box.run) == (Path("/sys"), True, pci.local_runner)
    disk = load(write_config(tmp_path, f'[install]\nroot = "{tmp_path / "root"}"\n'
                                       '[boot]\nvia = "disk"\n', "disk.toml"))
    with target.examined(disk, ws) as box:
        assert not box.is_target  # no doit boot has recorded the QEMU machine yet
    recorded = sysfs_trees.q35(ws.dir / "boot" / "sysfs")
    with target.examined(disk, ws) as box:
        assert (box.sysfs, box.is_target) == (recorded.sysfs, True)
        assert box.origin.startswith("the QEMU machine's topology the last doit boot recorded")
    dom0 = sysfs_trees.q35(ws.dir / "boot" / "dom0-trees" / "sys")  # dom0's own listing wins
    with target.examined(disk, ws) as box:
        assert (box.sysfs, box.proc) == (dom0.sysfs, ws.dir / "boot" / "dom0-trees" / "proc")


def test_a_disk_boot_root_before_any_boot_says_why_and_how(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Issue 25 item 3 with [boot] via = "disk": the box is the QEMU machine, which a real
    install boots once to read when no doit boot has recorded it (the slow
    test_a_disk_install_reads_the_qemu_machine_before_any_boot). A dry run boots nothing,
    nor can a run with nothing built: the device-path error then says which sysfs it read,
    why not the QEMU machine's, and the ways that do work for a disk boot (not [target] or
    install.root = "/", which are another box)."""
    monkeypatch.delenv("XENPIPE_SYSFS", raising=False)
    path = "PNP0A08:77-1c.0-00.0"  # no machine here has a root bridge _UID 77
    cfg = load(write_config(tmp_path, f'[install]\nroot = "{tmp_path / "root"}"\n'
                            f'[boot]\nvia = "disk"\n[passthrough]\ndevices = ["{path}"]\n'))
    ws = Workspace(cfg.workspace)
    for remote, why in ((False, "a dry run boots nothing"),
                        (True, "doit boot needs a dom0 kernel: configure [kernel]")):
        with target.examined(cfg, ws, remote=remote) as box:
            assert (box.sysfs, box.is_target) == (Path("/sys"), False)
            with pytest.raises(XenpipeError) as exc:
                pci.resolve_devices([path], pci.scan(box.sysfs, box.whence))
        assert str(exc.value).endswith(
            "(read this build host's /sys: /sys is this build host's, not the QEMU machine's "
            f'that [boot] via = "disk" boots install.root {tmp_path / "root"} in: no doit boot '
            f"has recorded it ({why}); give that machine's: run doit build first (a real "
            "install then boots the QEMU machine once to read it), name the devices by BDF, "
            "or XENPIPE_SYSFS=<a copy of its /sys>)"), str(exc.value)
    assert not (ws.dir / "boot" / "sysfs-topology").exists()


@pytest.mark.slow
def test_a_disk_install_reads_the_qemu_machine_before_any_boot(
        real_kernel: RealKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 25 item 3: the first install of a staging root booted with via = "disk" (no doit
    boot has run) resolves the demo's device path PNP0A08:0-1c.0-0.0 on the QEMU machine of
    [boot], read by a topology boot, not on this build host (whose /sys has no root port 1c.0:
    the install failed with 'matches nothing' here, and the disk tests named the e1000e by
    BDF to get round it); the plan hides 01:00.0. The recorded tree serves the next run."""
    need("qemu-system-x86_64")
    monkeypatch.delenv("XENPIPE_SYSFS", raising=False)
    root = tmp_path / "root"
    cfg = private_boot(real_kernel, tmp_path, {
        "[install]\n": f'[install]\nroot = "{root}"\n',
        "timeout = 600": 'timeout = 1200\nvia = "disk"'})
    assert cfg.boot.via == "disk" and PATH in cfg.passthrough.devices
    ws = Workspace(cfg.workspace)
    for name in (f"System.map-{real_kernel.release}", f"config-{real_kernel.release}",
                 "kernel-build"):
        (ws.out / name).symlink_to(real_kernel.ws.out / name)
    with target.examined(cfg, ws) as box:
        assert box.is_target, box.hint
        assert box.origin.startswith("the QEMU machine's topology, read by a topology boot "
                                     "just now"), box.origin
        topo = pci.scan(box.sysfs, box.whence)
        assert pci.resolve_devices([PATH], topo) == {PATH: (pci.parse_bdf("01:00.0"),)}
        plan = install.make_plan(cfg, ws, box)
    assert any("0000:01:00.0" in line or PATH in line for line in plan.summary), plan.summary
    assert "seizing device" not in (ws.logs / "boot-topology.log").read_text(errors="replace")
    with target.examined(cfg, ws) as box:  # recorded: no second boot
        assert box.origin.startswith("the QEMU machine's topology the last doit boot "
                                     "recorded"), box.origin


def test_a_device_path_error_says_which_sysfs_it_read(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 25 item 3: resolved for a staging root, the path names nothing on this build
    host's /sys (root bridge _UID 77: no machine here has it); the error says which sysfs was
    read and how to give the box's; on the recorded tree of the box the box's path resolves."""
    path = "PNP0A08:77-1c.0-00.0"
    cfg = load(write_config(tmp_path, f'[install]\nroot = "{tmp_path / "root"}"\n'))
    monkeypatch.delenv("XENPIPE_SYSFS", raising=False)
    with target.examined(cfg, Workspace(cfg.workspace)) as box:
        topo = pci.scan(box.sysfs, box.whence)
        with pytest.raises(XenpipeError) as exc:
            pci.resolve_devices([path], topo)
    text = str(exc.value)
    assert text.startswith(f"device path {path} matches nothing: ")
    assert text.endswith(f"(read this build host's /sys: /sys is this build host's, not the "
                         f"box's that install.root {tmp_path / 'root'} is for; give the box's "
                         f"own: {pcibox.OTHER_WAYS})")
    tree = sysfs_trees.q35(tmp_path / "sys")
    monkeypatch.setenv("XENPIPE_SYSFS", str(tree.sysfs))
    with target.examined(cfg, Workspace(cfg.workspace)) as box:
        topo = pci.scan(box.sysfs, box.whence)
        q35_path = "PNP0A08:0-1c.0-00.0"
        assert pci.resolve_devices([q35_path], topo)[q35_path] == (pci.parse_bdf("01:00.0"),)
        with pytest.raises(XenpipeError) as exc:
            pci.resolve_devices(["PNP0A08:0-1c.3-00.0"], topo)
    assert f"(read the recorded tree XENPIPE_SYSFS={tree.sysfs}; other ways to give the " \
        "box's: [target] ssh" in str(exc.value)


# --------------------------------------------------------- inside the Xen doit boot booted
GUEST_LOG = Path(__file__).parent / "data" / "guest" / "crash.log"


def test_the_booted_xen_checks_go_into_boot_json(tmp_path: Path) -> None:
    """A guest boot's recorded console (tests/data/guest/crash.log: Xen's console, an older
    probe's dump without the snap lines, dom0's xl info): each device gets the running Xen's
    verdict on the probe's topology; the same console with
    the lines a Xen without a usable IOMMU prints instead makes them no-go, and the nightly
    report's JUnit has a failed case per no-go device."""
    from pipeline.boot import devicecheck, probe
    from pipeline.nightly import report

    console = GUEST_LOG.read_bytes().decode(errors="replace")
    cfg = load(write_config(tmp_path, '[passthrough]\ndevices = ["00:03.0", '
                                      '"PNP0A08:0-1c.0-0.0", "00:1f.6"]\n'))
    assert devicecheck.xl_info(console) is not None
    assert "(XEN) I/O virtualisation enabled" in devicecheck.xen_console(console)
    ws = Workspace(cfg.workspace)
    found = devicecheck.record(cfg, ws, console, probe.parse(console), tmp_path / "trees")
    assert [(c["bdf"], c["verdict"]) for c in found] == [
        ("0000:00:03.0", "ok"), ("0000:01:00.0", "ok"), ("0000:00:1f.6", "no-go")]
    assert found[0]["findings"] == [{"level": "info", "check": "xen",
                                     "text": "xl dmesg: I/O virtualisation enabled"}]
    assert found[2]["findings"][0]["text"] == "00:1f.6 is not on the virtual machine"
    broken = console.replace("hvm hvm_directio pv_directio", "hvm").replace(
        "I/O virtualisation enabled", "I/O virtualisation disabled")
    bad = devicecheck.record(cfg, ws, broken, probe.parse(broken), tmp_path / "trees")
    assert [c["verdict"] for c in bad] == ["no-go", "no-go", "no-go"]
    assert [f["level"] for f in bad[0]["findings"]] == ["no-go", "warn"]
    cases = report.testcases({"stages": [], "boot": {"available": True, "checks": bad}})
    assert [(c["name"], c["status"]) for c in cases][:2] == [
        ("device 0000:00:03.0: no-go", "failed"), ("device 0000:01:00.0: no-go", "failed")]
    assert report.testcases({"stages": [], "boot": {"available": True, "checks": found}})[0][
        "status"] == "passed"


def test_the_probe_listing_gives_dom0s_own_verdicts(tmp_path: Path) -> None:
    """The probe runs pci.box.SNAPSHOT in dom0 and prefixes each line (probe.INIT); here the
    real sh runs the same script on a recorded tree (nic_box) and the lines are spliced into
    a recorded guest boot's console (crash.log) as the probe prints them: the boot's
    verdicts are doit devices's, on dom0's trees, with the running Xen's lines."""
    from pipeline.boot import devicecheck, probe

    assert "sh /tmp/xenpipe-snapshot /sys /proc | sed 's/^/xenpipe-probe: snap /'" in \
        probe.INIT
    tree, proc = nic_machine(tmp_path)
    listing = pci.local_runner(pcibox.snapshot_argv(str(tree.sysfs), str(proc)), "snapshot")
    assert listing is not None
    lines = "".join(f"{probe.MARK} snap {ln}\r\r\n" for ln in listing.splitlines())
    console = GUEST_LOG.read_bytes().decode(errors="replace").replace(
        f"{probe.MARK} done", lines + f"{probe.MARK} done", 1)
    cfg = load(write_config(tmp_path, '[passthrough]\ndevices = ["01:00.0", "04:00.0"]\n'))
    found = devicecheck.record(cfg, Workspace(cfg.workspace), console, probe.parse(console),
                               tmp_path / "trees")
    assert [(c["bdf"], c["verdict"]) for c in found] == [("0000:01:00.0", "warn"),
                                                         ("0000:04:00.0", "warn")]
    nic = {f["check"]: f["text"] for f in found[0]["findings"]}
    assert nic["reset"] == "reset methods: flr bus"
    assert nic["use"].startswith("is eth0, which carries the default route")
    assert nic["xen"] == "xl dmesg: I/O virtualisation enabled"
    reset = next(f["text"] for f in found[1]["findings"] if f["check"] == "reset")
    assert reset.startswith("no reset method (no reset_method or reset file in "
                            "dom0:/sys/bus/pci/devices/0000:04:00.0)")


def test_xen_console_checks_without_xl_info(tmp_path: Path) -> None:
    """A boot whose dom0 ran no xl (the probe only): Xen's console still counts. The runner
    stands in for that console (the recorded xl dmesg, I/O virtualisation off)."""
    tree, proc = nic_machine(tmp_path)
    off = XL_DMESG.replace("I/O virtualisation enabled", "I/O virtualisation disabled")
    box = pci.Box(tree.sysfs, proc, "a recorded box", is_target=True,
                  run=lambda argv, what: off if argv[-1] == "dmesg" else None)
    cfg = load(write_config(tmp_path, '[passthrough]\ndevices = ["01:00.1"]\n'))
    [v] = passthrough.device_verdicts(cfg, Workspace(cfg.workspace), None, box)
    assert [(f.level, f.text) for f in v.findings if f.check == "xen"] == [
        ("info", "no xl info (no running Xen there, or not root): the running Xen's checks "
                 "wait for one"),
        ("warn", "xl dmesg: I/O virtualisation disabled: no IOMMU protects dom0 and Xen from "
                 "the guest's DMA")]


def test_the_probe_snapshot_runs_in_busybox(tmp_path: Path) -> None:
    """The script the probe writes to /tmp/xenpipe-snapshot (taken out of probe.INIT), run by
    the probe's own busybox sh (its od, readlink, sed) on a recorded tree: the same listing
    as the system sh gives."""
    from pipeline.boot import probe

    bb = probe.busybox()
    script = probe.INIT.split("<<'XENPIPE_SNAPSHOT'\n", 1)[1].split("XENPIPE_SNAPSHOT\n", 1)[0]
    assert script == pcibox.SNAPSHOT
    tree, proc = nic_machine(tmp_path)
    (tmp_path / "bin").mkdir()
    for tool in ("sh", "od", "tr", "readlink", "sed"):  # what --install -s gives the probe
        (tmp_path / "bin" / tool).symlink_to(bb)
    env = {"PATH": str(tmp_path / "bin")}
    res = subprocess.run([str(tmp_path / "bin" / "sh"), "-c", script, "x", str(tree.sysfs),
                          str(proc)], capture_output=True, text=True, env=env, check=True)
    listing = pci.local_runner(pcibox.snapshot_argv(str(tree.sysfs), str(proc)), "snapshot")
    assert res.stdout == listing
    assert "xenpipe-snapshot-end" in res.stdout and "F bus/pci/devices" not in res.stdout


def test_a_listing_cut_short_over_ssh_is_one_line_naming_the_box(tmp_path: Path) -> None:
    """A fake ssh (no sshd can run here for a fast test; the slow test in test_target.py uses
    the real one) whose box stops after one line: one error naming the box and the step."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text("#!/bin/sh\necho 'D bus'\n")
    (fake / "ssh").chmod(0o755)
    cfg = write_config(tmp_path, '[target]\nssh = "root@box"\n'
                                 '[passthrough]\ndevices = ["00:03.0"]\n')
    res = run_doit("devices", config=cfg, env={
        "XENPIPE_SYSFS": "", "PATH": f"{fake}:{os.environ['PATH']}"})
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "xenpipe: error: root@box: read the box's /sys and /proc (for the device checks): "
        "the box's sysfs listing ended early (no end marker)"]


def test_a_real_dom0s_listing(tmp_path: Path) -> None:
    """The listing the probe printed in a real boot's dom0 (tests/data/boot/dom0-snapshot.log):
    Xen 4.17 hides the DMAR table from dom0 as RMAD, which counts as the IOMMU's; the e1000
    (conventional PCI: no reset method, no MSI) warns, the e1000e (pm/bus reset, MSI-X) is ok."""
    from pipeline.boot import devicecheck, probe

    console = (Path(__file__).parent / "data" / "boot" / "dom0-snapshot.log").read_text()
    report = probe.parse(console)
    snap = pcibox.unpack(report.snapshot, tmp_path / "trees")
    assert (snap.sysfs / "firmware" / "acpi" / "tables" / "RMAD").exists()
    assert pci.iommu_warning(snap.sysfs) is None
    cfg = load(write_config(tmp_path, '[passthrough]\ndevices = ["00:03.0", '
                                      '"PNP0A08:0-1c.0-0.0"]\n'))
    found = devicecheck.record(cfg, Workspace(cfg.workspace), console, report,
                               tmp_path / "trees")
    assert [(c["bdf"], c["verdict"]) for c in found] == [("0000:00:03.0", "warn"),
                                                         ("0000:01:00.0", "ok")]
    e1000e = {f["check"]: f["text"] for f in found[1]["findings"]}
    assert (e1000e["reset"], e1000e["msi"], e1000e["driver"]) == (
        "reset methods: pm bus", "MSI/MSI-X", "held by pciback")
    assert {f["check"] for f in found[0]["findings"] if f["level"] == "warn"} == {"reset", "msi"}


def test_device_checks_that_cannot_be_made_leave_the_boot_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The trees' directory cannot be written (a file where it should be): a warning, no
    verdicts, no exception for the boot stage."""
    from pipeline.boot import devicecheck, probe

    console = (Path(__file__).parent / "data" / "boot" / "dom0-snapshot.log").read_text()
    (tmp_path / "file").write_text("")
    cfg = load(write_config(tmp_path, '[passthrough]\ndevices = ["00:03.0"]\n'))
    assert devicecheck.record(cfg, Workspace(cfg.workspace), console, probe.parse(console),
                              tmp_path / "file" / "trees") == []
    assert "boot: warning: the device checks in dom0 were not made: " in capsys.readouterr().out
