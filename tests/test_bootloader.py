"""Bootloader entries: the marked blocks, GRUB legacy's style taken from the user's own
entries and its saved-default one-shot boot, GRUB 2's quoting, its grub.d script (run by sh and
checked by the real grub-script-check), grubenv through the real grub-editenv. Staging roots
stand in for a live /boot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline import install
from pipeline.errors import InstallError
from pipeline.install import bootloader
from pipeline.install.bootloader import Entry
from pipeline.workspace import Workspace

from .support import install as h
from .support.tools import need

ENTRY_2009 = Entry(
    name="xen-unstable-2009", xen_version="3.4-unstable", release="2.6.18.8-xen",
    xen="xen-3.4-unstable.gz", xen_args="iommu", kernel="vmlinuz-2.6.18.8-xen",
    kernel_args="ro root=LABEL=/ reassigndev=0000:00:19.0,0000:01:01.0 "
                "pciback.hide=(0000:00:19.0)(0000:01:01.0)",
    initrd="initrd-2.6.18.8-xen.img")
ENTRY_MAINLINE = Entry(
    name="site", xen_version="4.19.1", release="6.1.119", xen="xen-4.19.1.gz",
    xen_args="iommu=1 dom0_mem=2048M", kernel="vmlinuz-6.1.119",
    kernel_args="ro root=LABEL=/ pci=resource_alignment=12@0000:00:19.0;12@0000:01:00.0 "
                "xen-pciback.hide=(0000:00:19.0)(0000:01:00.0)",
    initrd="initrd.img-6.1.119")


def install_entry(tmp: Path, kind: str, entry: Entry, once: bool,
                  files: dict[str, str] | None = None, live: bool = False) -> install.Plan:
    """Plan and carry out just the bootloader part into the staging root tmp/root."""
    root = tmp / "root"
    for rel, text in (files or {}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    ws = Workspace(tmp / "ws")
    state = ws.state("install").get("roots", {}).get(str(root), {})
    plan = install.Plan(root, live, state)
    bootloader.plan(kind, plan, entry, once)
    install.execute(plan, ws)
    return plan


# -------------------------------------------------------------------------- marked blocks
def test_set_block_replaces_in_place_and_keeps_every_other_byte() -> None:
    lines = ["a\r\n", "### BEGIN xenpipe x ###\r\n", "old\r\n", "### END xenpipe ###\r\n",
             "b \t\r\n"]
    out = bootloader.set_block(lines, "x", ["new", "lines"], "f")
    assert out == ["a\r\n", "### BEGIN xenpipe x ###\r\n", "new\r\n", "lines\r\n",
                   "### END xenpipe ###\r\n", "b \t\r\n"]  # the file's CRLF kept
    out = bootloader.set_block(["no newline at end"], "y", ["z"], "f")
    assert out == ["no newline at end\n", "\n", "### BEGIN xenpipe y ###\n", "z\n",
                   "### END xenpipe ###\n"]


def test_a_begin_without_end_is_a_one_line_error() -> None:
    lines = ["### BEGIN xenpipe x ###\n", "title mine\n"]
    with pytest.raises(InstallError, match=r"^f: '### BEGIN xenpipe x ###' has no "
                                           r"'### END xenpipe ###' after it; restore"):
        bootloader.set_block(lines, "x", ["new"], "f")


# ---------------------------------------------------------------------------- GRUB legacy
SEPARATE_BOOT = """\
default 1
timeout 10
title Fedora (2.6.27)
\troot (hd0,1)
\tkernel /vmlinuz-2.6.27 ro root=/dev/VolGroup00/LogVol00
\tinitrd /initrd-2.6.27.img
title Fedora (2.6.29)
\troot (hd0,1)
\tkernel /vmlinuz-2.6.29 ro root=/dev/VolGroup00/LogVol00
\tinitrd /initrd-2.6.29.img
"""


def test_grub_legacy_follows_the_users_entries(tmp_path: Path) -> None:
    """/boot on its own partition (paths without /boot), root (hd0,1), tabs: as the
    default entry has them; `savedefault 1` brings the user's default 1 back."""
    install_entry(tmp_path, "grub-legacy", ENTRY_2009, once=True,
                  files={"boot/grub/menu.lst": SEPARATE_BOOT})
    text = (tmp_path / "root/boot/grub/menu.lst").read_text()
    assert h.without_blocks(text) == SEPARATE_BOOT
    assert h.block(text, "xen-unstable-2009") == (
        "title Xen-3.4-Unstable (2.6.18.8-xen)\n"
        "\troot (hd0,1)\n"
        "\tkernel /xen-3.4-unstable.gz iommu\n"
        f"\tmodule /vmlinuz-2.6.18.8-xen {ENTRY_2009.kernel_args}\n"
        "\tmodule /initrd-2.6.18.8-xen.img\n"
        "\tsavedefault 1\n")
    assert (tmp_path / "root/boot/grub/default").read_text().split("\n")[0] == "2"


