"""Fetch source trees: one generic algorithm, each VCS only supplies the primitive steps.

Every source ends up as a VCS working copy under ``<workspace>/src/<name>`` checked out at a
resolved, full revision (a tarball becomes a one-commit git repository), so that later stages
can reset, diff and fingerprint any source the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING

from pipeline import digest, proc
from pipeline.config import Config, SourceCfg
from pipeline.errors import SourceError
from pipeline.workspace import Key, Workspace

if TYPE_CHECKING:
    import git

HEX40 = re.compile(r"[0-9a-f]{40}")


def _git() -> ModuleType:
    """GitPython, imported on first use: the no-op path (`doit fetch` up to date) never pays
    for it."""
    import git

    return git


_GIT_NOISE = ("Cloning into", "Please make sure you have the correct access rights",
              "and the repository exists.")


def _git_error(exc: git.GitCommandError) -> str:
    """What git said went wrong, on one line: from its first ``fatal:``/``error:``/``ssh:``
    line on (GitPython quotes stderr: ``stderr: 'Cloning into ...``, a last line ``'``)."""
    lines = [ln.strip().removeprefix("stderr: ").strip("'").strip()
             for ln in str(exc.stderr or exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(_GIT_NOISE)]
    first = next((i for i, ln in enumerate(lines) if re.search(r"\b(fatal|error|ssh):", ln)),
                 max(len(lines) - 1, 0))
    return proc.redact("; ".join(lines[first:]) or str(exc))


class Vcs:
    """The primitive steps of a version control system; the algorithm is in ``fetch``."""

    name = ""
    marker = ""  # the metadata directory that makes a tree one of ours

    def clone(self, url: str, dest: Path, log: Path) -> None:
        raise NotImplementedError

    def pull(self, dest: Path, url: str, log: Path) -> None:
        raise NotImplementedError

    def identify(self, dest: Path, rev: str | None) -> tuple[str | None, bool]:
        """The full revision *rev* names in the local repository (None: unknown), and whether
        it is pinned: a full hash or a tag, which cannot move upstream, so no pull is needed."""
        raise NotImplementedError

    def floating(self, rev: str | None) -> bool:
        """Whether *rev* moves by its very name (hg's ``tip``): then ``identify`` before a pull
        could only say "not pinned", and is not asked."""
        return False

    def checkout(self, dest: Path, resolved: str, log: Path) -> None:
        raise NotImplementedError

    def current(self, dest: Path) -> str | None:
        """The checked-out revision, read without running anything (it is on the no-op path)."""
        raise NotImplementedError

    def changes(self, dest: Path) -> list[str]:
        """Tracked files with uncommitted changes (modified, added, removed, missing)."""
        raise NotImplementedError

    def cat(self, dest: Path, resolved: str, paths: Iterable[str]) -> dict[str, bytes | None]:
        """Each file's exact bytes at *resolved* (None when it does not exist there)."""
        raise NotImplementedError


class Hg(Vcs):
    """Mercurial through the real ``hg`` CLI (HGPLAIN=1 comes from proc.BASE_ENV)."""

    name = "hg"
    marker = ".hg"

    def _hg(self, dest: Path | None, *args: str, log: Path | None = None, what: str | None = None,
            check: bool = True) -> proc.Result:
        argv = ["hg", *(["-R", str(dest)] if dest else []), *args]
        return proc.run(argv, capture=True, log=log, check=check, error=SourceError, what=what)

    def clone(self, url: str, dest: Path, log: Path) -> None:
        self._hg(None, "clone", "--noupdate", "--", url, str(dest), log=log,
                 what=f"hg clone {proc.redact(url)}")

    def pull(self, dest: Path, url: str, log: Path) -> None:
        self._hg(dest, "pull", "--", url, log=log, what=f"hg pull {proc.redact(url)}")

    def identify(self, dest: Path, rev: str | None) -> tuple[str | None, bool]:
        rev = rev or "tip"
        res = self._hg(dest, "log", "-r", rev, "--template", "{node}\n{join(tags, '\n')}\n",
                       check=False)
        node, *tags = res.stdout.splitlines() or [""]
        if res.returncode != 0 or not HEX40.fullmatch(node):
            return None, False
        return node, bool(HEX40.fullmatch(rev)) or (rev in tags and rev != "tip")

    def floating(self, rev: str | None) -> bool:
        return rev in (None, "tip")  # identify never calls tip pinned

    def checkout(self, dest: Path, resolved: str, log: Path) -> None:
        self._hg(dest, "update", "--clean", "--rev", resolved, log=log)

    def current(self, dest: Path) -> str | None:
        try:
            with open(dest / ".hg" / "dirstate", "rb") as f:
                node = f.read(20).hex()
        except OSError:
            return None
        return None if node == "0" * 40 else node

    def changes(self, dest: Path) -> list[str]:
        res = self._hg(dest, "status", "--modified", "--added", "--removed", "--deleted",
                       "--no-status")
        return res.stdout.splitlines()

    def cat(self, dest: Path, resolved: str, paths: Iterable[str]) -> dict[str, bytes | None]:
        """One ``hg cat -o`` per 200 files, through files so that bytes stay bytes (each hg
        call costs a Python start-up)."""
        paths = sorted(set(paths))
        out = Path(tempfile.mkdtemp(prefix=".cat-", dir=dest.parent))
        try:
            for i in range(0, len(paths), 200):
                self._hg(dest, "cat", "-r", resolved, "-o", f"{out}/%p", "--",
                         *(f"path:{p}" for p in paths[i:i + 200]), check=False)
            return {p: (out / p).read_bytes() if (out / p).is_file() and
                    not (out / p).is_symlink() else None for p in paths}
        finally:
            shutil.rmtree(out, ignore_errors=True)


class Git(Vcs):
    """Git through GitPython."""

    name = "git"
    marker = ".git"

    def clone(self, url: str, dest: Path, log: Path) -> None:
        try:
            _git().Repo.clone_from(url, dest, no_checkout=True, env=proc.BASE_ENV)
        except _git().GitCommandError as exc:
            raise SourceError(f"git clone {proc.redact(url)}: {_git_error(exc)}") from None

    def pull(self, dest: Path, url: str, log: Path) -> None:
        repo = _git().Repo(dest)
        try:
            repo.git.fetch("--tags", "--force", "--prune", url,
                           "+refs/heads/*:refs/remotes/origin/*", env=proc.BASE_ENV)
        except _git().GitCommandError as exc:
            raise SourceError(f"git fetch {proc.redact(url)}: {_git_error(exc)}") from None
        repo.git.remote("set-url", "origin", url)

    def identify(self, dest: Path, rev: str | None) -> tuple[str | None, bool]:
        repo = _git().Repo(dest)
        rev = rev or "HEAD"
        pinned = [f"refs/tags/{rev}"]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            pinned.insert(0, rev)
        floating = [f"refs/remotes/origin/{rev}", rev]
        if rev == "HEAD":
            floating.insert(0, "refs/remotes/origin/HEAD")
        for cand in pinned + floating:
            try:
                sha = repo.git.rev_parse("--verify", "--quiet", f"{cand}^{{commit}}")
            except _git().GitCommandError:
                continue
            return sha, cand in pinned
        return None, False

    def checkout(self, dest: Path, resolved: str, log: Path) -> None:
        _git().Repo(dest).git.checkout("--force", "--detach", resolved)

    def current(self, dest: Path) -> str | None:
        try:
            head = (dest / ".git" / "HEAD").read_text().strip()
        except OSError:
            return None
        return head if HEX40.fullmatch(head) else None

    def changes(self, dest: Path) -> list[str]:
        out = _git().Repo(dest).git.status("--porcelain", "--untracked-files=no", "-z")
        return [entry[3:] for entry in out.split("\0") if len(entry) > 3]

    def cat(self, dest: Path, resolved: str, paths: Iterable[str]) -> dict[str, bytes | None]:
        tree = _git().Repo(dest).commit(resolved).tree
        result: dict[str, bytes | None] = {}
        for path in paths:
            try:
                blob = tree / path
            except KeyError:
                result[path] = None
                continue
            result[path] = blob.data_stream.read() if blob.type == "blob" and \
                blob.mode != 0o120000 else None
        return result


class Tarball(Git):
    """A release tarball, unpacked safely and committed once into a local git repository.

    The commit has a fixed author and date, so the same tarball always resolves to the same
    revision; it has nothing upstream to pull from.
    """

    name = "tarball"
    SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")

    def clone(self, url: str, dest: Path, log: Path) -> None:
        if not url.endswith(self.SUFFIXES):
            raise SourceError(f"{proc.redact(url)}: not a tarball (expected one of "
                              f"{', '.join(self.SUFFIXES)})")
        local = self._obtain(url, dest.parent)
        unpack(local, dest)
        who = {"NAME": "xenpipe", "EMAIL": "xenpipe@localhost", "DATE": "1970-01-01T00:00:00Z"}
        env = {**proc.BASE_ENV, **{f"GIT_{role}_{k}": v for role in ("AUTHOR", "COMMITTER")
                                   for k, v in who.items()}}
        repo = _git().Repo.init(dest)
        with repo.config_writer() as cw:  # a kernel tarball is ~80k files: favour speed
            cw.set_value("core", "looseCompression", "1")
            cw.set_value("core", "compression", "1")
        repo.git.add("--all", "--force", ".", env=env)
        repo.git.commit("--quiet", "--allow-empty", "--no-verify", "-m",
                        f"Unpacked {os.path.basename(url)}", env=env)
        if local.parent == dest.parent and local.name.startswith(".download-"):
            local.unlink()

    def _obtain(self, url: str, tmpdir: Path) -> Path:
        if "://" not in url:
            path = Path(url)
            if not path.is_file():
                raise SourceError(f"{url}: no such file")
            return path
        if not url.startswith(("http://", "https://", "file://")):
            raise SourceError(f"{proc.redact(url)}: only http(s) and file URLs are supported")
        target = tmpdir / f".download-{os.getpid()}-{os.path.basename(url)}"
        # urllib takes no user:password@ in a URL: it goes into an Authorization header that
        # a redirect does not carry to another server
        parts = urllib.parse.urlsplit(url)
        user, at, host = parts.netloc.rpartition("@")
        req = urllib.request.Request(parts._replace(netloc=host).geturl())
        if at:
            who = ":".join(urllib.parse.unquote(p) for p in user.split(":", 1)).encode()
            req.add_unredirected_header("Authorization", f"Basic {b64encode(who).decode()}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp, open(target, "wb") as f:
                shutil.copyfileobj(resp, f, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            target.unlink(missing_ok=True)
            reason = proc.redact(str(getattr(exc, "reason", exc)))
            raise SourceError(f"cannot download {proc.redact(url)}: {reason}") from None
        return target

    def pull(self, dest: Path, url: str, log: Path) -> None:
        """A tarball never moves; a new URL is a new tree (see ``fetch``)."""

    def identify(self, dest: Path, rev: str | None) -> tuple[str | None, bool]:
        return super().identify(dest, "HEAD")[0], True



def unpack(archive: Path, dest: Path) -> None:
    """Unpack *archive* into *dest*, refusing hostile members; strip one top-level folder."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(archive, m)
            dest.mkdir(parents=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, SourceError):
            raise
        why = " ".join(str(exc).split())  # tarfile's "could not be opened" lists each method
        raise SourceError(f"{archive}: corrupt or unreadable tarball: {why}") from None
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        top = entries[0]
        tmp = dest.with_name(dest.name + ".strip")
        top.rename(tmp)
        dest.rmdir()
        tmp.rename(dest)


class _Hostile(SourceError, ValueError):
    pass


def _check_member(archive: Path, m: tarfile.TarInfo) -> None:
    name = PurePosixPath(m.name)
    bad = None
    if name.is_absolute():
        bad = "absolute path"
    elif ".." in name.parts:
        bad = "path leaves the tree"
    elif m.issym() or m.islnk():
        target = PurePosixPath(m.linkname)
        base = name.parent if m.issym() else PurePosixPath()
        depth = 0
        for part in (base / target).parts if not target.is_absolute() else ("/",):
            if part == "/":
                depth = -1
                break
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                break
        if depth < 0:
            bad = f"link to {m.linkname} leaves the tree"
    elif m.isdev() or m.isfifo():
        bad = "device or fifo"
    if bad:
        raise _Hostile(f"{archive}: refusing member {m.name!r}: {bad}")


VCS: dict[str, Vcs] = {"hg": Hg(), "git": Git(), "tarball": Tarball()}


@dataclass(frozen=True)
class Fetched:
    name: str
    vcs: str
    url: str
    rev: str | None
    resolved: str
    pinned: bool  # the rev cannot move upstream: the next fetch need not ask

    def record(self) -> dict[str, str | bool | None]:
        return {"vcs": self.vcs, "url": proc.redact(self.url), "rev": self.rev,
                "resolved": self.resolved, "pinned": self.pinned}


def mirror_path(mirror: Path, src: SourceCfg) -> Path:
    """One shared download per repository URL, whichever workspace asks for it (named after
    the URL with its password hidden: a directory name shows in logs and to every user)."""
    url = proc.redact(src.url)
    tag = digest.of_text(url)[:16]
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", url.rstrip("/").rsplit("/", 1)[-1])[:40]
    return mirror / f"{base}-{tag}"


def _upstream(src: SourceCfg, mirror: Path | None, log: Path) -> str:
    """The URL to clone and pull from: the shared mirror (brought up to date) or upstream."""
    if mirror is None or src.vcs == "tarball":
        return src.url
    vcs = VCS[src.vcs]
    mp = mirror_path(mirror, src)
    if not (mp / vcs.marker).is_dir():
        _clone_into_place(vcs, src.url, mp, log)
    else:
        vcs.pull(mp, src.url, log)
    return str(mp)


def _clone_into_place(vcs: Vcs, url: str, dest: Path, log: Path) -> None:
    """Clone into a temporary sibling, then rename: a failed clone leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.clone-"))
    try:
        tmp.rmdir()
        vcs.clone(url, tmp, log)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def owned_changes(ws: Workspace, name: str) -> dict[str, str | None]:
    """Files the patch stage wrote into this tree, with the sha256 it wrote (None: deleted)."""
    files = ws.state(Key.patch(name)).get("files", {})
    return files if isinstance(files, dict) else {}


def local_edits(vcs: Vcs, dest: Path, owned: dict[str, str | None]) -> list[str]:
    """Uncommitted changes that xenpipe did not make itself (those are the user's)."""
    edits = []
    for path in vcs.changes(dest):
        if path in owned:
            f = dest / path
            now = digest.of_file(f) if f.is_file() else None
            if now == owned[path]:
                continue
        edits.append(path)
    return edits


def _refuse_edits(src: SourceCfg, dest: Path, edits: Iterable[str]) -> None:
    edits = list(edits)
    if not edits:
        return
    shown = ", ".join(edits[:3]) + (f" and {len(edits) - 3} more" if len(edits) > 3 else "")
    diff = {"hg": "hg diff", "git": "git diff", "tarball": "git diff"}[src.vcs]
    raise SourceError(
        f"src/{src.name} has local changes ({shown}); to keep them: `{diff} > "
        f"patches/{src.name}/local.patch` in {dest} and add it to the series; to drop them: "
        f"rerun with `doit fetch force=1`"
    )


def fetch(src: SourceCfg, ws: Workspace, mirror: Path | None = None,
          force: bool = False) -> Fetched:
    """Bring ``src/<name>`` to the revision *src* pins; network only when it must."""
    vcs = VCS[src.vcs]
    dest = ws.source_dir(src.name)
    log = ws.log(f"fetch-{src.name}")
    prev = ws.state(Key.fetch(src.name))
    ours = (dest / vcs.marker).is_dir()
    if dest.exists() and not ours:
        raise SourceError(f"{dest} exists but is not a {src.vcs} tree from xenpipe; move it away")

    if ours and src.vcs == "tarball" and prev.get("url") not in (None, proc.redact(src.url)):
        if not force:
            _refuse_edits(src, dest, local_edits(vcs, dest, owned_changes(ws, src.name)))
        fresh = dest.with_name(f".{dest.name}.new")
        shutil.rmtree(fresh, ignore_errors=True)
        _clone_into_place(vcs, src.url, fresh, log)
        old = dest.with_name(f".{dest.name}.old")
        dest.rename(old)
        fresh.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
        ours = True
        prev = {}

    if not ours:
        _clone_into_place(vcs, _upstream(src, mirror, log), dest, log)
        resolved, pinned = vcs.identify(dest, src.rev)
        if resolved is None:
            shutil.rmtree(dest, ignore_errors=True)
            raise _unknown_rev(src)
        vcs.checkout(dest, resolved, log)
    else:
        resolved, pinned = (None, False) if vcs.floating(src.rev) else \
            vcs.identify(dest, src.rev)
        if not pinned:  # a branch, tip, or a rev not here yet: ask upstream
            vcs.pull(dest, _upstream(src, mirror, log), log)
            resolved, pinned = vcs.identify(dest, src.rev)
            if resolved is None:
                raise _unknown_rev(src)
        if vcs.current(dest) != resolved:
            if not force:
                _refuse_edits(src, dest, local_edits(vcs, dest, owned_changes(ws, src.name)))
            vcs.checkout(dest, resolved, log)

    done = Fetched(src.name, src.vcs, src.url, src.rev, resolved, pinned)
    ws.save_state(Key.fetch(src.name), done.record())
    return done


def _unknown_rev(src: SourceCfg) -> SourceError:
    return SourceError(
        f"[sources.{src.name}] rev: {src.rev!r} is not a revision, tag or branch of "
        f"{proc.redact(src.url)}"
    )


def fingerprint(src: SourceCfg) -> dict[str, str | None]:
    return {"vcs": src.vcs, "url": src.url, "rev": src.rev}


def resolved(cfg: Config, ws: Workspace, name: str) -> str | None:
    """The revision the last successful fetch recorded for *name*."""
    return ws.state(Key.fetch(name)).get("resolved")


def in_place(src: SourceCfg, ws: Workspace) -> bool:
    """Cheap (no subprocess, no network): is the tree there, pinned, at what fetch recorded?"""
    rec = ws.state(Key.fetch(src.name))
    vcs = VCS[src.vcs]
    dest = ws.source_dir(src.name)
    return bool(rec.get("resolved")) and vcs.current(dest) == rec["resolved"] and \
        rec.get("url") == proc.redact(src.url) and rec.get("rev") == src.rev and \
        rec.get("pinned") is True
