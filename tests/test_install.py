"""doit install: both shipped profiles into staging roots, with real make (install-xen,
modules_install), the real depmod and grub tools; dry-run, idempotence, preservation of what
the user wrote, and the safety checks. Staging roots stand in for a live /boot (which these
tests must not touch); hardware is a recorded sysfs tree (tests/sysfs_trees.py).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import install, passthrough, pci
from pipeline.config import load
from pipeline.errors import DeviceError, InstallError, XenpipeError, format_error
from pipeline.workspace import Workspace

from .support import install as h
from .support.doit import run_doit, write_config
from .support.realkernel import RealKernel
from .support.tools import IN_CI, REPO, need

R2009 = "2.6.18.8-xen"
R_NEW = "6.1.119"


@pytest.fixture(scope="session")
def modules(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return h.compile_modules(tmp_path_factory.mktemp("modules"))


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = h.machine_2009(tmp_path / "machine")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def site_2009(tmp: Path, modules: list[Path], **edits: str | None) -> h.Site:
    """configs/xen-unstable-2009.toml with a built workspace and a root the user set up."""
    site = h.profile(tmp, "xen-unstable-2009",
                     {tuple(k.split("__")): v for k, v in edits.items()})  # type: ignore[misc]
    h.fake_kernel(site.ws, R2009, modules, pciback="pciback")
    h.fake_xen(site.ws, "3.4-unstable")
    (site.root / "boot" / "grub").mkdir(parents=True)
    (site.root / "boot" / "grub" / "grub.conf").write_text(h.USER_GRUB_CONF)
    (site.root / "boot" / "vmlinuz-2.6.18-128.el5").write_bytes(b"the distribution's kernel")
    (site.root / "etc" / "xen").mkdir(parents=True)
    (site.root / "etc" / "xen" / "GUEST.hvm").write_text(h.USER_XM_GUEST)
    return site


def site_modern(tmp: Path, modules: list[Path], **edits: str | None) -> h.Site:
    """configs/default.toml likewise, with a hand-kept grub.cfg."""
    site = h.profile(tmp, "default", {tuple(k.split("__")): v for k, v in edits.items()})  # type: ignore[misc]
    h.fake_kernel(site.ws, R_NEW, modules)
    h.fake_xen(site.ws, "4.19.1", xenversion=True)
    (site.root / "boot" / "grub").mkdir(parents=True)
    (site.root / "boot" / "grub" / "grub.cfg").write_text(h.USER_GRUB_CFG)
    return site


def run(site: h.Site, dry_run: bool = False) -> dict[str, object]:
    return install.install(site.cfg, site.ws, dry_run=dry_run)


def backups(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.xenpipe-*.bak"))


# ---------------------------------------------------------------------- the 2009 profile
def test_2009_profile_installs_like_the_manual_procedure(tmp_path: Path, machine: object,
                                                          modules: list[Path]) -> None:
    """Xen by its own make install-xen, kernel files, modules_install, the real depmod, the
    2009 grub.conf entry next to the user's, and pci = [...] in the xm guest config."""
    site = site_2009(tmp_path, modules)
    result = run(site)
    root = site.root
    boot = root / "boot"
    assert (boot / "xen-3.4-unstable.gz").is_file()
    assert os.readlink(boot / "xen.gz") == "xen-3.4-unstable.gz"  # make install-xen's links
    for name in ("vmlinuz", "System.map", "config"):
        assert (boot / f"{name}-{R2009}").read_bytes() == (site.ws.out / f"{name}-{R2009}"
                                                           ).read_bytes()
    moddir = root / "lib" / "modules" / R2009
    assert (moddir / "kernel/drivers/xenpipe/xp_a.ko").is_file()  # modules_install ran
    assert h.DEP_LINE in (moddir / "modules.dep").read_text()  # depmod read the real ELF

    conf = (boot / "grub" / "grub.conf").read_text()
    assert h.without_blocks(conf) == h.USER_GRUB_CONF  # every user line, byte for byte
    entry = h.block(conf, "xen-unstable-2009")
    # the entry of shared/REFERENCE.md, then the one-shot line (once = true)
    assert entry == h.REFERENCE_2009 + "        savedefault 0\n"
    glob = h.block(conf, "xen-unstable-2009:default")
    assert glob.splitlines()[-1] == "default saved"
    assert conf.index("default saved") < conf.index("title CentOS")
    assert (boot / "grub" / "default").read_text().splitlines()[0] == "2"  # entry 2 boots next

    guest = (root / "etc/xen/GUEST.hvm").read_text()
    assert guest.startswith(h.USER_XM_GUEST)
    assert guest.splitlines()[-1] == "pci = ['00:19.0', '01:01.0']"
    assert (boot / "vmlinuz-2.6.18-128.el5").read_bytes() == b"the distribution's kernel"
    assert backups(root) == sorted([
        *(f"boot/grub/grub.conf.xenpipe-{s}.bak" for s in _stamps(root, "grub.conf")),
        *(f"etc/xen/GUEST.hvm.xenpipe-{s}.bak" for s in _stamps(root, "GUEST.hvm"))])
    assert next(root.rglob("grub.conf.xenpipe-*.bak")).read_text() == h.USER_GRUB_CONF
    assert any("mkinitrd -f /boot/initrd-2.6.18.8-xen.img 2.6.18.8-xen" in n
               for n in result["notes"])  # type: ignore[union-attr]
    log = site.ws.log("install").read_text()
    assert log.index("make install-xen") < log.index("modules_install") < log.index(
        "$ depmod") < log.index("grub.conf") < log.index("GUEST.hvm")


