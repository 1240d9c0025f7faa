"""The Vcs interface, the registry of its implementations, and the one fetch algorithm.

Every source ends up as a VCS working copy under ``<workspace>/src/<name>`` checked out at a
resolved, full revision, so that later stages can reset, diff and fingerprint any source the
same way. The algorithm here (clone into place, refuse to overwrite local edits, share a
mirror, record what was fetched) only calls a Vcs's primitive steps; ``hg``, ``git`` and
``tarball`` supply them, and callers outside this package ask ``vcs_for(src.vcs)`` rather
than testing the VCS's name.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline import digest, proc
from pipeline.config import Config, SourceCfg
from pipeline.errors import SourceError, XenpipeError, advice
from pipeline.files import pid_alive
from pipeline.workspace import Key, Workspace

HEX40 = re.compile(r"[0-9a-f]{40}")

class Vcs:
    """The primitive steps of a version control system; the algorithm is in ``fetch``."""

    name = ""
    marker = ""  # the metadata directory that makes a tree one of ours
    diff_command = ""  # how the user saves local changes as a patch (in messages)
    revert_command = ""  # how the user drops a local change to a file (in messages)
    mirrored = True  # clones through the shared mirror when one is configured
    replaced_on_new_url = False  # a new URL is a new tree, not a new revision of this one
    history = True  # has revisions to pin and bisect (a tarball has one commit)

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Each VCS with a name registers itself: ``vcs_for`` finds it, nobody tests names."""
        super().__init_subclass__(**kwargs)
        if cls.name:
            VCS[cls.name] = cls()

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

    def changes(self, dest: Path, error: type[XenpipeError] = SourceError) -> list[str]:
        """Tracked files with uncommitted changes (modified, added, removed, missing); a
        failure raises *error* (the caller's stage)."""
        raise NotImplementedError

    def log_between(self, dest: Path, old: str, new: str, limit: int) -> list[str]:
        """``<short> <summary>`` of at most *limit* revisions in *new* that *old* lacks
        (newest first); empty when the VCS cannot tell."""
        raise NotImplementedError

    def cat(self, dest: Path, resolved: str, paths: Iterable[str]) -> dict[str, bytes | None]:
        """Each file's exact bytes at *resolved* (None when it does not exist there)."""
        raise NotImplementedError

    def revisions_between(self, dest: Path, good: str, bad: str) -> list[str]:
        """The full revisions in *bad* that *good* lacks, oldest first (ancestors before
        descendants; *bad* last): what a bisection searches. SourceError when *good* is not
        an ancestor of *bad*."""
        raise NotImplementedError

    def describe(self, dest: Path, rev: str) -> dict[str, str]:
        """``{rev, author, date, summary}`` of one revision (date: ISO 8601)."""
        raise NotImplementedError

    def related(self, dest: Path, url: str, log: Path) -> bool:
        """Whether the repository at *url* shares history with the tree at *dest* (a mirror or
        a fork of it: a pull will do) rather than being another project (fetch afresh)."""
        raise NotImplementedError



def transfer_failed(exc: SourceError, url: str) -> SourceError:
    """A clone or pull that failed, with what to do: free space (the disk filled up), or see
    that the remote answers (not when the VCS itself is missing: that line says what to
    install); either way the tree under src/ is as it was."""
    text = str(exc)
    if advice(text) is None and not isinstance(exc.__cause__, FileNotFoundError):
        text += (f"; check that {proc.redact(url)} is reachable (server up, repository there) "
                 "and run `doit fetch` again (src/ keeps what it had)")
    return SourceError(text)


VCS: dict[str, Vcs] = {}  # name -> the one instance of its class (filled by __init_subclass__)


def vcs_for(name: str) -> Vcs:
    """The Vcs of a ``[sources.*] vcs`` value (config has validated it)."""
    return VCS[name]


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
    vcs = vcs_for(src.vcs)
    if mirror is None or not vcs.mirrored:
        return src.url
    mp = mirror_path(mirror, src)
    if not (mp / vcs.marker).is_dir():
        _clone_into_place(vcs, src.url, mp, log)
    else:
        vcs.pull(mp, src.url, log)
    return str(mp)


def _clone_into_place(vcs: Vcs, url: str, dest: Path, log: Path,
                      settle: Callable[[Path], tuple[str, bool]] | None = None
                      ) -> tuple[str, bool] | None:
    """Clone into a temporary sibling, *settle* it there (check out the pinned revision), then
    rename: a failed or interrupted clone or checkout leaves nothing behind, so only a
    finished tree ever appears at *dest* (a half-checked-out one would look like the user's
    edits to the next fetch). Returns what *settle* returned."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep(dest)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.clone-{os.getpid()}-"))
    try:
        tmp.rmdir()
        vcs.clone(url, tmp, log)
        settled = settle(tmp) if settle else None
        tmp.rename(dest)
        return settled
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_LEFT = r"\.(?P<name>.+)\.clone-(?P<pid>\d+)-.*|\.download-(?P<dpid>\d+)-.*"


def sweep(dest: Path) -> None:
    """Remove what a killed fetch left beside *dest*: its unfinished clones and downloads
    (named after the process that made them, so a fetch running now keeps its own), and the
    replaced tree a new URL's fetch had not yet removed (``.<name>.old``: never the user's,
    its edits were refused before it was moved there) or its replacement not yet moved in
    (``.<name>.new``: the next fetch clones again)."""
    for left in (".old", ".new"):
        shutil.rmtree(dest.with_name(f".{dest.name}{left}"), ignore_errors=True)
    try:
        entries = list(dest.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):  # mkdir will say what is wrong
        return
    for entry in entries:
        m = re.fullmatch(_LEFT, entry.name)
        if m is None or (m["name"] is not None and m["name"] != dest.name):
            continue
        if not pid_alive(int(m["pid"] or m["dpid"])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


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


def _refuse_edits(src: SourceCfg, dest: Path, edits: Iterable[str], why: str = "") -> None:
    """Refuse to replace or move a tree with the user's edits (*why*: what asks to)."""
    edits = list(edits)
    if not edits:
        return
    shown = ", ".join(edits[:3]) + (f" and {len(edits) - 3} more" if len(edits) > 3 else "")
    diff = vcs_for(src.vcs).diff_command
    raise SourceError(
        f"src/{src.name} has local changes ({shown}){why}; to keep them: `{diff} > "
        f"patches/{src.name}/local.patch` in {dest} and add it to the series; to drop them: "
        f"rerun with `doit fetch force=1`"
    )


