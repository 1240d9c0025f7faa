"""[boot] via = "disk": the image's layout, the GRUB menu made from the installed root, the
console parsing (recorded consoles in tests/data/disk/), and real boots through GRUB."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline import boot, config
from pipeline.boot import probe
from pipeline.boot.disk import boots, console, grub2, grub_legacy
from pipeline.boot.disk import root as disk_root
from pipeline.boot.disk.grub2 import Grub2
from pipeline.boot.disk.grub_legacy import GrubLegacy
from pipeline.boot.disk.image import (
    START,
    DiskError,
    Layout,
    chroot,
    copy_tree,
    make_image,
    mounted,
    read_file,
)
from pipeline.boot.rootfs import mounts_below
from pipeline.errors import BootError, ConfigError, format_error
from pipeline.files import write_json
from pipeline.install.bootloader import shell_assignments
from pipeline.workspace import Workspace

from .support.disk import installed_disk_boot, read
from .support.realkernel import RealKernel
from .support.tools import need

PASSED = ["bootloader entry", "Xen banner", "Xen IOMMU", "dom0 construction", "Linux banner",
          "pciback seized 0000:00:03.0", "pciback seized 0000:01:00.0", "init started",
          "0000:00:03.0 under pciback", "0000:01:00.0 under pciback", "probe done", "power-off"]
XENPIPE_TITLE = "Xen 4.17-amd64, Linux 6.1.192+ (xenpipe boot)"


# --------------------------------------------------------------------------- the console
def test_entries_read_from_grub2_consoles():
    """GRUB 2 draws its menu with escape sequences; the entry it boots is the one line that
    says ``Booting `TITLE'`` (SeaBIOS's "Booting from Hard Disk" is not one)."""
    first = read("grub2-xenpipe-entry.log")
    assert console.entries(first) == [XENPIPE_TITLE]
    assert console.started_xen(first)
    second = read("grub2-known-good.log")
    assert console.entries(second) == ["Debian GNU/Linux, with Linux 6.1.0-57-amd64"]
    assert not console.started_xen(second) and disk_root.UP in second


def test_entries_read_from_grub_legacy_consoles():
    first = read("grub-legacy-xenpipe-entry.log")
    assert console.entries(first) == ["Xen-4.17-Amd64 (6.1.192+)"]
    assert console.started_xen(first) and "savedefault 0" in console.plain(first)
    second = read("grub-legacy-known-good.log")
    assert console.entries(second) == [boots.KNOWN_TITLE]
    assert not console.started_xen(second)


def test_xenpipe_title_found_in_each_loader_menu():
    assert GrubLegacy.entry_title(grub_legacy.user_menu(*boots.KNOWN) + (
        "### BEGIN xenpipe site ###\ntitle Xen-3.4 (2.6.18.8-xen)\n\troot (hd0,0)\n"
        "### END xenpipe ###\n"), "site") == "Xen-3.4 (2.6.18.8-xen)"
    assert GrubLegacy.entry_title("title other\n", "site") is None
    cfg = "menuentry 'Xen 4.17, Linux 6.1 (xenpipe site)' --id xenpipe-site {\n"
    assert Grub2.entry_title(cfg, "site") == "Xen 4.17, Linux 6.1 (xenpipe site)"
    assert Grub2.entry_title(cfg, "other") is None


def test_entries_of_grub_legacy_quotes_and_of_a_console_without_one():
    text = "\x1b[2J  Booting 'Xen 3.4 (xenpipe site)'\r\r\n\r\r\nroot (hd0,0)\r\r\n"
    assert console.entries(text) == ["Xen 3.4 (xenpipe site)"]
    assert console.entries("SeaBIOS\r\r\nBooting from Hard Disk...\r\r\n") == []


# ------------------------------------------------------------------------------ the menu
def test_the_box_defaults_name_debian_kernels_plain_entry_by_the_images_uuid():
    """The known-good entry is 10_linux's plain entry of Debian's kernel (its id is made of
    the release and the filesystem UUID, fixed so the box's GRUB_DEFAULT can name it), and
    GRUB and Linux talk on the serial line."""
    rel = disk_root.release_of({"versions": {"linux-image-amd64": "6.1.192-3",
                                             "linux-image-6.1.0-57-amd64": "6.1.192-3",
                                             "grub2-common": "2.06-13+deb12u1"}})
    assert rel == "6.1.0-57-amd64"
    text = disk_root.grub_defaults(rel).encode()
    ident = f"gnulinux-6.1.0-57-amd64-advanced-{disk_root.UUID}"
    assert shell_assignments(text, "GRUB_DEFAULT") == disk_root.known_id(rel) == ident
    assert shell_assignments(text, "GRUB_TERMINAL") == "serial"
    assert shell_assignments(text, "GRUB_DISABLE_SUBMENU") == "y"
    assert f"init={disk_root.INIT}" in shell_assignments(text, "GRUB_CMDLINE_LINUX")
    with pytest.raises(BootError):
        disk_root.release_of({"versions": {"linux-image-amd64": "6.1.192-3"}})


def test_the_header_for_a_grub_cfg_written_without_grub_mkconfig(tmp_path):
    """grub2.header (the test box's first grub.cfg): the serial terminal, one-shot
    next_entry, and the saved default only with GRUB_DEFAULT=saved."""
    (tmp_path / "etc/default/grub.d").mkdir(parents=True)
    assert "set default=0" in grub2.header(tmp_path)
    (tmp_path / "etc/default/grub.d/xenpipe.cfg").write_text("GRUB_DEFAULT=saved\n")
    text = grub2.header(tmp_path)
    assert "terminal_output serial" in text and "save_env next_entry" in text
    assert 'set default="${saved_entry}"' in text


def test_the_probe_hook_answers_mkinitramfs_prereqs_and_does_nothing_else(tmp_path):
    """mkinitramfs runs every init-top script with "prereqs" on the build host: the probe's
    hook must answer and stop there (the probe itself powers off)."""
    hook = tmp_path / "xenpipe-probe"
    hook.write_text(disk_root.PROBE_TEXT)
    res = subprocess.run(["sh", str(hook), "prereqs"], capture_output=True, text=True,
                         timeout=30, cwd=tmp_path)
    assert (res.returncode, res.stdout, res.stderr) == (0, "\n", "")
    assert f'echo "{probe.MARK} init started"' in disk_root.PROBE_TEXT
    assert disk_root.PROBE_TEXT.rstrip().endswith("poweroff -f")


def test_entry_titles_read_from_grub_mkconfigs_output():
    """grub.cfg as the image root's grub-mkconfig made it (recorded): 10_linux's entries carry
    ``$menuentry_id_option 'ID'``, xenpipe's 42_xenpipe ``--id xenpipe-NAME``."""
    cfg = read("grub2-mkconfig.cfg")
    rel = "6.1.0-57-amd64"
    assert Grub2.title_of(cfg, disk_root.known_id(rel)) == f"Debian GNU/Linux, with Linux {rel}"
    assert Grub2.title_of(cfg, "gnulinux-none") is None
    assert Grub2.entry_title(cfg, "boot") == XENPIPE_TITLE
    assert "terminal_output serial" in cfg and "load_env" in cfg


def test_an_initramfs_the_menu_names_but_the_root_lacks_is_the_probe(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/vmlinuz-1").write_bytes(b"k")
    probe = tmp_path / "probe.cpio.gz"
    probe.write_bytes(b"probe")
    cfg = ("\tmultiboot2 /boot/xen.gz iommu=1\n\tmodule2 /boot/vmlinuz-1 ro\n"
           "\tmodule2 /boot/initrd.img-1\n")
    notes = boots._stand_ins(tmp_path, cfg, probe)
    assert (tmp_path / "boot/initrd.img-1").read_bytes() == b"probe"
    assert notes == ["/boot/initrd.img-1: the boot probe (doit install named it, ran no "
                     "initramfs tool)"]
    assert not (tmp_path / "boot/xen.gz").exists()  # not an initramfs: left missing


# --------------------------------------------------------------------- config and records
def test_boot_via_is_direct_or_disk(tmp_path):
    (tmp_path / "a.toml").write_text('[boot]\nvia = "disk"\n')
    assert config.load(tmp_path / "a.toml").boot.via == "disk"
    (tmp_path / "b.toml").write_text("")
    assert config.load(tmp_path / "b.toml").boot.via == "direct"
    (tmp_path / "c.toml").write_text('[boot]\nvia = "usb"\n')
    with pytest.raises(ConfigError) as exc:
        config.load(tmp_path / "c.toml")
    assert "[boot] via" in str(exc.value) and '"usb"' in str(exc.value)


def test_the_summary_names_each_disk_boot_entry(tmp_path):
    ws = Workspace(tmp_path / "ws")
    write_json(ws.out / "boot.json", {
        "verdict": "pass", "accel": "tcg", "seconds": 70, "expected": {"00:03.0": ["0000:00:03.0"]},
        "console": "logs/boot.log",
        "boots": [{"entry": XENPIPE_TITLE, "verdict": "pass"},
                  {"entry": boots.KNOWN_TITLE, "verdict": "pass"}]})
    assert boot.summary(ws) == (
        "boot: PASS in 70 s (tcg): pciback seized 00:03.0 = 0000:00:03.0; boot 1: "
        f"`{XENPIPE_TITLE}' pass; boot 2: `{boots.KNOWN_TITLE}' pass; console: logs/boot.log")


