"""Release tarballs: downloaded, unpacked safely (no member may leave the tree) and committed
once into a local git repository, so that later stages treat them as any git tree."""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from pathlib import Path, PurePosixPath

from pipeline import proc
from pipeline.errors import SourceError
from pipeline.fetch.git import Git, git


class Tarball(Git):
    """A release tarball, unpacked safely and committed once into a local git repository.

    The commit has a fixed author and date, so the same tarball always resolves to the same
    revision; it has nothing upstream to pull from.
    """

    name = "tarball"
    mirrored = False  # nothing upstream to share
    replaced_on_new_url = True
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
        git(dest, "init", "--quiet", log=log)
        # a kernel tarball is ~80k files: favour speed
        git(dest, "config", "core.looseCompression", "1", log=log)
        git(dest, "config", "core.compression", "1", log=log)
        git(dest, "add", "--all", "--force", ".", env=env, log=log)
        git(dest, "commit", "--quiet", "--allow-empty", "--no-verify", "-m",
            f"Unpacked {os.path.basename(url)}", env=env, log=log)
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

    def log_between(self, dest: Path, old: str, new: str, limit: int) -> list[str]:
        """A tarball's one commit has no history to list."""
        return []


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
