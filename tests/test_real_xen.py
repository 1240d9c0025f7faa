"""The first step of the manual procedure, for real: Xen cloned over hg from its real history
(RELEASE-4.17.6..RELEASE-4.17.7, served by a real ``hg serve`` on 127.0.0.1), built by ``doit
build``, and that Xen booted with the demo's guest. The build is shared (``real_xen``: one
cold build per test cache, keyed by its inputs), the dom0 kernel is the shared ``real_kernel``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pipeline import proc
from pipeline.boot import probe
from pipeline.build.buildid import gnu_build_id
from pipeline.workspace import Workspace

from .support.doit import run_doit
from .support.realkernel import RealKernel, cache_dir
from .support.realxen import (
    NEW,
    OLD,
    RealXen,
    XenUpstream,
    adopt_kernel_tasks,
    bundle,
    clone_history,
    host_workspace,
)
from .support.tools import need
from .support.upstreams import HgServer, hg

GUEST_DATA = Path(__file__).parent / "data" / "guest"  # a recorded boot of the demo VM


@pytest.mark.slow
def test_doit_build_fetches_xen_over_hg_and_builds_the_hypervisor(real_xen: RealXen) -> None:
    """The tree is the served history at RELEASE-4.17.7 (fetched with hg over HTTP), the
    hypervisor is in out/ with its build-id, and a second doit build does nothing."""
    md = real_xen.metadata()
    src = md["sources"]["xen"]
    assert src["vcs"] == "hg" and src["rev"] == NEW and src["resolved"] == real_xen.node
    # the URL of the hg serve of the session that built it (the build is cached by its
    # inputs; later sessions refetch from their own server: the tag is there, no network)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/xen-4\.17\.hg/", src["url"]), src["url"]
    assert real_xen.ws.state("fetch-xen")["url"] == real_xen.url
    assert md["stages"]["xen"]["status"] == "pass"
    assert any("build-xen" in c for c in md["stages"]["xen"]["commands"])
    assert real_xen.xen_gz.read_bytes()[:2] == b"\x1f\x8b"
    assert gnu_build_id(real_xen.xen_syms) == real_xen.build_id
    tree = real_xen.ws.source_dir("xen")
    assert (tree / ".hg").is_dir()
    assert "XEN_EXTRAVERSION ?= .7" in (tree / "xen" / "Makefile").read_text()
    print(f"doit build of Xen {NEW}: {real_xen.seconds:.0f} s, build-id {real_xen.build_id}")

    again = run_doit("build", config=real_xen.config, env=real_xen.env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "-- build:xen" in again.stdout, again.stdout


def boot_json(ws: Workspace) -> dict:
    return json.loads((ws.out / "boot.json").read_text())


@pytest.mark.slow
def test_doit_boot_boots_the_built_xen_and_the_guest_sees_both_devices(
        real_xen: RealXen, real_kernel: RealKernel, real_rootfs: Path, tmp_path: Path) -> None:
    """doit boot of the demo host with [xen]: QEMU starts out/xen.gz (not Debian's), which
    says the build-id of out/xen-syms on the console; pciback seizes both NICs and the guest
    lists them."""
    need("qemu-system-x86_64")
    config, ws = host_workspace(real_xen, real_kernel, tmp_path, real_rootfs)
    res = run_doit("-s", "boot", config=config, timeout=2400)
    assert res.returncode == 0, res.stdout + res.stderr
    result = boot_json(ws)
    assert result["verdict"] == "pass"
    assert Path(result["xen"]) == ws.dir / "boot" / "xen"  # out/xen.gz, decompressed
    assert result["xen_build"]["build_id"] == real_xen.build_id
    banner = result["xen_build"]["banner"]
    date = real_xen.ws.state("build-xen")["stamp"][0].removeprefix("XEN_BUILD_DATE=")
    assert banner.startswith("Xen version 4.17.7 (") and banner.endswith(date), banner
    assert "(Debian 4.17" not in banner and "pkg-xen-devel" not in banner, banner
    assert result["expected"] == {"00:03.0": ["0000:00:03.0"],
                                  "PNP0A08:0-1c.0-0.0": ["0000:01:00.0"]}
    view = result["guests"]["demo"]
    assert view["verdict"] == "pass"
    assert {(d["host"], d["ids"]) for d in view["devices"]} == {
        ("0000:00:03.0", "[8086:100e] class 020000"),
        ("0000:01:00.0", "[8086:10d3] class 020000")}
    assert f"(XEN) build-id: {real_xen.build_id}" in (ws.logs / "boot.log").read_text()
    print(f"boot of the built Xen: {result['seconds']:.0f} s; {banner}")


@pytest.mark.slow
def test_doit_install_installs_the_built_xen_with_make_install_xen(
        real_xen: RealXen, real_kernel: RealKernel, tmp_path: Path) -> None:
    """doit install into a staging root: Xen's own ``make install-xen DESTDIR=...``, run with
    the build's XEN_BUILD_DATE/TIME, installs the very hypervisor doit build made (byte for
    byte: no relink, the shared tree untouched) and the GRUB entry boots it."""
    config, ws = host_workspace(real_xen, real_kernel, tmp_path)
    tree_gz = real_xen.ws.source_dir("xen") / "xen" / "xen.gz"
    before = tree_gz.stat().st_mtime_ns
    sysfs = probe.record_sysfs(probe.parse((GUEST_DATA / "pass.log").read_text(
        errors="replace")), tmp_path / "vm-sysfs")
    res = run_doit("-s", "install", config=config, env={"XENPIPE_SYSFS": str(sysfs)},
                   timeout=1800)
    assert res.returncode == 0, res.stdout + res.stderr
    boot = tmp_path / "root" / "boot"
    assert (boot / "xen-4.17.7.gz").read_bytes() == real_xen.xen_gz.read_bytes()
    assert os.readlink(boot / "xen-4.17.gz") == "xen-4.17.7.gz"
    assert tree_gz.stat().st_mtime_ns == before
    log = (ws.logs / "install.log").read_text()
    stamp = real_xen.ws.state("build-xen")["stamp"]
    assert [v.split("=")[0] for v in stamp] == ["XEN_BUILD_DATE", "XEN_BUILD_TIME"]
    assert f"{proc.render(stamp)} install-xen DESTDIR={tmp_path / 'root'}" in log, log
    grub = (boot / "grub" / "grub.cfg").read_text()
    assert "multiboot2 /boot/xen-4.17.7.gz" in grub and "loglvl=info" in grub, grub
    again = run_doit("-s", "install", config=config, env={"XENPIPE_SYSFS": str(sysfs)})
    assert again.returncode == 0 and "install-xen" not in again.stdout, again.stdout


@pytest.mark.slow
def test_nightly_follows_the_real_history_and_rebuilds_only_xen(
        real_kernel: RealKernel, real_rootfs: Path, hg_server: HgServer, tmp_path: Path) -> None:
    """A host workspace that built RELEASE-4.17.6 (its upstream's tip then), following tip;
    upstream moves to RELEASE-4.17.7 (``hg pull`` of the real history): ``doit nightly``
    reports the range (old and new changeset, 62 new, their summaries), rebuilds Xen only
    (the kernel's tasks up to date), boots the new Xen with the guest, and passes."""
    need("qemu-system-x86_64")
    source = bundle()
    up = XenUpstream(clone_history(source, tmp_path / "upstream.hg", OLD),
                     f"{hg_server.url}{tmp_path.name}/")
    (hg_server.root / tmp_path.name).symlink_to(up.path)
    old = up.node("tip")  # the 4.17.6 tree (its tag comes with the next changeset)
    config, ws = host_workspace(None, real_kernel, tmp_path, real_rootfs, up.url, "tip")
    env = {"CCACHE_DIR": str(cache_dir() / "ccache")}
    with real_kernel.lock():
        adopt_kernel_tasks(real_kernel, ws)
        first = run_doit("build", config=config, env=env, timeout=3600)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "-- build:kernel" in first.stdout and "-- config" in first.stdout, first.stdout
        old_id = gnu_build_id(ws.out / "xen-syms")
        hg("pull", "--", source, cwd=up.path)  # upstream moves on: RELEASE-4.17.7 and its tag
        new = up.node("tip")
        assert up.node(OLD) == old
        res = run_doit("nightly", config=config, env=env, timeout=3600)
    assert res.returncode == 0, "\n".join((res.stdout + res.stderr).splitlines()[-40:])
    v = json.loads((ws.reports / "report.json").read_text())["variants"][0]
    xen = next(s for s in v["sources"] if s["name"] == "xen")
    assert (xen["old"], xen["new"], xen["changed"]) == (old, new, True)
    assert xen["new_count"] == 62, xen  # 4.17.6's tag, 60 upstream commits, 4.17.7's tag
    assert xen["new_revisions"][0] == f"{new[:12]} Added tag {NEW} for changeset " \
        f"{up.node(NEW)[:12]}", xen["new_revisions"]
    stages = {s["name"]: s["status"] for s in v["stages"]}
    assert stages["build:xen"] == "passed" and stages["boot"] == "passed", stages
    assert stages["build:kernel"] == "up-to-date" and stages["config"] == "up-to-date", stages
    result = boot_json(ws)
    new_id = gnu_build_id(ws.out / "xen-syms")
    assert result["verdict"] == "pass" and result["xen_build"]["build_id"] == new_id != old_id
    assert result["guests"]["demo"]["verdict"] == "pass"
    print(f"nightly {old[:12]}..{new[:12]}: {xen['new_count']} changesets, "
          f"{v['duration']:.0f} s; {v['summary']}")
