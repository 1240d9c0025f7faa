"""The sites the crash suite kills doit in, from real parts: hg served by a real ``hg serve``
on 127.0.0.1, git repositories, a tarball, the kbuild-like kernel tree and the Xen-like tree
of the build tests (real make and gcc), a staging install root with the user's grub.conf or
grub.cfg and guest config, recorded sysfs trees for the devices, and a nightly of the
Xen-like tree (git upstream, patches; no boot: it has no [kernel]).

Stand-ins, and why: the kernel and Xen trees are the small look-alikes of tests/support (a
real build takes an hour here); the machine's PCI devices are a recorded sysfs tree.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import build, digest
from pipeline.config import load
from pipeline.files import read_json
from pipeline.workspace import Workspace

from ..support import install as h
from ..support.build_trees import FRAGMENT, RELEASE, XEN_FILES, git_tree, kernel_tree
from ..support.doit import write_config
from ..support.upstreams import HgServer, hg, make_tarball
from .harness import TEMP, Site, doit_rows, masked, run

# what `doit install` asks of the two trees, as kbuild and Xen's xen/Makefile have it
MODULES_INSTALL = f"""
MODLIB = $(INSTALL_MOD_PATH)/lib/modules/{RELEASE}
modules_install:
\t@test -n "$(INSTALL_MOD_PATH)" || {{ echo "no INSTALL_MOD_PATH"; exit 1; }}
\tcd $(objtree) && for m in $$(cat modules.order); do \\
\t\tmkdir -p $(MODLIB)/kernel/$$(dirname $$m) && cp $$m $(MODLIB)/kernel/$$m; done
\tcp $(objtree)/modules.order $(MODLIB)/modules.order
"""
XEN_VERSION = "XEN_VERSION = 4\nXEN_SUBVERSION = 19\nXEN_EXTRAVERSION = .1\n" \
    "XEN_FULLVERSION = $(XEN_VERSION).$(XEN_SUBVERSION)$(XEN_EXTRAVERSION)\n"


def unified(path: str, old: str, new: str) -> str:
    """A patch of one file as `diff -u` writes it (a/ and b/ prefixes)."""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        f"a/{path}", f"b/{path}"))


def many_files(n: int, seed: str) -> dict[str, str]:
    """*n* small source files in a few directories: a clone or an unpack that takes a while."""
    return {f"dir{i % 7}/sub{i % 3}/file{i}.c": f"/* {seed} {i} */\n" + "int x;\n" * (i % 40)
            for i in range(n)}


def _xen_patches(up: Path) -> Path:
    """Two patches of the Xen-like tree, in a series under *up*/patches/xen."""
    pdir = up / "patches" / "xen"
    pdir.mkdir(parents=True)
    kernel_c = XEN_FILES["xen/common/kernel.c"]
    sched_c = XEN_FILES["xen/common/sched.c"]
    (pdir / "0001-version.patch").write_text(unified(
        "xen/common/kernel.c", kernel_c, kernel_c + "int xen_minor(void) { return 19; }\n"))
    (pdir / "0002-sched.patch").write_text(unified(
        "xen/common/sched.c", sched_c, "/* credit2 */\n" + sched_c))
    (pdir / "series").write_text("0001-version.patch\n0002-sched.patch\n")
    return pdir


def kbuild_site(tmp: Path, loader: str = "grub-legacy") -> Site:
    """The kbuild-like kernel and Xen-like trees as tagged git upstreams, two Xen patches,
    a fragment, and an install into a staging root (the user's bootloader file, a guest)."""
    up = tmp / "up"
    linux = kernel_tree(up)
    with open(linux / "Makefile", "a") as f:
        f.write(MODULES_INSTALL)
    git_tree(linux, {})
    xen_files = {**XEN_FILES, "xen/Makefile": XEN_VERSION + XEN_FILES["xen/Makefile"]}
    git_tree(up / "xen.git", xen_files)
    fragment = up / "dom0.config"
    fragment.write_text(FRAGMENT + "CONFIG_ACPI=y\nCONFIG_XEN_DOM0=y\n")  # a dom0 ([passthrough])
    pdir = _xen_patches(up)
    root = tmp / "root"
    machine = h.machine_2009(tmp / "machine")
    if loader == "grub-legacy":
        (root / "boot" / "grub").mkdir(parents=True)
        (root / "boot" / "grub" / "grub.conf").write_text(h.USER_GRUB_CONF)
        (root / "etc" / "xen").mkdir(parents=True)
        (root / "etc" / "xen" / "GUEST.hvm").write_text(h.USER_XM_GUEST)
        guest = ('[[guests]]\nname = "GUEST"\nconfig = "/etc/xen/GUEST.hvm"\n'
                 'toolstack = "xm"\ndevices = ["00:19.0"]\n')
        watched = ("boot/grub/grub.conf", "etc/xen/GUEST.hvm")
    else:
        (root / "boot" / "grub").mkdir(parents=True)
        (root / "boot" / "grub" / "grub.cfg").write_text(h.USER_GRUB_CFG)
        guest = ('[[guests]]\nname = "guest"\nconfig = "/etc/xen/guest.cfg"\n'
                 'toolstack = "xl"\ndevices = ["00:19.0"]\n')
        watched = ("boot/grub/grub.cfg", "etc/xen/guest.cfg")
    cfg = write_config(tmp, f"""
[sources.linux]
vcs = "git"
url = "{linux}"
rev = "v1.0"

[sources.xen]
vcs = "git"
url = "{up / 'xen.git'}"
rev = "v1.0"
patches = "{pdir}"

[xen]
source = "xen"

[kernel]
source = "linux"
base = "tinyconfig"
fragments = ["{fragment}"]

[build]
jobs = 2

[install]
root = "{root}"
bootloader = "{loader}"
initramfs = "none"
xen_cmdline = "iommu=1"
dom0_cmdline = "ro root=LABEL=/"

[passthrough]
devices = ["0000:00:19.0"]

{guest}""")
    return Site(cfg, tmp / "ws", root, env=machine, watched=watched)


def prepared(site: Site, *tasks: str) -> Site:
    """*site* with *tasks* run to completion first (the state the killed stage starts from)."""
    for task in tasks:
        run(site, [task])
    return site


def fetch_site(tmp: Path, server: HgServer) -> Site:
    """Three sources of some size: hg served by ``hg serve``, git, and a tarball."""
    up = tmp / "up"
    hg_repo = up / "xen.hg"
    hg("init", str(hg_repo))
    for name, text in many_files(300, "hg").items():
        (hg_repo / name).parent.mkdir(parents=True, exist_ok=True)
        (hg_repo / name).write_text(text)
    hg("commit", "--addremove", "-q", "-m", "tree", cwd=hg_repo)
    (hg_repo / "README").write_text("xen\n")
    hg("commit", "--addremove", "-q", "-m", "readme", cwd=hg_repo)
    link = server.root / f"crash-{tmp.name}"
    link.symlink_to(hg_repo)
    git_tree(up / "linux.git", many_files(300, "git"))
    tarball = make_tarball(up / "tools-1.0.tar.gz", many_files(600, "tar"), top="tools-1.0")
    cfg = write_config(tmp, f"""
[sources.xen]
vcs = "hg"
url = "{server.url}{link.name}/"

[sources.linux]
vcs = "git"
url = "{up / 'linux.git'}"
rev = "main"

[sources.tools]
vcs = "tarball"
url = "{tarball}"
""")
    return Site(cfg, tmp / "ws", tmp / "root", spare={server.process.pid})


def updated_site(tmp: Path, server: HgServer) -> Site:
    """fetch_site fetched once, then both VCS upstreams moved on: every file changed, so the
    next fetch pulls and checks out a new revision over the old tree."""
    site = prepared(fetch_site(tmp, server), "fetch")
    up = tmp / "up"
    for name, text in many_files(300, "hg, later").items():
        (up / "xen.hg" / name).write_text(text)
    hg("commit", "-q", "-m", "every file", cwd=up / "xen.hg")
    repo = up / "linux.git"
    for name, text in many_files(300, "git, later").items():
        (repo / name).write_text(text)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-a", "-m", "every file"],
                   check=True, capture_output=True)
    return site


