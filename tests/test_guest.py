"""doit boot with [boot] guest = true: the dom0 userland (rootfs.py), the guest side
(guest.py) and their place in doit boot.

Fast tests: apt sources, the cache key, pruning and packing with the real cpio and gzip, guest
configs rendered for the boot VM from what doit install wrote (guests.py), the dom0 and guest
/init scripts (checked by a real shell), and the console verdicts, replayed from transcripts
recorded from real guest boots (tests/data/guest/, our own output: Debian's Xen 4.17, the
tinyconfig + xen-dom0 6.1 kernel as dom0 and PV guest, q35 + intel-iommu, an e1000 at 00:03.0
and an e1000e behind a PCIe root port). The slow tests build the Debian root with debootstrap
and boot the real chain.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import pexpect
import pytest

from pipeline import boot, config, passthrough, pci
from pipeline.boot import checks, guestboot, guestverdict, probe, rootfs
from pipeline.boot import guestcheck as guest
from pipeline.errors import BootError, DeviceError, InstallError
from pipeline.install import guestcfg as guests
from pipeline.workspace import Workspace

from .support.doit import run_doit, write_config
from .support.tools import need

DATA = Path(__file__).parent / "data" / "guest"
E1000, E1000E, ICH9 = (pci.parse_bdf(b) for b in ("00:03.0", "01:00.0", "00:1f.2"))
PATH = "PNP0A08:0-1c.0-0.0"

BODY = f"""
[kernel]
source = "linux"
base = "tinyconfig"
flavour = "mainline"

[sources.linux]
vcs = "tarball"
url = "/usr/src/linux-source-6.1.tar.xz"

[install]
bootloader = "none"
initramfs = "none"
xen_cmdline = "iommu=1 dom0_mem=1024M"
dom0_cmdline = "console=hvc0"

[passthrough]
devices = ["00:03.0", "{PATH}"]

[[guests]]
name = "demo"
config = "/etc/xen/demo.cfg"
devices = ["00:03.0", "{PATH}"]

[boot]
xen = "/boot/xen-4.17-amd64.gz"
devices = ["intel-iommu", "e1000,addr=03.0,netdev=pt0",
           "pcie-root-port,id=rp1,bus=pcie.0,addr=1c.0", "e1000e,bus=rp1,netdev=pt1",
           "e1000,addr=04.0,netdev=dom0,mac=52:54:00:20:00:04"]
guest = true
"""


def load(tmp_path: Path, body: str = BODY) -> config.Config:
    return config.load(write_config(tmp_path, body))


# ---------------------------------------------------------------------------- apt sources
DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://example.org/off
Suites: bookworm
Components: main
Enabled: no
"""


def apt_dir(tmp_path: Path, sources: str | None = DEB822, one_line: str | None = None) -> Path:
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    if sources is not None:
        (d / "sources.list.d" / "debian.sources").write_text(sources)
    if one_line is not None:
        (d / "sources.list").write_text(one_line)
    return d


def test_deb822_sources_as_apt_reads_them(tmp_path: Path) -> None:
    found = rootfs.apt_sources(apt_dir(tmp_path))
    assert [(s.uris, s.suites) for s in found] == [
        (("http://deb.debian.org/debian",), ("bookworm", "bookworm-updates")),
        (("http://deb.debian.org/debian-security",), ("bookworm-security",)),
    ]  # deb-src and disabled stanzas are not sources of binary packages
    mirror, suite, chroot = rootfs.debian_sources(found)
    assert (mirror, suite) == ("http://deb.debian.org/debian", "bookworm")
    assert [s.components for s in chroot] == [("main",), ("main",)]
    assert chroot[1].deb822() == (
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def test_one_line_sources_and_other_releases(tmp_path: Path) -> None:
    text = ("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm "
            "main\ndeb-src http://mirror.example/debian bookworm main\n"
            "deb http://mirror.example/debian trixie main\n"
            "deb http://other.example/repo bookworm contrib\n")
    found = rootfs.apt_sources(apt_dir(tmp_path, None, text))
    assert found[0] == rootfs.AptSource(("http://mirror.example/debian",), ("bookworm",),
                                        ("main",), "/k.gpg")
    mirror, suite, chroot = rootfs.debian_sources(found)
    assert (mirror, suite) == ("http://mirror.example/debian", "bookworm")
    assert [s.suites for s in chroot] == [("bookworm",)]  # not trixie, not a contrib-only repo
    with pytest.raises(BootError, match="no apt sources"):
        rootfs.debian_sources(rootfs.apt_sources(apt_dir(tmp_path / "empty", None)))


def test_cache_key_follows_packages_and_sources(tmp_path: Path) -> None:
    found = rootfs.apt_sources(apt_dir(tmp_path))
    base = rootfs.key(rootfs.PACKAGES, found)
    assert base == rootfs.key(tuple(reversed(rootfs.PACKAGES)), found)  # a set, not a list
    assert base != rootfs.key((*rootfs.PACKAGES, "strace"), found)
    other = [rootfs.AptSource(("http://mirror.example/debian",), ("bookworm",), ("main",))]
    assert base != rootfs.key(rootfs.PACKAGES, other)
    ws = Workspace(tmp_path / "ws")
    assert rootfs.cached(ws, rootfs.PACKAGES, found) is None
    cache = rootfs.cache_dir(ws)
    cache.mkdir(parents=True)
    for name in (f"rootfs-{base}.cpio.gz", f"guest-tools-{base}.cpio.gz"):
        (cache / name).write_bytes(b"x")
    assert rootfs.cached(ws, rootfs.PACKAGES, found) is None  # no manifest: not finished
    (cache / f"rootfs-{base}.json").write_text("{}")
    hit = rootfs.cached(ws, rootfs.PACKAGES, found)
    assert hit is not None and hit.image.name == f"rootfs-{base}.cpio.gz"


def test_build_comes_from_the_cache_without_root_or_network(tmp_path: Path) -> None:
    found = rootfs.apt_sources(apt_dir(tmp_path))
    ws = Workspace(tmp_path / "ws")
    k = rootfs.key(rootfs.PACKAGES, found)
    cache = rootfs.cache_dir(ws)
    cache.mkdir(parents=True)
    for name in (f"rootfs-{k}.cpio.gz", f"guest-tools-{k}.cpio.gz"):
        (cache / name).write_bytes(b"x")
    (cache / f"rootfs-{k}.json").write_text("{}")
    assert rootfs.build(ws, rootfs.PACKAGES, found).tools.name == f"guest-tools-{k}.cpio.gz"


def test_prune_keeps_licences_and_packs_with_cpio(tmp_path: Path) -> None:
    need("cpio")
    tree = tmp_path / "tree"
    for rel in ("usr/share/doc/xen/copyright", "usr/share/doc/xen/changelog.gz",
                "usr/share/man/man1/xl.1.gz", "usr/share/locale/de/LC_MESSAGES/x.mo",
                "var/lib/apt/lists/deb.debian.org_dists", "usr/bin/xl", "etc/xen/xl.conf"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(rel)
    (tree / "usr/share/doc/empty").mkdir()
    (tree / "usr/share/doc/link").symlink_to("xen")
    rootfs.prune(tree)
    left = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if not p.is_dir())
    assert left == ["etc/xen/xl.conf", "usr/bin/xl", "usr/share/doc/xen/copyright"]
    assert (tree / "usr/share/man").is_dir()  # emptied, still there
    out = tmp_path / "out.cpio.gz"
    rootfs.pack(tree, out, tmp_path / "log")
    listing = subprocess.run(["cpio", "-t", "-v", "--quiet"], input=gzip.decompress(
        out.read_bytes()), capture_output=True, check=True).stdout.decode()
    assert " usr/bin/xl\n" in listing and " etc/xen/xl.conf\n" in listing
    assert all(" root " in ln for ln in listing.splitlines())  # owned by root, whoever packs
    assert not list(tmp_path.glob(".out*"))


def test_mounts_below_a_tree_deepest_first(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n"
                      f"proc {tmp_path}/t/proc proc rw 0 0\n"
                      f"udev {tmp_path}/t/dev/pts devpts rw 0 0\n"
                      f"tmpfs {tmp_path}/tt tmpfs rw 0 0\n"
                      f"tmpfs {tmp_path}/t/my\\040dir tmpfs rw 0 0\n")
    assert rootfs.mounts_below(tmp_path / "t", mounts) == [
        tmp_path / "t/dev/pts", tmp_path / "t/proc", tmp_path / "t/my dir"]


# ------------------------------------------------------------------------------ guest plans
def test_enabled_by_config_or_by_nightly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        ) -> None:
    monkeypatch.delenv(guest.NIGHTLY_ENV, raising=False)
    unset = BODY.replace("guest = true\n", "")
    assert guest.enabled(load(tmp_path))
    assert not guest.enabled(load(tmp_path, unset))
    assert not guest.enabled(load(tmp_path, BODY.replace("guest = true", "guest = false")))
    monkeypatch.setenv(guest.NIGHTLY_ENV, "1")
    assert guest.enabled(load(tmp_path, unset))  # nightly: on when [[guests]] exist
    assert not guest.enabled(load(tmp_path, BODY.replace("guest = true", "guest = false")))
    no_guests = unset.split("[[guests]]")[0] + "[boot]\n" + unset.split("[boot]")[1]
    assert not guest.enabled(load(tmp_path, no_guests))


