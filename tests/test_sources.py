"""`doit fetch` against real upstreams: hg over a real `hg serve`, git, tarballs."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import json
import os
import shutil
import signal
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import git
import pytest

from pipeline import fetch as sources
from pipeline import proc
from pipeline.config import SourceCfg
from pipeline.errors import SourceError
from pipeline.workspace import Workspace

from .support.doit import run_doit, signalled_while_held, write_config
from .support.tools import free_port
from .support.upstreams import GitUpstream, HgUpstream, hg, make_tarball


def state(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "ws" / "state" / f"fetch-{name}.json").read_text())


def hg_parent(tree: Path) -> str:
    return hg("log", "-r", ".", "--template", "{node}", cwd=tree)


# ------------------------------------------------------------------------------------- hg
def hg_calls(tmp_path: Path, tool: str = "hg"
             ) -> tuple[dict[str, str], Callable[[], list[str]]]:
    """An environment whose ``hg`` (or *tool*) notes each command it runs, and a function
    that returns (and forgets) the commands run so far."""
    log = tmp_path / f"{tool}-calls"
    shim = tmp_path / "bin" / tool
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\n[ "$1" = -R -o "$1" = -C ] && echo "$3" >> {log} || '
                    f'echo "$1" >> {log}\nexec {shutil.which(tool)} "$@"\n')
    shim.chmod(0o755)

    def calls() -> list[str]:
        done = log.read_text().split() if log.exists() else []
        log.write_text("")
        return done

    return {"PATH": f"{shim.parent}:{os.environ['PATH']}"}, calls


def test_hg_clone_noop_and_pull(tmp_path: Path, hg_upstream: HgUpstream) -> None:
    """Each hg start costs a Python start-up: a clone is clone, log, update; tip (floating)
    asks upstream with pull and log, and updates only when it moved."""
    env, calls = hg_calls(tmp_path)
    cfg = write_config(tmp_path, f'[sources.xen]\nvcs = "hg"\nurl = "{hg_upstream.url}"\n'
                                 'rev = "tip"\n')
    res = run_doit("fetch", config=cfg, env=env)
    assert res.returncode == 0, res.stderr
    assert calls() == ["clone", "log", "update"]
    tree = tmp_path / "ws" / "src" / "xen"
    assert (tree / "xen" / "Makefile").is_file()
    assert hg_parent(tree) == hg_upstream.node() == state(tmp_path, "xen")["resolved"]

    # nothing new upstream
    res = run_doit("fetch", config=cfg, env=env)
    assert res.returncode == 0, res.stderr
    assert calls() == ["pull", "log"]

    # a new upstream commit arrives with the next fetch (tip floats)
    new = hg_upstream.commit("xen/common.c", "int x;\n")
    res = run_doit("fetch", config=cfg, env=env)
    assert res.returncode == 0, res.stderr
    assert calls() == ["pull", "log", "status", "update"]
    assert hg_parent(tree) == new == state(tmp_path, "xen")["resolved"]
    assert (tree / "xen" / "common.c").read_text() == "int x;\n"


def test_hg_pinned_tag_needs_no_network(tmp_path: Path, hg_upstream: HgUpstream) -> None:
    """A pinned tag already fetched: the next fetch starts no hg at all (the shim counts
    them) and works with the repository no longer served (moved away from behind hg serve:
    a network call would fail the run)."""
    tagged = hg_upstream.node("3.4.0-rc1")
    env, calls = hg_calls(tmp_path)
    cfg = write_config(tmp_path, f'[sources.xen]\nvcs = "hg"\nurl = "{hg_upstream.url}"\n'
                                 'rev = "3.4.0-rc1"\n')
    assert run_doit("fetch", config=cfg, env=env).returncode == 0
    assert calls() == ["clone", "log", "update"]
    tree = tmp_path / "ws" / "src" / "xen"
    assert hg_parent(tree) == tagged
    away = hg_upstream.path.with_name("moved-away")
    hg_upstream.path.rename(away)  # no longer served
    try:
        res = run_doit("fetch", config=cfg, env=env)
    finally:
        away.rename(hg_upstream.path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "-- fetch:xen\n" and calls() == []


def test_hg_full_hash_after_upstream_is_gone(tmp_path: Path, hg_upstream: HgUpstream) -> None:
    """A pinned changeset present locally needs no network: it works with upstream down."""
    node = hg_upstream.node()
    cfg = write_config(tmp_path, f'[sources.xen]\nvcs = "hg"\nurl = "{hg_upstream.url}"\n'
                                 f'rev = "{node}"\n')
    assert run_doit("fetch", config=cfg).returncode == 0
    src = SourceCfg("xen", "hg", f"http://127.0.0.1:{free_port()}/", node, None)
    ws = Workspace(tmp_path / "ws")
    # the URL now points at a closed port; the rev is already here, so no connection is made
    assert sources.fetch(src, ws).resolved == node


def test_hg_unreachable_url_is_one_line_with_password_hidden(tmp_path: Path) -> None:
    url = f"http://alice:s3cret@127.0.0.1:{free_port()}/xen.hg"
    cfg = write_config(tmp_path, f'[sources.xen]\nvcs = "hg"\nurl = "{url}"\n')
    res = run_doit("fetch", config=cfg, cli=True)
    assert res.returncode == 1
    assert res.stderr.startswith("xenpipe: error: hg clone http://alice:***@127.0.0.1:")
    assert res.stderr.count("\n") == 1
    assert "s3cret" not in res.stderr + res.stdout
    assert not (tmp_path / "ws" / "src" / "xen").exists()
    assert [p for p in (tmp_path / "ws" / "src").iterdir()] == []
    assert "s3cret" not in (tmp_path / "ws" / "logs" / "fetch-xen.log").read_text()


def test_hg_unknown_rev(tmp_path: Path, hg_upstream: HgUpstream) -> None:
    cfg = write_config(tmp_path, f'[sources.xen]\nvcs = "hg"\nurl = "{hg_upstream.url}"\n'
                                 'rev = "no-such-tag"\n')
    res = run_doit("fetch", config=cfg)
    assert res.returncode == 1
    assert res.stderr == (f"xenpipe: error: [sources.xen] rev: 'no-such-tag' is not a revision, "
                          f"tag or branch of {hg_upstream.url}\n")
    assert not (tmp_path / "ws" / "src" / "xen").exists()


def test_hg_local_edits_are_not_destroyed(tmp_path: Path, hg_upstream: HgUpstream) -> None:
    cfg = write_config(tmp_path, f'[sources.xen]\nvcs = "hg"\nurl = "{hg_upstream.url}"\n')
    assert run_doit("fetch", config=cfg).returncode == 0
    tree = tmp_path / "ws" / "src" / "xen"
    (tree / "README").write_text("my local work\n")
    hg_upstream.commit("xen/new.c", "int y;\n")
    res = run_doit("fetch", config=cfg)
    assert res.returncode == 1
    assert "src/xen has local changes (README)" in res.stderr
    assert "force=1" in res.stderr and "hg diff" in res.stderr
    assert (tree / "README").read_text() == "my local work\n"
    # force=1 drops them, as the message says
    res = run_doit("fetch", "force=1", config=cfg)
    assert res.returncode == 0, res.stderr
    assert (tree / "README").read_text() == "xen-unstable\n"
    assert (tree / "xen" / "new.c").exists()


# ------------------------------------------------------------------------------------ git
def test_git_clone_tag_noop_and_branch(tmp_path: Path, git_upstream: GitUpstream) -> None:
    tagged = git_upstream.repo.tags["v1.0"].commit.hexsha
    body = f'[sources.linux]\nvcs = "git"\nurl = "{git_upstream.url}"\nrev = "v1.0"\n'
    cfg = write_config(tmp_path, body)
    env, calls = hg_calls(tmp_path, "git")
    assert run_doit("fetch", config=cfg, env=env).returncode == 0
    assert "clone" in calls()
    tree = git.Repo(tmp_path / "ws" / "src" / "linux")
    assert tree.head.is_detached and tree.head.commit.hexsha == tagged
    assert state(tmp_path, "linux")["resolved"] == tagged

    # pinned: up to date, no git runs, and the upstream may be gone
    away = git_upstream.path.with_name("moved-away")
    git_upstream.path.rename(away)
    res = run_doit("fetch", config=cfg, env=env)
    assert res.returncode == 0 and res.stdout == "-- fetch:linux\n", res.stderr
    assert calls() == []
    away.rename(git_upstream.path)

    # a branch follows upstream
    new = git_upstream.commit("init/main.c", "int main;\n")
    cfg = write_config(tmp_path, body.replace('rev = "v1.0"', 'rev = "main"'))
    assert run_doit("fetch", config=cfg).returncode == 0
    assert tree.head.commit.hexsha == new == state(tmp_path, "linux")["resolved"]
    newer = git_upstream.commit("init/main.c", "int main2;\n")
    assert run_doit("fetch", config=cfg).returncode == 0
    assert tree.head.commit.hexsha == newer


def test_git_unreachable_and_unknown_rev(tmp_path: Path, git_upstream: GitUpstream) -> None:
    url = f"http://bob:hunter2@127.0.0.1:{free_port()}/linux.git"
    cfg = write_config(tmp_path, f'[sources.linux]\nvcs = "git"\nurl = "{url}"\n')
    res = run_doit("fetch", config=cfg)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("xenpipe: error: git clone http://bob:***@127.0.0.1:")
    assert "fatal: unable to access" in res.stderr  # git's own reason, not an empty one
    assert "hunter2" not in res.stderr

    cfg.write_text(f'[workspace]\ndir = "{tmp_path / "ws"}"\n[sources.linux]\nvcs = "git"\n'
                   f'url = "{git_upstream.url}"\nrev = "v9.9"\n')
    res = run_doit("fetch", config=cfg)
    assert res.returncode == 1
    assert "[sources.linux] rev: 'v9.9' is not a revision, tag or branch" in res.stderr


def test_git_dirty_tree_blocks_moving(tmp_path: Path, git_upstream: GitUpstream) -> None:
    body = f'[sources.linux]\nvcs = "git"\nurl = "{git_upstream.url}"\nrev = "main"\n'
    cfg = write_config(tmp_path, body)
    assert run_doit("fetch", config=cfg).returncode == 0
    tree = tmp_path / "ws" / "src" / "linux"
    (tree / "Makefile").write_text("hacked\n")
    git_upstream.commit("kernel/x.c", "x\n")
    res = run_doit("fetch", config=cfg)
    assert res.returncode == 1 and "src/linux has local changes (Makefile)" in res.stderr
    assert (tree / "Makefile").read_text() == "hacked\n"


def test_edits_made_by_the_patch_stage_are_not_local_edits(
        tmp_path: Path, git_upstream: GitUpstream) -> None:
    ws = Workspace(tmp_path / "ws")
    src = SourceCfg("linux", "git", git_upstream.url, "main", None)
    sources.fetch(src, ws)
    tree = ws.source_dir("linux")
    (tree / "Makefile").write_text("patched\n")
    import hashlib

    ws.save_state("patch-linux", {"files": {
        "Makefile": hashlib.sha256(b"patched\n").hexdigest()}})
    new = git_upstream.commit("kernel/y.c", "y\n")
    assert sources.fetch(src, ws).resolved == new


def test_mirror_is_shared(tmp_path: Path, git_upstream: GitUpstream,
                          hg_upstream: HgUpstream) -> None:
    mirror = tmp_path / "mirror"
    for ws_name in ("a", "b"):
        ws = Workspace(tmp_path / ws_name)
        for src in (SourceCfg("linux", "git", git_upstream.url, "main", None),
                    SourceCfg("xen", "hg", hg_upstream.url, None, None)):
            sources.fetch(src, ws, mirror)
            assert ws.state(f"fetch-{src.name}")["resolved"]
    assert len(list(mirror.iterdir())) == 2


def test_mirror_names_no_password(tmp_path: Path) -> None:
    url = f"http://alice:s3cret@127.0.0.1:{free_port()}/"
    cfg = write_config(tmp_path, f'[workspace]\ndir = "{tmp_path / "ws"}"\n'
                                 f'mirror = "{tmp_path / "mirror"}"\n'
                                 f'[sources.xen]\nvcs = "hg"\nurl = "{url}"\n')
    res = run_doit("fetch", config=cfg)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "s3cret" not in res.stderr + (tmp_path / "ws" / "logs" / "fetch-xen.log").read_text()
    named = sources.mirror_path(tmp_path, SourceCfg("xen", "hg", url, None, None))
    assert "s3cret" not in str(named)
    assert named == sources.mirror_path(  # one mirror, whatever the password
        tmp_path, SourceCfg("xen", "hg", url.replace("s3cret", "n3w"), None, None))


# -------------------------------------------------------------------------------- tarball
def test_tarball_unpacks_strips_and_commits(tmp_path: Path) -> None:
    tar = make_tarball(tmp_path / "linux-6.1.tar.xz",
                       {"Makefile": "all:\n", "drivers/xen/pciback.c": "int a;\n"}, mode="w:xz")
    cfg = write_config(tmp_path, f'[sources.linux]\nvcs = "tarball"\nurl = "{tar}"\n')
    res = run_doit("fetch", config=cfg)
    assert res.returncode == 0, res.stderr
    tree = tmp_path / "ws" / "src" / "linux"
    assert (tree / "drivers" / "xen" / "pciback.c").read_text() == "int a;\n"
    rev = state(tmp_path, "linux")["resolved"]
    assert git.Repo(tree).head.commit.hexsha == rev
    assert "-- fetch:linux" in run_doit("fetch", config=cfg).stdout
    # the same tarball always resolves to the same revision
    ws2 = Workspace(tmp_path / "ws2")
    assert sources.fetch(SourceCfg("linux", "tarball", str(tar), None, None), ws2).resolved == rev


def test_tarball_new_url_replaces_tree(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    a = make_tarball(tmp_path / "a.tar.gz", {"f": "a\n"})
    b = make_tarball(tmp_path / "b.tar.bz2", {"f": "b\n", "g": "g\n"}, mode="w:bz2")
    first = sources.fetch(SourceCfg("k", "tarball", str(a), None, None), ws).resolved
    second = sources.fetch(SourceCfg("k", "tarball", str(b), None, None), ws).resolved
    assert first != second
    assert (ws.source_dir("k") / "f").read_text() == "b\n"


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink"])
def test_hostile_tarball_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("pkg/ok")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
        if kind == "absolute":
            info = tarfile.TarInfo("/etc/evil")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        elif kind == "dotdot":
            info = tarfile.TarInfo("pkg/../../evil")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        else:
            info = tarfile.TarInfo("pkg/link")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "../../../etc/passwd" if kind == "symlink" else "/etc/passwd"
            tar.addfile(info)
    cfg = write_config(tmp_path, f'[sources.k]\nvcs = "tarball"\nurl = "{path}"\n')
    res = run_doit("fetch", config=cfg)
    assert res.returncode == 1
    assert res.stderr.startswith(f"xenpipe: error: {path}: refusing member")
    assert not (tmp_path / "ws" / "src" / "k").exists()
    assert not (tmp_path / "evil").exists()


def test_corrupt_tarball(tmp_path: Path) -> None:
    path = tmp_path / "broken.tar.gz"
    good = make_tarball(tmp_path / "good.tar.gz", {"a": "x" * 5000})
    path.write_bytes(good.read_bytes()[:60])
    with pytest.raises(SourceError, match="corrupt or unreadable tarball"):
        sources.fetch(SourceCfg("k", "tarball", str(path), None, None), Workspace(tmp_path / "w"))
    assert not (tmp_path / "w" / "src" / "k").exists()
    path.write_bytes(b"")  # tarfile's reason spans lines: all of it, on the one line
    with pytest.raises(SourceError, match=r"unreadable tarball: .*method gz: ReadError\('empty"):
        sources.fetch(SourceCfg("k", "tarball", str(path), None, None), Workspace(tmp_path / "w"))


def odd_tarball(path: Path) -> Path:
    """A tarball with what a release may hold: an executable script, a relative symlink, a
    hard link, an empty directory, a name with a space, a quote and a backslash, files with
    the same bytes, all under one top folder (an xz tarball, as Debian's linux-source is)."""
    with tarfile.open(path, "w:xz") as tar:
        def add(name: str, data: bytes = b"", mode: int = 0o644, kind: bytes = tarfile.REGTYPE,
                link: str = "") -> None:
            info = tarfile.TarInfo(f"pkg-1.0/{name}")
            info.type, info.mode, info.linkname, info.mtime = kind, mode, link, 1700000000
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("", kind=tarfile.DIRTYPE, mode=0o755)
        add("Makefile", b"all:\n\ttrue\n")
        add("scripts/run.sh", b"#!/bin/sh\necho run\n", mode=0o755)
        add("scripts/readable-only", b"x\n", mode=0o744)  # the owner's x bit decides, as git's
        add("include/asm", kind=tarfile.SYMTYPE, link="../arch/x86/include")
        add("arch/x86/include/a.h", b"#define A 1\n")
        add("COPYING.hard", kind=tarfile.LNKTYPE, link="pkg-1.0/Makefile")
        add("empty", kind=tarfile.DIRTYPE, mode=0o755)
        add('odd name "q" \\ x.txt', b"odd\n")
        add("same/one", b"odd\n")  # the same bytes again: one blob, stored once
        add("same/empty1")
        add("same/empty2")
        add("same/one-more", b"odd\n")
    return path


def committed_by_hand(tarball: Path, work: Path, message: str) -> str:
    """The revision the import must give, made without xenpipe: GNU tar extracts, git adds
    everything and commits with the fixed author, committer and date."""
    work.mkdir()
    proc.run(["tar", "-xf", str(tarball), "-C", str(work)])
    (top,) = work.iterdir()
    who = {"NAME": "xenpipe", "EMAIL": "xenpipe@localhost", "DATE": "1970-01-01T00:00:00Z"}
    env = {f"GIT_{role}_{k}": v for role in ("AUTHOR", "COMMITTER") for k, v in who.items()}
    for argv in (["init", "-q"], ["add", "--all", "--force", "."],
                 ["commit", "-q", "--no-verify", "-m", message]):
        proc.run(["git", "-C", str(top), *argv], env=env)
    return proc.run(["git", "-C", str(top), "rev-parse", "HEAD"], capture=True).stdout.strip()


def test_tarball_import_keeps_modes_links_and_the_revision_git_add_gives(tmp_path: Path
                                                                         ) -> None:
    """The streamed import (fast-import + checkout) gives the very commit that extracting
    the tarball and committing it by hand gives, and the same tree on disk: exec bits,
    symlinks, hard links, empty directories, odd names; git sees it clean."""
    tar = odd_tarball(tmp_path / "pkg-1.0.tar.xz")
    expected = committed_by_hand(tar, tmp_path / "by-hand", "Unpacked pkg-1.0.tar.xz")
    ws = Workspace(tmp_path / "ws")
    got = sources.fetch(SourceCfg("pkg", "tarball", str(tar), None, None), ws)
    assert got.resolved == expected
    tree = ws.source_dir("pkg")
    assert os.access(tree / "scripts/run.sh", os.X_OK)
    assert os.access(tree / "scripts/readable-only", os.X_OK)
    assert not os.access(tree / "Makefile", os.X_OK)
    assert os.readlink(tree / "include/asm") == "../arch/x86/include"
    assert (tree / "include/asm/a.h").read_text() == "#define A 1\n"
    assert (tree / "COPYING.hard").read_text() == "all:\n\ttrue\n"
    assert (tree / "COPYING.hard").stat().st_ino == (tree / "Makefile").stat().st_ino
    assert (tree / "empty").is_dir() and not any((tree / "empty").iterdir())
    assert (tree / 'odd name "q" \\ x.txt').read_text() == "odd\n"
    modes = proc.run(["git", "-C", str(tree), "ls-tree", "-r", "HEAD", "--format",
                      "%(objectmode) %(path)"], capture=True).stdout
    assert "100755 scripts/run.sh" in modes and "120000 include/asm" in modes
    assert "100644 Makefile" in modes
    assert sources.vcs_for("tarball").changes(tree) == []
    assert proc.run(["git", "-C", str(tree), "fsck", "--strict"], check=False).returncode == 0
    # the index is the commit's tree, with each file's stat data (git hashes nothing later)
    assert proc.run(["git", "-C", str(tree), "diff-index", "--cached", "--name-only", "HEAD"],
                    capture=True).stdout == ""
    debug = proc.run(["git", "-C", str(tree), "ls-files", "--debug", "Makefile"],
                     capture=True).stdout
    st = (tree / "Makefile").stat()
    assert f"mtime: {st.st_mtime_ns // 10**9}:{st.st_mtime_ns % 10**9}" in debug
    assert f"ino: {st.st_ino}" in debug and f"size: {st.st_size}" in debug
    # a second workspace, the same tarball: the same revision
    assert sources.fetch(SourceCfg("pkg", "tarball", str(tar), None, None),
                         Workspace(tmp_path / "ws2")).resolved == expected


def test_a_hand_edit_right_after_the_import_is_seen(tmp_path: Path) -> None:
    """An edit in the same second as the checkout, of the same size (git's stat data alone
    cannot tell it: the index must not call it clean), and a mode change, are local
    changes; ``doit fetch`` refuses to overwrite them."""
    tar = odd_tarball(tmp_path / "pkg-1.0.tar.xz")
    ws = Workspace(tmp_path / "ws")
    sources.fetch(SourceCfg("pkg", "tarball", str(tar), None, None), ws)
    tree = ws.source_dir("pkg")
    (tree / "Makefile").write_text("all:\n\tfals\n")  # same length as "true"
    (tree / "arch/x86/include/a.h").chmod(0o755)
    # COPYING.hard is a hard link to the Makefile, as tar -x makes it: edited with it
    assert sorted(sources.vcs_for("tarball").changes(tree)) == [
        "COPYING.hard", "Makefile", "arch/x86/include/a.h"]


def test_an_import_cut_short_leaves_nothing_under_src(tmp_path: Path) -> None:
    """A tarball truncated in the middle of a member (a download cut short): one error
    line, and neither the tree nor a half-imported repository is left under src/."""
    tar = tmp_path / "cut.tar"
    with tarfile.open(tar, "w") as t:
        for i in range(3):
            data = bytes([65 + i]) * 300_000
            info = tarfile.TarInfo(f"pkg/f{i}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    tar.write_bytes(tar.read_bytes()[:500_000])  # inside f1
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(SourceError, match=f"{tar}: corrupt or unreadable tarball"):
        sources.fetch(SourceCfg("pkg", "tarball", str(tar), None, None), ws)
    assert not ws.src.exists() or list(ws.src.iterdir()) == []


def test_a_cut_xz_tarball_is_one_error_naming_it(tmp_path: Path) -> None:
    """An xz tarball is decompressed by xz in its own process: a cut-short download is one
    error naming the archive, and nothing is left under src/."""
    whole = odd_tarball(tmp_path / "whole.tar.xz")
    cut = tmp_path / "cut.tar.xz"
    cut.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 2])
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(SourceError, match=f"^{cut}: corrupt or unreadable tarball: ") as exc:
        sources.fetch(SourceCfg("pkg", "tarball", str(cut), None, None), ws)
    assert "\n" not in str(exc.value)
    assert not ws.src.exists() or list(ws.src.iterdir()) == []


