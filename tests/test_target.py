"""``[target]``: the ssh transport's argv and quoting, the config keys, and (slow) ``doit
install`` to a real test box (QEMU TCG, Debian, the real sshd over a serial line)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import target
from pipeline.config import load
from pipeline.errors import ConfigError
from pipeline.target import Ssh, box, sh
from pipeline.target.console import Console
from pipeline.target.deploy import local_files, staging_root
from pipeline.workspace import Workspace

from .support import install as h
from .support.doit import run_doit
from .support.realkernel import RealKernel
from .support.testbox import KNOWN_TITLE, running_box, running_disk_box
from .support.tools import need


# ------------------------------------------------------------------------- the transport
def test_ssh_argv_is_batch_mode_and_one_quoted_command() -> None:
    """The remote command is one shlex-joined word list: a path with spaces and quotes, a
    BDF, a ``;`` stay single words for the box's shell; host keys are never waived."""
    s = Ssh("root@box", ("-F", "/my ssh/config"))
    argv = s.argv(["ls", "/sys/bus/pci/drivers/pciback/0000:00:03.0", "/boot/my file", "a;b'c"])
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-F", "/my ssh/config"]
    assert argv[5:9] == ["-o", "ConnectTimeout=30", "root@box", "--"]
    assert len(argv) == 10
    assert shlex.split(argv[-1]) == ["ls", "/sys/bus/pci/drivers/pciback/0000:00:03.0",
                                     "/boot/my file", "a;b'c"]
    assert not any("StrictHostKeyChecking" in a for a in argv)


def test_sh_scripts_take_their_data_as_arguments() -> None:
    assert sh("echo \"$1\"", "a b") == ["sh", "-c", "echo \"$1\"", "xenpipe", "a b"]


def test_unreachable_box_is_one_line_naming_host_and_step(tmp_path: Path) -> None:
    """ssh's own failure (exit 255; here a ProxyCommand that fails, nothing leaves the
    machine) is one line naming the box and the step."""
    need("ssh")
    s = Ssh("root@nowhere", ("-F", "/dev/null", "-o", "ProxyCommand=false"))
    with pytest.raises(Exception) as exc:
        s.run(["true"], "compare files")
    text = str(exc.value)
    assert text.startswith("ssh root@nowhere: compare files: cannot reach the box")
    assert "\n" not in text
    assert not s.reachable(timeout=30)


def test_box_owned_files_never_travel(tmp_path: Path) -> None:
    """grub.cfg, grubenv, depmod's outputs and staging backups are the box's own."""
    root = tmp_path / "root"
    for rel in ("boot/vmlinuz-6.1", "boot/grub/grub.cfg", "boot/grub/grubenv",
                "lib/modules/6.1/modules.dep", "lib/modules/6.1/modules.order",
                "etc/grub.d/42_xenpipe.xenpipe-20260101T000000.bak", "etc/grub.d/42_xenpipe"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "boot/xen.gz").symlink_to("xen-4.17.gz")
    files = local_files(root)
    assert sorted(files) == ["/boot/vmlinuz-6.1", "/boot/xen.gz", "/etc/grub.d/42_xenpipe",
                             "/lib/modules/6.1/modules.order"]
    assert files["/boot/xen.gz"] == "L xen-4.17.gz"
    assert files["/boot/vmlinuz-6.1"] == hashlib.sha256(b"boot/vmlinuz-6.1").hexdigest()


def test_box_steps_for_grub2_once() -> None:
    steps = box.bootloader_steps(_cfg_stub("grub2", once=True), "site")
    assert [s.argv[0] for s in steps] == ["sh", "grub-reboot"]
    assert steps[-1].argv == ["grub-reboot", "xenpipe-site"]
    assert box.depmod("6.1.1").argv == ["depmod", "-a", "-F", "/boot/System.map-6.1.1", "6.1.1"]


def _cfg_stub(loader: str, once: bool) -> object:
    class Install:
        bootloader = loader

    Install.once = once  # type: ignore[attr-defined]

    class Cfg:
        install = Install

    return Cfg


