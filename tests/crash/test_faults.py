"""Faults, injected for real: a full disk (a small tmpfs the test mounts: it runs as root), an
hg server killed in the middle of a clone or pull, a git remote removed in the middle of a
fetch, a read-only install root (a read-only bind mount), a bootloader file replaced by a
directory, a corrupt ``.doit.db`` and a corrupt state record.

Each must end in one ``xenpipe: error:`` line that says what to do, lose nothing (the user's
files, the trees and records of earlier stages), and once the fault is gone a plain rerun
ends byte-identical to an uninterrupted run (harness.snapshot).

Holding a transfer in its middle uses the servers' own hooks: hg's ``preoutgoing`` hook in
the served repository, git's ``uploadpack.packObjectsHook`` (given in the command scope,
GIT_CONFIG_COUNT, where git honours it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.tools import free_port, need
from ..support.upstreams import HgServer
from . import harness
from .harness import Site
from .scenarios import fetch_site, kbuild_site, nightly_site, prepared, unlink_served

# each fault costs a few full doit runs (about 10 to 30 s here): slow, but for the corrupt
# dependency database (the fast suite's guard on doit's own record)


def _root_or_skip() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the fault tests mount file systems: CI runs them as root")
        pytest.skip("mounting a tmpfs needs root")


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of *size* mounted at *where* (made if missing) for the block."""
    _root_or_skip()
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(fs: Path, leave: int) -> Path:
    """A file filling *fs* up to *leave* bytes free."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    filler = fs / "filler"
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - leave))
    return filler


def one_error(res: subprocess.CompletedProcess[str], *words: str) -> str:
    """The run failed with exactly one ``xenpipe: error:`` line (its last), no traceback,
    naming each of *words*; that line."""
    text = res.stdout + res.stderr
    assert res.returncode == 1, text
    assert "Traceback" not in text, text
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("xenpipe: error:")]
    assert len(errors) == 1 and res.stderr.strip().splitlines()[-1] == errors[0], res.stderr
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def doit(site: Site, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    proc = harness.start(Site(site.config, site.ws, site.root, {**site.env, **(env or {})}),
                         list(args), "fault")
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


def converges(site: Site, task: str, reference: dict[str, object]) -> None:
    harness.run(site, [task])
    diff = harness.differences(reference, harness.snapshot(site.ws, site.root))
    assert not diff, "\n".join(diff)


# -------------------------------------------------------------------------- disk full
@pytest.mark.slow
def test_disk_full_in_fetch(tmp_path: Path, hg_server: HgServer) -> None:
    """The workspace on a tmpfs too small for the trees: one line saying the disk is full
    and to free space; no half tree in src/, no record; with room, the rerun converges."""
    need("hg")
    mnt = tmp_path / "site"
    with tmpfs(mnt, "64m"):
        site = fetch_site(mnt, hg_server)
        try:
            with harness.saved(site, tmp_path / "before") as restore:
                harness.run(site, ["fetch"])
                reference = harness.snapshot(site.ws, site.root)
                restore()
                filler = fill(mnt, 96 * 1024)
                err = one_error(doit(site, "fetch"), "No space left on device", "free space")
                assert str(mnt) in err or "src" in err, err
                src = site.ws / "src"
                left = sorted(p.name for p in src.iterdir()) if src.exists() else []
                assert all(not n.startswith(".") for n in left), left  # no half clone
                for name in left:  # whatever is in src/ is a finished, recorded tree
                    assert (site.ws / "state" / f"fetch-{name}.json").is_file(), name
                filler.unlink()
                converges(site, "fetch", reference)
        finally:
            unlink_served(site, hg_server)


@pytest.mark.slow
def test_disk_full_in_build(tmp_path: Path) -> None:
    """make runs out of space: one line that says so and to free space; the fetched,
    patched and configured trees are kept (the rerun after freeing space converges)."""
    mnt = tmp_path / "site"
    with tmpfs(mnt, "64m"):
        site = prepared(kbuild_site(mnt), "fetch", "patch", "config")
        with harness.saved(site, tmp_path / "before") as restore:
            harness.run(site, ["build"])
            reference = harness.snapshot(site.ws, site.root)
            restore()
            filler = fill(mnt, 4 * 1024)
            one_error(doit(site, "build"), "No space left on device", "free space")
            filler.unlink()
            converges(site, "build", reference)


@pytest.mark.slow
def test_disk_full_in_install(tmp_path: Path) -> None:
    """The install root's file system fills up: one line, the user's grub.conf and guest
    config are their old bytes, and the rerun with room converges."""
    site = prepared(kbuild_site(tmp_path), "build")
    root_fs = tmp_path / "rootfs"
    with tmpfs(root_fs, "16m"):
        shutil.copytree(site.root, root_fs / "root", symlinks=True)
        shutil.rmtree(site.root)
        site.root.symlink_to(root_fs / "root")
        old = harness.files(site.root, site.watched)
        with harness.saved(site, tmp_path / "before") as restore:
            harness.run(site, ["install"])
            reference = harness.snapshot(site.ws, site.root)
            shutil.rmtree(root_fs / "root")
            shutil.copytree(tmp_path / "before" / "root", root_fs / "root", symlinks=True)
            harness.copy_tree(tmp_path / "before" / "ws", site.ws)
            filler = fill(root_fs, 8 * 1024)
            one_error(doit(site, "install"), "No space left on device", "free space")
            assert harness.files(site.root, site.watched) == old
            filler.unlink()
            converges(site, "install", reference)
            del restore


# ------------------------------------------------------------------ servers go away
HOLD_HOOK = "while [ -e {hold} ]; do sleep 0.05; done"


@contextlib.contextmanager
def own_hg_server(root: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``hg serve`` of the repository *root* on 127.0.0.1:*port* (its own, so the
    test may kill it)."""
    server = subprocess.Popen(["hg", "serve", "-R", str(root), "-a", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "hg serve"
            time.sleep(0.05)
    try:
        yield server
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def wait_file(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def trees(site: Site) -> dict[str, object]:
    """What a failed fetch must leave as it was: src/ and the records of state/ (an empty
    or absent directory alike: neither holds anything a next run could take for a result)."""
    snap = harness.snapshot(site.ws / "src", site.ws / "state")
    return {k: v for k, v in snap.items() if v != "absent"}


@pytest.mark.slow
@pytest.mark.parametrize("when", ["clone", "pull"])
def test_hg_server_killed_mid_transfer(tmp_path: Path, hg_server: HgServer, when: str) -> None:
    """The hg server dies while it sends changesets (held in its preoutgoing hook, then
    killed): one line naming the URL and saying to check the server and rerun; src/ keeps
    what it had (nothing, or the tree at the old revision); with the server back the rerun
    converges."""
    need("hg")
    site = fetch_site(tmp_path / "s", hg_server)
    unlink_served(site, hg_server)
    repo = tmp_path / "s" / "up" / "xen.hg"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    site.config.write_text(site.config.read_text().replace(
        next(ln for ln in site.config.read_text().splitlines() if "crash-" in ln),
        f'url = "{url}"'))
    hold, held = tmp_path / "hold", tmp_path / "held"
    with own_hg_server(repo, port):
        if when == "pull":
            harness.run(site, ["fetch"])
            from ..support.upstreams import HgUpstream
            HgUpstream(repo, url).commit("xen/new.c", "int new;\n" * 500)
        before = trees(site)
        with harness.saved(site, tmp_path / "before") as restore:
            harness.run(site, ["fetch"])
            reference = harness.snapshot(site.ws, site.root)
            restore()
    (repo / ".hg" / "hgrc").write_text(
        f"[hooks]\npreoutgoing.hold = touch {held}; {HOLD_HOOK.format(hold=hold)}\n")
    hold.touch()
    with own_hg_server(repo, port) as server:
        proc = harness.start(site, ["fetch"], "fault")
        wait_file(held)
        server.kill()
        server.wait()
        out, err = proc.communicate(timeout=300)
    hold.unlink()
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())
    one_error(res, url, "again")
    assert not harness.differences(before, trees(site))  # no half clone, the tree as it was
    (repo / ".hg" / "hgrc").unlink()
    with own_hg_server(repo, port):
        converges(site, "fetch", reference)


@pytest.mark.slow
def test_git_remote_removed_mid_fetch(tmp_path: Path, hg_server: HgServer) -> None:
    """The git remote's directory disappears while git packs its objects (held in
    uploadpack.packObjectsHook): one line naming the remote and what to do; no half clone
    in src/; with the remote back the rerun converges."""
    site = fetch_site(tmp_path / "s", hg_server)
    unlink_served(site, hg_server)
    text = site.config.read_text()
    site.config.write_text(text[:text.index("[sources.xen]")] + text[text.index(
        "[sources.linux]"):])
    remote = tmp_path / "s" / "up" / "linux.git"
    # file:// as a remote host is reached: through upload-pack (a plain path is copied)
    site.config.write_text(site.config.read_text().replace(f'url = "{remote}"',
                                                           f'url = "file://{remote}"'))
    with harness.saved(site, tmp_path / "before") as restore:
        harness.run(site, ["fetch"])
        reference = harness.snapshot(site.ws, site.root)
        restore()
    hold, held = tmp_path / "hold", tmp_path / "held"
    hook = tmp_path / "pack-hook"
    hook.write_text(f"#!/bin/sh\ntouch {held}\n{HOLD_HOOK.format(hold=hold)}\nexec \"$@\"\n")
    hook.chmod(0o755)
    hold.touch()
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(f"[uploadpack]\n\tpackObjectsHook = {hook}\n")
    env = {"GIT_CONFIG_GLOBAL": str(gitconfig)}
    proc = harness.start(Site(site.config, site.ws, site.root, env), ["fetch"], "fault")
    kept = tmp_path / "linux.git.kept"
    shutil.copytree(remote, kept, symlinks=True)
    wait_file(held)
    shutil.rmtree(remote)  # gone for good, under the upload-pack that serves it
    hold.unlink()
    out, err = proc.communicate(timeout=300)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())
    one_error(res, str(remote), "again")
    src = site.ws / "src"
    assert not src.exists() or [p.name for p in src.iterdir()
                                if p.name.startswith(".")] == []
    kept.rename(remote)
    converges(site, "fetch", reference)


# -------------------------------------------------------------------- install root
@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """*path* as a read-only bind mount of itself for the block."""
    _root_or_skip()
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["grub-legacy", "grub2"])
def test_read_only_install_root(tmp_path: Path, loader: str) -> None:
    """One line naming the read-only file system and what to do; nothing in the root
    changed; once it is writable the install converges."""
    site = prepared(kbuild_site(tmp_path, loader), "build")
    with harness.saved(site, tmp_path / "before") as restore:
        harness.run(site, ["install"])
        reference = harness.snapshot(site.ws, site.root)
        restore()
    before = harness.snapshot(site.root)
    with read_only(site.root):
        one_error(doit(site, "install"), "Read-only file system", "read-write")
        assert not harness.differences(before, harness.snapshot(site.root))
    converges(site, "install", reference)


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["grub-legacy", "grub2"])
def test_bootloader_file_replaced_by_a_directory(tmp_path: Path, loader: str) -> None:
    """grub.cfg (grub.conf) is a directory: one line naming it, nothing written; once it is
    a file again the install converges."""
    site = prepared(kbuild_site(tmp_path, loader), "build")
    with harness.saved(site, tmp_path / "before") as restore:
        harness.run(site, ["install"])
        reference = harness.snapshot(site.ws, site.root)
        restore()
    rel = "boot/grub/grub.cfg" if loader == "grub2" else "boot/grub/grub.conf"
    cfg = site.root / rel
    kept = cfg.read_bytes()
    cfg.unlink()
    cfg.mkdir()
    (cfg / "inside").write_text("a user's file\n")
    before = harness.snapshot(site.root)
    one_error(doit(site, "install"), f"/{rel}", "directory", "move")
    assert not harness.differences(before, harness.snapshot(site.root))
    shutil.rmtree(cfg)
    cfg.write_bytes(kept)
    converges(site, "install", reference)