def test_tarball_with_a_file_where_a_directory_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "clash.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("pkg/a", "pkg/a/b"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SourceError, match=f"{path}: refusing member 'pkg/a/b': pkg/a is a file "
                       "or a link, not a directory"):
        sources.fetch(SourceCfg("k", "tarball", str(path), None, None), Workspace(tmp_path / "w"))
    assert not (tmp_path / "w" / "src" / "k").exists()


@pytest.mark.parametrize("name", ["pkg/.git/config", "pkg/sub/.git/hooks/x"])
def test_tarball_member_inside_a_git_directory_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "git.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SourceError, match=f"refusing member '{name}': a path into git"):
        sources.fetch(SourceCfg("k", "tarball", str(path), None, None), Workspace(tmp_path / "w"))
    assert not (tmp_path / "w" / "src" / "k").exists()


@contextlib.contextmanager
def http_server(directory: Path, password: str | None = None) -> Iterator[str]:
    """A real HTTP server for *directory* on 127.0.0.1 (its base URL); with *password*, every
    request needs basic auth as ``user:<password>``."""
    want = "Basic " + base64.b64encode(f"user:{password}".encode()).decode()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if password is not None and self.headers.get("Authorization") != want:
                self.send_error(401, "Unauthorized")
                return
            super().do_GET()

    handler = functools.partial(Handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_tarball_over_http(tmp_path: Path) -> None:
    make_tarball(tmp_path / "pkg.tar.gz", {"Makefile": "all:\n"})
    with http_server(tmp_path) as base:
        url = f"{base}/pkg.tar.gz"
        ws = Workspace(tmp_path / "ws")
        sources.fetch(SourceCfg("k", "tarball", url, None, None), ws)
        assert (ws.source_dir("k") / "Makefile").is_file()
        with pytest.raises(SourceError, match=r"cannot download http://127\.0\.0\.1:\d+/nope"):
            sources.fetch(SourceCfg("j", "tarball", url.replace("pkg", "nope"), None, None), ws)


def test_tarball_url_with_a_password(tmp_path: Path) -> None:
    """user:password@ in the URL is sent as basic auth (urllib alone would take it for part
    of the host name) and never shown."""
    make_tarball(tmp_path / "pkg.tar.gz", {"Makefile": "all:\n"})
    ws = Workspace(tmp_path / "ws")
    with http_server(tmp_path, password="s3cr%t") as base:
        url = base.replace("//", "//user:s3cr%25t@") + "/pkg.tar.gz"
        sources.fetch(SourceCfg("k", "tarball", url, None, None), ws)
        assert (ws.source_dir("k") / "Makefile").is_file()
        wrong = url.replace("s3cr%25t", "guess")
        with pytest.raises(SourceError) as exc:
            sources.fetch(SourceCfg("j", "tarball", wrong, None, None), ws)
    assert str(exc.value) == f"cannot download {proc.redact(wrong)}: Unauthorized"
    assert "guess" not in str(exc.value)


def test_hg_missing_from_path(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, '[sources.xen]\nvcs = "hg"\nurl = "http://127.0.0.1:9/x"\n')
    bin_dir = tmp_path / "bin"  # git only: GitPython needs it to import
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git"))
    res = run_doit("fetch", config=cfg, env={"PATH": str(bin_dir)}, cli=True)
    assert res.returncode == 1
    assert res.stderr == "xenpipe: error: hg: command not found (is it installed and on PATH?)\n"


def test_redact() -> None:
    assert proc.redact("https://u:p@h/x and http://h/y") == "https://u:***@h/x and http://h/y"
    assert proc.redact("ssh://git@host/x") == "ssh://git@host/x"


# ------------------------------------------------------------------ interrupted first fetch
@pytest.mark.parametrize("vcs", ["hg", "git", "tarball"])
def test_an_interrupted_first_fetch_leaves_no_tree_under_src(
        tmp_path: Path, vcs: str, request: pytest.FixtureRequest) -> None:
    """Ctrl-C while the first fetch checks the tree out (held there by a real hg preupdate or
    git post-checkout hook reading a FIFO): src/<name> must not exist yet, nor after the
    interrupt (a half-checked-out tree would look like the user's edits to the next run),
    and the next doit fetch simply fetches."""
    fifo = tmp_path / "hook.fifo"
    os.mkfifo(fifo)
    if vcs == "hg":
        up: HgUpstream | GitUpstream = request.getfixturevalue("hg_upstream")
        url = up.url
        hgrc = tmp_path / "hgrc"
        hgrc.write_text(f"[hooks]\npreupdate = cat {fifo}\n")
        env = {"HGRCPATH": str(hgrc)}
    else:
        if vcs == "git":
            url = request.getfixturevalue("git_upstream").url
        else:
            url = str(make_tarball(tmp_path / "pkg.tar.gz", {"Makefile": "all:\n\ttrue\n"}))
        hooks = tmp_path / "hooks"
        hooks.mkdir()
        (hooks / "post-checkout").write_text(f"#!/bin/sh\nexec cat {fifo}\n")
        (hooks / "post-checkout").chmod(0o755)
        env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath",
               "GIT_CONFIG_VALUE_0": str(hooks)}
    cfg = write_config(tmp_path, f'[sources.pkg]\nvcs = "{vcs}"\nurl = "{url}"\n')
    tree = tmp_path / "ws" / "src" / "pkg"
    def not_yet_in_place() -> None:
        assert not tree.exists(), "the tree appeared under src/ before its checkout ended"

    rc, _, err = signalled_while_held(["fetch", f"config={cfg}"], fifo, signal.SIGINT, env,
                                      check=not_yet_in_place)
    assert rc == 1 and "Traceback" not in err, err
    assert err.splitlines() == ["xenpipe: error: interrupted by SIGINT"]
    assert not tree.exists()
    again = run_doit("fetch", config=cfg)
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert (tree / "README").is_file() or (tree / "Makefile").is_file()
    kind = sources.vcs_for(vcs)
    assert kind.current(tree) == state(tmp_path, "pkg")["resolved"] and kind.changes(tree) == []