def test_the_entry_milestone_is_grubs_line_for_xenpipes_entry(tmp_path: Path) -> None:
    """GRUB 2 prints ``Booting `TITLE'`` for the entry it boots: xenpipe's title (named after
    the config file) passes, the known-good entry's does not."""
    cfg = load(_config(tmp_path, '[target]\nssh = "root@box"\n'))
    m = target.roundtrip.entry_milestone(cfg)
    assert m.regex.search("  Booting `Xen 4.17.7, Linux 6.1.192+ (xenpipe site)'\r\n")
    assert not m.regex.search("  Booting `Known good: Debian Linux without Xen'\r\n")
    assert not m.regex.search("  Booting `Xen 4.17.7, Linux 6.1.192+ (xenpipe other)'\r\n")
    assert target.roundtrip.milestones(cfg)[0] == [m]  # [install] bootloader = "grub2"


def test_console_follow_names_a_panic_after_the_milestones(tmp_path: Path) -> None:
    """After the last milestone the console is still read (a box never stalls on a full
    pipe) and a dom0 panic is noted while ssh is awaited; a real console command (sh)."""
    script = ("echo 'Linux version 6.1'; i=0; while [ $i -lt 2000 ]; do echo \"noise $i\"; "
              "i=$((i+1)); done; echo 'Kernel panic - not syncing: VFS: Unable to mount root "
              "fs'; sleep 60")
    con = Console(("sh", "-c", script), tmp_path / "console.log").start()
    try:
        con.follow()
        deadline = time.monotonic() + 30
        while con.failure is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        con.stop()
    assert con.failure == ("the dom0 kernel panicked: Kernel panic - not syncing: VFS: Unable "
                           "to mount root fs")
    assert "noise 1999" in (tmp_path / "console.log").read_text()


def test_testbox_module_with_bad_input_is_one_line(tmp_path: Path) -> None:
    """`python -m pipeline.testbox CONFIG`: a missing config, a [boot] xen that is not a
    file: one `xenpipe: error:` line, exit 1, no traceback (nothing is built)."""
    config = _config(tmp_path, '[boot]\nxen = "/nonexistent/xen.gz"\n')
    for arg, words in ((str(tmp_path / "none.toml"), "config file not found"),
                       (str(config), "[boot] xen = /nonexistent/xen.gz: the box's Xen")):
        res = subprocess.run([sys.executable, "-m", "pipeline.testbox", arg],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 1
        assert res.stderr.startswith("xenpipe: error:") and words in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "ws" / "testbox").exists()


