"""PCI devices: BDFs, device paths, sysfs scanning, the root-disk guard, boot options, the CLI.

Every machine is a recorded sysfs tree built as real directories and symlinks under tmp_path
(see sysfs_trees.py); nothing is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline import config, pci
from pipeline.errors import DeviceError
from pipeline.pci import Bdf, DevicePath, Hop

from .support import sysfs_trees as trees
from .support.doit import write_config
from .support.tools import REPO

# The 2009 grub.conf module line from REFERENCE.md, after the kernel image.
GRUB_2009 = ("ro root=LABEL=/ reassigndev=0000:00:19.0,0000:01:01.0 "
             "pciback.hide=(0000:00:19.0)(0000:01:01.0)")


class Machines:
    """The recorded trees, each built once per module: tests only read them."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.topos: dict[Callable[[Path], trees.Tree], pci.Topology] = {}

    def sysfs(self, machine: Callable[[Path], trees.Tree]) -> Path:
        d = self.base / machine.__name__
        if not d.exists():
            machine(d)
        return d

    def topo(self, machine: Callable[[Path], trees.Tree]) -> pci.Topology:
        if machine not in self.topos:
            self.topos[machine] = pci.scan(self.sysfs(machine))
        return self.topos[machine]


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> Machines:
    return Machines(tmp_path_factory.mktemp("machines"))


def error(fn: Callable[..., object], *args: object) -> str:
    with pytest.raises(DeviceError) as exc:
        fn(*args)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------ BDFs
@pytest.mark.parametrize("text, want", [
    ("00:19.0", Bdf(0, 0, 0x19, 0)),
    ("0000:01:01.0", Bdf(0, 1, 1, 0)),
    ("0001:0A:1F.7", Bdf(1, 0x0A, 0x1F, 7)),
    (" abcd:ff:00.3 ", Bdf(0xABCD, 0xFF, 0, 3)),
])
def test_bdf_parses_and_normalises(text: str, want: Bdf) -> None:
    bdf = pci.parse_bdf(text)
    assert bdf == want
    assert pci.parse_bdf(str(bdf)) == bdf
    assert str(bdf) == f"{want.domain:04x}:{want.bus:02x}:{want.dev:02x}.{want.func}"
    assert pci.parse_device(text) == want


BAD_BDFS = [  # (entry, what the message says is wrong with it)
    ("", "it is empty"),
    ("00:19", "no '.' before the function"),
    ("19.0", "0 ':' where 1 or 2 belong"),
    ("0000:00:00:19.0", "3 ':' where 1 or 2 belong"),
    ("0:19.0", 'bus "0" is not 2 hex digits'),
    ("00000:00:19.0", 'domain "00000" is not 4 hex digits'),
    ("0000:0g:19.0", 'bus "0g" is not 2 hex digits'),
    ("00:1g.0", 'device "1g" is not 2 hex digits'),
    ("00:19.10", 'function "10" is not 1 hex digit'),
    ("00:20.0", "device 20 is above 1f"),
    ("00:19.8", "function 8 is above 7"),
]


# ---------------------------------------------------------------------------- device paths
def test_device_path_parses_padded_or_not() -> None:
    a = pci.parse_path("PNP0A08:0-1c.1-0.0")
    assert a == DevicePath("PNP0A08", "0", (Hop(0x1C, 1), Hop(0, 0)))
    assert a == pci.parse_path("PNP0A08:0-1C.1-00.0")
    assert str(a) == "PNP0A08:0-1c.1-00.0"
    b = pci.parse_path("PNP0A03:100-1c.1-00.0")
    assert (b.hid, b.uid, str(b)) == ("PNP0A03", "100", "PNP0A03:100-1c.1-00.0")
    c = pci.parse_path("PNP0A03-1d.7")
    assert (c.uid, c.root, str(c)) == (None, "PNP0A03", "PNP0A03-1d.7")
    assert pci.parse_device("PNP0A08:0-1c.1-0.0") == a


