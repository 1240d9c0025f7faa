"""`doit patch`: quilt series applied with GNU patch to real git, hg and tarball trees, all or
nothing, rewriting only the files whose content changes."""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import git
import pytest

from pipeline import fetch as sources
from pipeline import files
from pipeline import patch as patches
from pipeline.config import SourceCfg, display
from pipeline.errors import PatchError, PatchMergedError
from pipeline.workspace import Key, Workspace

from .support.doit import run_doit, write_config
from .support.patches import (
    GitAuthor,
    HgAuthor,
    kbuild_sources,
    plain_diff,
    snapshot,
    write_series,
)
from .support.tools import need
from .support.upstreams import GitUpstream, HgUpstream, make_tarball

APPLY = importlib.import_module("pipeline.patch.applier")  # the module

KCONFIG = "".join(f"config XEN_OPT{i}\n\tbool \"option {i}\"\n\n" for i in range(40))


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@dataclass
class Setup:
    """A fetched source, a patches directory and a developer's clone to write patches in."""

    up: GitUpstream
    author: GitAuthor
    pdir: Path
    src: SourceCfg
    ws: Workspace

    @property
    def tree(self) -> Path:
        return self.ws.source_dir(self.src.name)

    @property
    def rev(self) -> str:
        return self.ws.state(Key.fetch(self.src.name))["resolved"]

    def fetch(self) -> str:
        return sources.fetch(self.src, self.ws).resolved

    def apply(self) -> dict:
        return patches.apply(self.src, self.ws)

    def series(self, named: dict[str, bytes], lines: list[str] | None = None) -> None:
        write_series(self.pdir, named, lines)

    def fail(self) -> str:
        with pytest.raises(PatchError) as exc:
            self.apply()
        msg = str(exc.value)
        assert "\n" not in msg
        return msg

    def state(self) -> dict:
        return self.ws.state(Key.patch("linux"))


@pytest.fixture
def linux(tmp_path: Path, git_upstream: GitUpstream) -> Setup:
    need("patch")
    git_upstream.commit("drivers/pci/Kconfig", KCONFIG, "pci Kconfig")
    git_upstream.commit("drivers/xen/pciback.c", "int pciback;\n", "pciback")
    pdir = tmp_path / "patches" / "linux"
    pdir.mkdir(parents=True)
    src = SourceCfg("linux", "git", git_upstream.url, "main", pdir)
    s = Setup(git_upstream, GitAuthor(git_upstream, tmp_path / "dev"), pdir, src,
              Workspace(tmp_path / "ws"))
    s.fetch()
    return s


# ----------------------------------------------------------------------------- applying
def test_clean_apply_of_format_patch_series(linux: Setup) -> None:
    p1 = linux.author.patch({"drivers/pci/Kconfig": edit(KCONFIG, "option 3", "option three"),
                             "drivers/xen/guestdev.c": "int guestdev;\n"}, "guestdev")
    p2 = linux.author.patch({"README": None, "drivers/xen/pciback.c": "int pciback = 1;\n"},
                            "pciback")
    linux.series({"0001-guestdev.patch": p1, "0002-pciback.patch": p2})
    result = linux.apply()

    tree = linux.tree
    assert (tree / "drivers/xen/guestdev.c").read_text() == "int guestdev;\n"
    assert "option three" in (tree / "drivers/pci/Kconfig").read_text()
    assert not (tree / "README").exists()
    assert (tree / "drivers/xen/pciback.c").read_text() == "int pciback = 1;\n"
    assert [p["name"] for p in result["patches"]] == ["0001-guestdev.patch", "0002-pciback.patch"]
    assert [p["sha256"] for p in result["patches"]] == [sha(p1), sha(p2)]
    assert result["rev"] == linux.rev
    st = linux.state()
    assert st["series_digest"] == result["series_digest"]
    assert st["patches"] == result["patches"]
    assert st["files"] == {
        "README": None,
        "drivers/pci/Kconfig": sha((tree / "drivers/pci/Kconfig").read_bytes()),
        "drivers/xen/guestdev.c": sha("int guestdev;\n"),
        "drivers/xen/pciback.c": sha("int pciback = 1;\n"),
    }
    assert "pending" not in st
    # everything the VCS sees as changed is ours: fetch would not call it a local edit
    assert sources.local_edits(sources.VCS["git"], tree, sources.owned_changes(linux.ws,
                                                                               "linux")) == []
    assert not (linux.ws.dir / "tmp" / "patch-linux").exists()