# ---------------------------------------------------------------------------- the config
def _config(tmp_path: Path, target: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(f'[workspace]\ndir = "{tmp_path / "ws"}"\n\n{target}')
    return path


def test_target_table_loads(tmp_path: Path) -> None:
    cfg = load(_config(tmp_path, '[target]\nssh = "root@box"\nssh_args = ["-p", "2222"]\n'
                                 'console = ["console", "box"]\npower_cycle = ["ipmitool", '
                                 '"power", "cycle"]\nboot_timeout = 300\n'))
    assert cfg.target is not None
    assert cfg.target.ssh == "root@box" and cfg.target.ssh_args == ("-p", "2222")
    assert cfg.target.console == ("console", "box") and cfg.target.boot_timeout == 300
    assert load(_config(tmp_path, "")).target is None


@pytest.mark.parametrize(("body", "message"), [
    ('[target]\nssh_args = []\n', 'missing required key "ssh"'),
    ('[target]\nssh = "-oProxyCommand=x"\n', "expected an ssh destination"),
    ('[target]\nssh = "root@box; reboot"\n', "expected an ssh destination"),
    ('[target]\nssh = "root@box"\nconsole = "ipmitool sol"\n', "expected a list"),
    ('[target]\nssh = "root@box"\npower_cycle = [""]\n', "expected a command"),
    ('[target]\nssh = "root@box"\nboot_timeout = 0\n', "> 0"),
    ('[target]\nssh = "root@box"\npassword = "x"\n', "unknown key"),
])
def test_target_config_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(_config(tmp_path, body))
    assert "[target]" in str(exc.value) and message in str(exc.value)


# ------------------------------------------------------------------ the real test box
def _box_config(rk: RealKernel, tmp: Path, target_toml: str) -> Path:
    text = rk.config.read_text()
    text = h.set_key(text, "install", "bootloader", '"none"')  # the box boots by -kernel
    text = h.set_key(text, "install", "initramfs", '"none"')
    path = tmp / "box.toml"
    path.write_text(text + "\n" + target_toml)
    return path


@pytest.mark.slow
def test_doit_install_to_a_real_test_box(real_kernel: RealKernel, tmp_path: Path) -> None:
    """`doit install` with [target] against a QEMU VM running Debian's sshd: --dry-run shows
    the ssh commands and changes nothing on the box; the install lands the kernel on the box
    and depmod runs there (modules.dep never travels); a second install transfers and runs
    nothing; an unreachable box is one line."""
    need("ssh")
    rk = real_kernel
    r = rk.release
    env = {**rk.env, **h.machine_demo(tmp_path)}
    with running_box(tmp_path / "box", rk.vmlinuz) as tb, \
            rk.lock():  # one doit at a time in the shared workspace
        config = _box_config(rk, tmp_path, tb.target_toml())
        dry = run_doit("install", "--dry-run", config=config, env=env, timeout=1800)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "then on root@testbox:" in dry.stdout
        depmod = f"'depmod -a -F /boot/System.map-{r} {r}'"  # one word for ssh
        assert f"$ ssh -o BatchMode=yes -F {tb.ssh_config} -o ConnectTimeout=300 " \
               f"-o ConnectTimeout=30 root@testbox -- {depmod}" in dry.stdout
        assert tb.ssh().digests([f"/boot/vmlinuz-{r}"]) == {}  # the box is untouched

        res = run_doit("install", config=config, env=env, timeout=3600)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "transferring" in res.stdout and "depmod on the box" in res.stdout
        print(*[ln for ln in res.stdout.splitlines() if " in " in ln and " s" in ln], sep="\n")
        local = hashlib.sha256(rk.vmlinuz.read_bytes()).hexdigest()
        assert tb.ssh().digests([f"/boot/vmlinuz-{r}"]) == {f"/boot/vmlinuz-{r}": local}
        dep = tb.run("sh", "-c", f"ls /lib/modules/{r}/ && cat /lib/modules/{r}/modules.dep")
        assert "modules.order" in dep and "modules.dep.bin" in dep  # depmod ran on the box
        staged = staging_root(Workspace(rk.ws.dir), "root@testbox")
        assert (staged / f"boot/vmlinuz-{r}").is_file()

        again = run_doit("install", config=config, env=env, timeout=1800)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "nothing to do, root@testbox is up to date" in again.stdout
        assert "transferring" not in again.stdout and "[1/" not in again.stdout

        gone = _box_config(rk, tmp_path, tb.target_toml().replace(
            'ssh_args = [', 'ssh_args = ["-o", "ProxyCommand=false", '))
        res = run_doit("install", config=gone, env=env, timeout=600)
    assert res.returncode != 0
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if "xenpipe: error:" in ln]
    assert len(errors) == 1
    assert errors[0].startswith("xenpipe: error: ssh root@testbox: compare files: cannot reach "
                                "the box")


@pytest.mark.slow
def test_doit_devices_reads_the_boxs_sysfs_over_ssh(real_kernel: RealKernel,
                                                    tmp_path: Path) -> None:
    """`doit devices` with [target] and no XENPIPE_SYSFS: the checks read the test box's own
    /sys and /proc (one ssh command, pci.box.SNAPSHOT) and run xl there: its SMBus 00:1f.3 is
    found, a device only this machine could have is a no-go on the box (force=1 goes on),
    and a device path resolves against the box's topology (q35: PNP0A08 uid 0)."""
    need("ssh")
    with running_box(tmp_path / "box", real_kernel.vmlinuz) as tb:
        config = tmp_path / "devices.toml"
        config.write_text(f'[workspace]\ndir = "{tmp_path / "ws"}"\n'
                          '[passthrough]\ndevices = ["00:1f.3", "PNP0A08:0-1f.2", '
                          '"abcd:00:00.0"]\n' + tb.target_toml())
        env = {"XENPIPE_SYSFS": "", "XENPIPE_PROC": ""}
        res = run_doit("devices", config=config, env=env, timeout=1800)
        forced = run_doit("devices", "force=1", config=config, env=env, timeout=1800)
    print(res.stdout)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "devices of root@testbox's /sys (over ssh):" in res.stdout
    assert "  0000:00:1f.3: " in res.stdout
    assert "  0000:00:1f.2 (PNP0A08:0-1f.2): " in res.stdout
    assert "abcd:00:00.0 is not present on the box examined (read root@testbox's /sys (over " \
        "ssh)" in res.stdout
    assert "info: xen: no xl info (no running Xen there" in res.stdout  # Linux without Xen
    assert "no DMAR or IVRS table under root@testbox:/sys/firmware/acpi/tables" in res.stdout
    assert "xenpipe-box-" not in res.stdout  # the local copy is never named
    assert res.stderr.strip().splitlines()[-1].startswith(
        "xenpipe: error: passthrough.devices: no-go for ")
    assert forced.returncode == 0, forced.stdout + forced.stderr


