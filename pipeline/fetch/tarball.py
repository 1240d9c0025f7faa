"""Release tarballs: downloaded, read once as a stream (no member may leave the tree) into a
one-commit local git repository, so that later stages treat them as any git tree.

The import is one pass over the archive, as ``tar -x`` is: each member is written into the
tree and, in the same pass, hashed and stored into one git pack (``pack.py``: no loose
objects); then git's index is written from the stat data of the files just written, so no
second pass reads or hashes 80k files. Compare ``bench/tarball.py``.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from pipeline import proc
from pipeline.errors import SourceError
from pipeline.fetch import pack
from pipeline.fetch.git import Git, git

# The one author, committer and date of every import: the same tarball, the same revision.
IDENTITY = b"xenpipe <xenpipe@localhost> 0 +0000"
EXECUTABLE, REGULAR, SYMLINK = b"100755", b"100644", b"120000"


class Tarball(Git):
    """A release tarball, unpacked safely and committed once into a local git repository.

    The commit has a fixed author and date, so the same tarball always resolves to the same
    revision; it has nothing upstream to pull from.
    """

    name = "tarball"
    mirrored = False  # nothing upstream to share
    replaced_on_new_url = True
    history = False
    SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")

    def clone(self, url: str, dest: Path, log: Path) -> None:
        if not url.endswith(self.SUFFIXES):
            raise SourceError(f"{proc.redact(url)}: not a tarball (expected one of "
                              f"{', '.join(self.SUFFIXES)})")
        local = self._obtain(url, dest.parent)
        try:
            self.unpack(local, dest, f"Unpacked {os.path.basename(url)}\n", log)
        finally:
            if local.parent == dest.parent and local.name.startswith(".download-"):
                local.unlink()

    def unpack(self, archive: Path, dest: Path, message: str, log: Path) -> None:
        """Import *archive* as one commit (*message*, ``IDENTITY``) of a new repository at
        *dest*, its files written and indexed; one top-level folder is stripped. The caller
        removes *dest* if this fails (``base._clone_into_place``)."""
        git(dest.parent, "init", "--quiet", str(dest), log=log)
        # later objects (patches) stay cheap to write
        git(dest, "config", "core.looseCompression", "1", log=log)
        git(dest, "config", "core.compression", "1", log=log)
        branch = git(dest, "symbolic-ref", "HEAD").stdout.strip()
        out = pack.PackWriter(dest / ".git")
        try:
            files, dirs = _read(archive, out, dest)
            strip = _top_folder(files, dirs)
            files = {p[len(strip):]: e for p, e in files.items()}
            try:
                tree = pack.write_tree(out, files)
            except ValueError as exc:
                raise SourceError(f"{archive}: {exc}") from None
            commit = out.add_bytes(pack.COMMIT, b"tree %s\nauthor %s\ncommitter %s\n\n%s" % (
                tree.hex().encode(), IDENTITY, IDENTITY, message.encode()))
            out.finish()
        except BaseException:
            out.abort()
            raise
        if strip:  # dest/<top>/* becomes dest/*, beside .git
            moved = dest.with_name(f"{dest.name}.strip")
            (dest / strip).rename(moved)
            (dest / ".git").rename(moved / ".git")
            dest.rmdir()
            moved.rename(dest)
        git(dest, "update-ref", branch, commit.hex(), log=log)
        pack.write_index(dest / ".git", dest, files)

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


def _read(archive: Path, out: pack.PackWriter, dest: Path
          ) -> tuple[dict[str, tuple[bytes, bytes]], list[str]]:
    """Write each member of *archive* under *dest* and store its bytes in *out* as it is read
    (one pass, like ``tar -x``; a hard link is its target's blob), refusing hostile members
    as they come. The tree's entries (path -> git mode, blob id) and the directories the
    archive names."""
    files: dict[str, tuple[bytes, bytes]] = {}
    dirs: list[str] = []
    made = {""}  # directories that exist under dest
    root = str(dest)

    def place(m: tarfile.TarInfo, path: str) -> str:
        """Where *path* goes: its directories made, no file or link of the archive on the
        way (a member written through a symlink would land elsewhere)."""
        parent = path.rpartition("/")[0]
        if parent not in made:
            parts = parent.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            clash = next((p for p in prefixes if p in files), None)
            if clash is not None:
                raise _Hostile(f"{archive}: refusing member {m.name!r}: {clash} is a file or "
                               f"a link, not a directory")
            os.makedirs(os.path.join(root, parent), exist_ok=True)
            made.update(prefixes)
        if path in made:
            raise _Hostile(f"{archive}: refusing member {m.name!r}: a directory of that "
                           f"name came first")
        where = os.path.join(root, path)
        if path in files:  # a later member of the same name wins, as with tar
            os.unlink(where)
        return where

    try:
        with _opened(archive) as tar:
            raw = tar.fileobj
            assert raw is not None
            for m in tar:
                _check_member(archive, m)
                path = _path(archive, m.name)
                if not path:
                    continue
                if m.isdir():
                    if path in files:
                        raise _Hostile(f"{archive}: refusing member {m.name!r}: a file of "
                                       f"that name came first")
                    place(m, f"{path}/.")  # makes path itself
                    dirs.append(path)
                elif m.islnk():
                    source = _path(archive, m.linkname)
                    if source not in files:
                        raise _Hostile(f"{archive}: refusing member {m.name!r}: hard link to "
                                       f"{m.linkname}, which is not an earlier file")
                    target = files[source]
                    os.link(os.path.join(root, source), place(m, path), follow_symlinks=False)
                    files[path] = target
                elif m.issym():
                    os.symlink(m.linkname, place(m, path))
                    files[path] = (SYMLINK, out.add_bytes(
                        pack.BLOB, m.linkname.encode("utf-8", "surrogateescape")))
                elif m.isreg() and m.sparse is None:
                    executable = bool(m.mode & 0o100)
                    fd = os.open(place(m, path), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                 | os.O_NOFOLLOW, 0o777 if executable else 0o666)
                    raw.seek(m.offset_data)
                    with open(fd, "wb", buffering=0) as f:
                        files[path] = (EXECUTABLE if executable else REGULAR,
                                       out.add(pack.BLOB, m.size, _written(_chunks(raw, m), f)))
                else:
                    raise _Hostile(f"{archive}: refusing member {m.name!r}: not a regular "
                                   f"file, directory or link")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, SourceError):
            raise
        why = " ".join(str(exc).split())  # tarfile's "could not be opened" lists each method
        raise SourceError(f"{archive}: corrupt or unreadable tarball: {why}") from None
    return files, dirs


def _written(chunks: Iterator[bytes], f: IO[bytes]) -> Iterator[bytes]:
    """*chunks*, each written to *f* on its way."""
    for chunk in chunks:
        f.write(chunk)
        yield chunk


XZ_MAGIC = b"\xfd7zXZ\x00"


@contextmanager
def _opened(archive: Path) -> Iterator[tarfile.TarFile]:
    """*archive* open for one pass from start to end. An xz tarball (Debian's linux-source,
    kernel.org's) is decompressed by ``xz`` in a process of its own, as ``tar -J`` does, so
    that decompression, most of the work, runs beside the hashing and storing here; any
    other, or without ``xz``, by tarfile in this process."""
    with open(archive, "rb") as f:
        xz = shutil.which("xz") if f.read(len(XZ_MAGIC)) == XZ_MAGIC else None
    if xz is None:
        with tarfile.open(archive) as tar:
            yield tar
        return
    with proc.reading([xz, "--decompress", "--stdout"], stdin=archive, error=SourceError,
                      what=f"{archive}: corrupt or unreadable tarball: xz") as out, \
            tarfile.open(fileobj=_Forward(out), mode="r:") as tar:
        yield tar


class _Forward(io.RawIOBase):
    """A pipe as the seekable file tarfile reads an archive from: it only ever seeks
    forward (to skip padding), which reading on does."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe, self.pos = pipe, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.pipe.read(n)
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < self.pos:
            raise OSError(f"cannot seek back to {offset} in a stream at {self.pos}")
        while self.pos < offset and self.read(min(offset - self.pos, pack.CHUNK)):
            pass
        return self.pos


def _chunks(raw: IO[bytes], m: tarfile.TarInfo) -> Iterator[bytes]:
    """The member's bytes, a chunk at a time (a member is never held whole)."""
    left = m.size
    while left:
        chunk = raw.read(min(left, pack.CHUNK))
        if not chunk:
            raise EOFError(f"member {m.name!r} is truncated")
        left -= len(chunk)
        yield chunk


def _path(archive: Path, name: str) -> str:
    """A member's name as a path inside the tree ("" for the archive's root); plain string
    work, as PurePosixPath would normalise it (this runs for each of 80k members)."""
    parts = [p for p in name.split("/") if p and p != "."]
    if ".git" in parts:
        raise _Hostile(f"{archive}: refusing member {name!r}: a path into git's own directory")
    return "/".join(parts)


def _top_folder(tree: dict[str, tuple[bytes, bytes]], dirs: list[str]) -> str:
    """``top/`` when everything is under the one folder ``top`` (the usual ``pkg-1.0/``),
    which the import strips; else ""."""
    tops = {p.split("/", 1)[0] for p in (*tree, *dirs)}
    if len(tops) != 1:
        return ""
    top = tops.pop()
    return "" if top in tree else f"{top}/"


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