def test_the_disk_fingerprint_follows_install_root(tmp_path):
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (tmp_path / "x.toml").write_text(f'[install]\nroot = "{root}"\n[boot]\nvia = "disk"\n')
    cfg = config.load(tmp_path / "x.toml")
    first = boots.identity(cfg)
    (root / "boot/grub.conf").write_text("title x\n")
    assert boots.identity(cfg) != first


# ----------------------------------------------------------------------------- the image
def test_image_layout_mbr_partition_and_files(tmp_path):
    """One bootable type-83 partition at sector 2048, the filesystem from the tree at its
    offset (read back with debugfs), the boot sectors written without touching the
    partition table."""
    for tool in ("sfdisk", "debugfs"):
        need(tool)
    tree = tmp_path / "tree"
    (tree / "boot/grub").mkdir(parents=True)
    (tree / "boot/grub/grubenv").write_bytes(b"# GRUB Environment Block\n".ljust(1024, b"#"))
    image = tmp_path / "disk.img"
    layout = Layout(size_mb=16, fstype="ext4")
    make_image(tree, image, layout, tmp_path / "log", [(0, b"\xeb\x63" + b"\0" * 438),
                                                     (1, b"CORE")])
    dump = subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True,
                          check=True)
    part = json.loads(dump.stdout)["partitiontable"]["partitions"]
    assert [(p["start"], p["type"], p.get("bootable")) for p in part] == [(START, "83", True)]
    data = image.read_bytes()
    assert data[:2] == b"\xeb\x63" and data[510:512] == b"\x55\xaa" and data[512:516] == b"CORE"
    assert read_file(image, layout, "/boot/grub/grubenv") == (tree / "boot/grub/grubenv"
                                                             ).read_bytes()
    assert read_file(image, layout, "/boot/grub/nothing") is None
    assert not list(tmp_path.glob("*.tmp"))