def test_hg_export_series_on_a_served_hg_tree(tmp_path: Path, hg_upstream: HgUpstream) -> None:
    """hg export output (plain and --git); non-UTF-8 bytes survive the pristine copies."""
    need("patch")
    latin1 = "/* Copyright J\xf6rg */\nint reassign;\n".encode("latin-1")
    (hg_upstream.path / "drivers").mkdir()
    (hg_upstream.path / "drivers" / "reassign.c").write_bytes(latin1)
    hg_upstream.commit("xen/common.c", "int common;\n", "add files")
    author = HgAuthor(hg_upstream, tmp_path / "dev")
    p1 = author.patch({"drivers/reassign.c": latin1 + b"int reassign_resources;\n"}, "reassign")
    p2 = author.patch({"xen/pci.c": "int pci;\n", "xen/common.c": None}, "pci", "--git")
    assert p1.startswith(b"# HG changeset patch") and b"diff -r " in p1
    assert b"diff --git a/xen/pci.c" in p2
    pdir = tmp_path / "patches"
    write_series(pdir, {"reassign.patch": p1, "pci.patch": p2})
    src = SourceCfg("xen", "hg", hg_upstream.url, None, pdir)
    ws = Workspace(tmp_path / "ws")
    sources.fetch(src, ws)
    patches.apply(src, ws)
    tree = ws.source_dir("xen")
    assert (tree / "drivers/reassign.c").read_bytes() == latin1 + b"int reassign_resources;\n"
    assert (tree / "xen/pci.c").read_text() == "int pci;\n"
    assert not (tree / "xen/common.c").exists()

    # a changed first patch is applied again from pristine hg content, bytes intact
    p1b = p1.replace(b"+int reassign_resources;", b"+int reassign_resources = 1;")
    (pdir / "reassign.patch").write_bytes(p1b)
    patches.apply(src, ws)
    assert (tree / "drivers/reassign.c").read_bytes() == latin1 + b"int reassign_resources = 1;\n"
    assert sources.local_edits(sources.VCS["hg"], tree, sources.owned_changes(ws, "xen")) == []


def test_plain_diffs_with_p0_and_p1(linux: Setup, tmp_path: Path) -> None:
    p1 = plain_diff(tmp_path / "d1", {"drivers/xen/pciback.c": "int pciback;\n"},
                    {"drivers/xen/pciback.c": "int pciback;\nint hide;\n"})
    assert p1.startswith(b"diff -ruN a/drivers")
    p0 = p1.replace(b"a/drivers", b"drivers").replace(b"b/drivers", b"drivers")
    p0 = p0.replace(b"+int hide;", b"+int hide;\n+int seize;").replace(b"+1,2 @@", b"+1,3 @@")
    p0 = p0.replace(b"-1 +1,3", b"-1,2 +1,3").replace(b" int pciback;\n+int hide",
                                                         b" int pciback;\n int hide")
    linux.series({"hide.diff": p1, "seize.diff": p0}, ["hide.diff -p1", "seize.diff  -p0  # p0"])
    linux.apply()
    assert (linux.tree / "drivers/xen/pciback.c").read_text() == \
        "int pciback;\nint hide;\nint seize;\n"
    assert [p["strip"] for p in linux.state()["patches"]] == [1, 0]