BAD_PATHS = [
    ("PNP0A08:0", "no -DD.F hop after the root bridge PNP0A08:0"),
    ("PNP0A08", "no -DD.F hop after the root bridge PNP0A08"),
    ("PNP0A08:0-", "no -DD.F hop after the root bridge PNP0A08:0"),
    ("PNP0A08:0-1c.1--0.0", "hop 2 is empty"),
    ("PNP0A08:0-1c.1-", "hop 2 is empty"),
    (":0-1c.0", "no ACPI _HID"),
    ("-1c.0", "no ACPI _HID"),
    ("PNP0A08XX:0-1c.0", '_HID "PNP0A08XX" is longer than 8 characters'),
    ("pnp0a08:0-1c.0", '"pnp0a08" is not an ACPI _HID'),
    ("PNP0A08:-1c.0", "empty _UID after ':'"),
    ("PNP0A08:123456789-1c.0", '_UID "123456789" is longer than 8 characters'),
    ("PNP0A08:a,b-1c.0", '_UID "a,b" may hold only'),
    ("PNP0A08:0-1c", 'hop 1 "1c" is not DD.F'),
    ("PNP0A08:0-1c.1-123.0", 'hop 2 "123.0" is not DD.F'),
    ("PNP0A08:0-(1c.0|1c.1)", 'hop 1 "(1c.0|1c.1)" is not DD.F'),
    ("PNP0A08:0-20.0", 'hop 1 "20.0": device 20 is above 1f'),
    ("PNP0A08:0-1c.1-00.8", 'hop 2 "00.8": function 8 is above 7'),
]


@pytest.mark.parametrize("text, why, kind, form", [
    *[(t, w, "PCI address", "BB:DD.F or DDDD:BB:DD.F") for t, w in BAD_BDFS],
    *[(t, w, "device path", "HID[:UID]-DD.F[-DD.F...]") for t, w in BAD_PATHS],
])
def test_bad_entry_says_what_is_wrong(text: str, why: str, kind: str, form: str) -> None:
    """The message quotes the entry, says what is wrong, then the form it should have."""
    msg = error(pci.parse_device, text)
    assert msg.startswith(f'bad {kind} "{text}": {why}')
    assert form in msg


def test_entry_kind_is_chosen_by_shape() -> None:
    assert isinstance(pci.parse_device("abcd:00:19.0"), Bdf)  # all-hex domain: still a BDF
    assert "bad PCI address" in error(pci.parse_device, "zz:00.0")
    assert "bad device path" in error(pci.parse_device, "eth0")


# -------------------------------------------------------------------------------- scanning
def test_scan_reads_ids_class_driver_and_parents(machines: Machines) -> None:
    topo = machines.topo(trees.q35)
    nic = topo.get(pci.parse_bdf("01:00.0"))
    assert nic is not None
    assert (nic.cls, nic.ids, nic.driver) == (0x020000, "8086:10d3", "e1000e")
    assert nic.parents == (pci.parse_bdf("00:1c.0"),)
    assert nic.root.label == "PNP0A08:0"
    host = topo.get(pci.parse_bdf("00:00.0"))
    assert host is not None and host.driver is None and not host.is_bridge
    assert [str(d.bdf) for d in topo.devices][:3] == ["0000:00:00.0", "0000:00:01.0",
                                                       "0000:00:1c.0"]


def test_scan_without_a_pci_bus_is_one_line_error(tmp_path: Path) -> None:
    assert "bus/pci/devices not found" in error(pci.scan, tmp_path)