# ------------------------------------------------------------------ a url to another project
def other_project(tmp_path: Path, vcs: str) -> str:
    """A repository unrelated to the fixtures' (its own first commit), as a local path."""
    path = tmp_path / f"other.{vcs}"
    path.mkdir()
    (path / "OTHER").write_text("another project\n")
    if vcs == "hg":
        hg("init", cwd=path)
        hg("commit", "--addremove", "-m", "other", cwd=path)
    else:
        repo = git.Repo.init(path, initial_branch="main")
        repo.index.add(["OTHER"])
        repo.index.commit("other")
    return str(path)


@pytest.mark.parametrize("vcs", ["hg", "git"])
def test_a_url_changed_to_an_unrelated_repository(tmp_path: Path, vcs: str,
                                                  request: pytest.FixtureRequest) -> None:
    """No local edits: the new repository is fetched afresh (hg said `repository is
    unrelated`). With edits: refused with the keep/drop instructions, naming both URLs, the
    tree untouched. A related URL (a clone of the same project) is a pull, not a re-clone."""
    up = request.getfixturevalue(f"{vcs}_upstream")
    ws = Workspace(tmp_path / "ws")
    tree = ws.source_dir("pkg")
    sources.fetch(SourceCfg("pkg", vcs, up.url, None, None), ws)
    marker = tree / (".hg" if vcs == "hg" else ".git") / "xenpipe-was-here"
    marker.write_text("")
    other = other_project(tmp_path, vcs)
    got = sources.fetch(SourceCfg("pkg", vcs, other, None, None), ws)
    assert (tree / "OTHER").read_text() == "another project\n" and not (tree / "README").exists()
    assert not marker.exists()  # a fresh clone, not the old one pulled into
    assert got.url == other and sources.vcs_for(vcs).current(tree) == got.resolved

    (tree / "OTHER").write_text("my edit\n")
    with pytest.raises(SourceError) as exc:
        sources.fetch(SourceCfg("pkg", vcs, up.url, None, None), ws)
    assert str(exc.value) == (
        f"src/pkg has local changes (OTHER) and [sources.pkg] url changed from {other} to "
        f"{up.url}, an unrelated repository; to keep them: `{vcs} diff > patches/pkg/"
        f"local.patch` in {tree} and add it to the series; to drop them: rerun with "
        "`doit fetch force=1`")
    assert (tree / "OTHER").read_text() == "my edit\n"
    sources.fetch(SourceCfg("pkg", vcs, up.url, None, None), ws, force=True)
    assert (tree / "README").is_file() and not (tree / "OTHER").exists()

    clone = tmp_path / "clone"
    if vcs == "hg":
        hg("clone", "--noupdate", up.url, str(clone))
    else:
        git.Repo.clone_from(up.url, clone)
    marker.write_text("")
    sources.fetch(SourceCfg("pkg", vcs, str(clone), None, None), ws)
    assert marker.exists()  # related: pulled into the same tree