def test_tarball_source(tmp_path: Path) -> None:
    need("patch")
    tar = make_tarball(tmp_path / "linux-6.1.tar.gz", {"Makefile": "all:\n", "init/main.c": "a\n"})
    pdir = tmp_path / "patches"
    diff = plain_diff(tmp_path / "d", {"init/main.c": "a\n"}, {"init/main.c": "b\n"})
    write_series(pdir, {"main.patch": diff})
    src = SourceCfg("linux", "tarball", str(tar), None, pdir)
    ws = Workspace(tmp_path / "ws")
    sources.fetch(src, ws)
    patches.apply(src, ws)
    assert (ws.source_dir("linux") / "init/main.c").read_text() == "b\n"


# ------------------------------------------------------------------------------ failures
def test_failing_second_patch_leaves_tree_untouched(linux: Setup) -> None:
    p1 = linux.author.patch({"drivers/xen/pciback.c": "int pciback = 1;\n"}, "one")
    # p2 is written against a Kconfig that differs around its second hunk
    linux.author.patch({"drivers/pci/Kconfig": edit(KCONFIG, "option 20", "option twenty")})
    k = (linux.author.path / "drivers/pci/Kconfig").read_text()
    for old, new in (("option 2\"", "option 2b\""), ("option twenty", "option 20b"),
                     ("option 38", "option 38b")):
        k = edit(k, old, new)
    p2 = linux.author.patch({"drivers/pci/Kconfig": k, "drivers/xen/new.c": "int n;\n"}, "two")
    linux.series({"0001-one.patch": p1, "0002-guestdev.patch": p2})
    before = snapshot(linux.tree)

    msg = linux.fail()
    rej = linux.ws.logs / "patch-linux.rej"
    assert msg == (f"{display(linux.pdir / '0002-guestdev.patch')} does not apply to "
                   f"linux@{linux.rev[:12]}: drivers/pci/Kconfig hunk 2/3 "
                   f"({display(linux.pdir / 'series')} line 3; rejected hunks in {display(rej)})")
    assert "option twenty" in (rej / "drivers/pci/Kconfig.rej").read_text()
    assert snapshot(linux.tree) == before
    assert linux.state() == {}

    # a patched tree stays exactly as the last good series left it
    linux.series({"0001-one.patch": p1})
    linux.apply()
    good, good_state = snapshot(linux.tree), linux.state()
    linux.series({"0001-one.patch": p1, "0002-guestdev.patch": p2})
    linux.fail()
    assert snapshot(linux.tree) == good
    assert linux.state() == good_state


def test_failure_through_doit_is_one_line(tmp_path: Path, git_upstream: GitUpstream) -> None:
    need("patch")
    pdir = tmp_path / "patches"
    bad = plain_diff(tmp_path / "d", {"Makefile": "not what upstream has\n"}, {"Makefile": "x\n"})
    write_series(pdir, {"bad.patch": bad})
    cfg = write_config(tmp_path, f'[sources.linux]\nvcs = "git"\nurl = "{git_upstream.url}"\n'
                                 f'rev = "main"\npatches = "{pdir}"\n')
    res = run_doit("patch", config=cfg, cli=True)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1, res.stderr
    assert re.match(r"xenpipe: error: \S+/bad.patch does not apply to linux@[0-9a-f]{12}: "
                    r"Makefile hunk 1/1 \(", res.stderr), res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_patch_already_upstream(linux: Setup) -> None:
    p1 = linux.author.patch({"drivers/xen/pciback.c": "int pciback = 1;\n"}, "merged")
    p2 = linux.author.patch({"drivers/xen/guestdev.c": "int guestdev;\n"}, "new file")
    linux.series({"0001-merged.patch": p1, "0002-new.patch": p2})
    linux.apply()
    # upstream takes both patches; the next fetch moves the patched tree to it
    linux.up.commit("drivers/xen/pciback.c", "int pciback = 1;\n", "upstream merge")
    linux.fetch()
    before = snapshot(linux.tree)
    assert linux.fail() == (f"patch {display(linux.pdir / '0001-merged.patch')} is already in "
                            f"linux@{linux.rev[:12]}; drop it from the series "
                            f"({display(linux.pdir / 'series')} line 2)")
    assert snapshot(linux.tree) == before
    # the error's data crosses to nightly (another process) in the stage's state record
    assert linux.ws.state(Key.patch("linux"))["merged"] == {
        "patch": display(linux.pdir / "0001-merged.patch"), "source": "linux",
        "rev": linux.rev[:12]}
    err = PatchMergedError("p", "s", "r", "w")
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    linux.series({"0002-new.patch": p2})
    linux.apply()
    assert "merged" not in linux.ws.state(Key.patch("linux"))
    linux.up.commit("drivers/xen/guestdev.c", "int guestdev;\n", "upstream merge 2")
    linux.fetch()
    assert "0002-new.patch is already in linux@" in linux.fail()