# ------------------------------------------------------------------------ records
def test_corrupt_doit_db_is_reported_and_rebuilt(tmp_path: Path) -> None:
    """Garbage in .doit.db (doit's sqlite3 dependency database): said on one warning line
    (the file kept aside for a bug report), never trusted: every stage checks its outputs
    again; the build ends as an uninterrupted one."""
    site = prepared(kbuild_site(tmp_path), "build")
    reference = harness.snapshot(site.ws, site.root)
    db = site.ws / ".doit.db"
    data = bytearray(db.read_bytes())
    data[100:400] = os.urandom(300)
    db.write_bytes(bytes(data))
    res = doit(site, "build")
    assert res.returncode == 0 and "Traceback" not in res.stdout + res.stderr, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("xenpipe: warning:")]
    assert len(warned) == 1 and ".doit.db" in warned[0] and "corrupt" in warned[0], res.stderr
    aside = list(site.ws.glob(".doit.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == bytes(data)
    aside[0].unlink()
    diff = harness.differences(reference, harness.snapshot(site.ws, site.root))
    assert not diff, "\n".join(diff)


@pytest.mark.slow
@pytest.mark.parametrize("record", ["patch-xen", "fetch-linux", "config", "build-kernel"])
def test_corrupt_state_record_is_reported_and_rebuilt(tmp_path: Path, record: str) -> None:
    """A state record that does not parse: one warning line naming it, the stage that
    writes it runs again (never a stale or missing record taken as the truth: a corrupt
    patch record made the patched files look like the user's edits), and the workspace ends
    as after an uninterrupted build."""
    site = prepared(kbuild_site(tmp_path), "build")
    reference = harness.snapshot(site.ws, site.root)
    path = site.ws / "state" / f"{record}.json"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    res = doit(site, "build")
    assert res.returncode == 0 and "Traceback" not in res.stdout + res.stderr, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("xenpipe: warning:")]
    assert len(warned) == 1 and f"state/{record}.json" in warned[0], res.stderr
    for aside in site.ws.glob("state/*.corrupt-*"):
        aside.unlink()
    diff = harness.differences(reference, harness.snapshot(site.ws, site.root))
    assert not diff, "\n".join(diff)


@pytest.mark.slow
def test_corrupt_nightly_record_is_reported_and_rebuilt(tmp_path: Path) -> None:
    """The last good nightly's record cut in half: one warning line naming it, then rebuilt
    from the run reports/last-good points at (the report still names that run as the last
    good one; triage and pruning go by it); the nightly passes and records itself as the
    last good run."""
    for tool in ("make", "gcc", "git"):
        need(tool)
    site = nightly_site(tmp_path)
    path = site.ws / "state" / "nightly-last-good.json"
    good = json.loads(path.read_bytes())
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    res = doit(site, "nightly")
    assert res.returncode == 0 and "Traceback" not in res.stdout + res.stderr, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("xenpipe: warning:")]
    assert len(warned) == 1 and "state/nightly-last-good.json" in warned[0], res.stderr
    rep = json.loads((site.ws / "reports" / "report.json").read_bytes())
    assert rep["variants"][0]["last_good"] == good["run"]
    new = json.loads(path.read_bytes())
    assert new["run"] == rep["run"] != good["run"]
    assert site.rerun is not None and not site.rerun(site)