def _stamps(root: Path, name: str) -> list[str]:
    return [re.sub(r".*\.xenpipe-(.*)\.bak$", r"\1", p.name)
            for p in root.rglob(f"{name}.xenpipe-*.bak")]


def test_2009_entry_is_the_reference_entry_when_made_the_default(
        tmp_path: Path, machine: object, modules: list[Path]) -> None:
    """once = false: exactly the REFERENCE.md entry, made the default by number."""
    site = site_2009(tmp_path, modules, install__once="false")
    run(site)
    conf = (site.root / "boot/grub/grub.conf").read_text()
    assert h.block(conf, "xen-unstable-2009") == h.REFERENCE_2009
    assert h.block(conf, "xen-unstable-2009:default").splitlines()[-1] == "default 2"
    assert not (site.root / "boot/grub/default").exists()


def test_second_install_is_a_no_op(tmp_path: Path, machine: object,
                                   modules: list[Path]) -> None:
    """Nothing changed: no command, no write, no backup; every file keeps its mtime."""
    for site in (site_2009(tmp_path / "a", modules), site_modern(tmp_path / "b", modules)):
        run(site)
        before = h.snapshot(site.root)
        log = site.ws.log("install").read_text()
        result = run(site)
        assert result["steps"] == []
        assert h.snapshot(site.root) == before
        assert "$ " not in site.ws.log("install").read_text()[len(log):]  # nothing ran


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path, machine: object,
                                                     modules: list[Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    site = site_2009(tmp_path, modules)
    before, state = h.snapshot(site.root), h.snapshot(site.ws.state_dir)
    run(site, dry_run=True)
    out = capsys.readouterr().out
    assert h.snapshot(site.root) == before
    assert h.snapshot(site.ws.state_dir) == state
    steps = [ln for ln in out.splitlines() if re.match(r"\s*\d+\. ", ln)]
    assert [s.split(". ", 1)[1] for s in steps][:6] == [
        "Xen: make install-xen", f"kernel {R2009}: image", f"kernel {R2009}: System.map",
        f"kernel {R2009}: config", f"kernel {R2009}: make modules_install",
        f"kernel {R2009}: depmod"]
    assert f"$ make -C {site.ws.source_dir('xen')} -j" in out
    assert f"install-xen DESTDIR={site.root}" in out
    assert f"$ depmod -b {site.root} -F {site.root}/boot/System.map-{R2009} {R2009}" in out
    assert "+++ b/boot/grub/grub.conf" in out
    assert "+        kernel /boot/xen-3.4-unstable.gz iommu" in out
    assert "+pci = ['00:19.0', '01:01.0']" in out

    run(site)  # installed; now a changed config: the dry run shows only the change
    site.edit("install", "dom0_cmdline", '"ro root=LABEL=/ quiet"')
    before, state = h.snapshot(site.root), h.snapshot(site.ws.state_dir)
    capsys.readouterr()
    result = run(site, dry_run=True)
    out = capsys.readouterr().out
    assert h.snapshot(site.root) == before and h.snapshot(site.ws.state_dir) == state
    assert result["steps"] == ["bootloader: xen-unstable-2009 entry in /boot/grub/grub.conf"]
    assert "-        module /boot/vmlinuz-2.6.18.8-xen ro root=LABEL=/ reassigndev" in out
    assert "+        module /boot/vmlinuz-2.6.18.8-xen ro root=LABEL=/ quiet reassigndev" in out


def test_changed_config_replaces_only_its_own_entry(tmp_path: Path, machine: object,
                                                    modules: list[Path]) -> None:
    site = site_2009(tmp_path, modules)
    run(site)
    # the user edits their part of the files after the first install
    conf = site.root / "boot/grub/grub.conf"
    conf.write_text(conf.read_text() + "title Memtest\n        kernel /boot/memtest86+.bin\n")
    user_conf = h.without_blocks(conf.read_text())
    guest = site.root / "etc/xen/GUEST.hvm"
    guest.write_text(guest.read_text().replace("memory = 512", "memory = 1024"))
    site.edit("install", "dom0_cmdline", '"ro root=/dev/sda2"')
    site.edit("guests", "devices", '["0000:00:19.0"]')
    result = run(site)
    assert result["steps"] == ["bootloader: xen-unstable-2009 entry in /boot/grub/grub.conf",
                               "guest GUEST: pci = [...] in /etc/xen/GUEST.hvm (xm)"]
    text = conf.read_text()
    assert h.without_blocks(text) == user_conf
    assert text.count("### BEGIN xenpipe xen-unstable-2009 ###") == 1
    assert "module /boot/vmlinuz-2.6.18.8-xen ro root=/dev/sda2 reassigndev=" in text
    lines = guest.read_text().splitlines()
    assert "memory = 1024" in lines and lines[-1] == "pci = ['00:19.0']"
    assert len(backups(site.root)) == 4  # grub.conf and the guest config, twice each


def test_rebuilt_kernel_replaces_own_files_and_reruns_depmod(tmp_path: Path, machine: object,
                                                             modules: list[Path]) -> None:
    site = site_2009(tmp_path, modules)
    run(site)
    (site.ws.out / f"vmlinuz-{R2009}").write_bytes(b"a newer build")
    result = run(site)
    assert result["steps"] == [f"kernel {R2009}: image", f"kernel {R2009}: make modules_install",
                               f"kernel {R2009}: depmod"]
    assert (site.root / f"boot/vmlinuz-{R2009}").read_bytes() == b"a newer build"
    assert not list(site.root.glob("boot/vmlinuz-*.bak"))  # it was xenpipe's own file


def test_a_kernel_file_xenpipe_did_not_write_is_backed_up(tmp_path: Path, machine: object,
                                                          modules: list[Path]) -> None:
    site = site_2009(tmp_path, modules)
    (site.root / f"boot/vmlinuz-{R2009}").write_bytes(b"built by hand in 2009")
    run(site)
    (bak,) = site.root.glob(f"boot/vmlinuz-{R2009}.xenpipe-*.bak")
    assert bak.read_bytes() == b"built by hand in 2009"


# --------------------------------------------------------------------- the modern profile
def test_default_profile_installs_a_grub2_entry(tmp_path: Path, machine: object,
                                                modules: list[Path]) -> None:
    """grub2: the grub.d script, GRUB_DEFAULT=saved, the staged grub.cfg entry (checked by
    grub-script-check), next_entry in grubenv, and the xl guest config."""
    tool = need("grub-script-check")
    site = site_modern(tmp_path, modules)
    run(site)
    root = site.root
    assert (root / "boot/xen-4.19.1.gz").is_file()
    assert h.DEP_LINE in (root / f"lib/modules/{R_NEW}/modules.dep").read_text()
    cfg = (root / "boot/grub/grub.cfg").read_text()
    assert h.without_blocks(cfg) == h.USER_GRUB_CFG
    entry = h.block(cfg, "default")
    assert entry == (
        "menuentry 'Xen 4.19.1, Linux 6.1.119 (xenpipe default)' --id xenpipe-default {\n"
        "\tmultiboot2 /boot/xen-4.19.1.gz iommu=1 dom0_mem=2048M\n"
        "\tmodule2 /boot/vmlinuz-6.1.119 ro root=LABEL=/ xen-pciback.hide=(0000:00:19.0)\n"
        "}\n")
    subprocess.run([tool, root / "boot/grub/grub.cfg"], check=True)
    script = root / "etc/grub.d/42_xenpipe"
    assert os.access(script, os.X_OK)
    out = subprocess.run(["sh", script], check=True, capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]}).stdout
    assert out == entry  # what grub-mkconfig will put in grub.cfg on the target
    (tmp_path / "script-out.cfg").write_text(out)
    subprocess.run([tool, tmp_path / "script-out.cfg"], check=True)
    assert (root / "etc/default/grub.d/xenpipe.cfg").read_text().splitlines()[-1] == \
        "GRUB_DEFAULT=saved"
    env = (root / "boot/grub/grubenv").read_bytes()
    assert len(env) == 1024 and b"\nnext_entry=xenpipe-default\n" in env  # grub-editenv's
    assert (root / "etc/xen/guest.cfg").read_text().splitlines()[-2:] == [
        'name = "guest"', "pci = ['00:19.0']"]