def unlink_served(site: Site, server: HgServer) -> None:
    for link in server.root.glob(f"crash-{site.config.parent.name}"):
        link.unlink()


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


NIGHTLY_LINKS = ("latest", "last-good")  # reports/'s symlinks to a run's directory
NIGHTLY_FILES = ("report.json", "junit.xml")  # the latest report, in reports/
NIGHTLY_TEMP = re.compile(r"^\.(latest|last-good)\.tmp$")  # triage.point's


def nightly_site(tmp: Path) -> Site:
    """`doit nightly` of the Xen-like tree of the build tests (real make and gcc) from a git
    upstream with two patches, after a good nightly, once upstream moved on: the next
    nightly fetches, patches and rebuilds, keeps the run's artifacts and points
    reports/latest and last-good at it. No [kernel]: its boot is skipped, as a Xen-only
    variant's is (a QEMU boot of a real kernel takes minutes here).

    reports/ holds run ids (UTC times) in its names and contents: NightlyReports checks it
    instead of the byte comparison, and the last good run's id and time in its record are
    masked."""
    up = tmp / "up"
    xen_files = {**XEN_FILES, "xen/Makefile": XEN_VERSION + XEN_FILES["xen/Makefile"]}
    repo = git_tree(up / "xen.git", xen_files)
    pdir = _xen_patches(up)
    cfg = write_config(tmp, f"""
[sources.xen]
vcs = "git"
url = "{up / 'xen.git'}"
rev = "main"
patches = "{pdir}"

[xen]
source = "xen"

[build]
jobs = 2
""")
    site = prepared(Site(cfg, tmp / "ws", tmp / "root"), "nightly")
    setup = up / "xen.git" / "xen" / "arch" / "x86" / "setup.c"
    setup.write_text("void __start_xen(void) { for (;;) ; }\n")
    repo.git.commit("-q", "-a", "-m", "x86: spin at the end of __start_xen")
    checks = NightlyReports(repo.head.commit.hexsha, site.ws / "reports")
    site.own = ("reports",)
    # the nightly task saves its run id; the build's fingerprint digests the mtimes of the
    # files this very run patched: both masked,
    # and NightlyReports.rerun checks it is the tree's (a next `doit build` is up to date)
    site.masks = {"ws:state/nightly-last-good.json": frozenset({"run", "time"}),
                  "ws:.doit.db": frozenset({"fingerprint", "run"})}
    site.killed, site.rerun = checks.killed, checks.rerun
    return site