def test_scan_follows_xenpipe_sysfs(machines: Machines, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tree's IDE function 00:01.1 is found, and this machine's own devices are not:
    both hold only if the scan read XENPIPE_SYSFS (00:01.1 is absent from the real /sys of
    the QEMU machines tests run on; the check says so if it ever is not)."""
    real = {p.name for p in Path("/sys/bus/pci/devices").iterdir()} \
        if Path("/sys/bus/pci/devices").is_dir() else set()
    assert "0000:00:01.1" not in real, "pick a device this machine lacks"
    monkeypatch.setenv("XENPIPE_SYSFS", str(machines.sysfs(trees.pc)))
    topo = pci.scan()
    assert topo.get(pci.parse_bdf("00:01.1")) is not None
    fake = {f"0000:{b}" for b in ("00:00.0", "00:01.0", "00:01.1", "00:01.3", "00:02.0",
                                  "00:03.0")}
    assert all(topo.get(pci.parse_bdf(name)) is None for name in real - fake)


@pytest.mark.parametrize("machine, bdf, path", [
    (trees.q35, "01:00.0", "PNP0A08:0-1c.0-00.0"),  # behind a PCIe root port: two hops
    (trees.q35, "04:00.0", "PNP0A08:0-1c.1-00.0-00.0-00.0"),  # root port, switch, NVMe
    (trees.q35, "00:1f.0", "PNP0A08:0-1f.0"),  # multi-function device: every function
    (trees.q35, "00:1f.2", "PNP0A08:0-1f.2"),
    (trees.q35, "00:1f.3", "PNP0A08:0-1f.3"),
    (trees.pc, "00:01.1", "PNP0A03:0-01.1"),
    (trees.two_roots, "00:02.0", "PNP0A08:0-02.0"),
    (trees.two_roots, "80:02.0", "PNP0A08:128-02.0"),
    (trees.no_uid, "00:1d.7", "PNP0A03-1d.7"),
    (trees.ref2009, "00:19.0", "PNP0A08:0-19.0"),
    (trees.ref2009, "01:01.0", "PNP0A08:0-1e.0-01.0"),
])
def test_bdf_to_path_and_back(machines: Machines, machine: Callable[[Path], trees.Tree], bdf: str,
                              path: str) -> None:
    topo = machines.topo(machine)
    b = pci.parse_bdf(bdf)
    assert str(topo.path_of(b)) == path
    assert topo.lookup(pci.parse_path(path)).bdf == b


@pytest.mark.parametrize("machine", [trees.q35, trees.pc, trees.two_roots, trees.ref2009])
def test_every_device_round_trips(machines: Machines,
                                  machine: Callable[[Path], trees.Tree]) -> None:
    topo = machines.topo(machine)
    for d in topo.devices:
        assert topo.lookup(pci.parse_path(str(topo.path_of(d.bdf)))) == d


def test_unpadded_hops_match(machines: Machines) -> None:
    topo = machines.topo(trees.q35)
    assert str(topo.lookup(pci.parse_path("PNP0A08:0-1c.0-0.0")).bdf) == "0000:01:00.0"


def test_uid_must_match_exactly(machines: Machines) -> None:
    topo = machines.topo(trees.no_uid)
    msg = error(topo.lookup, pci.parse_path("PNP0A03:0-1d.7"))
    assert "matches nothing: no PCI root bridge PNP0A03:0 (did you mean PNP0A03?)" in msg
    topo = machines.topo(trees.two_roots)
    msg = error(topo.lookup, pci.parse_path("PNP0A08-02.0"))
    assert "no PCI root bridge PNP0A08;" in msg
    assert "PNP0A08:0 (pci0000:00), PNP0A08:128 (pci0000:80)" in msg


def test_root_bus_without_acpi_has_no_path(machines: Machines) -> None:
    topo = machines.topo(trees.no_uid)
    msg = error(topo.path_of, pci.parse_bdf("0001:00:00.0"))
    assert "root bus pci0001:00 has no ACPI companion" in msg
    assert "no PCI device 0000:00:07.0" in error(topo.path_of, pci.parse_bdf("00:07.0"))


@pytest.mark.parametrize("path, why", [
    ("PNP0A08:0-05.0", "no device 05.0 (hop 1) on the root bus of PNP0A08:0 (pci0000:00)"),
    ("PNP0A08:0-1c.0-01.0", "no device 01.0 (hop 2) on the secondary bus of bridge 0000:00:1c.0"),
    ("PNP0A08:0-1f.2-00.0", "0000:00:1f.2 (hop 1) is not a PCI-PCI bridge, so hop 2 00.0"),
    ("PNP0A08:7-1f.2", "no PCI root bridge PNP0A08:7 (did you mean PNP0A08:0?)"),
])
def test_path_that_matches_nothing_says_where_it_stops(machines: Machines, path: str,
                                                       why: str) -> None:
    topo = machines.topo(trees.q35)
    msg = error(topo.lookup, pci.parse_path(path))
    assert msg.startswith(f"device path {pci.parse_path(path)} matches nothing")
    assert why in msg


def test_path_that_matches_several_devices(machines: Machines) -> None:
    topo = machines.topo(trees.same_root_twice)
    msg = error(topo.lookup, pci.parse_path("PNP0A03-03.0"))
    assert "matches several devices (0000:00:03.0, 0000:40:03.0)" in msg


def test_bridge_covers_every_device_behind_it(machines: Machines) -> None:
    topo = machines.topo(trees.q35)
    assert [str(b) for b in topo.covered(pci.parse_path("PNP0A08:0-1c.1"))] == ["0000:04:00.0"]
    assert [str(b) for b in topo.covered(pci.parse_path("PNP0A08:0-1c.0"))] == ["0000:01:00.0"]
    assert "has no devices behind it" in error(topo.covered, pci.parse_path("PNP0A08:0-1c.2"))


# ------------------------------------------------------------------- system devices, guard
def test_root_disk_controller_is_found(machines: Machines, tmp_path: Path) -> None:
    topo = machines.topo(trees.ref2009)
    proc = trees.proc_tree(tmp_path / "proc", [("8:2", "/", "ext4", "/dev/sda2"),
                                               ("0:22", "/sys", "sysfs", "sysfs")])
    assert pci.system_devices(topo, proc) == {
        pci.parse_bdf("00:1f.2"): "holds the root filesystem (/dev/sda2 on /)"
    }


def test_root_on_nvme_behind_bridges_needs_the_bridges_too(machines: Machines,
                                                           tmp_path: Path) -> None:
    topo = machines.topo(trees.q35)
    proc = trees.proc_tree(tmp_path / "proc", [("259:1", "/", "ext4", "/dev/nvme0n1p1"),
                                               ("8:1", "/boot", "ext4", "/dev/sda1")],
                           swaps=["/dev/sda2"])
    needs = {str(b): why for b, why in pci.system_devices(topo, proc).items()}
    assert needs == {
        "0000:04:00.0": "holds the root filesystem (/dev/nvme0n1p1 on /)",
        "0000:03:00.0": "is the bridge to 0000:04:00.0, which holds the root filesystem",
        "0000:02:00.0": "is the bridge to 0000:04:00.0, which holds the root filesystem",
        "0000:00:1c.1": "is the bridge to 0000:04:00.0, which holds the root filesystem",
        "0000:00:1f.2": "holds /boot (/dev/sda1 on /boot)",
    }


@pytest.mark.parametrize("mount, mountinfo", [
    (("253:0", "/", "ext4", "/dev/mapper/vg-root"), True),  # LVM: follow the dm slaves
    (("0:33", "/", "btrfs", "/dev/mapper/vg-root"), True),  # no block major: by name
    (("0:33", "/", "btrfs", "/dev/nvme0n1p1"), True),
    (("", "/", "ext4", "/dev/mapper/vg-root"), False),  # /proc/mounts only
])
def test_root_device_is_traced_through_dm_and_names(tmp_path: Path,
                                                    mount: tuple[str, str, str, str],
                                                    mountinfo: bool) -> None:
    tree = trees.q35(tmp_path / "sys")
    tree.dm(0, "vg-root", "253:0", ["nvme0n1p1"])
    proc = trees.proc_tree(tmp_path / "proc", [mount], mountinfo=mountinfo)
    needs = pci.system_devices(pci.scan(tree.sysfs), proc)
    assert needs[pci.parse_bdf("04:00.0")].startswith("holds the root filesystem")


def test_passthrough_of_the_root_disk_is_refused(machines: Machines, tmp_path: Path) -> None:
    topo = machines.topo(trees.ref2009)
    proc = trees.proc_tree(tmp_path / "proc", [("8:2", "/", "ext4", "/dev/sda2")])
    msg = error(pci.check_passthrough, ["00:19.0", "00:1f.2"], topo, proc)
    assert msg == (
        "passthrough.devices: 0000:00:1f.2 holds the root filesystem (/dev/sda2 on /), so dom0 "
        "needs it; remove it from passthrough.devices or set install.allow_system_devices = true"
    )
    allowed = pci.check_passthrough(["00:19.0", "00:1f.2"], topo, proc, allow_system_devices=True)
    assert [str(b) for b in allowed] == [
        "0000:00:19.0", "0000:00:1f.2"]


def test_bridge_in_front_of_the_root_disk_is_refused(machines: Machines, tmp_path: Path) -> None:
    topo = machines.topo(trees.q35)
    proc = trees.proc_tree(tmp_path / "proc", [("259:1", "/", "ext4", "/dev/nvme0n1p1")])
    msg = error(pci.check_passthrough, ["PNP0A08:0-1c.1"], topo, proc)
    assert "0000:04:00.0 holds the root filesystem (/dev/nvme0n1p1 on /)" in msg
    msg = error(pci.check_passthrough, ["00:1c.1"], topo, proc)
    assert "0000:00:1c.1 is the bridge to 0000:04:00.0, which holds the root filesystem" in msg


def test_check_passthrough_resolves_paths_and_refuses_absent(machines: Machines,
                                                             tmp_path: Path) -> None:
    topo = machines.topo(trees.ref2009)
    proc = trees.proc_tree(tmp_path / "proc", [("8:2", "/", "ext4", "/dev/sda2")])
    good = ["00:19.0", "PNP0A08:0-1e.0", "0000:01:01.0"]
    assert [str(b) for b in pci.check_passthrough(good, topo, proc)] == [
        "0000:00:19.0", "0000:01:01.0"]
    msg = error(pci.check_passthrough, ["00:07.0"], topo, proc)
    assert msg.startswith("passthrough.devices: 00:07.0 is not present on this machine")


# -------------------------------------------------------------------------------- report
def test_report_2009_machine(machines: Machines, tmp_path: Path) -> None:
    sysfs = machines.sysfs(trees.ref2009)
    proc = trees.proc_tree(tmp_path / "proc", [("8:2", "/", "ext4", "/dev/sda2")])
    out = pci.report(["00:19.0", "PNP0A08:0-1e.0"], sysfs=sysfs, proc=proc)
    lines = out.splitlines()
    assert lines[0].split() == ["BDF", "DEVICE", "PATH", "CLASS", "VENDOR:DEV", "DRIVER",
                                "PASSTHROUGH", "NOTES"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["0000:00:19.0"] == ["0000:00:19.0", "PNP0A08:0-19.0", "0200", "Ethernet",
                                    "8086:10bd", "e1000e", "yes"]
    assert rows["0000:01:01.0"][1:] == ["PNP0A08:0-1e.0-01.0", "0180", "Mass", "storage",
                                        "1283:8212", "pata_it821x", "yes"]
    assert rows["0000:00:1e.0"][-1] == "-"  # the bridge itself is not passed through
    assert "holds the root filesystem" in " ".join(rows["0000:00:1f.2"])
    assert not [line for line in lines if line.startswith("warning:")]


def test_report_marks_what_a_hidden_bridge_takes_along(machines: Machines, tmp_path: Path) -> None:
    sysfs = machines.sysfs(trees.ref2009)
    proc = trees.proc_tree(tmp_path / "proc", [("8:2", "/", "ext4", "/dev/sda2")])
    out = pci.report(["00:1e.0"], sysfs=sysfs, proc=proc)
    marked = [line.split()[0] for line in out.splitlines() if " yes" in line]
    assert marked == ["0000:00:1e.0", "0000:01:01.0"]  # pciback seizes what is behind it


def test_report_warnings(machines: Machines, tmp_path: Path) -> None:
    sysfs = machines.sysfs(trees.same_root_twice)
    proc = trees.proc_tree(tmp_path / "proc", [("0:40", "/", "overlay", "overlay")])
    entries = ["00:07.0", "PNP0A08:0-1c.1-0.0", "PNP0A03-03.0"]  # a typo is a config error
    warnings = [line for line in pci.report(entries, sysfs=sysfs, proc=proc).splitlines()
                if line.startswith("warning:")]
    assert warnings[0] == ("warning: passthrough.devices: 00:07.0 is not present on this "
                           f"machine ({sysfs})")
    assert warnings[1].startswith("warning: passthrough.devices: device path "
                                  "PNP0A08:0-1c.1-00.0 matches nothing")
    assert "PNP0A03-03.0 matches several devices" in warnings[2]
    assert warnings[3].startswith("warning: cannot tell which PCI device holds the root "
                                  "filesystem (overlay, overlay)")
    assert "no ACPI tables" in warnings[4]
    assert len(warnings) == 5


def test_report_warns_about_the_root_disk_and_a_missing_iommu(machines: Machines,
                                                              tmp_path: Path) -> None:
    sysfs = machines.sysfs(trees.pc)
    proc = trees.proc_tree(tmp_path / "proc", [("8:1", "/", "ext4", "/dev/sda1")])
    out = pci.report(["PNP0A03:0-01.1"], sysfs=sysfs, proc=proc)
    assert ("warning: passthrough.devices: 0000:00:01.1 holds the root filesystem "
            "(/dev/sda1 on /), so dom0 needs it") in out
    assert "this machine reports no IOMMU" in out and "HVM guests will not work" in out


def test_report_warns_when_xen_cmdline_turns_the_iommu_off(machines: Machines,
                                                           tmp_path: Path) -> None:
    body = '[install]\nxen_cmdline = "dom0_mem=1G iommu=verbose,off"\n'
    c = config.load(write_config(tmp_path, body))
    out = pci.report(c.passthrough.devices, xen_cmdline=c.install.xen_cmdline,
                     sysfs=machines.sysfs(trees.ref2009), proc=tmp_path)
    assert out.splitlines()[-2:] == [
        f"warning: cannot read {tmp_path}/self/mountinfo or {tmp_path}/mounts, so the device "
        "holding / is unknown; check by hand before passing storage controllers through",
        "warning: install.xen_cmdline turns the IOMMU off, so passthrough to HVM guests will "
        "not work",
    ]
    assert not pci.iommu_disabled("iommu=1 iommu_inclusive_mapping=0")


@pytest.mark.parametrize("tables, warns", [
    (("DMAR",), False), (("IVRS",), False), (("XMAR",), False), (("APIC", "DSDT"), True),
])
def test_iommu_warning(tmp_path: Path, tables: tuple[str, ...], warns: bool) -> None:
    tree = trees.Tree(tmp_path)
    tree.acpi_tables(*tables)
    assert (pci.iommu_warning(tmp_path) is not None) == warns


# ------------------------------------------------------------------------- boot parameters
def kernel_tree(root: Path, version: tuple[int, int, int], pciback: str | None,
                extra: dict[str, str] | None = None) -> Path:
    v = "VERSION = {}\nPATCHLEVEL = {}\nSUBLEVEL = {}\nEXTRAVERSION =\n".format(*version)
    files = {"Makefile": v, **(extra or {})}
    if pciback:
        files[f"drivers/xen/{pciback}/pci_stub.c"] = '__setup("pciback.hide=", pcistub_hide);\n'
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("version, pciback, extra, want", [
    ((2, 6, 18), "pciback", {}, "xenlinux"),
    ((6, 1, 119), "xen-pciback", {}, "mainline"),
    ((2, 6, 18), "pciback", {"drivers/pci/guestdev.c": "/* NEC */\n"}, "guestdev"),
    ((2, 6, 18), "pciback", {"drivers/pci/reserve.c": '__setup("guestdev=", setup);\n'},
     "guestdev"),
    ((6, 1, 0), "xen-pciback", {"drivers/xen/xen-pciback/guest.c":
                                'early_param("guestdev", pci_guestdev_setup);\n'}, "guestdev"),
    ((2, 6, 18), "pciback", {"Documentation/kernel-parameters.txt":
                             "\tguestdev=\t[PCI,ACPI,XEN]\n"}, "guestdev"),
])
def test_detect_flavour(tmp_path: Path, version: tuple[int, int, int], pciback: str,
                        extra: dict[str, str], want: str) -> None:
    assert pci.detect_flavour(kernel_tree(tmp_path, version, pciback, extra)) == want


def test_kernel_family_decides_a_guestdev_kernels_hide_option(tmp_path: Path) -> None:
    assert pci.kernel_family(kernel_tree(tmp_path / "a", (2, 6, 18), "pciback")) == "xenlinux"
    assert pci.kernel_family(kernel_tree(tmp_path / "b", (6, 1, 0), "xen-pciback")) == "mainline"
    assert pci.kernel_family(kernel_tree(tmp_path / "c", (3, 0, 0), None)) is None


def test_detect_flavour_override_and_errors(tmp_path: Path) -> None:
    tree = kernel_tree(tmp_path, (3, 0, 0), None)
    msg = error(pci.detect_flavour, tree)
    assert "(Linux 3.0.0)" in msg and '[kernel] flavour = "xenlinux"' in msg
    assert pci.detect_flavour(tree, "mainline") == "mainline"
    assert "expected auto, xenlinux" in error(pci.detect_flavour, tree, "xen")


def test_2009_grub_line_exactly() -> None:
    params = pci.dom0_params("xenlinux", ["00:19.0", "01:01.0"], True, None)
    assert " ".join(["ro root=LABEL=/", *params]) == GRUB_2009
    assert pci.dom0_params("xenlinux", ["00:19.0", "01:01.0"], False) == [
        "pciback.hide=(0000:00:19.0)(0000:01:01.0)"]


def test_mainline_params() -> None:
    assert pci.dom0_params("mainline", ["00:19.0", "0000:01:01.0", "00:19.0"], True) == [
        "pci=resource_alignment=12@0000:00:19.0;12@0000:01:01.0",
        "xen-pciback.hide=(0000:00:19.0)(0000:01:01.0)",
    ]
    assert pci.dom0_params("mainline", ["00:19.0"], False) == [
        "xen-pciback.hide=(0000:00:19.0)"]
    assert pci.dom0_params("mainline", [], True) == []


def test_assignable_mode_hides_nothing_at_boot_and_keeps_the_realignment(
        machines: Machines) -> None:
    """[passthrough] mode = "assignable": dom0 keeps the devices at boot (no hide=, no
    guestdev=); xl pci-assignable-add hands them over later. Realignment stays a boot option."""
    assert pci.dom0_params("mainline", ["00:19.0"], True, hide=False) == [
        "pci=resource_alignment=12@0000:00:19.0"]
    assert pci.dom0_params("xenlinux", ["00:19.0", "01:01.0"], True, hide=False) == [
        "reassigndev=0000:00:19.0,0000:01:01.0"]
    assert pci.dom0_params("mainline", ["00:19.0"], False, hide=False) == []
    assert pci.dom0_params("guestdev", ["00:19.0", "PNP0A08:0-1e.0-1.0"], False,
                           hide=False) == []
    topo = machines.topo(trees.ref2009)
    assert pci.dom0_params("guestdev", ["00:19.0", "PNP0A08:0-1e.0"], True, topo,
                           hide=False) == [
        "pci=resource_alignment=12@0000:00:19.0;12@0000:01:01.0"]
    # XenLinux's guestdev series realigns guestdev= devices only: without them, nothing, and
    # a BDF needs no conversion to a path
    assert pci.dom0_params("guestdev", ["00:19.0"], True, None, "xenlinux", hide=False) == []


def test_guestdev_params_pass_paths_and_hide_bdfs(machines: Machines) -> None:
    """patches/linux (mainline 6.1): device paths in guestdev= as written, BDFs in
    xen-pciback.hide= (both seize), so no topology is needed unless paths are realigned."""
    assert pci.dom0_params("guestdev", ["PNP0A08:0-1c.1-0.0"], False) == [
        "guestdev=PNP0A08:0-1c.1-0.0"]
    assert pci.dom0_params("guestdev", ["00:19.0", "PNP0A08:0-1e.0-1.0", "01:01.0"], False) == [
        "xen-pciback.hide=(0000:00:19.0)(0000:01:01.0)", "guestdev=PNP0A08:0-1e.0-1.0"]
    topo = machines.topo(trees.ref2009)
    assert pci.dom0_params("guestdev", ["00:19.0", "PNP0A08:0-1e.0"], True, topo) == [
        "pci=resource_alignment=12@0000:00:19.0;12@0000:01:01.0",
        "xen-pciback.hide=(0000:00:19.0)", "guestdev=PNP0A08:0-1e.0"]
    assert "needs the machine's PCI topology" in error(
        pci.dom0_params, "guestdev", ["PNP0A03:100-1c.1-00.0"], True, None)
    assert "matches nothing" in error(pci.dom0_params, "guestdev", ["PNP0A08:0-05.0"], True, topo)
    with pytest.raises(ValueError):
        pci.dom0_params("guestdev", ["00:19.0"], False, None, "hvm")


def test_xenlinux_guestdev_params_convert_bdfs_to_paths(machines: Machines) -> None:
    """The 2008 series on 2.6.18-xen: reassign_resources realigns guestdev= devices only."""
    assert pci.dom0_params("guestdev", ["PNP0A03:100-1c.1-00.0", "PNP0A03:100-1d.7"], True,
                           None, "xenlinux") == [
        "reassign_resources", "guestdev=PNP0A03:100-1c.1-00.0,PNP0A03:100-1d.7"]
    topo = machines.topo(trees.ref2009)
    assert pci.dom0_params("guestdev", ["00:19.0", "01:01.0"], False, topo, "xenlinux") == [
        "guestdev=PNP0A08:0-19.0,PNP0A08:0-1e.0-01.0"]
    assert "cannot be converted" in error(pci.dom0_params, "guestdev", ["00:19.0"], False, None,
                                          "xenlinux")
    assert "no PCI device 0000:00:07.0" in error(pci.dom0_params, "guestdev", ["00:07.0"],
                                                 False, topo, "xenlinux")


def test_paths_become_current_bdfs_without_guestdev(machines: Machines) -> None:
    topo = machines.topo(trees.ref2009)
    params = pci.dom0_params("xenlinux", ["PNP0A08:0-19.0", "PNP0A08:0-1e.0-1.0"], True, topo)
    assert " ".join(["ro root=LABEL=/", *params]) == GRUB_2009
    assert pci.resolve_devices(["PNP0A08:0-1e.0", "00:19.0"], topo) == {
        "PNP0A08:0-1e.0": (pci.parse_bdf("01:01.0"),), "00:19.0": (pci.parse_bdf("00:19.0"),)}
    msg = error(pci.dom0_params, "mainline", ["PNP0A08:0-19.0"], False, None)
    assert "needs this machine's PCI topology" in msg
    assert "matches nothing" in error(pci.dom0_params, "mainline", ["PNP0A08:0-05.0"], False,
                                      topo)
    with pytest.raises(ValueError):
        pci.dom0_params("auto", ["00:19.0"], False)


@pytest.mark.parametrize("given, want", [
    ("dom0_mem=2048M", "dom0_mem=2048M iommu=1"),
    ("", "iommu=1"),
    ("iommu=1 dom0_mem=2048M", "iommu=1 dom0_mem=2048M"),
    ("iommu", "iommu"),  # the 2009 grub.conf
    ("dom0_mem=1G  iommu=no-intremap,verbose", "dom0_mem=1G iommu=no-intremap,verbose"),
    ("iommu=0", "iommu=0"),
    ("iommu_inclusive_mapping=1", "iommu_inclusive_mapping=1 iommu=1"),
])
def test_xen_cmdline_always_has_iommu(given: str, want: str) -> None:
    assert pci.xen_cmdline(given) == want


# -------------------------------------------------------------------------------------- CLI
def cli(sysfs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XENPIPE_SYSFS": str(sysfs), "XENPIPE_PROC": str(sysfs / "noproc")}
    return subprocess.run([sys.executable, "-m", "pipeline.pci", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=30)


def test_cli_prints_device_path_like_device_path_py(machines: Machines) -> None:
    sysfs = machines.sysfs(trees.ref2009)
    r = cli(sysfs, "01:01.0", "PNP0A08:0-1e.0")
    assert (r.returncode, r.stdout, r.stderr) == (0, "PNP0A08:0-1e.0-01.0\n0000:01:01.0\n", "")


def test_cli_bad_bdf_is_one_line_and_exit_1(machines: Machines) -> None:
    sysfs = machines.sysfs(trees.ref2009)
    r = cli(sysfs, "00:20.0")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ('xenpipe: error: bad PCI address "00:20.0": device 20 is above 1f; '
                        f"{pci.BDF_FORMS}\n")
    r = cli(sysfs, "07:00.0")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("xenpipe: error: no PCI device 0000:07:00.0 under")


def test_main_without_arguments_prints_the_table(machines: Machines, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XENPIPE_SYSFS", str(machines.sysfs(trees.pc)))
    monkeypatch.setenv("XENPIPE_PROC", str(trees.proc_tree(
        tmp_path / "proc", [("8:1", "/", "ext4", "/dev/sda1")])))
    assert pci.main([]) == 0
    out = capsys.readouterr().out
    assert "0000:00:01.1  PNP0A03:0-01.1" in out and "holds the root filesystem" in out