def test_assignable_mode_installs_an_entry_that_hides_nothing(
        tmp_path: Path, machine: object, modules: list[Path]) -> None:
    """[passthrough] mode = "assignable": the entry's dom0 line has no xen-pciback.hide= (dom0
    keeps the device until xl pci-assignable-add), the guest config still names it; an HVM
    guest's new config says so in xl's words."""
    site = site_modern(tmp_path, modules, passthrough__mode='"assignable"',
                       guests__type='"hvm"')
    run(site)
    entry = h.block((site.root / "boot/grub/grub.cfg").read_text(), "default")
    assert "\tmodule2 /boot/vmlinuz-6.1.119 ro root=LABEL=/\n" in entry
    assert "hide" not in entry
    assert (site.root / "etc/xen/guest.cfg").read_text().splitlines()[-3:] == [
        'name = "guest"', 'type = "hvm"', "pci = ['00:19.0']"]


def test_distribution_hypervisor_when_xen_is_not_built(tmp_path: Path, machine: object,
                                                       modules: list[Path]) -> None:
    site = site_modern(tmp_path, modules)
    site.path.write_text(h.drop_table(site.path.read_text(), "xen"))
    site.edit("boot", "xen", '"/boot/xen-4.17-amd64.gz"')
    result = run(site)
    assert "multiboot2 /boot/xen-4.17-amd64.gz iommu=1" in (
        site.root / "boot/grub/grub.cfg").read_text()
    assert not list(site.root.glob("boot/xen-4.19*"))
    assert any("/boot/xen-4.17-amd64.gz ([boot] xen), which" in n
               for n in result["notes"])  # type: ignore[union-attr]

    site.edit("boot", "xen", None)  # then: the newest hypervisor the root has
    for name in ("xen-4.16.gz", "xen-4.17-amd64.gz", "xen-syms-4.18"):
        (site.root / "boot" / name).write_bytes(b"xen")
    run(site)
    assert "multiboot2 /boot/xen-4.17-amd64.gz" in (site.root / "boot/grub/grub.cfg").read_text()
    for p in site.root.glob("boot/xen-*"):
        p.unlink()
    with pytest.raises(InstallError, match=r"no \[xen\] to install and no xen-\*\.gz"):
        run(site)