# --------------------------------------------------------------- reruns keep mtimes right
def test_changed_patch_rewrites_only_what_changed_and_make_rebuilds_one_object(
        tmp_path: Path, git_upstream: GitUpstream) -> None:
    need("patch")
    need("make")
    need("gcc")
    for name, text in kbuild_sources().items():
        (git_upstream.path / name).write_text(text)
    git_upstream.repo.git.add("--all")
    git_upstream.repo.index.commit("kbuild-like tree")
    author = GitAuthor(git_upstream, tmp_path / "dev")
    pdir = tmp_path / "patches"
    src = SourceCfg("linux", "git", git_upstream.url, "main", pdir)
    ws = Workspace(tmp_path / "ws")
    sources.fetch(src, ws)
    tree = ws.source_dir("linux")

    def text(name: str) -> str:
        return (author.path / name).read_text()

    p1 = author.patch({"pciback.c": text("pciback.c") + "int hide;\n",
                       "reassign.c": text("reassign.c") + "int align = 4096;\n"}, "p1")
    p2 = author.patch({"guestdev.c": text("guestdev.c") + "int guestdev = 1;\n"}, "p2")
    write_series(pdir, {"0001.patch": p1, "0002.patch": p2})
    patches.apply(src, ws)

    def make() -> list[str]:
        out = subprocess.run(["make", "-C", str(tree)], check=True, capture_output=True,
                             text=True).stdout
        return sorted(re.findall(r"^  CC      (\S+)$", out, re.M))

    assert make() == ["guestdev.o", "main.o", "pciback.o", "reassign.o", "xenbus.o"]
    # age the tree so that "rewritten" is visible at any timestamp granularity
    now = time.time()
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for f in filenames:
            age = 100 if f.endswith((".c", ".h", "Makefile")) else 50
            os.utime(Path(dirpath) / f, (now - age, now - age))
    assert make() == []
    before = snapshot(tree)

    author.reset("HEAD~1")
    p2b = author.patch({"guestdev.c": text("guestdev.c") + "int guestdev = 2;\n"}, "p2 v2")
    (pdir / "0002.patch").write_bytes(p2b)
    patches.apply(src, ws)
    after = snapshot(tree)
    changed = sorted(k for k in after if after[k] != before.get(k))
    assert changed == ["guestdev.c"]
    assert make() == ["guestdev.o"]