def test_grub_legacy_fresh_file_and_saved_default(tmp_path: Path) -> None:
    """No grub.conf yet: one is made with the 2009 defaults. A user already on `default
    saved` falls back to the saved entry, also after a rerun rewrote /boot/grub/default."""
    install_entry(tmp_path / "a", "grub-legacy", ENTRY_2009, once=False)
    text = (tmp_path / "a/root/boot/grub/grub.conf").read_text()
    assert h.block(text, "xen-unstable-2009") == h.REFERENCE_2009
    assert h.block(text, "xen-unstable-2009:default").splitlines()[-1] == "default 0"

    conf = "default saved\ntitle A\n  root (hd0,0)\n  kernel /boot/a\ntitle B\n  kernel /boot/b\n"
    files = {"boot/grub/grub.conf": conf, "boot/grub/default": "1\n"}
    install_entry(tmp_path / "b", "grub-legacy", ENTRY_2009, once=True, files=files)
    text = (tmp_path / "b/root/boot/grub/grub.conf").read_text()
    assert h.block(text, "xen-unstable-2009").endswith("  savedefault 1\n")
    assert (tmp_path / "b/root/boot/grub/default").read_text().startswith("2\n")
    changed = ENTRY_2009.__class__(**{**ENTRY_2009.__dict__, "xen_args": "iommu=1"})
    install_entry(tmp_path / "b", "grub-legacy", changed, once=True)
    text = (tmp_path / "b/root/boot/grub/grub.conf").read_text()
    assert h.block(text, "xen-unstable-2009").endswith("  savedefault 1\n")  # still the user's
    assert h.without_blocks(text) == conf


def test_two_configs_keep_one_entry_each(tmp_path: Path) -> None:
    other = Entry(**{**ENTRY_2009.__dict__, "name": "other", "release": "2.6.18.8-xen-test"})
    install_entry(tmp_path, "grub-legacy", ENTRY_2009, once=False,
                  files={"boot/grub/grub.conf": h.USER_GRUB_CONF})
    install_entry(tmp_path, "grub-legacy", other, once=False)
    install_entry(tmp_path, "grub-legacy", ENTRY_2009, once=False)
    text = (tmp_path / "root/boot/grub/grub.conf").read_text()
    assert text.count("### BEGIN xenpipe ") == 4  # two entries, two default blocks
    assert "(2.6.18.8-xen-test)" in h.block(text, "other")
    assert h.without_blocks(text) == h.USER_GRUB_CONF


# --------------------------------------------------------------------------------- GRUB 2
def test_grub2_quotes_what_grub_script_would_split(tmp_path: Path) -> None:
    """pci=resource_alignment= holds ';', a GRUB command separator: it must be quoted (GRUB
    accepts it unquoted as two commands, so grub-script-check alone would not notice)."""
    tool = need("grub-script-check")
    assert bootloader.grub_word("pci=resource_alignment=12@0000:00:19.0;12@0000:01:00.0") == \
        "'pci=resource_alignment=12@0000:00:19.0;12@0000:01:00.0'"
    assert bootloader.grub_word("xen-pciback.hide=(0000:00:19.0)") == \
        "xen-pciback.hide=(0000:00:19.0)"
    assert bootloader.grub_word("it's") == "'it'\\''s'"
    install_entry(tmp_path, "grub2", ENTRY_MAINLINE, once=True)
    cfg = tmp_path / "root/boot/grub/grub.cfg"
    text = cfg.read_text()
    assert ("\tmodule2 /boot/vmlinuz-6.1.119 ro root=LABEL=/ "
            "'pci=resource_alignment=12@0000:00:19.0;12@0000:01:00.0' "
            "xen-pciback.hide=(0000:00:19.0)(0000:01:00.0)\n") in text
    assert "\tmodule2 /boot/initrd.img-6.1.119\n" in text
    subprocess.run([tool, cfg], check=True)  # the whole new file, header included