def test_xen_tree_without_install_target_is_copied_with_short_links(
        tmp_path: Path, machine: object, modules: list[Path]) -> None:
    site = site_modern(tmp_path, modules)
    h.fake_xen(site.ws, "4.19.1", install_target=False, xenversion=True)
    run(site)
    boot = site.root / "boot"
    assert (boot / "xen-4.19.1.gz").read_bytes() == (site.ws.out / "xen.gz").read_bytes()
    assert (boot / "xen-syms-4.19.1").is_file()
    links = ("xen-4.19.gz", "xen-4.gz", "xen.gz")
    assert {n: os.readlink(boot / n) for n in links} == dict.fromkeys(links, "xen-4.19.1.gz")
    before = h.snapshot(site.root)
    assert run(site)["steps"] == []
    assert h.snapshot(site.root) == before


def test_kernel_without_modules_skips_modules_install(tmp_path: Path, machine: object,
                                                      modules: list[Path]) -> None:
    site = site_modern(tmp_path, modules)
    h.fake_kernel(site.ws, R_NEW, modules, modules=False)
    result = run(site)
    assert not (site.root / "lib/modules").exists()
    assert any("CONFIG_MODULES is off" in n for n in result["notes"])  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- safety
def test_refuses_the_device_holding_the_root_filesystem(tmp_path: Path, machine: object,
                                                        modules: list[Path]) -> None:
    site = site_2009(tmp_path, modules,
                     passthrough__devices='["0000:00:19.0", "0000:01:01.0", "00:1f.2"]')
    before = h.snapshot(site.root)
    with pytest.raises(DeviceError) as exc:
        run(site)
    assert "0000:00:1f.2 holds the root filesystem" in str(exc.value)
    assert "\n" not in format_error(exc.value)
    assert h.snapshot(site.root) == before
    site.edit("install", "allow_system_devices", "true")
    run(site)
    assert "pciback.hide=(0000:00:19.0)(0000:01:01.0)(0000:00:1f.2)" in (
        site.root / "boot/grub/grub.conf").read_text()