@pytest.mark.slow
def test_doit_boot_on_a_box_that_misses_xen_falls_back(real_kernel: RealKernel,
                                                       tmp_path: Path) -> None:
    """`doit boot` with [target] on the real test box: it reboots over ssh (`systemctl
    reboot`), the console command follows the real boot, which comes up without Xen (the box
    boots its kernel directly: there is no GRUB entry to one-shot), so xenpipe power-cycles it
    through QEMU's monitor, waits for ssh and confirms the box is back without /proc/xen; the
    verdict names the missed milestone and says where the box is."""
    need("ssh")
    rk = real_kernel
    env = {**rk.env, **h.machine_demo(tmp_path)}
    with running_box(tmp_path / "box", rk.vmlinuz) as tb:
        config = _box_config(rk, tmp_path, tb.target_toml())
        # the round trip reads nothing of the build: a workspace of its own
        config.write_text(h.set_key(config.read_text(), "workspace", "dir",
                                    f'"{tmp_path / "ws"}"'))
        first = tb.run("cat", "/proc/sys/kernel/random/boot_id")
        res = run_doit("boot", config=config, env=env, timeout=3600)
        after = tb.run("sh", "-c", "cat /proc/sys/kernel/random/boot_id; uname -r")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "rebooting over ssh" in out and "power-cycling back to the known-good entry" in out
    errors = [ln for ln in out.splitlines() if "xenpipe: error:" in ln]
    assert errors == [f"xenpipe: error: root@testbox: Xen did not start (Linux banner came "
                      f"first); power-cycled: the box is back on its known-good entry "
                      f"({rk.release}, no /proc/xen)"], out
    assert after.split()[0] != first.strip()  # the box really rebooted
    assert tb.console().count("Linux version") >= 3  # first boot, the reboot, the power cycle


# ----------------------------------------------------------- the disk-booted test box
def _disk_box_config(rk: RealKernel, tmp: Path, target_toml: str, ws: Path | None = None,
                     dom0_extra: str = "") -> Path:
    """The demo config for the disk box: GRUB 2 with the one-shot, its mkinitrd (dom0's root
    from RAM, see testbox.MKINITRD), Xen on the first serial line (the box's console)."""
    text = rk.config.read_text()
    text = h.set_key(text, "install", "initramfs", '"mkinitrd"')
    text = h.set_key(text, "install", "once", "true")
    text = h.set_key(text, "install", "xen_cmdline",
                     '"iommu=1 dom0_mem=1024M console=com1 com1=115200"')
    text = h.set_key(text, "install", "dom0_cmdline",
                     f'"console=hvc0 earlyprintk=xen{dom0_extra}"')
    text = h.set_key(text, "boot", "guest", "false")
    if ws is not None:
        text = h.set_key(text, "workspace", "dir", f'"{ws}"')
    path = (tmp if ws is None else tmp / "boot") / "disk-box.toml"  # one name: one entry
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + "\n" + target_toml)
    return path


def _timed(*args: str, **kw: Any) -> tuple[Any, float]:
    start = time.monotonic()
    res = run_doit(*args, **kw)
    return res, time.monotonic() - start


