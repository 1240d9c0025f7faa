"""doit build on small real trees: real Makefiles, real gcc, real git upstreams, doit as users
run it. The kernel tree is kbuild-like (make O=<dir>; tests/fake_kernel.py's *config targets
and Kconfig look-alike, so the real kconfig stage drives it; bzImage, System.map, modules,
kernelrelease); the Xen tree has build-xen producing xen/xen.gz and xen/xen-syms."""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import build
from pipeline.build.progress import Progress
from pipeline.config import load
from pipeline.errors import BuildError
from pipeline.workspace import Workspace

from .support import fake_kernel
from .support.build_trees import FRAGMENT, XEN_FILES, git_tree, kernel_tree
from .support.doit import default_sigint, run_doit, write_config
from .support.realkernel import RealKernel
from .support.tools import REPO, need, sha256_of
from .support.upstreams import HgUpstream, hg

RELEASE = fake_kernel.RELEASE

@dataclass
class Site:
    """Two upstreams, a fragment, a patch directory for Xen and a config using them."""

    tmp: Path
    config: Path
    ws: Workspace
    fragment: Path
    xen_patches: Path

    def doit(self, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
        return run_doit(*(args or ("build",)), config=self.config, env=env)

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        res = self.doit(*args, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout + res.stderr

    def metadata(self) -> dict:
        return json.loads((self.ws.out / "metadata.json").read_text())

    def src(self, name: str) -> Path:
        return self.ws.source_dir(name)


def ran(output: str, task: str) -> bool:
    """doit prints '. task' for a task it ran and '-- task' for one that was up to date."""
    if re.search(rf"^\.\s+{re.escape(task)}$", output, re.M):
        return True
    assert re.search(rf"^-- {re.escape(task)}$", output, re.M), output
    return False


def make_site(tmp_path: Path, *, body: str = "", make_args: str = "[]",
              ccache: bool = False) -> Site:
    need("make")
    need("gcc")
    need("patch")
    linux = kernel_tree(tmp_path / "upstream")
    git_tree(linux, {})
    git_tree(tmp_path / "xen.git", XEN_FILES)
    fragment = tmp_path / "dom0.config"
    fragment.write_text(FRAGMENT)
    pdir = tmp_path / "patches" / "xen"
    pdir.mkdir(parents=True)
    (pdir / "series").write_text("")
    cfg = write_config(tmp_path, f"""
[sources.linux]
vcs = "git"
url = "{linux}"
rev = "v1.0"

[sources.xen]
vcs = "git"
url = "{tmp_path / 'xen.git'}"
rev = "v1.0"
patches = "{pdir}"

[xen]
source = "xen"

[kernel]
source = "linux"
base = "tinyconfig"
fragments = ["{fragment}"]
make_args = {make_args}

[build]
jobs = 2
ccache = {str(ccache).lower()}
{body}""")
    return Site(tmp_path, cfg, Workspace(tmp_path / "ws"), fragment, pdir)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path, make_args='["TINY_NOTE=two words; no shell"]')


@pytest.fixture
def built(site: Site) -> Site:
    site.ok("build")
    return site


def procs_in_group(pgid: int) -> list[int]:
    """Live processes whose process group is *pgid* (from /proc: no ps needed)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def wait_for(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_doit(site: Site, env: dict[str, str]) -> subprocess.Popen[str]:
    """doit build as a background process (run_doit waits; these tests signal it midway)."""
    return subprocess.Popen([sys.executable, "-m", "doit", "build", f"config={site.config}"],
                            cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


@contextlib.contextmanager
def held_build(site: Site) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """doit build with make held at its first object (the fake tree's TINY_HOLD): doit and
    make's process group id. The hold file is released by deleting it."""
    hold = site.tmp / "hold"
    hold.touch()
    doit = start_doit(site, {"TINY_HOLD": str(hold)})
    try:
        started = Path(f"{hold}.started")
        wait_for(started.exists, what="make to reach the held object")
        wait_for(lambda: started.read_text().strip() != "", what="the held job's pgid")
        yield doit, int(started.read_text())
    finally:
        doit.kill()


# ----------------------------------------------------------------------------- builds
def test_full_build_artifacts_metadata_and_noop(site: Site) -> None:
    first = site.ok("build")
    # the terminal gets one line per stage, the log gets make's output
    assert "  CC " not in first and "Entering directory" not in first
    assert re.search(r"^build:kernel: done, 5 objects compiled in \d+s$", first, re.M)
    assert re.search(r"^build:xen: done, 3 objects compiled in \d+s$", first, re.M)
    built = site
    out = built.ws.out
    for name in ("xen.gz", "xen-syms", f"vmlinuz-{RELEASE}", f"System.map-{RELEASE}",
                 f"config-{RELEASE}"):
        assert (out / name).is_file(), name
    assert (out / "kernel-build" / "drivers" / "block" / "xen-blkback" / "blkback.ko").is_file()
    assert "xen_pcibk_init" in (out / f"System.map-{RELEASE}").read_text()
    assert "CONFIG_XEN_PCIDEV_BACKEND=y" in (out / f"config-{RELEASE}").read_text()
    # make args pass through as argv items, never through a shell
    log = (built.ws.logs / "build-kernel.log").read_text()
    assert "  NOTE    two words; no shell" in log
    assert "  CC      kernel/fork.o" in log

    md = built.metadata()
    assert md["status"] == "pass"
    assert set(md["stages"]) == {"config", "xen", "kernel"}
    for st in md["stages"].values():
        assert st["status"] == "pass" and st["duration"] >= 0 and st["commands"]
    kcmd = md["stages"]["kernel"]["commands"][-1]
    assert kcmd.endswith("'TINY_NOTE=two words; no shell' -j2 bzImage modules")
    assert md["stages"]["xen"]["commands"] == [f"make -C {built.src('xen')} -j2 build-xen"]
    assert md["stages"]["config"]["commands"][0].endswith(" tinyconfig")
    linux = md["sources"]["linux"]
    assert linux["url"] == str(built.tmp / "upstream" / "linux") and len(linux["resolved"]) == 40
    assert md["kconfig"]["release"] == RELEASE
    forced = [s for s in md["kconfig"]["symbols"] if s["forced"]]
    assert forced == [{"symbol": "CONFIG_XEN_PCIDEV_BACKEND", "requested": "y", "final": "y",
                       "forced": True}]
    assert md["toolchain"]["cc"].startswith("gcc")
    assert "ld" in md["toolchain"]["binutils"] and md["toolchain"]["make"].startswith("GNU Make")
    for name, art in md["artifacts"].items():
        f = built.ws.dir / art["path"]
        assert art["size"] == f.stat().st_size
        assert art["sha256"] == sha256_of(f), name

    again = built.ok("build")
    for task in ("config", "build:xen", "build:kernel"):
        assert not ran(again, task)
    assert built.metadata()["updated"] == md["updated"]  # a no-op does not touch it

    (out / f"vmlinuz-{RELEASE}").unlink()  # a missing artifact reruns its stage
    again = built.ok("build")
    assert ran(again, "build:kernel") and not ran(again, "build:xen")
    assert "build:kernel: done, 0 objects compiled" in again
    assert (out / f"vmlinuz-{RELEASE}").is_file()
    (out / "kernel-build" / "arch/x86/boot/bzImage").unlink()  # the build tree counts too
    again = built.ok("build")
    assert ran(again, "build:kernel") and not ran(built.ok("build"), "build:kernel")


def test_fragment_edit_reruns_config_and_kernel_not_xen(built: Site) -> None:
    builtin = FRAGMENT.replace("CONFIG_XEN_BLKDEV_BACKEND=m", "CONFIG_XEN_BLKDEV_BACKEND=y")
    built.fragment.write_text(builtin)
    out = built.ok("build")
    assert ran(out, "config") and ran(out, "build:kernel") and not ran(out, "build:xen")
    assert "xen_blkif_init" in (built.ws.out / f"System.map-{RELEASE}").read_text()
    # a fragment edit that leaves the .config as it was reruns config only
    built.fragment.write_text(builtin + "# a comment\n")
    out = built.ok("build")
    assert ran(out, "config") and not ran(out, "build:kernel")


def test_xen_patch_edit_reruns_xen_only(built: Site) -> None:
    kernel_c = built.src("xen") / "xen" / "common" / "kernel.c"
    old = kernel_c.read_text()

    def patch(value: int) -> str:
        new = old.replace("return cmd;", f"return cmd + {value};")
        return ("--- a/xen/common/kernel.c\n+++ b/xen/common/kernel.c\n@@ -1 +1 @@\n"
                f"-{old}+{new}")

    (built.xen_patches / "version.patch").write_text(patch(1))
    (built.xen_patches / "series").write_text("version.patch\n")
    out = built.ok("build")
    assert ran(out, "patch:xen") and ran(out, "build:xen")
    assert not ran(out, "config") and not ran(out, "build:kernel")
    assert "cmd + 1" in kernel_c.read_text()
    log = (built.ws.logs / "build-xen.log").read_text()
    assert re.findall(r"^  CC      (\S+)$", log, re.M) == ["common/kernel.o"]
    xen_md = built.metadata()["sources"]["xen"]
    assert [p["name"] for p in xen_md["patches"]] == ["version.patch"]
    assert xen_md["patches"][0]["sha256"] == sha256_of(
        built.xen_patches / "version.patch")

    (built.xen_patches / "version.patch").write_text(patch(2))
    out = built.ok("build")
    assert ran(out, "build:xen") and not ran(out, "build:kernel")
    assert not ran(built.ok("build"), "build:xen")


def test_kernel_patch_to_a_c_file_reruns_the_build_not_the_config(built: Site) -> None:
    """doit config costs seconds on a real tree: only patches to what kconfig reads rerun it."""
    pdir = built.tmp / "patches" / "linux"
    pdir.mkdir()
    (pdir / "series").write_text("")
    text = built.config.read_text()
    linux = 'rev = "v1.0"\n'
    built.config.write_text(text.replace(linux, f'{linux}patches = "{pdir}"\n', 1))
    out = built.ok("build")
    assert ran(out, "patch:linux") and not ran(out, "config") and not ran(out, "build:kernel")

    def patch(rel: str, line: str) -> None:
        old = (built.src("linux") / rel).read_text().splitlines(keepends=True)
        diff = difflib.unified_diff(old, [*old, line], f"a/{rel}", f"b/{rel}")
        (pdir / "one.patch").write_text("".join(diff))
        (pdir / "series").write_text("one.patch\n")

    patch("kernel/fork.c", "int nr_threads;\n")
    out = built.ok("build")
    assert ran(out, "patch:linux") and ran(out, "build:kernel") and not ran(out, "config")
    log = (built.ws.logs / "build-kernel.log").read_text()
    assert re.findall(r"^  CC      (\S+)$", log, re.M) == ["kernel/fork.o"]
    patch("drivers/xen/Kconfig", "# a comment\n")
    out = built.ok("build")
    assert ran(out, "patch:linux") and ran(out, "config")


def test_a_rebuild_that_changes_nothing_leaves_the_artifacts_alone(built: Site) -> None:
    """The boot, install and nightly fingerprints use out/'s mtimes: a make that compiled
    nothing must not republish (and so rerun them)."""
    vmlinuz = built.ws.out / f"vmlinuz-{RELEASE}"
    before = vmlinuz.stat().st_mtime_ns
    built.ok("forget", "build:kernel")
    out = built.ok("build")
    assert ran(out, "build:kernel") and "0 objects compiled" in out
    assert vmlinuz.stat().st_mtime_ns == before
    assert not ran(built.ok("build"), "build:kernel")


def test_a_hand_make_that_compiles_nothing_keeps_the_build_a_noop(built: Site) -> None:
    """A make run by hand in the build tree rewrites bzImage (same bytes, new mtime, as
    kbuild does): the next doit build must not run make again. One that changes the bytes
    must."""
    build_dir = build.kernel_build_dir(built.ws)
    image = build_dir / "arch" / "x86" / "boot" / "bzImage"
    before = image.stat().st_mtime_ns
    hand = ["make", "-C", str(built.src("linux")), f"O={build_dir}", "bzImage"]
    time.sleep(0.01)  # a new mtime even on a coarse clock (not a timing assertion)
    subprocess.run(hand, check=True, capture_output=True)
    assert image.stat().st_mtime_ns != before
    out = built.ok("build")
    assert not ran(out, "build:kernel"), out
    fork = built.src("linux") / "kernel" / "fork.c"
    fork.write_text(fork.read_text() + "int nr_threads;\n")
    subprocess.run(hand, check=True, capture_output=True)
    fork.write_text(fork.read_text().replace("int nr_threads;\n", ""))  # the tree as fetched
    assert ran(built.ok("build"), "build:kernel")


def test_a_removed_build_directory_reruns_config_and_the_build(built: Site) -> None:
    """rm -rf out/kernel-build (or a .config edited by hand): config must not claim to be up
    to date while the build then fails with "run doit config first"."""
    shutil.rmtree(build.kernel_build_dir(built.ws))
    out = built.ok("build")
    assert ran(out, "config") and ran(out, "build:kernel") and not ran(out, "build:xen")
    dotconfig = build.kernel_build_dir(built.ws) / ".config"
    dotconfig.write_text(dotconfig.read_text() + "# CONFIG_XEN_BLKDEV_BACKEND is not set\n")
    assert ran(built.ok("build"), "config")
    assert not ran(built.ok("build"), "config")


def test_hand_edit_in_a_fetched_tree_is_noticed(built: Site) -> None:
    fork = built.src("linux") / "kernel" / "fork.c"
    fork.write_text(fork.read_text() + "int nr_threads;\n")
    out = built.ok("build")
    assert ran(out, "build:kernel") and not ran(out, "build:xen") and not ran(out, "config")
    log = (built.ws.logs / "build-kernel.log").read_text()
    assert re.findall(r"^  CC      (\S+)$", log, re.M) == ["kernel/fork.o"]
    assert not ran(built.ok("build"), "build:kernel")
    # a second edit to the same (already modified) file is noticed too
    fork.write_text(fork.read_text() + "int max_threads;\n")
    assert ran(built.ok("build"), "build:kernel")
    # so is an edit in the Xen tree
    setup = built.src("xen") / "xen" / "arch" / "x86" / "setup.c"
    setup.write_text(setup.read_text() + "int opt_nosmp;\n")
    out = built.ok("build")
    assert ran(out, "build:xen") and not ran(out, "build:kernel")


def test_compile_error_shows_first_error_tail_and_one_line(built: Site) -> None:
    fork = built.src("linux") / "kernel" / "fork.c"
    fork.write_text(fork.read_text() + "int broken(void) { return undeclared_thing; }\n")
    res = built.doit("build")
    assert res.returncode == 1
    err = res.stderr
    assert "Traceback" not in err + res.stdout
    first = re.search(r"^first error: (.*)$", err, re.M)
    assert first and "error: 'undeclared_thing' undeclared" in first[1]
    assert re.search(r"^last \d+ lines of the log:$", err, re.M)
    assert "make: *** " in err or "make[" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("xenpipe: error: build:kernel: make bzImage modules failed with "
                           "exit status 2: ")
    assert "undeclared_thing" in last and "build-kernel.log" in last
    md = built.metadata()
    assert md["status"] == "fail" and md["stages"]["kernel"]["status"] == "fail"
    assert md["stages"]["xen"]["status"] == "pass"
    # fixing the file is enough
    fork.write_text(fork.read_text().replace("undeclared_thing", "0"))
    out = built.ok("build")
    assert ran(out, "build:kernel") and built.metadata()["status"] == "pass"


# -------------------------------------------------------------------------- interrupts
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_make_group_and_rerun_continues(site: Site, sig: signal.Signals) -> None:
    with held_build(site) as (doit, pgid):
        assert pgid != os.getpgid(doit.pid) and procs_in_group(pgid)
        doit.send_signal(sig)
        out, err = doit.communicate(timeout=30)
    assert doit.returncode == 1, out + err
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1] == (
        f"xenpipe: error: build:kernel: interrupted by {sig.name}; the stages that finished are "
        "kept, run `doit build` again to continue")
    wait_for(lambda: not procs_in_group(pgid), timeout=5, what="make's process group to end")
    md = site.metadata()
    assert md["status"] == "interrupted"
    assert md["stages"]["kernel"]["status"] == "interrupted"
    assert md["stages"]["xen"]["status"] == md["stages"]["config"]["status"] == "pass"

    (site.tmp / "hold").unlink()
    out = site.ok("build")
    assert ran(out, "build:kernel")
    assert not ran(out, "config") and not ran(out, "build:xen")
    assert site.metadata()["status"] == "pass"
    assert (site.ws.out / f"vmlinuz-{RELEASE}").is_file()


def test_sigkill_leaves_valid_metadata_and_no_build_behind(site: Site) -> None:
    with held_build(site) as (doit, pgid):
        doit.send_signal(signal.SIGKILL)
        doit.communicate(timeout=30)
    # make got SIGTERM when doit died (PR_SET_PDEATHSIG) and stopped its jobs
    wait_for(lambda: not procs_in_group(pgid), timeout=10, what="make's process group to end")
    md = site.metadata()  # parses: every write was atomic
    assert md["status"] == "running"
    assert md["stages"]["kernel"]["status"] == "running"
    assert md["stages"]["kernel"]["commands"][-1].endswith("bzImage modules")
    assert md["stages"]["xen"]["status"] == "pass"
    (site.tmp / "hold").unlink()
    out = site.ok("build")
    assert ran(out, "build:kernel")
    md = site.metadata()
    assert md["status"] == "pass" and md["stages"]["kernel"]["status"] == "pass"


def test_a_make_killed_unseen_has_its_last_writes_made_again(built: Site) -> None:
    """xenpipe SIGKILLed while make's vmlinux link had truncated System.map (written by the
    link's ``nm > System.map``) and not yet filled it: the rerun's make found vmlinux up to
    date and xenpipe published the empty System.map (crash suite, build SIGKILL at 1.218 s,
    seed 2642685587). Here that moment is set up as the kill leaves it: the start of a make
    recorded, then vmlinux rewritten and System.map emptied by it, and no end recorded."""
    good = (built.ws.out / f"System.map-{RELEASE}").read_bytes()
    kbuild = built.ws.out / "kernel-build"
    objects = {p: p.stat().st_mtime_ns for p in kbuild.rglob("*.o")}
    time.sleep(0.1)
    (built.ws.dir / "state" / "make-kernel.json").write_text(
        f'{{"started_ns": {time.time_ns()}}}')
    time.sleep(0.1)
    (kbuild / "vmlinux").write_bytes((kbuild / "vmlinux").read_bytes())
    (kbuild / "System.map").write_bytes(b"")
    out = built.ok("build")
    assert ran(out, "build:kernel") and "files it wrote last are made again" in out, out
    assert (built.ws.out / f"System.map-{RELEASE}").read_bytes() == good
    assert (kbuild / "System.map").read_bytes() == good
    # what the killed make wrote before its last seconds stays: the objects are not compiled
    assert {p: p.stat().st_mtime_ns for p in kbuild.rglob("*.o")} == objects
    assert not (built.ws.dir / "state" / "make-kernel.json").exists()


def test_an_object_a_make_killed_unseen_left_empty_in_the_xen_tree_is_compiled_again(
        built: Site) -> None:
    """Xen builds in its tree: a compiler killed with xenpipe left common/kernel.o empty and
    the rerun's make took it for up to date (crash suite, build SIGKILL at 0.408 s, seed
    2488375126). Objects written in the killed make's last seconds are compiled again."""
    good = (built.ws.out / "xen-syms").read_bytes()
    obj = built.src("xen") / "xen" / "common" / "kernel.o"
    time.sleep(0.1)
    (built.ws.dir / "state" / "make-xen.json").write_text(f'{{"started_ns": {time.time_ns()}}}')
    time.sleep(0.1)
    obj.write_bytes(b"")
    (built.src("xen") / "xen" / "xen-syms").unlink()  # the killed make was relinking it
    out = built.ok("build")
    assert ran(out, "build:xen"), out
    assert obj.stat().st_size > 0
    assert (built.ws.out / "xen-syms").read_bytes() == good


# ---------------------------------------------------------------------------- options
def test_ccache_wraps_cc_and_hostcc_as_single_argv_items(tmp_path: Path) -> None:
    need("ccache")
    site = make_site(tmp_path, ccache=True)
    env = {"CCACHE_DIR": str(tmp_path / "ccache")}
    site.ok("build", env=env)
    cmd = site.metadata()["stages"]["kernel"]["commands"][-1]
    assert "'CC=ccache gcc' 'HOSTCC=ccache gcc'" in cmd
    assert site.metadata()["toolchain"]["ccache"].startswith("ccache version")
    stats = subprocess.run(["ccache", "--print-stats"], env={**os.environ, **env},
                           capture_output=True, text=True, check=True).stdout
    misses = int(re.search(r"^cache_miss\t(\d+)$", stats, re.M)[1])
    assert misses >= 8  # every object of both trees went through ccache


def test_ccache_requested_but_missing_is_one_line(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path, ccache=True)
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    with pytest.raises(BuildError, match=r"^\[build\] ccache = true but ccache is not "):
        build.make_vars(load(site.config), [])


def test_jobs_zero_means_cpu_count(tmp_path: Path) -> None:
    site = make_site(tmp_path, body="")
    cfg = load(site.config)
    assert build.jobs(cfg) == 2
    text = site.config.read_text().replace("jobs = 2", "jobs = 0")
    site.config.write_text(text)
    assert build.jobs(load(site.config)) == len(os.sched_getaffinity(0))


def test_xen_targets_follow_the_top_makefile(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    cfg = load(site.config)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Makefile").write_text(XEN_FILES["Makefile"])
    assert build.xen_targets(cfg, tree) == ["build-xen"]
    # xen-unstable 3.4: the hypervisor is `make xen` (dist-xen)
    (tree / "Makefile").write_text("xen: dist-xen\ntools: dist-tools\ndist-%: install-%\n")
    assert build.xen_targets(cfg, tree) == ["xen"]
    (tree / "Makefile").write_text("XEN := 1\nall:\n\ttrue\n")
    with pytest.raises(BuildError, match="neither a build-xen nor a xen target"):
        build.xen_targets(cfg, tree)
    site.config.write_text(site.config.read_text().replace(
        '[xen]\nsource = "xen"', '[xen]\nsource = "xen"\ntargets = ["dist", "world"]'))
    assert build.xen_targets(load(site.config), tree) == ["dist", "world"]


def test_configured_targets_reach_make_and_missing_xen_gz_is_explained(site: Site) -> None:
    site.config.write_text(site.config.read_text().replace(
        '[xen]\nsource = "xen"', '[xen]\nsource = "xen"\ntargets = ["dist-xen"]'))
    out = site.ok("build")
    assert ran(out, "build:xen")
    assert site.metadata()["stages"]["xen"]["commands"][-1].endswith(" dist-xen")
    (site.ws.out / "xen.gz").unlink()
    (site.src("xen") / "xen" / "xen.gz").unlink()
    site.config.write_text(site.config.read_text().replace('"dist-xen"', '"clean"'))
    (site.src("xen") / "Makefile").write_text(
        (site.src("xen") / "Makefile").read_text() + "clean:\n\t@true\n")
    res = site.doit("build")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith(
        "xenpipe: error: make clean left no xen/xen.gz in ")


def test_no_xen_table_builds_no_hypervisor(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.config.write_text(site.config.read_text().replace('[xen]\nsource = "xen"\n', ""))
    out = site.ok("build")
    assert "build:xen" not in out and ran(out, "build:kernel")
    assert not (site.ws.out / "xen.gz").exists()
    assert set(site.metadata()["stages"]) == {"config", "kernel"}


def test_hg_xen_tree_of_2009_builds_with_make_xen_and_notices_edits(
        tmp_path: Path, hg_upstream: HgUpstream) -> None:
    """xen-unstable.hg in 2009: served by hg, `make xen` (dist-xen), no [kernel] table."""
    need("make")
    need("gcc")
    old_top = ("xen: dist-xen\ndist-xen: install-xen\n"
               "install-xen:\n\t$(MAKE) -C xen install DESTDIR=$(CURDIR)/dist/install\n")
    files = {**XEN_FILES, "Makefile": old_top}
    files["xen/Makefile"] += ("install: build\n\tmkdir -p $(DESTDIR)/boot\n"
                              "\tcp xen.gz $(DESTDIR)/boot/xen-3.4.gz\n")
    for name, text in files.items():
        f = hg_upstream.path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    hg("commit", "--addremove", "-m", "xen-unstable look-alike", cwd=hg_upstream.path)
    hg_upstream.tag("3.4.0")
    cfg = write_config(tmp_path, f"""
[sources.xen]
vcs = "hg"
url = "{hg_upstream.url}"
rev = "3.4.0"

[xen]
source = "xen"

[build]
jobs = 2
""")
    res = run_doit("build", config=cfg)
    assert res.returncode == 0, res.stdout + res.stderr
    ws = Workspace(tmp_path / "ws")
    md = json.loads((ws.out / "metadata.json").read_text())
    assert md["stages"]["xen"]["commands"][-1].endswith(" -j2 xen")
    assert set(md["stages"]) == {"xen"} and md["sources"]["xen"]["vcs"] == "hg"
    assert (ws.out / "xen.gz").is_file()
    assert (ws.source_dir("xen") / "dist" / "install" / "boot" / "xen-3.4.gz").is_file()
    res = run_doit("build", config=cfg)
    assert not ran(res.stdout, "build:xen")
    sched = ws.source_dir("xen") / "xen" / "common" / "sched.c"
    sched.write_text(sched.read_text() + "int sched_credit;\n")
    res = run_doit("build", config=cfg)
    assert ran(res.stdout, "build:xen"), res.stdout + res.stderr
    log = (ws.logs / "build-xen.log").read_text()
    assert re.findall(r"^  CC      (\S+)$", log, re.M) == ["common/sched.o"]


# ---------------------------------------------------------------------------- progress
def test_progress_plain_lines_when_not_a_tty() -> None:
    out = io.StringIO()
    prog = Progress("build:kernel", 4, out=out, tty=False, interval=0.0)
    for line in ["make: Entering directory '/src'", "  CC      init/main.o",
                 "  CC [M]  drivers/net/dummy.o", "gcc -O2 -c -o xen/a.o xen/a.c"]:
        prog.feed(line)
    prog.tick()
    assert re.fullmatch(r"build:kernel: 3/4 objects, \d+s elapsed, ETA \d+s\n", out.getvalue())
    prog.done(True)
    assert out.getvalue().splitlines()[-1].startswith("build:kernel: done, 3 objects compiled")


def test_progress_live_line_on_a_tty_and_failure_report() -> None:
    out = io.StringIO()
    prog = Progress("build:xen", None, out=out, tty=True, refresh=0.0)
    prog.feed("  CC      common/kernel.o")
    prog.tick()
    prog.feed("common/sched.c:3:5: error: expected ';' before '}' token")
    prog.feed("make[2]: *** [Rules.mk:1: common/sched.o] Error 1")
    for i in range(30):
        prog.feed(f"line {i}")
    prog.tick()
    prog.done(False)
    text = out.getvalue()
    assert text.startswith("\rbuild:xen: 1 objects, ") and text.endswith("\n")
    assert "\n" not in text[:-1]  # one line, rewritten in place
    report = prog.failure_report().splitlines()
    assert report[0] == "first error: common/sched.c:3:5: error: expected ';' before '}' token"
    assert report[1] == "last 20 lines of the log:" and report[-1] == "  line 29"


# --------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_real_dom0_kernel(real_kernel: RealKernel) -> None:
    """Debian's linux-source-6.1 with configs/kernel/xen-dom0.config through doit build."""
    rk = real_kernel
    assert rk.vmlinuz.stat().st_size > 500_000
    symbols = rk.system_map.read_text()
    for sym in ("xen_start_kernel", "xen_pcibk_init", "startup_xen"):
        assert re.search(rf" {sym}$", symbols, re.M), sym
    assert "CONFIG_XEN_PCIDEV_BACKEND=y" in rk.dotconfig.read_text().splitlines()
    md = rk.metadata()
    assert md["status"] == "pass" and md["stages"]["kernel"]["status"] == "pass"
    assert md["sources"]["linux"]["url"] == "/usr/src/linux-source-6.1.tar.xz"
    with rk.lock():
        res = run_doit("build", config=rk.config, env=rk.env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    for task in ("fetch:linux", "config", "build:kernel"):
        assert not ran(res.stdout, task)