def test_guest_devices_must_be_passed_through(tmp_path: Path, machine: object,
                                              modules: list[Path]) -> None:
    site = site_2009(tmp_path, modules, guests__devices='["00:19.0", "00:1f.0"]')
    with pytest.raises(InstallError, match=r"^\[\[guests\]\] GUEST: 00:1f\.0 not in "
                                           r"passthrough\.devices"):
        run(site)


def test_guest_device_options_are_installed(tmp_path: Path, machine: object,
                                            modules: list[Path]) -> None:
    """[[guests]] devices with xl options: the staged guest config carries them."""
    site = site_2009(tmp_path, modules,
                     guests__devices='["00:19.0,permissive=1,msitranslate=1", "01:01.0@3"]')
    run(site)
    guest = (site.root / "etc/xen/GUEST.hvm").read_text()
    assert guest.splitlines()[-1] == "pci = ['00:19.0,permissive=1,msitranslate=1', '01:01.0@3']"


@pytest.mark.parametrize("link", ["boot/grub", "etc/xen/GUEST.hvm"])
def test_a_symlink_out_of_the_root_stops_the_install(tmp_path: Path, machine: object,
                                                     modules: list[Path], link: str) -> None:
    """A write that would follow a symlink out of the root is refused before anything runs."""
    site = site_2009(tmp_path, modules)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "grub.conf").write_text("not yours\n")
    (outside / "GUEST.hvm").write_text("not yours\n")
    p = site.root / link
    if p.is_dir():
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    else:
        p.unlink()
    p.symlink_to(outside if link == "boot/grub" else outside / "GUEST.hvm")
    before, outside_before = h.snapshot(site.root), h.snapshot(outside)
    with pytest.raises(InstallError, match="outside install.root"):
        run(site)
    assert h.snapshot(site.root) == before and h.snapshot(outside) == outside_before