def test_grub2_script_runs_with_grub_mkconfig_lib(tmp_path: Path) -> None:
    """The grub.d script as grub-mkconfig runs it (with its real grub-mkconfig_lib, /boot
    made relative to its filesystem) prints the entry the staging grub.cfg has."""
    lib = Path("/usr/share/grub/grub-mkconfig_lib")
    if not lib.is_file():
        need("grub-mkconfig")  # fails under CI, skips elsewhere
    install_entry(tmp_path, "grub2", ENTRY_MAINLINE, once=True)
    script = tmp_path / "root/etc/grub.d/42_xenpipe"
    env = {"PATH": os.environ["PATH"], "pkgdatadir": str(lib.parent), "grub_probe": "grub-probe"}
    out = subprocess.run(["sh", script], check=True, capture_output=True, text=True,
                         env=env).stdout
    staged = h.block((tmp_path / "root/boot/grub/grub.cfg").read_text(), "site")
    boot = subprocess.run(["sh", "-c", f". {lib}; make_system_path_relative_to_its_root /boot"],
                          check=True, capture_output=True, text=True).stdout.strip()
    assert out == staged.replace(" /boot/", f" {boot}/")


def test_grub2_script_escapes_the_shell(tmp_path: Path) -> None:
    """A $ or a backtick in the options reaches grub.cfg as written, not shell-expanded."""
    odd = Entry(**{**ENTRY_MAINLINE.__dict__, "kernel_args": "ro x=$HOME y=`id` z=\\n"})
    install_entry(tmp_path, "grub2", odd, once=True)
    out = subprocess.run(["sh", tmp_path / "root/etc/grub.d/42_xenpipe"], check=True,
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"]}).stdout
    assert "ro 'x=$HOME' 'y=`id`' 'z=\\n'" in out


def test_grub2_once_keeps_the_users_default(tmp_path: Path) -> None:
    """next_entry boots xenpipe's entry once; GRUB_DEFAULT=saved would lose the user's
    GRUB_DEFAULT=2, so it becomes saved_entry (real grub-editenv)."""
    need("grub-editenv")
    files = {"etc/default/grub": 'GRUB_DEFAULT="2"\nGRUB_TIMEOUT=5\n',
             "boot/grub/grub.cfg": h.USER_GRUB_CFG}
    plan = install_entry(tmp_path, "grub2", ENTRY_MAINLINE, once=True, files=files)
    env = bootloader.read_env((tmp_path / "root/boot/grub/grubenv").read_bytes())
    assert env == {"next_entry": "xenpipe-site", "saved_entry": "2"}
    assert any("GRUB_DEFAULT=saved" in n for n in plan.notes)
    assert (tmp_path / "root/etc/default/grub").read_text().startswith('GRUB_DEFAULT="2"')

    # after the boot GRUB cleared next_entry: the next install sets it again
    subprocess.run(["grub-editenv", tmp_path / "root/boot/grub/grubenv", "unset", "next_entry"],
                   check=True)
    plan = install_entry(tmp_path, "grub2", ENTRY_MAINLINE, once=True)
    assert [s.what for s in plan.steps] == [
        "bootloader: next_entry=xenpipe-site in /boot/grub/grubenv (boot once)"]
    assert len(list((tmp_path / "root/boot/grub").glob("grubenv.xenpipe-*.bak"))) == 1


def test_grub2_default_entry_when_not_once(tmp_path: Path) -> None:
    need("grub-editenv")
    install_entry(tmp_path, "grub2", ENTRY_MAINLINE, once=False)
    env = bootloader.read_env((tmp_path / "root/boot/grub/grubenv").read_bytes())
    assert env == {"saved_entry": "xenpipe-site"}


def test_grub2_on_the_running_system_regenerates_grub_cfg(tmp_path: Path) -> None:
    """Planned for / (not run: this must not touch the real /boot): grub-mkconfig after the
    script, with a backup of grub.cfg; a staging root is never given grub-mkconfig."""
    root = tmp_path / "root"
    (root / "boot/grub").mkdir(parents=True)
    (root / "boot/grub/grub.cfg").write_text("# generated\n")
    plan = install.Plan(root, True, {})  # a live plan, pointed at a copy
    bootloader.plan("grub2", plan, ENTRY_MAINLINE, True)
    runs = [s for s in plan.steps if isinstance(s, install.Run)]
    assert runs[0].argv == ["grub-mkconfig", "-o", "/boot/grub/grub.cfg"]
    assert runs[0].backups[0][0] == "/boot/grub/grub.cfg"
    staging = install.Plan(root, False, {})
    bootloader.plan("grub2", staging, ENTRY_MAINLINE, True)
    assert not any(isinstance(s, install.Run) and "grub-mkconfig" in s.argv[0]
                   for s in staging.steps)


def test_bootloader_none_only_notes(tmp_path: Path) -> None:
    plan = install_entry(tmp_path, "none", ENTRY_2009, once=True)
    assert plan.steps == [] and "bootloader = none" in plan.notes[0]