@pytest.mark.slow
def test_round_trip_on_a_box_booting_from_its_disk(real_kernel: RealKernel,
                                                   tmp_path: Path) -> None:
    """The whole round trip on a test box that boots from its own disk through GRUB 2 (MBR,
    ext4 root, its Debian kernel as the known-good default): `doit install` over ssh (the
    real dom0 kernel, Debian's Xen, `xen-pciback.hide=` for the demo's two NICs, update-grub
    and grub-reboot run on the box), then `doit boot`: reboot into the one-shot entry, the
    console shows GRUB booting it, Xen and dom0; on the box Xen runs and pciback holds both
    NICs, which `xl pci-assignable-list` lists; the device checks made on the box are in
    boot.json; the next reboot comes back on the known-good entry."""
    need("ssh")
    rk = real_kernel
    env = {**rk.env, **h.machine_demo(tmp_path)}
    phases: dict[str, float] = {}
    with running_disk_box(tmp_path / "box", rk.cfg.boot.xen, rk.cfg.boot.devices) as tb:
        known = tb.known_release
        assert tb.run("sh", "-c", "uname -r; ls /proc/xen 2>&1 || true").split()[0] == known
        assert f"Booting `{KNOWN_TITLE}'" in tb.console()
        with rk.lock():
            config = _disk_box_config(rk, tmp_path, tb.target_toml())
            res, phases["deploy"] = _timed("install", config=config, env=env, timeout=3600)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "depmod on the box" in res.stdout and "grub-reboot" in res.stdout
        cfg_text = tb.run("cat", "/boot/grub/grub.cfg")
        assert "--id 'xenpipe-" in cfg_text or "--id xenpipe-" in cfg_text
        assert "xen-pciback.hide=" in cfg_text

        boot_cfg = _disk_box_config(rk, tmp_path, tb.target_toml(), ws=tmp_path / "ws")
        res, phases["boot"] = _timed("boot", config=boot_cfg, env={"XENPIPE_SYSFS": ""},
                                     timeout=3600)
        out = res.stdout + res.stderr
        print(out)
        assert res.returncode == 0, out
        result = json.loads((tmp_path / "ws/out/boot.json").read_text())
        assert result["verdict"] == "pass"
        assert list(result["milestones"])[0].startswith("GRUB booted xenpipe-")
        console = tb.console()
        assert re.search(r"Booting `Xen [^']*\(xenpipe ", console), console[-3000:]
        assert "(XEN) Xen version" in console
        checks = {c["bdf"]: c for c in result["checks"]}
        assert set(checks) == {"0000:00:03.0", "0000:01:00.0"}, result["checks"]
        assert all(c["findings"] for c in checks.values())
        listed = tb.run("xl", "pci-assignable-list")
        assert "0000:00:03.0" in listed and "0000:01:00.0" in listed

        start = time.monotonic()
        old = tb.run("cat", "/proc/sys/kernel/random/boot_id").strip()
        tb.run("sh", "-c", "(sleep 2; systemctl reboot) </dev/null >/dev/null 2>&1 &")
        back = target.roundtrip.wait_back(tb.ssh(), old, time.monotonic() + 900)
        phases["back to known-good"] = time.monotonic() - start
        assert back is not None
        where = tb.run("sh", "-c", "uname -r; [ -d /proc/xen ] && echo xen || echo no-xen")
    print(f"phases (s): { {k: round(v) for k, v in phases.items()} }; boot.json: "
          f"{result['seconds']}, milestones {result['milestones']}")
    assert where.split() == [known, "no-xen"]


BAD_INIT = " rdinit=/xenpipe-no-such-init init=/xenpipe-no-such-init"  # a requested init: panic


@pytest.mark.slow
def test_a_broken_deploy_on_the_disk_box_falls_back(real_kernel: RealKernel,
                                                    tmp_path: Path) -> None:
    """A broken deploy on the box that boots from its disk: the new entry's dom0 panics (its
    requested init does not exist) after every console milestone, and Xen reboots the box by
    itself; `doit boot` names the panic, power-cycles (QEMU's system_reset) and finds the box
    back on its known-good entry; boot.json says so, with the fallback's time."""
    need("ssh")
    rk = real_kernel
    env = {**rk.env, **h.machine_demo(tmp_path)}
    phases: dict[str, float] = {}
    with running_disk_box(tmp_path / "box", rk.cfg.boot.xen, rk.cfg.boot.devices) as tb:
        known = tb.known_release
        with rk.lock():
            broken = _disk_box_config(rk, tmp_path, tb.target_toml(), dom0_extra=BAD_INIT)
            res, phases["deploy"] = _timed("install", config=broken, env=env, timeout=3600)
        assert res.returncode == 0, res.stdout + res.stderr
        boot_cfg = _disk_box_config(rk, tmp_path, tb.target_toml(), ws=tmp_path / "ws",
                                    dom0_extra=BAD_INIT)
        res, phases["boot"] = _timed("boot", config=boot_cfg, env={"XENPIPE_SYSFS": ""},
                                     timeout=3600)
        out = res.stdout + res.stderr
        print(out)
        where = tb.run("sh", "-c", "uname -r; [ -d /proc/xen ] && echo xen || echo no-xen")
        console = tb.console()
    assert res.returncode != 0, out
    assert "Kernel panic - not syncing: Requested init /xenpipe-no-such-init failed" in console
    errors = [ln for ln in out.splitlines() if "xenpipe: error:" in ln]
    assert len(errors) == 1, out
    assert errors[0].startswith("xenpipe: error: root@testbox: dom0 did not come up: the dom0 "
                                "kernel panicked: Kernel panic - not syncing: Requested init"), \
        errors
    assert errors[0].endswith(f"power-cycled: the box is back on its known-good entry "
                              f"({known}, no /proc/xen)"), errors
    failed = json.loads((tmp_path / "ws/out/boot.json").read_text())
    assert failed["verdict"] == "fail" and "fallback" in failed["seconds"]
    assert where.split() == [known, "no-xen"]
    print(f"phases (s): { {k: round(v) for k, v in phases.items()} }; boot.json: "
          f"{failed['seconds']}, milestones {failed.get('milestones')}")