def test_a_symlink_inside_the_root_is_followed(tmp_path: Path, machine: object,
                                               modules: list[Path]) -> None:
    """menu.lst -> grub.conf (Red Hat): the file is edited, the link stays a link."""
    site = site_2009(tmp_path, modules)
    grub = site.root / "boot/grub"
    (grub / "grub.conf").rename(grub / "real.conf")
    (grub / "menu.lst").symlink_to("real.conf")
    run(site)
    assert os.readlink(grub / "menu.lst") == "real.conf"
    assert "title Xen-3.4-Unstable (2.6.18.8-xen)" in (grub / "real.conf").read_text()


def test_root_slash_needs_uid_0(tmp_path: Path, modules: list[Path]) -> None:
    """install.root = "/" as an ordinary user is a one-line error (checked in a child that
    really drops to uid 65534 when the tests run as root)."""
    site = site_modern(tmp_path, modules, install__root='"/"')
    cfg = site.cfg
    if os.geteuid() != 0:
        with pytest.raises(InstallError, match=r'install.root = "/" .* needs root'):
            install.check_root(cfg)
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, report the error text
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            install.check_root(cfg)
            msg = "no error"
        except XenpipeError as exc:
            msg = format_error(exc)
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    msg = os.read(r, 4096).decode()
    os.waitpid(pid, 0)
    assert msg.startswith('xenpipe: error: install.root = "/" changes the running system')
    assert "\n" not in msg


def test_root_that_is_a_file_is_refused(tmp_path: Path, modules: list[Path]) -> None:
    site = site_modern(tmp_path, modules, install__root=f'"{tmp_path / "afile"}"')
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InstallError, match="is not a directory"):
        install.check_root(site.cfg)


def test_dry_run_on_the_running_system_plans_grub_mkconfig(tmp_path: Path, machine: object,
                                                            modules: list[Path]) -> None:
    """As root, a dry run against / shows grub-mkconfig and changes nothing in /boot or
    /etc (the only test that looks at the real system, read-only)."""
    if os.geteuid() != 0:
        if IN_CI:  # CI runs as root: a skip there would hide the test
            pytest.fail("install.root = / is for root only, and CI=true runs as root")
        pytest.skip("install.root = / is for root only")
    site = site_modern(tmp_path, modules, install__root='"/"')
    watched = [Path("/boot"), Path("/etc/grub.d"), Path("/etc/default")]
    before = [h.snapshot(p) for p in watched]
    plan = install.make_plan(site.cfg, site.ws)
    assert plan.live
    text = plan.render()
    assert "$ grub-mkconfig -o /boot/grub/grub.cfg" in text
    assert f"$ depmod -b / -F /boot/System.map-{R_NEW} {R_NEW}" in text
    assert [h.snapshot(p) for p in watched] == before


KILLER = r"""
import os, re, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from pipeline import config
from pipeline import install
from pipeline import workspace

real_fsync = os.fsync

def fsync(fd):
    # the moment grub.conf's new content is in its temp file, before the rename
    if re.search(r"/\.grub\.conf\.(?!xenpipe-)[^/]+\.tmp$", os.readlink(f"/proc/self/fd/{fd}")):
        print("WRITING", flush=True)
        time.sleep(600)
    real_fsync(fd)

os.fsync = fsync
cfg = config.load(Path(sys.argv[2]))
install.install(cfg, workspace.Workspace(cfg.workspace))
"""