def q35_topology(tmp_path: Path) -> pci.Topology:
    """The demo VM's topology, from a recorded probe dump (tests/data/guest/pass.log)."""
    report = probe.parse((DATA / "pass.log").read_text(errors="replace"))
    return pci.scan(probe.record_sysfs(report, tmp_path / "sysfs"))


def test_plan_renders_what_doit_install_would_write(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    with pytest.raises(DeviceError):  # the device path needs the VM's topology first
        guest.plan(cfg, None)
    (p,) = guest.plan(cfg, q35_topology(tmp_path))
    assert p.bdfs == (E1000, E1000E)
    assert p.entries == ("00:03.0", "01:00.0")
    assert p.origin.startswith("rendered as doit install writes")
    assert "pci = ['00:03.0', '01:00.0']\n" in p.config
    install_text = guests.update(None, cfg.guests[0], [E1000, E1000E], "x")
    assert guests.entries(install_text) == list(p.entries)


def test_plan_takes_the_pci_list_doit_install_wrote(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    path = guest.installed(cfg, cfg.guests[0])
    path.parent.mkdir(parents=True)
    path.write_text("# by hand and by doit install\nname = 'other'\nbuilder = 'hvm'\n"
                    "memory = 4096\npci = [ '0000:00:03.0@4,permissive=1', '01:00.0' ]\n")
    (p,) = guest.plan(cfg, None)  # no topology needed: the file has BDFs
    assert p.origin == str(path)
    assert p.bdfs == (E1000, E1000E)
    assert "pci = ['0000:00:03.0@4,permissive=1', '01:00.0']\n" in p.config
    for line in ('name = "demo"', 'type = "pv"', "memory = 256", 'on_crash = "preserve"',
                 'extra = "console=hvc0 xenpipe.name=demo xenpipe.devices=2 xenpipe.peer=-"'):
        assert line + "\n" in p.config  # the test guest, not the user's HVM domain
    assert "builder" not in p.config and "4096" not in p.config
    assert guests.entries(p.config) == list(p.entries)


def test_an_hvm_guest_gets_an_hvm_test_config(tmp_path: Path) -> None:
    """[[guests]] type = "hvm": the boot VM's test guest is an HVM domain (xl's type, Debian's
    qemu-system-xen as device model, the serial console xl create -c follows, no display),
    booting the same kernel directly; the PV one keeps hvc0 and type "pv"."""
    cfg = load(tmp_path, BODY.replace('config = "/etc/xen/demo.cfg"\n',
                                      'config = "/etc/xen/demo.cfg"\ntype = "hvm"\n'))
    assert cfg.guests[0].type == "hvm"
    (p,) = guest.plan(cfg, q35_topology(tmp_path))
    for line in ('type = "hvm"', 'device_model_version = "qemu-xen"', 'serial = "pty"',
                 'vga = "none"', "vnc = 0", "sdl = 0",
                 f'kernel = "{guest.GUEST_DIR}/vmlinuz"',
                 'extra = "console=ttyS0 xenpipe.name=demo xenpipe.devices=2 xenpipe.peer=-"',
                 "pci = ['00:03.0', '01:00.0']"):
        assert line + "\n" in p.config
    assert 'type = "pv"' not in p.config and "hvc0" not in p.config
    (pv,) = guest.plan(load(tmp_path), q35_topology(tmp_path))
    assert 'type = "pv"\n' in pv.config and "device_model" not in pv.config
    # doit install's new config for it, in each toolstack's words
    assert 'type = "hvm"\n' in guests.update(None, cfg.guests[0], [E1000], "x")
    xm = dataclasses.replace(cfg.guests[0], toolstack="xm")
    assert "builder = 'hvm'\n" in guests.update(None, xm, [E1000], "x")
    assert "hvm" not in guests.update(None, load(tmp_path).guests[0], [E1000], "x")
    # the boot fingerprint follows the type
    fps = [boot.fingerprint(c, Workspace(c.workspace))["guest"] for c in (cfg, load(tmp_path))]
    assert fps[0] != fps[1]


# The HVM test guest's xl config, written out by hand from xl.cfg(5) (Xen 4.17): "type" hvm,
# "device_model_version" qemu-xen (Debian's qemu-system-xen), "serial" pty (the console
# `xl create -c` attaches to), "vga" none with vnc and sdl off, direct kernel boot
# ("kernel", "ramdisk", "extra"), and "pci" as xl-pci-configuration(5) spells each device;
# the options of a [[guests]] devices entry ride along.
HVM_EXPECTED = """\
# xenpipe boot check: [[guests]] demo, started by dom0's /init (xl create -c).
# pci: from ORIGIN. The rest is the test guest: an HVM guest running the dom0
# kernel with a busybox initramfs that lists its PCI devices, loads their drivers,
# pings dom0 from each NIC, then waits for dom0 to destroy it.
name = "demo"
type = "hvm"
device_model_version = "qemu-xen"
serial = "pty"
vga = "none"
vnc = 0
sdl = 0
kernel = "/var/lib/xenpipe/guest/vmlinuz"
ramdisk = "/var/lib/xenpipe/guest/initrd.gz"
extra = "console=ttyS0 xenpipe.name=demo xenpipe.devices=2 xenpipe.peer=-"
memory = 256
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "preserve"
pci = ['00:03.0,permissive=1', '01:00.0,seize=1']
"""


def test_an_hvm_guest_config_is_rendered_line_for_line(tmp_path: Path) -> None:
    """[[guests]] type = "hvm" with per-device options, before any doit install: the boot
    VM's xl config is exactly :data:`HVM_EXPECTED` (the device path resolved to its BDF with
    its option kept), its plan an HVM one with the HVM time budget."""
    body = BODY.replace(f'config = "/etc/xen/demo.cfg"\ndevices = ["00:03.0", "{PATH}"]',
                        'config = "/etc/xen/demo.cfg"\ntype = "hvm"\n'
                        f'devices = ["00:03.0,permissive=1", "{PATH},seize=1"]')
    assert body != BODY
    (p,) = guest.plan(load(tmp_path, body), q35_topology(tmp_path))
    assert p.kind == "hvm" and p.timeout == guest.HVM_TIMEOUT > guest.GUEST_TIMEOUT
    assert p.config.splitlines() == HVM_EXPECTED.replace("ORIGIN", p.origin).splitlines()
    assert p.config.endswith("\n")


def test_a_boot_with_an_hvm_guest_gives_qemu_svm_with_nested_paging(tmp_path: Path) -> None:
    """Debian's Xen has no shadow paging ("neither hap nor shadow paging available" from xl
    create on plain qemu64), so a config with an HVM guest boots TCG with SVM's nested paging
    (Xen: "HAP detected"); PV configs keep plain qemu64, and KVM is left to the host."""
    from pipeline.boot import qemu

    hvm = load(tmp_path, BODY.replace('config = "/etc/xen/demo.cfg"\n',
                                      'config = "/etc/xen/demo.cfg"\ntype = "hvm"\n'))
    pv = load(tmp_path)
    assert (qemu.cpu(hvm, False), qemu.cpu(pv, False), qemu.cpu(hvm, True)) == (
        "qemu64,+svm,+npt", "qemu64", "qemu64")
    argv = qemu.machine_argv(hvm, False, ["-kernel", "xen"])
    assert argv[argv.index("-cpu") + 1] == "qemu64,+svm,+npt"


def test_recorded_xen_consoles_say_whether_an_hvm_guest_can_have_the_device(
        tmp_path: Path) -> None:
    """The HVM probe's recorded consoles (tests/data/boot/hvm-*.log: Xen 4.17 under TCG with
    an IOMMU, up to dom0): with SVM (qemu64) Xen enables HVM and the IOMMU, so the device
    of an HVM guest gets no no-go; with VT-x asked for, TCG drops vmx, Xen has no HVM, and the
    same device is a no-go that says why, while a PV guest's device stays fine."""
    from pipeline.boot import devicecheck
    from pipeline.pci import xenplatform

    boot_data = DATA.parent / "boot"
    svm, vmx = ((boot_data / f"hvm-{n}.log").read_bytes().decode(errors="replace")
                for n in ("svm-amd-iommu", "vmx-intel-iommu"))
    assert "TCG doesn't support requested feature: CPUID.01H:ECX.vmx" in vmx
    for text in (svm, vmx):
        assert "(XEN) I/O virtualisation enabled" in text
        assert "(XEN) Interrupt remapping enabled" in text
    assert "(XEN) AMD-Vi: IOMMU 0 Enabled." in svm and "(XEN) HVM: SVM enabled" in svm
    assert "HVM:" not in vmx
    good, bad = (devicecheck.xen_console(t) for t in (svm, vmx))
    assert xenplatform.no_hvm(good) is None
    assert [(f.level, f.text) for f in xenplatform.check_xen(None, good, E1000, True)] == [
        ("info", "xl dmesg: I/O virtualisation enabled")]
    assert [(f.level, f.text) for f in xenplatform.check_xen(None, bad, E1000, True)] == [
        ("no-go", 'xl dmesg: Xen found no SVM or VT-x (no "HVM: SVM enabled" or "HVM: VMX '
                  'enabled" line): it starts no HVM guest, and the device goes to an HVM guest'),
        ("info", "xl dmesg: I/O virtualisation enabled")]
    assert [f.level for f in xenplatform.check_xen(None, bad, E1000, False)] == ["info"]
    # a ring that no longer holds the boot cannot tell
    assert xenplatform.no_hvm(bad.split("(XEN) Command line:")[1].split("\n", 1)[1]) is None
    # in a boot: [[guests]] type = "hvm" (no config installed yet) makes the device an HVM
    # guest's, so each of the guest's devices is a no-go on that console
    cfg = load(tmp_path, BODY.replace('config = "/etc/xen/demo.cfg"\n',
                                      'config = "/etc/xen/demo.cfg"\ntype = "hvm"\n'))
    topo = q35_topology(tmp_path)
    assert passthrough.hvm_devices(cfg, topo) == {E1000: True, E1000E: True}
    assert passthrough.hvm_devices(load(tmp_path), topo) == {E1000: False, E1000E: False}
    report = probe.parse((DATA / "pass.log").read_text(errors="replace"))
    found = devicecheck.record(cfg, Workspace(cfg.workspace), bad, report, tmp_path / "trees")
    assert [(c["bdf"], c["verdict"], c["findings"][0]["text"]) for c in found] == [
        (str(b), "no-go", 'xl dmesg: Xen found no SVM or VT-x (no "HVM: SVM enabled" or "HVM: '
                          'VMX enabled" line): it starts no HVM guest, and the device goes to '
                          "an HVM guest") for b in (E1000, E1000E)]


def test_plan_errors_are_one_line(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    path = guest.installed(cfg, cfg.guests[0])
    path.parent.mkdir(parents=True)
    path.write_text("name = 'demo'\n")
    with pytest.raises(BootError, match=r"^\[\[guests\]\] demo: .*demo.cfg has no pci = "):
        guest.plan(cfg, None)
    path.write_text("pci = ['rdm_policy=strict']\n")
    with pytest.raises(BootError, match="pci entry 'rdm_policy=strict' has no BDF"):
        guest.plan(cfg, None)
    path.unlink()
    stray = BODY.replace(f'devices = ["00:03.0", "{PATH}"]\n\n[boot]',
                         'devices = ["00:03.0", "00:1f.2"]\n\n[boot]')
    with pytest.raises(InstallError, match="00:1f.2 not in passthrough.devices"):
        guest.plan(load(tmp_path, stray), q35_topology(tmp_path))
    bad = BODY.replace('name = "demo"', 'name = "my guest"')
    with pytest.raises(BootError, match='name "my guest"'):
        guest.plan(load(tmp_path, bad), None)


# ---------------------------------------------------------------------------- init scripts
def sh_syntax(script: str, tmp_path: Path) -> None:
    f = tmp_path / "script.sh"
    f.write_text(script)
    for shell in ("sh", "bash"):
        subprocess.run([shell, "-n", str(f)], check=True)


def test_dom0_init_runs_the_probe_then_the_toolstack_and_guests(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    plans = guest.plan(cfg, q35_topology(tmp_path))
    script = guest.dom0_init(plans)
    sh_syntax(script, tmp_path)
    dump = probe.INIT.rsplit("sync\n", 1)[0]
    assert script.startswith(dump)
    assert 'timeout "$t" xl create -c "/etc/xen/xenpipe/$1.cfg"' in script
    order = ["mount -t xenfs xenfs /proc/xen", 'modprobe -q "$m"', 'nic_up "$nic"',
             "/etc/init.d/xen start", "xl info", "xl pci-assignable-list",
             'run_guest demo "" 120\n', 'run_guest demo "again " 120\n',  # README: 120 s
             "for bdf in 0000:00:03.0 0000:01:00.0; do", 'xl pci-assignable-remove -r "$bdf"',
             "/sys/bus/pci/drivers_probe", "busybox poweroff -f"]
    at = [script.index(s) for s in order]
    assert at == sorted(at)
    assert script.rstrip().endswith("busybox poweroff -f")
    assert script.count("poweroff") == 1  # the probe's own power-off is gone


# A stand-in for xl (there is no Xen here): `create -c` prints a guest's console and then
# stays attached, as the real console does, until `xl destroy` (or, after $HALT_AFTER polls
# of 0.1 s, the guest's own halt); the log says which of the two ended the console, and which
# devices `pci-detach` took from the running guest before.
FAKE_XL = r"""#!/bin/sh
log="$XL_LOG"
case "$1" in
create)
    echo "Parsing config from $3" >&2
    [ -n "$XL_FAIL" ] && { echo "libxl: error: $XL_FAIL" >&2; exit 3; }
    name=$(basename "$3" .cfg)
    if [ -n "$XL_HANG" ]; then  # the creating child hangs, holding stdout, until destroyed
        ( while [ ! -e "$log.destroyed" ]; do sleep 0.1; done ) &
        exec sleep 30
    fi
    printf 'xenpipe-guest: %s init started\r\n' "$name"
    printf 'xenpipe-guest: %s done\r\n' "$name"
    i=0
    while [ ! -e "$log.destroyed" ] && [ $i -lt "$HALT_AFTER" ]; do sleep 0.1; i=$((i + 1)); done
    if [ -e "$log.destroyed" ]; then echo "console closed by xl destroy" >>"$log"
    else echo "console closed by the guest's halt" >>"$log"; fi
    printf 'reboot: System halted\r\n'
    exit 0 ;;
destroy) echo "destroy $2" >>"$log"; touch "$log.destroyed" ;;
pci-list) [ -e "$log.destroyed" ] || printf 'Vdev Device\n00.0 0000:00:03.0\n01.0 0000:01:00.0\n' ;;
pci-detach) echo "pci-detach $2 $3" >>"$log" ;;
list) exit 1 ;;
esac
"""


def run_guest_with_fake_xl(tmp_path: Path, again: str = "", timeout: int = 120,
                           kind: str = "pv", **env: str) -> tuple[str, str]:
    """dom0's run_guest for guest "demo" against :data:`FAKE_XL` in busybox sh: (its output,
    the fake's log)."""
    bindir, cfgdir, log = tmp_path / "bin", tmp_path / "cfg", tmp_path / "xl.log"
    bindir.mkdir(parents=True)
    cfgdir.mkdir()
    (bindir / "xl").write_text(FAKE_XL)
    (bindir / "xl").chmod(0o755)
    (cfgdir / "demo.cfg").write_text(f'type = "{kind}"\nextra = "console=hvc0 xenpipe.peer=-"\n')
    log.write_text("")
    script = (f"peer=fe80::1\n{guest.run_guest(str(cfgdir), timeout, str(tmp_path / 'xen'))}\n"
              f'run_guest demo "{again}"\n')
    res = subprocess.run([str(probe.busybox()), "sh", "-c", script], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL,
                         env={"PATH": f"{bindir}:{os.environ['PATH']}", "XL_LOG": str(log),
                              "HALT_AFTER": "150", **env})
    assert res.returncode == 0, res.stderr
    assert "xenpipe.peer=fe80::1" in (cfgdir / "demo.cfg").read_text()
    return res.stdout, log.read_text()


def test_dom0_destroys_the_guest_at_its_last_line_instead_of_waiting_for_its_halt(
        tmp_path: Path) -> None:
    """The guest boot does not wait on a halted guest: as soon as the guest's console says
    ``done`` dom0 detaches its devices from the running guest (libxl waits 10 s per device
    for a halted one's pcifront) and destroys it, and records xl create -c's exit status,
    which went through the pipe to the console reader."""
    out, log = run_guest_with_fake_xl(tmp_path)
    assert log.splitlines() == [
        "pci-detach demo 0000:00:03.0", "pci-detach demo 0000:01:00.0", "destroy demo",
        "console closed by xl destroy", "destroy demo", "destroy demo"]  # the last two: no-ops
    lines = [ln.rstrip("\r") for ln in out.splitlines()]
    assert lines[0] == "xenpipe-dom0: guest demo create"
    assert "xenpipe-guest: demo done" in lines
    assert "xenpipe-dom0: guest demo detached 0000:01:00.0 rc=0" in lines
    assert lines[-1] == "xenpipe-dom0: guest demo exit rc=0 state=-"
    again, _ = run_guest_with_fake_xl(tmp_path / "again", again="again ")
    lines = [ln.rstrip("\r") for ln in again.splitlines()]
    assert "xenpipe-dom0: guest demo again detached 0000:00:03.0 rc=0" in lines
    assert lines[-1] == "xenpipe-dom0: guest demo again exit rc=0 state=-"


def test_an_hvm_guest_is_destroyed_without_detaching_and_its_device_model_log_shown(
        tmp_path: Path) -> None:
    """An HVM guest's pci-detach is an ACPI hot-unplug the test kernel does not answer, so
    dom0 goes straight to xl destroy; when xl create fails, the device model's log (where
    qemu-system-xen says why it left, e.g. "Can't open /dev/mem") follows on the console."""
    _, log = run_guest_with_fake_xl(tmp_path / "ok", kind="hvm")
    assert "pci-detach" not in log and log.splitlines()[0] == "destroy demo"
    (tmp_path / "bad" / "xen").mkdir(parents=True)
    (tmp_path / "bad" / "xen" / "qemu-dm-demo.log").write_text(
        "[00:03.0] xen_pt_msix_init: Error: Can't open /dev/mem: No such file or directory\n"
        "malloc_consolidate(): invalid chunk size\n")
    out, _ = run_guest_with_fake_xl(tmp_path / "bad", again="again ", kind="hvm",
                                    XL_FAIL="QMP socket: Connection reset by peer")
    lines = [ln.rstrip("\r") for ln in out.splitlines()]
    assert lines[-3:] == [
        "xenpipe-dom0: guest demo again dm: [00:03.0] xen_pt_msix_init: Error: Can't open "
        "/dev/mem: No such file or directory",
        "xenpipe-dom0: guest demo again dm: malloc_consolidate(): invalid chunk size",
        "xenpipe-dom0: guest demo again exit rc=3 state=-"]
    verdict = guestverdict.parse(out).again["demo"]
    assert verdict.rc == 3 and verdict.errors == [
        "libxl: error: QMP socket: Connection reset by peer"]


def test_a_hung_xl_create_is_a_guest_timeout_not_a_hung_boot(tmp_path: Path) -> None:
    """xl create's child (which goes on building the domain) shares the pipe to the console
    reader: when the creation hangs past dom0's timeout, dom0 destroys the domain, so the
    reader sees the end and the run is recorded as a timeout (124) instead of the boot
    hanging until its own timeout."""
    out, log = run_guest_with_fake_xl(tmp_path, timeout=2, XL_HANG="1")
    lines = [ln.rstrip("\r") for ln in out.splitlines()]
    # dom0's coreutils timeout exits 124; busybox-static's own applet, which its sh prefers
    # here, exits with the killed command's 143
    assert lines[-1] in ("xenpipe-dom0: guest demo exit rc=124 state=-",
                         "xenpipe-dom0: guest demo exit rc=143 state=-")
    assert "xenpipe-guest: demo init started" not in lines
    assert log.splitlines()[0] == "destroy demo"


def test_dom0_records_a_failed_xl_create_through_the_pipe(tmp_path: Path) -> None:
    out, log = run_guest_with_fake_xl(tmp_path, XL_FAIL="PCI device 0:1:0.0 is not assignable")
    lines = [ln.rstrip("\r") for ln in out.splitlines()]
    assert "libxl: error: PCI device 0:1:0.0 is not assignable" in lines
    assert lines[-1] == "xenpipe-dom0: guest demo exit rc=3 state=-"
    assert "console closed" not in log


ASSIGNABLE = BODY.replace(f'devices = ["00:03.0", "{PATH}"]\n\n[[guests]]',
                          f'devices = ["00:03.0", "{PATH}"]\nmode = "assignable"\n\n[[guests]]')


def test_assignable_mode_dom0_makes_the_devices_assignable_after_the_daemons(
        tmp_path: Path) -> None:
    """[passthrough] mode = "assignable": nothing hidden at boot (the dom0 line has no hide=
    nor guestdev=), dom0's drivers take the NICs, and its /init runs xl pci-assignable-add for
    each guest device once the daemons run, before the guests; the guests' NICs are not
    dom0's to ping from."""
    cfg = load(tmp_path, ASSIGNABLE)
    assert cfg.passthrough.mode == "assignable"
    line = passthrough.dom0_cmdline(cfg, "guestdev", None, ("console=hvc0",))
    assert "hide" not in line and "guestdev" not in line
    plans = guest.plan(cfg, q35_topology(tmp_path))
    script = guest.dom0_init(plans, assign=True)
    sh_syntax(script, tmp_path)
    order = ['modprobe -q "$m"', 'nic_up "$nic"', "/etc/init.d/xen start",
             'xl pci-assignable-add "$bdf"', "xl pci-assignable-list", 'run_guest demo "" 120',
             'xl pci-assignable-remove -r "$bdf"']
    at = [script.index(s) for s in order]
    assert at == sorted(at)
    assert "    for bdf in 0000:00:03.0 0000:01:00.0; do\n        xl pci-assignable-add" in script
    assert 'case " 0000:00:03.0 0000:01:00.0 " in *" $(basename' in script  # not dom0's NICs
    assert "pci-assignable-add" not in guest.dom0_init(plans)  # hide mode: pciback has them
    # the boot's milestones: nothing seized at boot, each device made assignable
    gb = guestboot.GuestBoot(cfg, Workspace(tmp_path / "ws"), tuple(plans))
    names = [m.name for step in gb.steps(boot.milestones(())) for m in step]
    assert "pciback seized 0000:00:03.0" not in names
    assert names.index("Xen daemons started") < names.index("0000:00:03.0 made assignable") \
        < names.index("0000:01:00.0 made assignable") < names.index("guest demo started")


def test_assignable_mode_verdicts(tmp_path: Path) -> None:
    """A recorded hide-mode boot with dom0's assignable-add lines added: passes when xl
    pci-assignable-add succeeded, fails in one line when it did not."""
    def added(rc: int) -> str:
        return console("pass.log").replace(
            "xenpipe-dom0: xen started",
            "xenpipe-dom0: xen started\r\r\n"
            "xenpipe-dom0: assignable-add 0000:00:03.0 rc=0\r\r\n"
            f"xenpipe-dom0: assignable-add 0000:01:00.0 rc={rc}")
    assert "assignable-add 0000:01:00.0 rc=0" in added(0)
    assert guestverdict.verdict(added(0), PLANS).problem is None
    assert guestverdict.verdict(added(1), PLANS).problem == (
        "dom0: xl pci-assignable-add 0000:01:00.0 failed (exit 1): pciback could not take it "
        "from dom0's driver")


def test_a_failed_detach_from_the_running_guest_is_a_warning() -> None:
    """dom0's xl pci-detach per device after the guest's last line, recorded per run; one that
    fails is a warning (xl destroy releases the device, and the second run and the way back to
    dom0 check it), not a failure. The lines are added to a recording made before dom0 printed
    them."""
    text = console("pass.log").replace(
        "xenpipe-dom0: guest demo exit rc=0",
        "xenpipe-dom0: guest demo detached 0000:00:03.0 rc=0\r\r\n"
        "xenpipe-dom0: guest demo detached 0000:01:00.0 rc=0\r\r\n"
        "xenpipe-dom0: guest demo exit rc=0").replace(
        "xenpipe-dom0: guest demo again exit rc=0",
        "xenpipe-dom0: guest demo again detached 0000:00:03.0 rc=0\r\r\n"
        "xenpipe-dom0: guest demo again detached 0000:01:00.0 rc=1\r\r\n"
        "xenpipe-dom0: guest demo again exit rc=0")
    v = guestverdict.verdict(text, PLANS)
    assert v.problem is None
    view = v.guests["demo"]
    assert view["detached"] == {"0000:00:03.0": 0, "0000:01:00.0": 0}
    assert view["again"]["detached"] == {"0000:00:03.0": 0, "0000:01:00.0": 1}
    assert ("guest demo again: xl pci-detach 0000:01:00.0 from the running guest failed "
            "(exit 1); xl destroy released it") in v.warnings
    assert not [w for w in v.warnings if "pci-detach" in w and "again" not in w]


def test_assignable_mode_boot_check_wants_the_devices_left_to_dom0(tmp_path: Path) -> None:
    """In assignable mode pciback seizing a device at boot is the failure (the recorded hide
    boot), and a boot where it seized nothing passes the check."""
    cfg = load(tmp_path, ASSIGNABLE)
    text = console("pass.log")
    report = probe.parse(text)
    topo = pci.scan(probe.record_sysfs(report, tmp_path / "sysfs"))
    session = boot.Session([], tmp_path / "log", boot.Watch(), text, report, 1.0)
    assert checks.verify(cfg, session, topo, {}) == (
        'pciback took 0000:00:03.0 (00:03.0) at boot, but [passthrough] mode = "assignable" '
        "leaves it to dom0 until xl pci-assignable-add")
    kept = dataclasses.replace(session, console=text.replace("seizing device", "seen"),
                               report=dataclasses.replace(report, pciback=()))
    assert checks.verify(cfg, kept, topo, {}) is None
    assert checks.verify(load(tmp_path), kept, topo, {}).startswith("pciback did not seize")


def test_guest_init_and_initramfs(tmp_path: Path) -> None:
    sh_syntax(guest.GUEST_INIT, tmp_path)
    # after its last line the guest idles: dom0 detaches its devices from the running guest,
    # then destroys it (a halt or power-off meanwhile would stall pciback's reconfiguration)
    tail = guest.GUEST_INIT.split(f'echo "{guest.GUEST} $name done"', 1)[1]
    assert "halt -f" not in guest.GUEST_INIT and "poweroff" not in guest.GUEST_INIT
    assert tail.strip().splitlines()[-1] == "while :; do sleep 3600; done"
    tools = tmp_path / "tools.cpio.gz"
    tools.write_bytes(gzip.compress(b"second archive"))
    data = guest.guest_initramfs(tools)
    first = gzip.decompress(probe.archive(probe.busybox().read_bytes(), guest.GUEST_INIT))
    # one gzip stream (libxenguest unpacks only the first), two cpio archives
    member = zlib.decompressobj(wbits=31)
    assert member.decompress(data) == first + b"second archive"
    assert member.eof and not member.unused_data
    mods = tmp_path / "mods.cpio.gz"
    mods.write_bytes(gzip.compress(b"third archive"))
    member = zlib.decompressobj(wbits=31)
    assert member.decompress(guest.guest_initramfs(tools, mods)) == (
        first + b"second archive" + b"third archive")


def test_the_guest_gets_dom0s_modules_as_its_lib_modules(tmp_path: Path) -> None:
    """The modules doit boot installed into dom0's stage (usr/lib/modules: Debian's merged
    /usr), packed with the real cpio as the guest's /lib/modules, without the build links."""
    need("cpio")
    stage = tmp_path / "stage"
    mods = stage / "usr" / "lib" / "modules" / "6.1.192+"
    (mods / "kernel" / "e1000").mkdir(parents=True)
    (mods / "kernel" / "e1000" / "e1000.ko").write_bytes(b"\x7fELF module")
    (mods / "modules.dep").write_text("kernel/e1000/e1000.ko:\n")
    (mods / "build").symlink_to("/nonexistent/kernel-build")
    dest = tmp_path / "guest-modules.cpio.gz"
    assert guest._guest_modules(stage, dest, tmp_path / "log") == dest
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=gzip.decompress(dest.read_bytes()),
                             capture_output=True, check=True).stdout.decode().split()
    assert "lib/modules/6.1.192+/modules.dep" in listing
    assert "lib/modules/6.1.192+/kernel/e1000/e1000.ko" in listing
    assert not any(name.endswith("/build") for name in listing)
    assert not (tmp_path / "guest-modules.cpio.gz.d").exists()  # its staging tree is gone
    assert guest._guest_modules(tmp_path / "no-modules", dest, tmp_path / "log") is None


def test_shared_shell_functions_run_in_busybox(tmp_path: Path) -> None:
    """dom0's /init and the guest's share NET_FUNCS: run them in the real busybox sh."""
    need("busybox")
    mods = tmp_path / "lib" / "modules" / "6.1"
    mods.mkdir(parents=True)
    (mods / "modules.dep").write_text(
        "kernel/drivers/net/ethernet/intel/e1000/e1000.ko:\n"
        "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.xz: kernel/x/ptp.ko\n")
    script = guest.NET_FUNCS + f"""
modnames {mods}
modnames {tmp_path}/none
driver {tmp_path}
carrier nosuchnic
linklocal nosuchnic
waitfor true && echo waited
"""
    out = subprocess.run([str(probe.busybox()), "sh", "-c", script], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["e1000", "e1000e", "-", "-", "-", "waited"]


def test_nics_named_by_netdev_join_qemus_internal_hub(tmp_path: Path) -> None:
    """[boot] devices' netdev= names become hub ports (no user or tap netdev), once each."""
    devices = ["intel-iommu", "e1000,addr=03.0,netdev=pt0", "e1000e,bus=rp1,netdev=pt1",
               "e1000,netdev=dom0,mac=52:54:00:20:00:04", "virtio-net-pci,netdev=pt0"]
    assert boot.qemu.hubports(devices) == [
        "-netdev", "hubport,hubid=0,id=pt0", "-netdev", "hubport,hubid=0,id=pt1",
        "-netdev", "hubport,hubid=0,id=dom0"]
    assert boot.qemu.hubports(["e1000,addr=03.0"]) == []


# ------------------------------------------------------------------------------- verdicts
PLANS = [guest.GuestPlan("demo", "test", ("00:03.0", "01:00.0"), (E1000, E1000E), "")]
SEIZE = [E1000, E1000E]


def console(name: str, upto: str | None = None, then: str = "") -> str:
    with open(DATA / name, encoding="utf-8", errors="replace", newline="") as f:
        text = f.read()
    return (text[: text.index(upto)] if upto else text) + then


def test_a_guest_that_sees_its_devices_passes() -> None:
    v = guestverdict.verdict(console("pass.log"), PLANS)
    assert v.problem is None
    assert [(r["name"], r["status"], r["detail"]) for r in v.records
            if r["name"].startswith("guest demo sees")] == [
        ("guest demo sees 0000:00:03.0", "passed", "as 0000:00:00.0 [8086:100e] class 020000"),
        ("guest demo sees 0000:01:00.0", "passed", "as 0000:00:01.0 [8086:10d3] class 020000"),
    ]  # pciback's virtual bus renumbered both: matched by vendor:device and class
    view = v.guests["demo"]
    assert view["verdict"] == "pass" and view["xl_rc"] == 0 and view["state"] == "-"
    assert view["lspci"] == [
        "00:00.0 Ethernet controller [0200]: Intel Corporation 82540EM Gigabit Ethernet "
        "Controller [8086:100e] (rev 03)",
        "00:01.0 Ethernet controller [0200]: Intel Corporation 82574L Gigabit Network "
        "Connection [8086:10d3]"]
    lines = guestverdict.summary_lines({"guests": v.guests})
    assert lines[0] == "guest demo: PASS: pci from test"
    assert lines[1].startswith("guest demo: lspci 00:00.0 Ethernet controller [0200]")


def _between(text: str, start: str, end: str, new: str) -> str:
    """*text* with what lies from the first *start* to the next *end* replaced by *new*."""
    at = text.index(start)
    return text[:at] + new + text[text.index(end, at):]


def _first(text: str, old: str, new: str) -> str:
    """*text* with the first *old* (which must be there) replaced by *new*."""
    assert old in text, old
    return text.replace(old, new, 1)


def test_each_device_works_in_the_guest_on_both_runs_and_goes_back_to_dom0() -> None:
    v = guestverdict.verdict(console("pass.log"), PLANS)
    assert v.problem is None
    names = [r["name"] for r in v.records]
    assert names == [f"guest demo{again} {what} {bdf}" for again in ("", " again")
                     for bdf in ("0000:00:03.0", "0000:01:00.0") for what in ("sees", "uses")]
    assert {r["status"] for r in v.records} == {"passed"}
    for run in (v.guests["demo"], v.guests["demo"]["again"]):
        assert run["verdict"] == "pass" and run["modules"]["e1000"] == 0
        assert run["modules"]["e1000e"] == 0  # (and the thermal driver, which fails in a PV guest)
        e1000, e1000e = run["devices"]
        assert (e1000["driver"], e1000["nic"], e1000e["driver"], e1000e["nic"]) == (
            "e1000", "eth0", "e1000e", "eth1")
        assert e1000["ping"] == e1000e["ping"] == {"sent": 10, "received": 10, "skipped": None}
        assert e1000["interrupts"] > 0 and e1000e["interrupts"] > 0
    assert {b: (r["rc"], r["driver"], r["nic"], r["carrier"]) for b, r in v.returned.items()} \
        == {"0000:00:03.0": (0, "e1000", "eth1", True), "0000:01:00.0": (0, "e1000e", "eth2", True)}
    assert [(n["nic"], n["driver"], n["carrier"]) for n in v.nics] == [("eth0", "e1000", "1")]
    lines = guestverdict.summary_lines({"guests": v.guests, "returned": v.returned})
    assert "guest demo again (second assignment): PASS" in lines
    assert lines[-2:] == ["dom0: 0000:00:03.0 back in dom0: driver e1000, eth1 link up",
                          "dom0: 0000:01:00.0 back in dom0: driver e1000e, eth2 link up"]


DRV = "xenpipe-guest: demo driver 0000:00:00.0 driver=e1000 "
PING1 = "xenpipe-guest: demo ping eth1 10 packets transmitted, 10 packets received"


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda t: _first(t, DRV, DRV.replace("driver=e1000", "driver=-")),
     "guest demo: no driver bound 0000:00:00.0 (host 0000:00:03.0 [8086:100e] class 020000) "
     "(modules loaded: e1000 rc=0, e1000e rc=0, x86_pkg_temp_thermal rc=1)"),
    (lambda t: _first(t, PING1, PING1.replace("10 packets received", "0 packets received")),
     "guest demo: no traffic on eth1, 0000:00:01.0 (host 0000:01:00.0 [8086:10d3] class "
     "020000): 10 sent, 0 received (carrier 1)"),
    (lambda t: _between(t, "xenpipe-guest: demo ping eth1 64 bytes", "xenpipe-guest: demo irqs",
                        "xenpipe-guest: demo ping eth1 ping: sendto: Network is unreachable"
                        "\r\r\n"),
     "guest demo: no traffic on eth1, 0000:00:01.0 (host 0000:01:00.0 [8086:10d3] class "
     "020000): 0 sent, 0 received (carrier 1; ping: sendto: Network is unreachable)"),
    (lambda t: _first(t[::-1], PING1[::-1], PING1.replace("10 packets received",
                                                          "0 packets received")[::-1])[::-1],
     "guest demo again: no traffic on eth1, 0000:00:01.0 (host 0000:01:00.0 [8086:10d3] class "
     "020000): 10 sent, 0 received (carrier 1)"),
    (lambda t: _first(t, "returned 0000:01:00.0 rc=0 driver=e1000e",
                      "returned 0000:01:00.0 rc=0 driver=pciback"),
     "dom0: 0000:01:00.0 left pciback but no dom0 driver bound it (driver pciback)"),
    (lambda t: _first(t, "returned 0000:00:03.0 rc=0", "returned 0000:00:03.0 rc=1"),
     "dom0: xl pci-assignable-remove -r 0000:00:03.0 failed (exit 1)"),
    (lambda t: _first(t, "nic=eth1 carrier=1\r", "nic=eth1 carrier=0\r"),
     "dom0: 0000:00:03.0 is back with e1000 but eth1 got no link"),
])
def test_each_failure_at_work_has_its_own_one_line_verdict(edit, problem: str) -> None:
    """The recorded pass.log with one line changed the way that failure prints it."""
    v = guestverdict.verdict(edit(console("pass.log")), PLANS)
    assert v.problem == problem and "\n" not in problem


def test_legacy_intx_is_a_warning() -> None:
    text = console("pass.log").replace("driver=e1000e irq=msix", "driver=e1000e irq=intx")
    v = guestverdict.verdict(text, PLANS)
    assert v.problem is None
    assert ("guest demo: 0000:00:01.0 (host 0000:01:00.0 [8086:10d3] class 020000) runs with "
            "legacy INTx, no MSI/MSI-X (driver e1000e)") in v.warnings
    assert "warning: " + v.warnings[-1] in guestverdict.summary_lines({"guests": v.guests})


def test_a_guest_with_no_peer_to_ping_warns() -> None:
    """A guest boot whose dom0 has no NIC (no netdev= in [boot] devices): nothing to ping."""
    text = console("pass.log")
    text = _between(console("pass.log"), "xenpipe-guest: demo ping eth0",
                    "xenpipe-guest: demo irqs eth0", "xenpipe-guest: demo ping eth0 skipped: "
                    "dom0 has no NIC with a link-local address\r\r\n")
    v = guestverdict.verdict(text, PLANS)
    assert v.problem is None
    assert ("guest demo: no traffic check on eth0, 0000:00:00.0 (host 0000:00:03.0 [8086:100e] "
            "class 020000): dom0 has no NIC with a link-local address (give [boot] devices a "
            "NIC with netdev=)") in v.warnings
    text = _between(text, "xenpipe-guest: demo ping eth0 skipped", "xenpipe-guest: demo irqs eth0",
                    "")
    assert guestverdict.verdict(text, PLANS).problem == (
        "guest demo: no traffic on eth0, 0000:00:00.0 (host 0000:00:03.0 [8086:100e] class "
        "020000): the guest did not ping")


def test_transcript_parsing() -> None:
    t = guestverdict.parse(console("pass.log"))
    assert t.xen_started and t.done and t.assignable == ["0000:01:00.0", "0000:00:03.0"]
    run = t.guests["demo"]
    assert (run.created, run.started, run.done, run.rc, run.errors) == (True, True, True, 0, [])
    # libxl's "doesn't support reset from sysfs" is logged as an error, and harmless
    assert "doesn't support reset from sysfs" in console("pass.log")


@pytest.mark.parametrize(("log", "problem"), [
    ("not-hidden.log", "guest demo: device not hidden: xl refused to assign 0000:01:00.0 "
     "(libxl: error: libxl_pci.c:1677:libxl__device_pci_add: Domain 1:PCI device 0:1:0.0 is "
     "not assignable); dom0 hides only [passthrough] devices at boot"),
    ("crash.log", "guest demo crashed: Kernel panic - not syncing: No working init found.  Try "
     "passing init= option to kernel. See Linux Documentation/admin-guide/init.rst for "
     "guidance."),
    ("timeout.log", "guest demo: timeout: it started but did not list its devices within "
     "120 s (last line: xenpipe-guest: demo init started)"),  # README's 120 s
    ("missing.log", "guest demo started but 0000:01:00.0 [8086:10d3] class 020000 is missing "
     "in the guest (it sees 0000:00:00.0 [8086:100e] class 020000)"),
])
def test_each_failure_has_its_own_one_line_verdict(log: str, problem: str) -> None:
    v = guestverdict.verdict(console(log), PLANS)
    assert v.problem == problem
    assert "\n" not in problem
    assert v.guests["demo"]["verdict"] == "fail"
    assert any(r["status"] == "missed" for r in v.records)


def test_a_guest_that_never_started_and_other_xl_failures() -> None:
    # xl create failing for another reason than a device: its last error line
    text = console("not-hidden.log").replace("is not assignable", "is in use").replace(
        "assignable 0000:00:03.0", "assignable 0000:00:03.0\r\r\nxenpipe-dom0: assignable "
        "0000:01:00.0")
    assert guestverdict.verdict(text, PLANS).problem == (
        "guest demo: xl create failed with exit status 3: libxl: error: libxl_domain.c:1064:"
        "domain_destroy_cb: Domain 1:Destruction of domain failed")
    # no "not assignable" line, but a failed xl create and the device missing from
    # xl pci-assignable-list
    text = console("not-hidden.log").replace("is not assignable", "is busy")
    assert guestverdict.verdict(text, PLANS).problem == (
        "guest demo: device not hidden: xl refused to assign 0000:01:00.0 (not in xl "
        "pci-assignable-list); dom0 hides only [passthrough] devices at boot")
    # the boot timed out while xl create waited: no exit line at all
    cut = console("pass.log", upto="Parsing config from", then="")
    assert guestverdict.verdict(cut, PLANS).problem.startswith(
        "guest demo: timeout: its /init did not start within")


def test_no_guest_verdict_before_dom0_got_there() -> None:
    """A boot that failed before the toolstack started: boot.py's milestones say why."""
    v = guestverdict.verdict(console("pass.log", upto="Starting Xen daemons"), PLANS)
    assert (v.problem, v.records, v.guests["demo"]["verdict"]) == (None, [], "fail")
    # /etc/init.d/xen start failing (a real transcript cut there, the failure line added)
    failed = console("pass.log", upto="xenpipe-dom0: xen started",
                     then="xenpipe-dom0: xen failed rc=1\r\r\nxenpipe-dom0: done\r\r\n")
    assert guestverdict.verdict(failed, PLANS).problem == (
        "dom0: the Xen daemons did not start (/etc/init.d/xen start: exit 1)")


def replay(name: str) -> pexpect.spawn:
    """A real process printing a recorded console (like QEMU, it ends when the log does)."""
    return pexpect.spawn("cat", [str(DATA / name)], encoding="utf-8", codec_errors="replace")


def test_guest_milestones_in_the_boot_watch(tmp_path: Path) -> None:
    gb = guestboot.GuestBoot(load(tmp_path), Workspace(tmp_path / "ws"), PLANS)
    steps = gb.steps(boot.milestones(SEIZE))
    assert [m.name for m in steps[-1]] == ["power-off"]
    w = boot.watch(replay("pass.log"), steps, 30)
    assert w.ok, w.reason
    names = [h.name for h in w.hits]
    assert names[names.index("probe done"):] == [
        "probe done", "Xen daemons started", "guest demo started", "guest demo listed its devices",
        "guest demo shut down", "guest demo started again", "guest demo listed its devices again",
        "guest demo shut down again", "0000:00:03.0 back in dom0", "0000:01:00.0 back in dom0",
        "power-off"]  # the guest's own "Linux version" is not dom0's
    session = boot.Session([], tmp_path / "log", w, console("pass.log"),
                           probe.parse(console("pass.log")), 90.0)
    res: dict = {"milestones": w.records()}
    assert gb.judge(session, res) is None
    assert [m["name"] for m in res["milestones"]][-8:] == [
        f"guest demo{again} {what} {bdf}" for again in ("", " again")
        for bdf in ("0000:00:03.0", "0000:01:00.0") for what in ("sees", "uses")]
    assert [b["driver"] for b in res["returned"].values()] == ["e1000", "e1000e"]
    assert len(res["warnings"]) == 2  # the e1000 runs with INTx, on both runs


@pytest.mark.parametrize(("log", "missed", "reason"), [
    ("not-hidden.log", "guest demo started", "guest demo shut down came first"),
    ("crash.log", "guest demo started", "the dom0 kernel panicked"),
    ("timeout.log", "guest demo listed its devices", "guest demo shut down came first"),
])
def test_failing_guests_miss_a_guest_milestone(tmp_path: Path, log: str, missed: str,
                                               reason: str) -> None:
    gb = guestboot.GuestBoot(load(tmp_path), Workspace(tmp_path / "ws"), PLANS)
    seize = [E1000] if log == "not-hidden.log" else SEIZE  # dom0 hid only 00:03.0 there
    w = boot.watch(replay(log), gb.steps(boot.milestones(seize)), 30)
    assert w.missed is not None and w.missed.name == missed
    assert w.reason.startswith(reason)
    assert gb.owns(w.missed)
    assert not gb.owns(boot.milestones(SEIZE)[0][0])


def test_a_guest_boot_gets_enough_memory(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    gb = guestboot.GuestBoot(cfg, Workspace(tmp_path / "ws"))
    # README: "The QEMU machine gets at least 3072 MiB"
    assert cfg.boot.memory == 2048 and gb.machine(cfg).boot.memory == 3072
    more = load(tmp_path, BODY.replace("guest = true", "guest = true\nmemory = 4096"))
    assert gb.machine(more) is more


def test_the_boot_fingerprint_follows_the_guest_side(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    ws = Workspace(cfg.workspace)
    fp = boot.fingerprint(cfg, ws)["guest"]
    assert fp["rootfs"] == rootfs.identity() and fp["guests"][0][3] is None
    path = guest.installed(cfg, cfg.guests[0])
    path.parent.mkdir(parents=True)
    path.write_text("pci = ['00:03.0']\n")
    assert boot.fingerprint(cfg, ws)["guest"] != fp  # doit install wrote the guest config
    assert boot.fingerprint(load(tmp_path, BODY.replace("guest = true", "guest = false")),
                            ws)["guest"] is None


# ------------------------------------------------- the whole stage on a replayed console
BDF_BODY = BODY.replace(f'devices = ["00:03.0", "{PATH}"]', 'devices = ["00:03.0", "01:00.0"]')
SOURCES = [rootfs.AptSource(("http://deb.debian.org/debian",), ("bookworm",), ("main",))]


def replayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: str,
             body: str = BDF_BODY) -> tuple[config.Config, Workspace]:
    """A guest boot of the real stage code whose QEMU is a script replaying a recorded console
    (tests/data/guest/), with a built kernel, a hypervisor and the Debian root's cache faked:
    the pipeline around the console (plan, initramfs, watch, verdict, records) is the real one."""
    qemu = tmp_path / "qemu"
    qemu.write_text(f'#!/bin/sh\nexec cat "{DATA / log}"\n')
    qemu.chmod(0o755)
    (tmp_path / "xen").write_bytes(b"not gzipped: QEMU takes it as it is")
    body = body.replace('xen = "/boot/xen-4.17-amd64.gz"',
                        f'xen = "{tmp_path / "xen"}"\nqemu = "{qemu}"')
    cfg = load(tmp_path, body)
    ws = Workspace(cfg.workspace)
    ws.out.mkdir(parents=True)
    (ws.out / "vmlinuz-6.1.192+").write_bytes(b"kernel")
    ws.save_state("build-kernel", {"release": "6.1.192+"})
    monkeypatch.setattr(rootfs, "apt_sources", lambda *a: SOURCES)
    k = rootfs.key(rootfs.PACKAGES, SOURCES)
    cache = rootfs.cache_dir(ws)
    cache.mkdir()
    (cache / f"rootfs-{k}.cpio.gz").write_bytes(gzip.compress(b"root"))
    (cache / f"guest-tools-{k}.cpio.gz").write_bytes(gzip.compress(b"tools"))
    (cache / f"rootfs-{k}.json").write_text("{}")
    return cfg, ws


def metadata_json(ws: Workspace) -> dict:
    import json

    return json.loads((ws.out / "metadata.json").read_text())


def test_a_guest_boot_is_a_stage_of_metadata_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """metadata.json's boot stage (like the build's: status, times, commands) carries the
    verdict, milestones and each guest's view; `python -m pipeline.boot` (what `make demo` ends
    with) prints the verdict and the guest's lspci lines."""
    need("busybox")
    cfg, ws = replayed(tmp_path, monkeypatch, "pass.log")
    out = boot.boot(cfg, ws)
    assert out["verdict"] == "pass"
    md = metadata_json(ws)
    st = md["stages"]["boot"]
    assert "boot" not in md and md["status"] == "pass"
    assert st["status"] == "pass" and st["verdict"] == "pass" and st["log"] == "logs/boot.log"
    assert st["started"] <= st["finished"] and st["duration"] >= 0
    assert st["commands"] == [out["qemu"]] and st["commands"][0].startswith(str(tmp_path))
    assert st["milestones"] == out["milestones"]
    assert {m["name"]: m["status"] for m in st["milestones"]}["guest demo sees 0000:01:00.0"] \
        == "passed"
    assert st["guests"]["demo"]["lspci"] == out["guests"]["demo"]["lspci"]
    capsys.readouterr()
    assert boot.main([str(cfg.path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("boot: PASS in ")
    assert "(tcg): pciback seized 00:03.0 = 0000:00:03.0, 01:00.0 = 0000:01:00.0;" in lines[0]
    assert lines[1:4] == [
        "boot: guest demo: PASS: pci from rendered as doit install writes "
        f"{guest.installed(cfg, cfg.guests[0])} (not installed yet)",
        "boot: guest demo: lspci 00:00.0 Ethernet controller [0200]: Intel Corporation 82540EM "
        "Gigabit Ethernet Controller [8086:100e] (rev 03)",
        "boot: guest demo: lspci 00:01.0 Ethernet controller [0200]: Intel Corporation 82574L "
        "Gigabit Network Connection [8086:10d3]"]
    assert lines[4:6] == [  # each device at work
        "boot: guest demo: 0000:00:03.0 as 0000:00:00.0: driver e1000, intx (warning), ping eth0 "
        "-> dom0: 10 sent, 10 received, 26 interrupts",
        "boot: guest demo: 0000:01:00.0 as 0000:00:01.0: driver e1000e, msix, ping eth1 -> dom0: "
        "10 sent, 10 received, 34 interrupts"]
    assert lines[6].startswith("boot: warning: guest demo: 0000:00:00.0 (host 0000:00:03.0")
    assert lines[7] == "boot: guest demo again (second assignment): PASS"
    assert lines[-2:] == ["boot: dom0: 0000:00:03.0 back in dom0: driver e1000, eth1 link up",
                          "boot: dom0: 0000:01:00.0 back in dom0: driver e1000e, eth2 link up"]


def test_a_failed_guest_boot_is_a_failed_stage(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    need("busybox")
    body = BDF_BODY.replace('[passthrough]\ndevices = ["00:03.0", "01:00.0"]',
                            '[passthrough]\ndevices = ["00:03.0"]')
    cfg, ws = replayed(tmp_path, monkeypatch, "not-hidden.log", body)
    installed = guest.installed(cfg, cfg.guests[0])
    installed.parent.mkdir(parents=True)
    installed.write_text("pci = ['00:03.0', '01:00.0']\n")
    with pytest.raises(BootError, match="device not hidden") as exc:
        boot.boot(cfg, ws)
    st = metadata_json(ws)["stages"]["boot"]
    assert st["status"] == "fail" and st["verdict"] == "fail"
    assert st["error"] == str(exc.value) and st["guests"]["demo"]["verdict"] == "fail"


def test_an_interrupted_boot_is_an_interrupted_stage(tmp_path: Path) -> None:
    """SIGTERM to doit during the boot: QEMU is stopped, the stage says interrupted, and the
    error is one line."""
    need("busybox")
    qemu = tmp_path / "qemu"
    head = tmp_path / "head.log"
    head.write_text(console("pass.log", upto="(XEN) Bootloader"))
    marker = f"{time.time_ns() % 10**6}.5"  # `sleep <marker>` is this test's own "QEMU"
    qemu.write_text(f'#!/bin/sh\ncat "{head}"\nkill -TERM $PPID\nexec sleep {marker}\n')
    qemu.chmod(0o755)
    (tmp_path / "xen").write_bytes(b"xen")
    body = BDF_BODY.replace('xen = "/boot/xen-4.17-amd64.gz"',
                            f'xen = "{tmp_path / "xen"}"\nqemu = "{qemu}"')
    path = write_config(tmp_path, body.replace("guest = true", "guest = false"))
    ws = Workspace(tmp_path / "ws")
    ws.out.mkdir(parents=True)
    (ws.out / "vmlinuz-6.1.192+").write_bytes(b"kernel")
    res = run_doit("-s", "boot", config=path, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "xenpipe: error: boot: interrupted by SIGTERM; run `doit boot` again")
    md = metadata_json(ws)
    assert md["status"] == "interrupted"
    assert md["stages"]["boot"]["status"] == "interrupted"
    assert md["stages"]["boot"]["verdict"] == "interrupted"
    assert md["stages"]["boot"]["reason"] == "interrupted by SIGTERM"  # as in boot.json
    left = subprocess.run(["pgrep", "-af", f"^sleep {marker}$"], capture_output=True, text=True)
    assert left.stdout == "", f"QEMU still running: {left.stdout}"


# -------------------------------------------------------------------- real boots (slow)
XEN = Path("/boot/xen-4.17-amd64.gz")


@pytest.fixture
def guest_ws(real_kernel: object, real_rootfs: Path,  # noqa: F811
             tmp_path: Path) -> Workspace:
    """A workspace that boots the shared real kernel without building it: its artifacts, build
    directory, source tree and build record linked in (all used read-only), and the shared
    Debian root (realkernel.real_rootfs). Tasks run with ``doit -s`` (no build dependencies)."""
    return linked_ws(real_kernel, real_rootfs, tmp_path)


@pytest.fixture
def hvm_guest_ws(real_kernel: object, tmp_path: Path) -> Workspace:
    """:func:`guest_ws` with dom0's Debian root for HVM guests (guestcheck.HVM_PACKAGES: with
    qemu-system-xen), built once per key of its own in ``<cache>/rootfs-hvm-<key>/`` (a
    workspace keeps one root, so the PV one is not in the same directory)."""
    from .support.realkernel import cache_dir, rootfs_dir

    need("debootstrap")
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("debootstrap needs root: .ci/run must run the slow tests as root")
        pytest.skip("building the Debian root (debootstrap) needs root")
    built = Workspace(rootfs_dir(cache_dir(), "rootfs-hvm"))
    rootfs.build(built, guest.HVM_PACKAGES)
    return linked_ws(real_kernel, rootfs.cache_dir(built), tmp_path)


def linked_ws(real_kernel: object, root: Path, tmp_path: Path) -> Workspace:
    """The workspace of :func:`guest_ws`, with the Debian root in *root*."""
    from .support.realkernel import RealKernel

    assert isinstance(real_kernel, RealKernel)
    need("qemu-system-x86_64")
    if not XEN.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{XEN} is missing: .ci/run must install xen-hypervisor-4.17-amd64")
        pytest.skip(f"{XEN} is missing")
    ws = Workspace(tmp_path / "ws")
    ws.out.mkdir(parents=True)
    for p in (real_kernel.vmlinuz, real_kernel.system_map, real_kernel.dotconfig,
              real_kernel.build_dir):
        (ws.out / p.name).symlink_to(p)
    ws.src.mkdir()
    (ws.src / "linux").symlink_to(real_kernel.ws.source_dir("linux"))
    ws.state_dir.mkdir()
    shutil.copy(real_kernel.ws.state_dir / "build-kernel.json", ws.state_dir)
    (ws.dir / "rootfs").symlink_to(root)
    return ws


def vm_sysfs(tmp_path: Path) -> Path:
    """The demo VM's PCI part of sysfs, rebuilt from the probe dump of a recorded boot of the
    same QEMU machine (what ``doit install`` scans instead of this machine's /sys)."""
    report = probe.parse(console("pass.log"))
    return probe.record_sysfs(report, tmp_path / "vm-sysfs")


def boot_json(ws: Workspace) -> dict:
    import json

    return json.loads((ws.out / "boot.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hide", "assignable"])
def test_real_guest_sees_the_devices_of_the_config_doit_install_wrote(
        guest_ws: Workspace, tmp_path: Path, mode: str) -> None:
    """The real chain: doit install writes the guest config for the VM (an e1000 at 00:03.0
    and an e1000e behind a PCIe root port named by its device path), doit boot starts Debian's
    Xen 4.17 with the linux-source-6.1 dom0, xl creates the guest from that config, and the
    guest lists both devices (renumbered by pciback's virtual bus) with lspci -nn, twice, then
    they go back to dom0. Once per [passthrough] mode: pciback takes them at boot (hide), or
    dom0's drivers keep them until xl pci-assignable-add (assignable); one boot each, sharing
    the kernel build and the Debian root."""
    body = BODY if mode == "hide" else ASSIGNABLE
    path = write_config(tmp_path, f'[workspace]\ndir = "{guest_ws.dir}"\n' + body)
    res = run_doit("-s", "install", config=path, env={"XENPIPE_SYSFS": str(vm_sysfs(tmp_path))})
    assert res.returncode == 0, res.stdout + res.stderr
    installed = guest_ws.dir / "root" / "etc" / "xen" / "demo.cfg"
    assert guests.entries(installed.read_text()) == ["00:03.0", "01:00.0"]

    res = run_doit("-s", "boot", config=path, timeout=1800)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert "boot: guest demo: PASS: pci from " + str(installed) in lines
    lspci = [ln for ln in lines if ln.startswith("boot: guest demo: lspci ")]
    assert len(lspci) == 2 and "[8086:100e]" in lspci[0] and "[8086:10d3]" in lspci[1]
    view = boot_json(guest_ws)["guests"]["demo"]
    assert view["verdict"] == "pass" and view["origin"] == str(installed)
    assert {(d["host"], d["ids"]) for d in view["devices"]} == {
        ("0000:00:03.0", "[8086:100e] class 020000"),
        ("0000:01:00.0", "[8086:10d3] class 020000")}
    marks = {m["name"]: m for m in boot_json(guest_ws)["milestones"]}
    for name in ("Xen daemons started", "guest demo started", "guest demo shut down",
                 "guest demo sees 0000:00:03.0", "guest demo sees 0000:01:00.0",
                 "guest demo started again", "guest demo again sees 0000:01:00.0",
                 "0000:00:03.0 back in dom0",
                 "0000:01:00.0 back in dom0"):
        assert marks[name]["status"] == "passed", marks[name]
    seized = "pciback seized 0000:00:03.0"
    assignable = "0000:00:03.0 made assignable"
    assert (seized in marks, assignable in marks) == (mode == "hide", mode == "assignable")
    results = boot_json(guest_ws)
    assert ("xen-pciback.hide=" in results["dom0_cmdline"]) == (mode == "hide")
    held = {"hide": {"0000:00:03.0", "0000:01:00.0"}, "assignable": set()}[mode]
    assert set(results["pciback"]) == held  # what the probe found bound to pciback at boot
    md = (guest_ws.out / "metadata.json").read_text()
    assert '"guests"' in md and "[8086:10d3]" in md
    summary = run_doit("-s", "boot", config=path)  # nothing changed: up to date
    assert summary.returncode == 0 and "-- boot" in summary.stdout


# the HVM guest of configs/demo-hvm.toml: the e1000 at 00:03.0 only (README, "HVM guests":
# qemu-system-xen leaves when the e1000e behind the root port is added), the time an HVM
# guest's two runs take under TCG
HVM_BODY = BODY.replace(f'devices = ["00:03.0", "{PATH}"]', 'devices = ["00:03.0"]').replace(
    'config = "/etc/xen/demo.cfg"\n', 'config = "/etc/xen/demo.cfg"\ntype = "hvm"\n').replace(
    "guest = true\n", "guest = true\ntimeout = 2400\n")


@pytest.mark.slow
@pytest.mark.hvm
def test_real_hvm_guest_uses_the_passed_through_nic(hvm_guest_ws: Workspace,
                                                    tmp_path: Path) -> None:
    """[[guests]] type = "hvm" for real, one boot: QEMU's TCG offers SVM with nested paging
    (-cpu qemu64,+svm,+npt; Debian's Xen has no shadow paging), Xen turns on HVM with HAP and
    VT-d, dom0's qemu-system-xen is the guest's device model, and the HVM guest binds e1000 to
    the passed-through NIC and pings dom0 over it, twice; then the NIC goes back to dom0."""
    path = write_config(tmp_path, f'[workspace]\ndir = "{hvm_guest_ws.dir}"\n' + HVM_BODY)
    res = run_doit("-s", "boot", config=path, timeout=3000)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr
    results = boot_json(hvm_guest_ws)
    assert " -cpu qemu64,+svm,+npt " in results["qemu"]
    console = (hvm_guest_ws.logs / "boot.log").read_text(errors="replace")
    for line in ("(XEN) HVM: SVM enabled", "(XEN) HVM: Hardware Assisted Paging (HAP) detected",
                 "(XEN) I/O virtualisation enabled"):
        assert line in console
    caps = next(ln for ln in console.splitlines() if ln.startswith("virt_caps")).split()
    assert {"hvm", "hvm_directio", "hap"} <= set(caps)
    view = results["guests"]["demo"]
    assert view["verdict"] == "pass", view
    assert 'type = "hvm"' in view["config"]
    for run in (view, view["again"]):
        (dev,) = run["devices"]
        assert (dev["host"], dev["ids"], dev["driver"]) == (
            "0000:00:03.0", "[8086:100e] class 020000", "e1000")
        assert dev["ping"]["sent"] == 10 and dev["ping"]["received"] >= 9, dev
    assert results["returned"]["0000:00:03.0"]["driver"] == "e1000"
    marks = {m["name"]: m["status"] for m in results["milestones"]}
    for name in ("guest demo uses 0000:00:03.0", "guest demo again uses 0000:00:03.0",
                 "0000:00:03.0 back in dom0"):
        assert marks[name] == "passed", name


@pytest.mark.slow
def test_real_guest_config_naming_a_device_that_was_not_hidden(
        guest_ws: Workspace, tmp_path: Path) -> None:
    """The installed guest config names 01:00.0, which dom0 did not hide (passthrough lists
    only 00:03.0): xl refuses to assign it, and the verdict says so in one line."""
    body = BODY.replace(f'devices = ["00:03.0", "{PATH}"]', 'devices = ["00:03.0"]')
    path = write_config(tmp_path, f'[workspace]\ndir = "{guest_ws.dir}"\n' + body)
    installed = guest_ws.dir / "root" / "etc" / "xen" / "demo.cfg"
    installed.parent.mkdir(parents=True)
    installed.write_text("name = 'demo'\npci = ['00:03.0', '01:00.0']  # 01:00.0 by hand\n")
    res = run_doit("-s", "boot", config=path, timeout=1800)
    assert res.returncode == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("xenpipe: error:")]
    assert len(errors) == 1 and "Traceback" not in res.stderr
    assert errors[0].startswith("xenpipe: error: boot: guest demo: device not hidden: xl "
                                "refused to assign 0000:01:00.0 (libxl: error: ")
    assert "is not assignable" in errors[0]
    view = boot_json(guest_ws)["guests"]["demo"]
    assert view["verdict"] == "fail" and view["xl_rc"] not in (0, None)
