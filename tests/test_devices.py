"""The go/no-go per passthrough device (pipeline/pci/checks.py) on recorded sysfs trees, and
``doit devices`` printing it and refusing a no-go unless force=1."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import pci
from pipeline.pci import checks

from .support import sysfs_trees
from .support.doit import run_doit, write_config


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
    assert "abcd:00:00.0 is not present on the box examined (/sys)" in line
    assert ("/sys is this build host's, not the box's that install.root" in line) == \
        (root is None)
    assert '[target] ssh = "root@box" (its /sys over ssh)' in line
    assert "XENPIPE_SYSFS=<a copy of its /sys>" in line