def test_killed_while_writing_leaves_the_old_file(tmp_path: Path, machine: dict[str, str],
                                                  modules: list[Path]) -> None:
    """SIGKILL in the middle of writing grub.conf: the user's grub.conf is intact; the next
    install completes."""
    site = site_2009(tmp_path, modules)
    child = subprocess.Popen([sys.executable, "-c", KILLER, str(REPO), str(site.path)],
                             stdout=subprocess.PIPE, env={**os.environ, **machine})
    assert child.stdout is not None
    # read the pipe's bytes as they come (a buffered readline after select would keep
    # "WRITING" in its buffer when it arrives with the lines before it: under load, often)
    fd = child.stdout.fileno()
    deadline = time.monotonic() + 120
    seen = b""
    while b"WRITING\n" not in seen:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            chunk = os.read(fd, 1 << 16)
            assert chunk, f"the install ended before writing grub.conf: {seen!r}"
            seen += chunk
        assert time.monotonic() < deadline, seen
    child.send_signal(signal.SIGKILL)
    child.wait()
    conf = site.root / "boot/grub/grub.conf"
    assert conf.read_text() == h.USER_GRUB_CONF
    assert len(list(conf.parent.glob(".grub.conf.*.tmp"))) == 1  # the unfinished new one
    run(site)
    assert h.block(conf.read_text(), "xen-unstable-2009").startswith(h.REFERENCE_2009)


# --------------------------------------------------------------------- the real kernel
def _real_site(rk: RealKernel, tmp: Path, loader: str) -> Path:
    """The real kernel's config with the install into a staging root of *tmp*."""
    text = rk.config.read_text()
    text = h.set_key(text, "install", "root", f'"{tmp / "root"}"')
    text = h.set_key(text, "install", "bootloader", f'"{loader}"')
    if loader == "grub-legacy":
        text = h.set_key(text, "install", "initramfs", '"mkinitrd"')
        text = h.set_key(text, "install", "xen_cmdline", '"iommu dom0_mem=1024M"')
        text = text.replace('toolstack = "xl"', 'toolstack = "xm"')
    path = tmp / f"real-{loader}.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["grub2", "grub-legacy"])
def test_real_kernel_doit_install(real_kernel: RealKernel, tmp_path: Path,  # noqa: F811
                                  loader: str) -> None:
    """`doit install` of the real 6.1 build: real make modules_install and depmod into a
    staging root, the bootloader entry, dry-run first and a no-op rerun."""
    need("depmod")
    rk = real_kernel
    machine = h.machine_demo(tmp_path)
    env = {**rk.env, **machine}
    config = _real_site(rk, tmp_path, loader)
    root = tmp_path / "root"
    with rk.lock():  # one doit at a time in the shared ws
        dry = run_doit("install", "--dry-run", config=config, env=env, timeout=1800)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert not root.exists()
        assert "modules_install" in dry.stdout and "$ depmod -b" in dry.stdout
        res = run_doit("install", config=config, env=env, timeout=1800)
        assert res.returncode == 0, res.stdout + res.stderr
        before = h.snapshot(root)
        again = run_doit("install", config=config, env=env, timeout=1800)
        assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to do" in again.stdout
    assert h.snapshot(root) == before
    r = rk.release
    assert (root / f"boot/vmlinuz-{r}").read_bytes() == rk.vmlinuz.read_bytes()
    moddir = root / "lib/modules" / r
    assert (moddir / "modules.order").is_file()  # installed by the kernel's own make
    assert (moddir / "modules.dep").is_file() and (moddir / "modules.dep.bin").is_file()
    # the dom0 options for the kernel's flavour: the demo kernel carries the guestdev= patch
    topo = pci.scan(Path(machine["XENPIPE_SYSFS"]))
    cfg = load(config)
    dom0 = passthrough.dom0_cmdline(cfg, passthrough.flavour(cfg, rk.ws), topo)
    assert dom0.endswith(" xen-pciback.hide=(0000:00:03.0) guestdev=PNP0A08:0-1c.0-0.0")
    if loader == "grub2":
        cfg_text = (root / "boot/grub/grub.cfg").read_text()
        assert f"\tmodule2 /boot/vmlinuz-{r} {dom0}\n" in cfg_text
        assert "\tmultiboot2 /boot/xen-4.17-amd64.gz iommu=1 dom0_mem=1024M\n" in cfg_text
        subprocess.run([need("grub-script-check"), root / "boot/grub/grub.cfg"], check=True)
    else:
        conf = (root / "boot/grub/grub.conf").read_text()
        assert f"        module /boot/vmlinuz-{r} {dom0}\n" in conf
        assert "        kernel /boot/xen-4.17-amd64.gz iommu dom0_mem=1024M\n" in conf
        assert f"        module /boot/initrd-{r}.img\n" in conf
    assert (root / "etc/xen/demo.cfg").read_text().endswith("pci = ['00:03.0', '01:00.0']\n")
    ws = Workspace(rk.ws.dir)
    assert ws.state("install")["roots"][str(root)]["runs"]["depmod"]