@dataclass
class NightlyReports:
    """What a nightly's reports/ must hold after a kill and after the rerun (the byte
    comparison cannot: each run has its own id). *head*: the upstream revision the run
    ends at; the reports as the killed run found them are read at construction."""

    head: str
    reports: Path
    old: dict[str, bytes | str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.old = {**{n: _bytes(self.reports / n) for n in NIGHTLY_FILES},
                    **{n: _link(self.reports / n) for n in NIGHTLY_LINKS}}

    def killed(self, site: Site) -> list[str]:
        """Right after a kill: report.json and junit.xml each wholly the old bytes or a whole
        report of the killed run; latest and last-good each the old link or one to a run
        whose report is written; the last-good record names a passed, written run; each run's
        report parses."""
        problems = []
        for name in NIGHTLY_FILES:
            now = _bytes(self.reports / name)
            if now != self.old[name] and (why := _not_whole(self.reports / name)):
                problems.append(f"reports/{name}: neither the old bytes nor a whole report: {why}")
        for name in NIGHTLY_LINKS:
            now = _link(self.reports / name)
            if now != self.old[name] and (why := _not_a_run(self.reports / name)):
                problems.append(f"reports/{name} -> {now}: {why}")
        good = read_json(site.ws / "state" / "nightly-last-good.json")
        if isinstance(good, dict) and good.get("run"):
            run_dir = self.reports / "runs" / str(good["run"])
            doc = read_json(run_dir / "report.json")
            if not isinstance(doc, dict) or doc.get("status") != "passed":
                problems.append(f"state/nightly-last-good.json names {good['run']}, "
                                "whose report is not a passed run's")
        for run_dir in sorted((self.reports / "runs").glob("*")):
            for name in NIGHTLY_FILES:
                if (run_dir / name).exists() and (why := _not_whole(run_dir / name)):
                    problems.append(f"{run_dir.name}/{name}: {why}")
        return problems

    def rerun(self, site: Site) -> list[str]:
        """After a plain rerun (and an uninterrupted run): the latest report a passed one at
        the upstream head, latest and last-good at its run, whose report is the same and
        whose kept artifacts are out/'s; no temporary left anywhere in reports/."""
        doc = read_json(self.reports / "report.json")
        if not isinstance(doc, dict) or len(doc.get("variants") or []) != 1:
            return [f"reports/report.json: not a report of one variant: {str(doc)[:200]}"]
        problems = []
        (v,) = doc["variants"]
        bad = {s["name"]: s["status"] for s in v["stages"]
               if s["status"] not in ("passed", "up-to-date", "skipped")}
        if doc.get("status") != "passed" or bad:
            problems.append(f"reports/report.json: {doc.get('status')}: {bad or v['summary']}")
        if [s.get("new") for s in v["sources"]] != [self.head]:
            problems.append(f"reports/report.json: sources at {v['sources']}, not {self.head}")
        if (why := _not_whole(self.reports / "junit.xml")) or \
                ET.parse(self.reports / "junit.xml").getroot().get("failures") != "0":
            problems.append(f"reports/junit.xml: {why or 'failures'}")
        run_dir = self.reports / "runs" / str(doc.get("run"))
        for name in NIGHTLY_LINKS:
            if (self.reports / name).resolve() != run_dir.resolve():
                problems.append(f"reports/{name} -> {_link(self.reports / name)}, not the "
                                f"run {doc.get('run')}")
        if masked(read_json(run_dir / "report.json")) != masked(doc):
            problems.append(f"runs/{run_dir.name}/report.json is not reports/report.json")
        good = read_json(site.ws / "state" / "nightly-last-good.json")
        if not isinstance(good, dict) or (good.get("run"), good.get("revisions")) != (
                doc.get("run"), {"xen": self.head}):
            problems.append(f"state/nightly-last-good.json: {good}")
        for f in sorted((site.ws / "out").glob("*")):
            kept = run_dir / "out" / f.name
            if f.is_file() and not f.name.startswith(".") and (
                    not kept.is_file() or kept.read_bytes() != f.read_bytes()):
                problems.append(f"runs/{run_dir.name}/out/{f.name} is not out/{f.name}")
        saved = doit_rows(site.ws / ".doit.db").get("build:xen", {}).get(
            "_values_:", {}).get("fingerprint")
        now = digest.of_json(build.fingerprint_xen(load(site.config), Workspace(site.ws)))
        if saved != now:
            problems.append(f".doit.db: build:xen's fingerprint {saved} is not the tree's {now}")
        for p in sorted(self.reports.rglob(".*")):
            if TEMP.match(p.name) or NIGHTLY_TEMP.match(p.name):
                problems.append(f"left in reports/: {p.relative_to(self.reports)}")
        return problems


def _bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _link(path: Path) -> str | None:
    return os.readlink(path) if path.is_symlink() else None


def _not_whole(path: Path) -> str:
    """Why *path* (a report.json or junit.xml) is not a whole report ("" when it is)."""
    try:
        if path.suffix == ".json":
            doc = json.loads(path.read_bytes())
            ok = isinstance(doc, dict) and doc.get("status") in (
                "passed", "failed", "interrupted") and doc.get("variants")
            return "" if ok else f"no status or variants: {str(doc)[:200]}"
        root = ET.parse(path).getroot()
        return "" if root.tag == "testsuites" and len(root) else f"<{root.tag}> is empty"
    except (OSError, ValueError, ET.ParseError) as exc:
        return str(exc)


def _not_a_run(link: Path) -> str:
    """Why the symlink *link* does not lead to a run whose report is written ("": it does)."""
    if not link.is_symlink():
        return "not a symlink"
    return _not_whole(link / "report.json")