def test_a_full_disk_is_one_line_naming_the_step_and_leaves_no_image(tmp_path):
    need("sfdisk")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big").write_bytes(os.urandom(3 * 1024 * 1024))
    image = tmp_path / "disk.img"
    with pytest.raises(DiskError) as exc:
        make_image(tree, image, Layout(size_mb=3, fstype="ext2"), tmp_path / "log")
    line = format_error(exc.value)
    assert line.startswith("xenpipe: error: disk image: making the ext2 filesystem (mke2fs -d): ")
    assert "\n" not in line and exc.value.step.startswith("making the ext2 filesystem")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "tree"]


def test_install_root_goes_onto_a_merged_usr_root_through_its_links(tmp_path):
    """The Debian base root has /lib -> usr/lib; doit install's staging root has a real
    /lib/modules/RELEASE (modules_install): its files land in /usr/lib/modules as on the box
    (cp -a refused to put a directory over the link)."""
    src, dest = tmp_path / "install", tmp_path / "tree"
    (src / "lib/modules/6.1.192+").mkdir(parents=True)
    (src / "lib/modules/6.1.192+/modules.dep").write_text("dep\n")
    (src / "boot").mkdir()
    (src / "boot/xen.gz").write_bytes(b"\x1f\x8b")
    os.chmod(src / "boot/xen.gz", 0o600)
    (dest / "usr/lib/modules/6.1.0-57-amd64").mkdir(parents=True)
    (dest / "lib").symlink_to("usr/lib")
    copy_tree(src, dest)
    assert (dest / "lib").is_symlink()
    assert (dest / "usr/lib/modules/6.1.192+/modules.dep").read_text() == "dep\n"
    assert (dest / "usr/lib/modules/6.1.0-57-amd64").is_dir()
    assert (dest / "boot/xen.gz").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["install", "tree"]