def _has_commit(vcs: Vcs, dest: Path, rev: str | None) -> bool:
    """*rev* is a full hash the tree already has: whatever the URL, no network is needed (a
    tag could name another project's commit, so only a hash counts)."""
    return bool(rev and HEX40.fullmatch(rev)) and vcs.identify(dest, rev)[0] == rev


def fetch(src: SourceCfg, ws: Workspace, mirror: Path | None = None,
          force: bool = False) -> Fetched:
    """Bring ``src/<name>`` to the revision *src* pins; network only when it must."""
    vcs = vcs_for(src.vcs)
    dest = ws.source_dir(src.name)
    log = ws.log(f"fetch-{src.name}")
    prev = ws.state(Key.fetch(src.name))
    sweep(dest)
    ours = (dest / vcs.marker).is_dir()
    if dest.exists() and not ours:
        raise SourceError(f"{dest} exists but is not a {src.vcs} tree from xenpipe; move it away")

    def settle(tree: Path) -> tuple[str, bool]:
        """The pinned revision, checked out in the tree still out of place."""
        found, is_pinned = vcs.identify(tree, src.rev)
        if found is None:
            raise _unknown_rev(src)
        vcs.checkout(tree, found, log)
        return found, is_pinned

    old_url = prev.get("url")
    moved = ours and old_url not in (None, proc.redact(src.url))
    if moved and (vcs.replaced_on_new_url or not _has_commit(vcs, dest, src.rev)
                  and not vcs.related(dest, src.url, log)):
        # a new tree, not a new revision of this one: fetched afresh, never over edits
        if not force:
            why = (f" and [sources.{src.name}] url changed from {old_url} to "
                   f"{proc.redact(src.url)}" + ("" if vcs.replaced_on_new_url else
                                                ", an unrelated repository"))
            _refuse_edits(src, dest, local_edits(vcs, dest, owned_changes(ws, src.name)), why)
        fresh = dest.with_name(f".{dest.name}.new")
        shutil.rmtree(fresh, ignore_errors=True)
        url = src.url if vcs.replaced_on_new_url else _upstream(src, mirror, log)
        settled = _clone_into_place(vcs, url, fresh, log, settle)
        old = dest.with_name(f".{dest.name}.old")
        dest.rename(old)
        fresh.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
        assert settled is not None
        resolved, pinned = settled
    elif not ours:
        settled = _clone_into_place(vcs, _upstream(src, mirror, log), dest, log, settle)
        assert settled is not None
        resolved, pinned = settled
    else:
        resolved, pinned = (None, False) if vcs.floating(src.rev) else \
            vcs.identify(dest, src.rev)
        if not pinned:  # a branch, tip, or a rev not here yet: ask upstream
            vcs.pull(dest, _upstream(src, mirror, log), log)
            resolved, pinned = vcs.identify(dest, src.rev)
            if resolved is None:
                raise _unknown_rev(src)
        # a checkout this fetch recorded and did not finish (killed): the tree's changes are
        # its own (it only starts once the user's edits were refused), so it is done again
        unfinished = prev.get("checkout") is not None
        if vcs.current(dest) != resolved or unfinished:
            if not force and not unfinished:
                _refuse_edits(src, dest, local_edits(vcs, dest, owned_changes(ws, src.name)))
            ws.save_state(Key.fetch(src.name), {**prev, "checkout": resolved})
            vcs.checkout(dest, resolved, log)

    done = Fetched(src.name, src.vcs, src.url, src.rev, resolved, pinned)
    ws.save_state(Key.fetch(src.name), done.record())
    return done


def pull(src: SourceCfg, ws: Workspace, mirror: Path | None = None) -> None:
    """Bring upstream's new revisions into ``src/<name>`` (through the mirror, if any)
    without moving its checkout: a bisection asked for a revision it does not have yet."""
    log = ws.log(f"fetch-{src.name}")
    vcs_for(src.vcs).pull(ws.source_dir(src.name), _upstream(src, mirror, log), log)


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
    vcs = vcs_for(src.vcs)
    dest = ws.source_dir(src.name)
    return bool(rec.get("resolved")) and "checkout" not in rec and \
        vcs.current(dest) == rec["resolved"] and \
        rec.get("url") == proc.redact(src.url) and rec.get("rev") == src.rev and \
        rec.get("pinned") is True