def test_profiles_load(tmp_path: Path) -> None:
    """The shipped profiles keep the install keys these tests rely on."""
    for name, loader in (("xen-unstable-2009", "grub-legacy"), ("default", "grub2")):
        cfg = h.profile(tmp_path / name, name).cfg
        assert cfg.install.bootloader == loader


# ----------------------------------------------------------------------------- initramfs
def test_initramfs_auto_names_the_image_after_the_targets_tool(tmp_path: Path, machine: object,
                                                               modules: list[Path]) -> None:
    """A staging root with Debian's update-initramfs: the entry names initrd.img-<release>,
    and the plan says what to run on the target (the tool builds for the running system)."""
    site = site_modern(tmp_path, modules)
    (site.root / "usr/sbin").mkdir(parents=True)
    (site.root / "usr/sbin/update-initramfs").write_text("#!/bin/sh\n")
    result = run(site)
    assert f"\tmodule2 /boot/initrd.img-{R_NEW}\n" in (site.root / "boot/grub/grub.cfg").read_text()
    assert any(f"on the target run: update-initramfs -c -k {R_NEW}" in n
               for n in result["notes"])  # type: ignore[union-attr]
    assert not (site.root / f"boot/initrd.img-{R_NEW}").exists()


@pytest.mark.parametrize(("tool", "image", "argv"), [
    ("mkinitrd", "initrd-R.img", ["mkinitrd", "-f", "/boot/initrd-R.img", "R"]),
    ("dracut", "initramfs-R.img", ["dracut", "--force", "/boot/initramfs-R.img", "R"]),
    ("update-initramfs", "initrd.img-R", ["update-initramfs", "-c", "-k", "R"]),
])
def test_initramfs_tools(tmp_path: Path, tool: str, image: str, argv: list[str]) -> None:
    from pipeline.install import initramfs

    chosen = initramfs.choose(tool, tmp_path, live=False)
    assert chosen is not None and chosen.image("R") == image and chosen.argv("R", False) == argv
    if initramfs.which(tool) is None:  # on the running system the tool must be there
        with pytest.raises(InstallError, match=f'^initramfs = "{tool}" but {tool} is not'):
            initramfs.choose(tool, Path("/"), live=True)
    assert initramfs.choose("none", tmp_path, live=False) is None
    assert initramfs.choose("auto", tmp_path, live=False) is None


def test_doit_install_user_errors_are_one_line(tmp_path: Path) -> None:
    """Through doit as users run it (a config without [kernel], so no build runs first)."""
    config = write_config(tmp_path, f'[install]\nroot = "{tmp_path / "root"}"\n')
    res = run_doit("install", "--dry-run", config=config, timeout=120)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "xenpipe: error: no [kernel] configured: there is no dom0 kernel to install"]
    (tmp_path / "afile").write_text("")
    config.write_text(config.read_text().replace('root/"', 'afile"').replace(
        f'{tmp_path / "root"}', f'{tmp_path / "afile"}'))
    res = run_doit("install", config=config, timeout=120)
    assert res.stderr.strip().splitlines() == [
        f"xenpipe: error: install.root {tmp_path / 'afile'} exists and is not a directory"]
    assert "Traceback" not in res.stdout + res.stderr