def test_a_missing_install_root_is_one_line(tmp_path):
    with pytest.raises(DiskError) as exc:
        copy_tree(tmp_path / "root", tmp_path)
    assert format_error(exc.value) == (f"xenpipe: error: disk image: install.root: "
                                       f"{tmp_path / 'root'} is not a directory: run `doit "
                                       "install` first")


def _loops(image: Path) -> str:
    return subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True,
                          check=True).stdout


def test_the_mounted_image_is_released_on_error_and_on_ctrl_c(tmp_path):
    """What runs in the image's root runs in a real mount of its partition (a loop device at
    the partition's offset, /dev, /proc, /sys under it); an error or a Ctrl-C inside leaves no
    mount and no loop device, and what a killed run left is cleared before the next."""
    for tool in ("sfdisk", "losetup", "mount"):
        need(tool)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello").write_text("from the tree\n")
    image, where, log = tmp_path / "disk.img", tmp_path / "mnt", tmp_path / "log"
    layout = Layout(size_mb=16, fstype="ext4", uuid=disk_root.UUID)
    make_image(tree, image, layout, log)
    for exc in (DiskError("x", "y"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), mounted(image, layout, where, log) as at:
            assert (at / "hello").read_text() == "from the tree\n"
            assert (at / "proc/self").is_dir() and (at / "dev/null").exists()
            raise exc
        assert mounts_below(where) == [] and _loops(image) == ""
    # a killed run's loop device and mount
    dev = subprocess.run(["losetup", "-f", "--show", "-o", str(layout.offset), str(image)],
                         capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["mount", dev, str(where)], check=True)
    with mounted(image, layout, where, log) as at:
        (at / "written").write_text("in the image\n")
        assert len(_loops(image).splitlines()) == 1
    assert mounts_below(where) == [] and _loops(image) == ""
    assert read_file(image, layout, "/written") == b"in the image\n"


def test_a_command_failing_in_the_chroot_is_one_line_naming_the_step(tmp_path):
    with pytest.raises(DiskError) as exc:
        chroot(tmp_path, ["/no-such-tool"], "grub-mkconfig (in the image's root)",
               tmp_path / "log")
    line = format_error(exc.value)
    assert line.startswith("xenpipe: error: disk image: grub-mkconfig (in the image's root): ")
    assert "no-such-tool" in line and "\n" not in line


# -------------------------------------------------------------------- real boots (slow)
@pytest.mark.slow
def test_real_grub2_disk_boot_once_then_the_known_good_entry(real_kernel: RealKernel,
                                                             tmp_path):
    """doit install (GRUB 2, once = true) into a staging root that holds the box's
    /etc/default/grub (GRUB_DEFAULT: Debian's kernel); the disk image of the Debian base root
    + that root, GRUB 2 in its MBR, grub.cfg by the root's own grub-mkconfig in a chroot of the
    mounted image; boot 1 (SeaBIOS -> GRUB -> next_entry) takes xenpipe's entry, Xen and dom0
    come up and pciback seizes both devices; boot 2, a fresh QEMU on the same disk, lands in
    10_linux's plain entry of Debian's kernel, whose initramfs mounts the disk's root; GRUB
    itself cleared next_entry, and nothing else the user or doit install owns changed."""
    for tool in ("qemu-system-x86_64", "qemu-img", "sfdisk", "losetup", "busybox"):
        need(tool)
    cfg = installed_disk_boot(real_kernel, tmp_path)
    ws = Workspace(cfg.workspace)
    out = boot.boot(cfg, ws)
    assert out["verdict"] == "pass"
    assert [m["name"] for m in out["milestones"]] == PASSED
    assert out["pciback"] == ["0000:00:03.0", "0000:01:00.0"]
    known = out["image"]["known_good"]
    assert known.startswith("Debian GNU/Linux, with Linux 6.1.0-") and known.endswith("-amd64")
    assert [(b["entry"], b["xen"], b["verdict"]) for b in out["boots"]] == [
        (XENPIPE_TITLE, True, "pass"), (known, False, "pass")]
    saved = disk_root.known_id(known.rsplit(" ", 1)[1])
    assert out["grubenv"] == {
        "before": {"next_entry": "xenpipe-boot", "saved_entry": saved},
        "after": {"next_entry": "", "saved_entry": saved}, "menu_unchanged": True,
        "changed": ["/boot/grub/grubenv"], "differs_from_install": ["/boot/grub/grub.cfg"]}
    image = ws.dir / "boot/disk/disk.img"
    cfg_text = read_file(image, Layout(), "/boot/grub/grub.cfg").decode()
    assert "### BEGIN /etc/grub.d/42_xenpipe ###" in cfg_text
    assert "--id xenpipe-boot" in cfg_text and f"'{saved}'" in cfg_text
    first = (ws.logs / "boot.log").read_text(errors="replace")
    assert "-kernel" not in first.splitlines()[0] and "Bootloader: GRUB 2.06" in first
    second = (ws.logs / "boot-2.log").read_text(errors="replace")
    assert f"{disk_root.UP}: Linux {known.rsplit(' ', 1)[1]}, root=UUID={disk_root.UUID}" in second
    assert out["image"]["bootloader"] == "grub2" and out["image"]["seconds"] > 0
    # the initramfs the entry boots is update-initramfs's, made in the image's root
    assert [n.split(":")[0] for n in out["image"]["notes"]] == ["/boot/initrd.img-6.1.192+"]
    assert "update-initramfs -k 6.1.192+ in the image's root" in out["image"]["notes"][0]
    stage = json.loads((ws.out / "metadata.json").read_text())["stages"]["boot"]
    assert stage["verdict"] == "pass" and len(stage["boots"]) == 2


@pytest.mark.slow
def test_real_grub2_disk_boot_of_a_failing_entry_falls_back(real_kernel: RealKernel, tmp_path):
    """xenpipe's entry boots a dom0 that panics (init= and rdinit= name nothing, so neither
    the initramfs update-initramfs made nor a root can start: the kernel panics, panic=1
    reboots): boot 1 fails at the panic, and boot 2 (the power cycle) still comes up in the
    known-good entry, since GRUB cleared next_entry when it booted the entry; the one-line
    verdict says both. (rdinit= alone no longer panics: Debian's initramfs has busybox's
    /sbin/init, which the kernel runs instead.)"""
    for tool in ("qemu-system-x86_64", "qemu-img", "sfdisk", "grub-mkimage", "busybox"):
        need(tool)
    cfg = installed_disk_boot(real_kernel, tmp_path, {
        'dom0_cmdline = "console=hvc0"':
            'dom0_cmdline = "console=hvc0 earlyprintk=xen panic=1 rdinit=/xenpipe-none '
            'init=/xenpipe-none"'})
    ws = Workspace(cfg.workspace)
    with pytest.raises(BootError) as exc:
        boot.boot(cfg, ws)
    line = format_error(exc.value)
    assert "\n" not in line
    assert line.startswith("xenpipe: error: boot: the probe's /init did not start (the dom0 "
                           "kernel panicked: Kernel panic - not syncing:"), line
    out = json.loads((ws.out / "boot.json").read_text())
    known = out["image"]["known_good"]
    assert f"boot 2 (power cycle) came back in `{known}'" in line
    assert out["verdict"] == "fail"
    assert [(b["entry"], b["xen"], b["verdict"]) for b in out["boots"]] == [
        (XENPIPE_TITLE, True, "fail"), (known, False, "pass")]
    assert "Kernel panic" in out["boots"][0]["reason"]
    assert out["grubenv"]["changed"] == ["/boot/grub/grubenv"]
    assert out["grubenv"]["after"]["next_entry"] == ""


@pytest.mark.slow
def test_real_grub_legacy_disk_boot_once_with_the_2009_entry(real_kernel: RealKernel, tmp_path):
    """The 2009 procedure: the box's grub.conf (serial console, a plain Linux entry, the
    default), doit install adds the 2009-shaped entry (title, root (hd0,0), kernel
    /boot/xen... iommu, module /boot/vmlinuz... xen-pciback.hide=, module /boot/initrd...)
    with `default saved` + `savedefault 0`; GRUB 0.97 from Debian's grub-legacy, set up with
    its grub --batch shell on an ext2 image: boot 1 takes that entry and pciback seizes both
    devices, boot 2 on the same disk is back in the known-good entry."""
    for tool in ("qemu-system-x86_64", "qemu-img", "sfdisk", "apt-get", "dpkg-deb", "busybox"):
        need(tool)
    cfg = installed_disk_boot(real_kernel, tmp_path, {
        'bootloader = "grub2"': 'bootloader = "grub-legacy"',
        'initramfs = "none"': 'initramfs = "mkinitrd"'}, menu=grub_legacy.user_menu(*boots.KNOWN))
    conf = (cfg.install.root / "boot/grub/grub.conf").read_text()
    assert "\tkernel /boot/xen-4.17-amd64.gz iommu=1" in conf
    assert "\tmodule /boot/initrd-6.1.192+.img\n\tsavedefault 0\n" in conf
    ws = Workspace(cfg.workspace)
    out = boot.boot(cfg, ws)
    assert out["verdict"] == "pass"
    assert [m["name"] for m in out["milestones"]] == PASSED
    assert [(b["entry"], b["xen"], b["verdict"]) for b in out["boots"]] == [
        ("Xen-4.17-Amd64 (6.1.192+)", True, "pass"), (boots.KNOWN_TITLE, False, "pass")]
    first = (ws.logs / "boot.log").read_text(errors="replace")
    assert "Bootloader: GNU GRUB 0.97" in first and "savedefault 0" in first
    # savedefault 0 wrote the default back, and nothing else of the user's changed
    assert out["default"] == {"before": "1", "after": "0", "menu_unchanged": True,
                              "changed": ["/boot/grub/default"], "differs_from_install": []}


@pytest.mark.slow
def test_real_grub_legacy_disk_boot_without_once_takes_the_entry_both_times(
        real_kernel: RealKernel, tmp_path):
    """once = false: doit install makes xenpipe's entry the default (`default 1`), so the
    power cycle boots it again, through the whole milestone list."""
    for tool in ("qemu-system-x86_64", "qemu-img", "sfdisk", "apt-get", "dpkg-deb", "busybox"):
        need(tool)
    cfg = installed_disk_boot(real_kernel, tmp_path, {
        'bootloader = "grub2"': 'bootloader = "grub-legacy"',
        'initramfs = "none"': 'initramfs = "mkinitrd"',
        "[install]\n": f'[install]\nroot = "{tmp_path / "root"}"\nonce = false\n'},
        menu=grub_legacy.user_menu(*boots.KNOWN))
    assert "\ndefault 1\n" in (cfg.install.root / "boot/grub/grub.conf").read_text()
    ws = Workspace(cfg.workspace)
    out = boot.boot(cfg, ws)
    assert out["verdict"] == "pass"
    assert [(b["entry"], b["xen"], b["verdict"]) for b in out["boots"]] == [
        ("Xen-4.17-Amd64 (6.1.192+)", True, "pass"), ("Xen-4.17-Amd64 (6.1.192+)", True, "pass")]
    second = (ws.logs / "boot-2.log").read_text(errors="replace")
    assert "xen_pciback: seizing device" in second or "pciback: seizing device" in second
    assert out["default"]["changed"] == [] and out["default"]["differs_from_install"] == []