def test_hg_pull_after_a_killed_pull_recovers_its_transaction(tmp_path: Path,
                                                              hg_upstream: HgUpstream) -> None:
    """A pull SIGKILLed inside its transaction (here by a hook of hg's own, at the moment the
    changesets are in but not committed) leaves a journal; every later pull refused with
    "run 'hg recover'" (crash suite, fetch-update SIGKILL, seed 4080810188)."""
    cfg = write_config(tmp_path, f'[sources.xen]\nvcs = "hg"\nurl = "{hg_upstream.url}"\n'
                                 'rev = "tip"\n')
    assert run_doit("fetch", config=cfg).returncode == 0
    tree = tmp_path / "ws" / "src" / "xen"
    new = hg_upstream.commit("xen/common.c", "int x;\n")
    hook = tmp_path / "killhook.py"
    hook.write_text("import os, signal\n\n\ndef hook(**kwargs):\n"
                    "    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = proc.run(["hg", "-R", str(tree), "pull", "--config",
                       f"hooks.pretxnchangegroup.kill=python:{hook}:hook", hg_upstream.url],
                      capture=True, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert (tree / ".hg" / "store" / "journal").exists()
    res = run_doit("fetch", config=cfg)
    assert res.returncode == 0, res.stderr
    assert hg_parent(tree) == new == state(tmp_path, "xen")["resolved"]
    assert not (tree / ".hg" / "store" / "journal").exists()