def test_series_edits_add_remove_reorder(linux: Setup) -> None:
    pristine_kconfig = KCONFIG
    pa = linux.author.patch({"drivers/pci/Kconfig": edit(KCONFIG, "option 1\"", "option A\"")})
    pb = linux.author.patch({"drivers/xen/pciback.c": "int pciback = 2;\n",
                             "drivers/xen/b.c": "int b;\n"})
    pc = linux.author.patch({"drivers/xen/c.c": "int c;\n"})
    named = {"a.patch": pa, "b.patch": pb, "c.patch": pc}
    tree = linux.tree

    linux.series(named, ["a.patch"])
    linux.apply()
    s1 = snapshot(tree)
    linux.series(named, ["a.patch", "b.patch"])  # add
    linux.apply()
    s2 = snapshot(tree)
    assert sorted(k for k in s2 if s2[k] != s1.get(k) and s2[k][0] is not None) == [
        "drivers/xen/b.c", "drivers/xen/pciback.c"]

    linux.series(named, ["a.patch", "b.patch", "c.patch"])
    linux.apply()
    linux.series(named, ["a.patch", "c.patch"])  # remove b: its files go back to pristine
    linux.apply()
    assert (tree / "drivers/xen/pciback.c").read_text() == "int pciback;\n"
    assert not (tree / "drivers/xen/b.c").exists()
    assert (tree / "drivers/xen/c.c").read_text() == "int c;\n"
    assert set(linux.state()["files"]) == {"drivers/pci/Kconfig", "drivers/xen/c.c"}
    digest = linux.state()["series_digest"]

    s3 = snapshot(tree)
    linux.series(named, ["c.patch", "a.patch"])  # reorder: same result, nothing rewritten
    linux.apply()
    assert snapshot(tree) == s3
    assert linux.state()["series_digest"] != digest
    assert [p["name"] for p in linux.state()["patches"]] == ["c.patch", "a.patch"]

    linux.series(named, [])  # an empty series restores everything
    linux.apply()
    assert (tree / "drivers/pci/Kconfig").read_text() == pristine_kconfig
    assert not (tree / "drivers/xen/c.c").exists()
    assert git.Repo(tree).git.status("--porcelain") == ""
    assert linux.state()["files"] == {}