# ------------------------------------------------------------- the plan with [target]
def test_dry_run_with_target_prints_the_ssh_commands_and_touches_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`doit install --dry-run` with [target]: the staged plan, then every box command as
    the ssh argv that would run it; no staging root, no ssh (a fake ssh on PATH records any
    call: a dry run must make none)."""
    for k, v in h.machine_demo(tmp_path / "machine").items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PATH", f"{_failing_ssh(tmp_path)}:{os.environ['PATH']}")
    site = h.profile(tmp_path, "default")
    h.fake_kernel(site.ws, "6.1.9-xp", [])
    h.fake_xen(site.ws, "4.19.1", xenversion=True)
    site.edit("install", "initramfs", '"auto"')
    site.edit("target", "ssh", '"root@box"')
    site.edit("target", "ssh_args", '["-F", "/my ssh/config"]')
    target.deploy(site.cfg, site.ws, dry_run=True)
    out = capsys.readouterr().out
    assert "xenpipe install plan for staging root" in out
    head = "$ ssh -o BatchMode=yes -F '/my ssh/config' -o ConnectTimeout=30 root@box -- "
    assert f"{head}'depmod -a -F /boot/System.map-6.1.9-xp 6.1.9-xp'" in out
    assert f"{head}'grub-reboot xenpipe-default'" in out
    assert "initramfs: the first tool the box has" in out
    assert not staging_root(site.ws, "root@box").exists()
    assert not (tmp_path / "ssh-ran").exists()


def _failing_ssh(tmp: Path) -> Path:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"#!/bin/sh\ntouch {tmp / 'ssh-ran'}\nexit 255\n")
    (bin_dir / "ssh").chmod(0o755)
    return bin_dir


def test_a_full_disk_on_the_box_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tar's "No space left on device" is the line the user sees, not tar's summary. A fake
    ssh prints what tar on a full box prints: filling the test box's disk is not staged."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text("#!/bin/sh\necho 'tar: boot/vmlinuz: Cannot write: No space left "
                              "on device' >&2\necho 'tar: Exiting with failure status due to "
                              "previous errors' >&2\nexit 2\n")
    (fake / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(Exception) as exc:
        Ssh("root@box").run(["tar", "-x"], "transfer 1 file(s)")
    assert str(exc.value) == ("root@box: transfer 1 file(s) failed with exit status 2: tar: "
                              "boot/vmlinuz: Cannot write: No space left on device")


def test_box_milestones_are_the_boot_milestones_without_the_probe() -> None:
    """A box's console is followed through Xen, dom0, Linux and pciback's seizures; the
    QEMU probe's own lines (init, device dump, power-off) are not asked of it."""
    from pipeline import pci
    from pipeline.target.console import box_milestones

    steps = box_milestones([pci.parse_bdf("00:03.0")])
    names = [m.name for step in steps for m in step]
    assert names == ["Xen banner", "Xen IOMMU", "dom0 construction", "Linux banner",
                     "pciback seized 0000:00:03.0"]


def test_verify_takes_the_devices_as_arguments() -> None:
    """The BDFs reach the box's check as sh arguments, never pasted into the script."""
    from pipeline.target import roundtrip

    argv = sh(roundtrip._VERIFY, "0000:00:03.0", "0000:01:00.0")
    assert argv[:2] == ["sh", "-c"] and "0000:00:03.0" not in argv[2]
    assert argv[4:] == ["0000:00:03.0", "0000:01:00.0"]
    remote = Ssh("root@box").argv(argv)[-1]
    assert shlex.split(remote) == argv