def test_interrupted_runs_are_repaired_by_the_next(linux: Setup,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: a write to the real tree raises KeyboardInterrupt, twice in a row with
    different series, before a run completes."""
    p1 = linux.author.patch({"drivers/xen/pciback.c": "int pciback = 1;\n"})
    p2 = linux.author.patch({"drivers/xen/x.c": "x\n", "drivers/xen/y.c": "y\n"})
    linux.series({"1.patch": p1, "2.patch": p2})
    linux.apply()
    real = files.atomic_write

    def interrupt_at(n: int) -> None:
        calls: list[Path] = []

        def flaky(path: Path, data: bytes | str, mode: int | None = None) -> None:
            if linux.tree in path.parents:
                calls.append(path)
                if len(calls) == n:
                    raise KeyboardInterrupt
            real(path, data, mode)

        monkeypatch.setattr(APPLY, "atomic_write", flaky)
        with pytest.raises(KeyboardInterrupt):
            linux.apply()
        monkeypatch.setattr(APPLY, "atomic_write", real)

    def version(x: str, y: str) -> None:
        (linux.pdir / "2.patch").write_bytes(p2.replace(b"+x", b"+" + x.encode())
                                             .replace(b"+y", b"+" + y.encode()))

    x, y = linux.tree / "drivers/xen/x.c", linux.tree / "drivers/xen/y.c"
    version("x2", "y2")
    interrupt_at(2)
    assert (x.read_text(), y.read_text()) == ("x2\n", "y\n")  # half done
    version("x2", "y3")  # x.c is already right: only y.c is to write, and that is interrupted
    interrupt_at(1)
    assert (x.read_text(), y.read_text()) == ("x2\n", "y\n")
    version("x4", "y4")
    linux.apply()
    assert (x.read_text(), y.read_text()) == ("x4\n", "y4\n")
    assert "pending" not in linux.state()
    assert sources.local_edits(sources.VCS["git"], linux.tree,
                               sources.owned_changes(linux.ws, "linux")) == []


def test_hand_edits_are_refused_not_overwritten(linux: Setup) -> None:
    p1 = linux.author.patch({"drivers/xen/pciback.c": "int pciback = 1;\n"})
    linux.series({"1.patch": p1})
    linux.apply()
    (linux.tree / "drivers/xen/pciback.c").write_text("my work\n")
    p1b = p1.replace(b"+int pciback = 1;", b"+int pciback = 2;")
    (linux.pdir / "1.patch").write_bytes(p1b)
    msg = linux.fail()
    assert msg.startswith("src/linux has changes that are not from ")
    assert "(drivers/xen/pciback.c)" in msg and "git checkout --" in msg
    assert (linux.tree / "drivers/xen/pciback.c").read_text() == "my work\n"
    # a user's edit that the series now contains is fine (the fetch error's advice)
    (linux.tree / "drivers/xen/pciback.c").write_text("int pciback = 2;\n")
    linux.apply()


def test_fuzz_is_applied_with_a_warning(linux: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    k = edit(KCONFIG, "option 10\"", "option ten\"")
    p = linux.author.patch({"drivers/pci/Kconfig": k})
    fuzzy = p.replace(b' \tbool "option 9"\n', b' \tbool "option nine"\n', 1)
    assert fuzzy != p
    linux.series({"fuzzy.patch": fuzzy})
    linux.apply()
    assert "option ten" in (linux.tree / "drivers/pci/Kconfig").read_text()
    assert "fuzzy.patch: drivers/pci/Kconfig hunk 1 applied with fuzz" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad input
def test_bad_series_entries(linux: Setup) -> None:
    good = linux.author.patch({"drivers/xen/pciback.c": "int pciback = 1;\n"})
    series = display(linux.pdir / "series")
    before = snapshot(linux.tree)

    (linux.pdir / "series").unlink(missing_ok=True)
    assert linux.fail().startswith(f"{series}: no such file; list the patches there")
    cases = {
        "missing": (["good.patch", "gone.patch"], f"{series}:3: gone.patch: no such file in "),
        "duplicate": (["good.patch", "x.patch", "good.patch"],
                      f"{series}:4: good.patch is listed twice (first on line 2); remove one"),
        "option": (["good.patch -R"], f"{series}:2: unknown option '-R' after good.patch "
                                      "(only -pN is supported)"),
        "outside": (["../linux/good.patch"], f"{series}:2: ../linux/good.patch: a patch must "
                                             "be a path inside"),
    }
    for lines, expected in cases.values():
        linux.series({"good.patch": good, "x.patch": good}, lines)
        assert linux.fail().startswith(expected)
    assert snapshot(linux.tree) == before


# kind: (patch content, -pN option in the series, start of the error after the patch's name)
BAD_PATCHES = {
    "empty": (b"\n", "", " is empty; remove it from "),
    "cover": (b"From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH 0/4] guestdev\n\nA series.\n",
              "", " contains no diff (a cover letter? an empty commit?)"),
    "hg-binary": (b"diff -r 1 -r 2 logo.ppm\nBinary file logo.ppm has changed\n", "",
                  ": binary diff for logo.ppm;"),
    "dotdot": (b"--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-x\n+y\n", "",
               ": refusing 'a/../../etc/passwd': a patch may only touch files inside"),
    "absolute": (b"--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-x\n+y\n", " -p0",
                 ": refusing '/etc/passwd': a patch may only touch files inside"),
    "strip": (b"--- Makefile\n+++ Makefile\n@@ -1 +1 @@\n-x\n+y\n", "",
              ": cannot strip 1 leading components from 'Makefile' (wrong -pN"),
    "context": (b"*** a/Makefile\n--- b/Makefile\n***************\n*** 1 ****\n! x\n"
                b"--- 1 ----\n! y\n", "", ":1: context diffs are not supported"),
}


@pytest.mark.parametrize("kind", [*BAD_PATCHES, "binary", "symlink"])
def test_bad_patches(linux: Setup, tmp_path: Path, kind: str) -> None:
    shown = display(linux.pdir / "bad.patch")
    good = linux.author.patch({"drivers/xen/pciback.c": "int pciback = 1;\n"})
    series = ["good.patch", "bad.patch"]
    if kind in BAD_PATCHES:
        bad, opt, tail = BAD_PATCHES[kind]
        series[1] += opt
        expected = shown + tail
    elif kind == "binary":
        bad = linux.author.patch({"logo.ppm": bytes(range(256))}, "logo", "--binary")
        expected = f"{shown}: binary diff for logo.ppm; xenpipe applies text diffs only"
    else:  # a tree symlink that would lead a write out of the tree
        (tmp_path / "outside").mkdir()
        os.symlink(tmp_path / "outside", linux.tree / "escape")
        bad = b"--- /dev/null\n+++ b/escape/owned.c\n@@ -0,0 +1 @@\n+x\n"
        expected = "src/linux/escape/owned.c: the series touches a path through the symbolic link"
    linux.series({"good.patch": good, "bad.patch": bad}, series)
    before = snapshot(linux.tree)
    assert linux.fail().startswith(expected)
    assert snapshot(linux.tree) == before
    if kind == "symlink":
        assert list((tmp_path / "outside").iterdir()) == []


def test_missing_target_names_the_file(linux: Setup) -> None:
    bad = b"--- a/drivers/nope.c\n+++ b/drivers/nope.c\n@@ -1 +1 @@\n-x\n+y\n"
    linux.series({"nope.patch": bad})
    assert linux.fail().endswith(
        f"nope.patch does not apply to linux@{linux.rev[:12]}: drivers/nope.c does not exist "
        f"(wrong -pN in the series?) ({display(linux.pdir / 'series')} line 2)")


def test_crlf_patch_is_normalised_for_lf_files_and_kept_for_crlf_files(linux: Setup) -> None:
    """Decision: a patch whose every line ends in CRLF was mangled in transit. Each file's part
    is read as LF, unless the target file itself is CRLF (then the CRs are content)."""
    linux.up.commit("tools/win.bat", "@echo off\r\nset A=1\r\n", "a CRLF file")
    linux.fetch()
    linux.author.repo.git.pull("-q", "origin", "main")
    p = linux.author.patch({"drivers/xen/pciback.c": "int pciback = 1;\n",
                            "tools/win.bat": "@echo off\r\nset A=2\r\n",
                            "drivers/xen/new.c": "int n;\n"})
    mangled = re.sub(rb"\r?\n", b"\r\n", p)
    linux.series({"crlf.patch": mangled})
    linux.apply()
    assert (linux.tree / "drivers/xen/pciback.c").read_bytes() == b"int pciback = 1;\n"
    assert (linux.tree / "drivers/xen/new.c").read_bytes() == b"int n;\n"
    assert (linux.tree / "tools/win.bat").read_bytes() == b"@echo off\r\nset A=2\r\n"
    assert linux.state()["patches"][0]["sha256"] == sha(mangled)


@pytest.mark.parametrize("how", ["quoted-printable", "attachment"])
def test_mail_saved_from_a_list_archive(linux: Setup, how: str) -> None:
    """Raw messages as archives keep them: a quoted-printable body, or the patch attached."""
    import quopri
    from email.message import EmailMessage

    p = linux.author.patch({"drivers/xen/pciback.c": "int pciback = 1; /* a=b */\n"})
    body = p.split(b"\n\n", 1)[1]
    if how == "quoted-printable":
        mail = (b"From: Dev <dev@example.org>\nSubject: [PATCH 1/4] dom0 linux: guestdev\n"
                b"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n"
                b"Content-Transfer-Encoding: quoted-printable\n\n" + quopri.encodestring(body))
        assert b"=3D" in mail
    else:
        msg = EmailMessage()
        msg["From"], msg["Subject"] = "Dev <dev@example.org>", "[PATCH 2/4] guestdev"
        msg.set_content("Patch attached.\n")
        msg.add_attachment(body, maintype="application", subtype="octet-stream",
                           filename="guestdev.patch")
        mail = msg.as_bytes()
        assert b"+int pciback = 1;" not in mail  # base64
    linux.series({"mail.patch": mail})
    linux.apply()
    assert (linux.tree / "drivers/xen/pciback.c").read_text() == "int pciback = 1; /* a=b */\n"


def test_renames_from_format_patch(linux: Setup) -> None:
    linux.author.repo.git.mv("drivers/xen/pciback.c", "drivers/xen/xen-pciback.c")
    p = linux.author.patch({"drivers/xen/xen-pciback.c": "int pciback;\nint seize;\n"})
    assert b"rename from drivers/xen/pciback.c" in p
    linux.series({"rename.patch": p})
    linux.apply()
    assert not (linux.tree / "drivers/xen/pciback.c").exists()
    assert (linux.tree / "drivers/xen/xen-pciback.c").read_text() == "int pciback;\nint seize;\n"
    assert linux.state()["files"]["drivers/xen/pciback.c"] is None


def test_mode_changes_and_new_executables(linux: Setup) -> None:
    (linux.author.path / "scripts").mkdir()
    (linux.author.path / "scripts" / "guestdev.sh").write_text("#!/bin/sh\n")
    (linux.author.path / "scripts" / "guestdev.sh").chmod(0o755)
    p = linux.author.patch({})
    assert b"new file mode 100755" in p
    linux.series({"exec.patch": p})
    linux.apply()
    assert os.stat(linux.tree / "scripts/guestdev.sh").st_mode & 0o777 == 0o755


# -------------------------------------------------------------------------- fingerprint
def test_fingerprint_is_cheap_and_tolerant(linux: Setup) -> None:
    p1 = linux.author.patch({"drivers/xen/pciback.c": "int pciback = 1;\n"})
    linux.series({"1.patch": p1}, ["1.patch -p1", "# comment", "", "gone.patch"])
    fp = patches.fingerprint(linux.src)
    assert fp["patches"] == {"1.patch": sha(p1), "gone.patch": None}
    (linux.pdir / "1.patch").write_bytes(p1 + b"\n")
    assert patches.fingerprint(linux.src) != fp
    (linux.pdir / "series").unlink()
    assert patches.fingerprint(linux.src) == {"series": None}


# ---------------------------------------------------------------------------- end to end
def test_doit_fetch_patch_noop_and_upstream_moves(tmp_path: Path,
                                                  git_upstream: GitUpstream) -> None:
    need("patch")
    author = GitAuthor(git_upstream, tmp_path / "dev")
    p = author.patch({"Makefile": "all:\n\ttrue\n\techo guestdev\n", "guestdev.c": "int g;\n"})
    pdir = tmp_path / "patches"
    write_series(pdir, {"0001-guestdev.patch": p})
    cfg = write_config(tmp_path, f'[sources.linux]\nvcs = "git"\nurl = "{git_upstream.url}"\n'
                                 f'rev = "main"\npatches = "{pdir}"\n')
    res = run_doit("patch", config=cfg)
    assert res.returncode == 0, res.stderr
    assert ".  fetch:linux" in res.stdout and ".  patch:linux" in res.stdout
    tree = tmp_path / "ws" / "src" / "linux"
    assert (tree / "guestdev.c").read_text() == "int g;\n"

    res = run_doit("patch", config=cfg)
    assert res.returncode == 0 and "-- patch:linux" in res.stdout, res.stdout

    # upstream moves: fetch takes the patched tree along (our changes are not local edits)
    new = git_upstream.commit("drivers/xen/pciback.c", "int pciback;\n")
    res = run_doit("fetch", config=cfg)
    assert res.returncode == 0, res.stderr
    assert git.Repo(tree).head.commit.hexsha == new
    res = run_doit("patch", config=cfg)
    assert res.returncode == 0, res.stderr
    assert ".  patch:linux" in res.stdout  # the fetched revision changed
    assert "echo guestdev" in (tree / "Makefile").read_text()
    assert (tree / "drivers/xen/pciback.c").exists()

    # editing the series reruns; putting it back reruns again, and so on
    (pdir / "series").write_text("")
    res = run_doit("patch", config=cfg)
    assert res.returncode == 0 and ".  patch:linux" in res.stdout
    assert not (tree / "guestdev.c").exists()
