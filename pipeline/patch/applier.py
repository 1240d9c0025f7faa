"""Applying a series, all or nothing: GNU ``patch`` on a scratch copy materialised from the
VCS at the fetched revision, then only the files whose content changes are written; a failure
is explained by the hunk that did not apply (or as a patch already merged upstream)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline import digest, fetch, proc
from pipeline.config import SourceCfg, display
from pipeline.errors import PatchError, PatchMergedError
from pipeline.files import atomic_write
from pipeline.patch.diff import Patch, load, series_digest
from pipeline.patch.series import SERIES, read_series
from pipeline.workspace import Key, Workspace

SHORT = 12  # characters of a revision in messages
_MISSING = object()


def _sha_or_none(data: bytes | None) -> str | None:
    return None if data is None else digest.of_bytes(data)



# ---------------------------------------------------------------------------- pristine
def pristine(src: SourceCfg, tree: Path, rev: str,
             paths: Iterable[str]) -> dict[str, bytes | None]:
    """Each path's content at *rev* (None when absent), from the VCS, never the working tree."""
    return fetch.vcs_for(src.vcs).cat(tree, rev, paths)


# ------------------------------------------------------------------------------ applying
@dataclass
class Failure:
    """What GNU patch said about the first file that did not apply."""

    target: str
    detail: str


def _gnu_patch(p: Patch, text: Path, work: Path, log: Path, *extra: str) -> proc.Result:
    argv = ["patch", f"-p{p.entry.strip}", "--batch", "--no-backup-if-mismatch", "--binary",
            "--quoting-style=literal", *extra, "-d", str(work), "-i", str(text)]
    return proc.run(argv, capture=True, check=False, log=log, error=PatchError)


def _line_endings(p: Patch, work: Path) -> bytes:
    """The patch as GNU patch should read it.

    A patch whose every line ends in CRLF was mangled on its way here: each file's part is
    turned to LF unless that file itself uses CRLF (then the CRs are real and kept). Any other
    patch is used byte for byte.
    """
    if not p.crlf:
        return p.text
    lines = p.text.splitlines(keepends=True)
    keep = [False] * len(lines)
    for s in p.sections:
        f = work / s.old if s.old else None
        crlf = f is not None and f.is_file() and b"\r\n" in f.read_bytes()[:65536]
        for k in range(s.start, s.end):
            keep[k] = crlf
    return b"".join(ln[:-2] + b"\n" if not keep[k] and ln.endswith(b"\r\n") else ln
                    for k, ln in enumerate(lines))


def _explain(p: Patch, out: str) -> Failure:
    """The first failing file and hunk of GNU patch's output, in one line."""
    current = "?"
    first: Failure | None = None
    for line in out.splitlines():
        if m := re.match(r"(?:patching|checking) file (.+)$", line):
            current = m[1]
        elif m := re.match(r"Hunk #(\d+) FAILED", line):
            if first is None:
                first = Failure(current, f"hunk {m[1]}")
        elif m := re.match(r"\d+ out of (\d+) hunks? (FAILED|ignored)", line):
            if first is not None and first.target == current and "/" not in first.detail:
                first.detail += f"/{m[1]}"
            elif first is None:
                first = Failure(current, "its changes are already there (partly merged "
                                         "upstream?)")
        elif m := re.search(r"can't find file to patch at input line (\d+)", line):
            at = int(m[1]) - 1
            sec = max((s for s in p.sections if s.start <= at), key=lambda s: s.start,
                      default=p.sections[0])
            return Failure(sec.old or sec.target, "does not exist (wrong -pN in the series?)")
        elif m := re.search(r"would (create|delete) the file (.+), which (already exists|"
                            r"does not exist)", line):
            return Failure(m[2], m[3])
        elif m := re.search(r"malformed patch at line (\d+)", line):
            return Failure(current, f"malformed patch at line {m[1]}")
        elif "Only garbage was found" in line:
            return Failure("?", "no usable diff in it")
        elif m := re.search(r"File (.+) is not a regular file", line):
            return Failure(m[1], "is not a regular file")
    if first is not None:
        return first
    return Failure(current, proc.last_line(out) or "GNU patch failed")


def _fuzz_warnings(p: Patch, out: str) -> list[str]:
    warnings, current = [], "?"
    for line in out.splitlines():
        if m := re.match(r"patching file (.+)$", line):
            current = m[1]
        elif m := re.match(r"Hunk #(\d+) succeeded at \d+ with fuzz (\d+)", line):
            warnings.append(f"xenpipe: warning: {p.shown}: {current} hunk {m[1]} applied with "
                            f"fuzz {m[2]}; check it and refresh the patch")
    return warnings


def _put(path: Path, data: bytes, mode: int) -> None:
    """Write a scratch file (no fsync: scratch content is recomputed by every run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _apply_one(p: Patch, work: Path, scratch: Path, log: Path, rejects: Path,
               source: str, rev: str, series: str) -> list[str]:
    """Apply *p* to the scratch copy; on failure raise with the hunk and keep its rejects."""
    text = scratch / "patches" / f"{p.entry.line:05d}.patch"
    text.parent.mkdir(parents=True, exist_ok=True)
    text.write_bytes(_line_endings(p, work))
    backup = scratch / "backup"
    shutil.rmtree(backup, ignore_errors=True)
    for t in p.targets():
        if (work / t).is_file():
            _copy(work / t, backup / t)
    res = _gnu_patch(p, text, work, log, "--forward")
    if res.returncode == 0:
        return _fuzz_warnings(p, res.stdout)
    failure = _explain(p, res.stdout)
    for rej in sorted(work.rglob("*.rej")):
        _copy(rej, rejects / rej.relative_to(work))
    for t in p.targets():  # back to the state before this patch, to test it in reverse
        if (backup / t).is_file():
            _copy(backup / t, work / t)
        elif (work / t).is_file():
            (work / t).unlink()
    if _gnu_patch(p, text, work, log, "-R", "--dry-run", "--force").returncode == 0:
        raise PatchMergedError(p.shown, source, rev[:SHORT], f"{series} line {p.entry.line}")
    saved = f"; rejected hunks in {display(rejects)}" if rejects.exists() else ""
    raise PatchError(f"{p.shown} does not apply to {source}@{rev[:SHORT]}: {failure.target} "
                     f"{failure.detail} ({series} line {p.entry.line}{saved})")


def _check_target(tree: Path, path: str, name: str) -> None:
    """The real file must be reached without symlinks and must not be a directory."""
    cur = tree
    for part in PurePosixPath(path).parts:
        cur = cur / part
        if cur.is_symlink():
            raise PatchError(f"src/{name}/{path}: the series touches a path through the symbolic "
                             f"link {cur.relative_to(tree)}; xenpipe only patches regular files")
    if cur.is_dir():
        raise PatchError(f"src/{name}/{path} is a directory; the series treats it as a file")


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _mode(path: Path, default: int = 0o644) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return default


def _remove(tree: Path, path: str) -> None:
    """Delete a file and the directories it leaves empty (as GNU patch does)."""
    f = tree / path
    f.unlink(missing_ok=True)
    parent = f.parent
    while parent != tree:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def apply(src: SourceCfg, ws: Workspace) -> dict[str, Any]:
    """Bring ``src/<name>`` to pristine + series; write only the files whose content changes.

    A patch already upstream leaves ``merged`` ({patch, source, rev}) in the state for
    nightly's triage; any other outcome leaves none.
    """
    try:
        return _apply(src, ws)
    except PatchError as exc:
        state = ws.state(Key.patch(src.name))
        merged = exc.record() if isinstance(exc, PatchMergedError) else None
        if merged is not None or "merged" in state:
            state.pop("merged", None)
            ws.save_state(Key.patch(src.name), {**state, **({"merged": merged} if merged else {})})
        raise


def _apply(src: SourceCfg, ws: Workspace) -> dict[str, Any]:
    name = src.name
    tree = ws.source_dir(name)
    rev = ws.state(Key.fetch(name)).get("resolved")
    vcs = fetch.vcs_for(src.vcs)
    if not rev or not (tree / vcs.marker).is_dir():
        raise PatchError(f"src/{name} has not been fetched; run `doit fetch:{name}` first")
    if vcs.current(tree) != rev:
        raise PatchError(f"src/{name} is not at the fetched revision {rev[:SHORT]}; run "
                         f"`doit fetch:{name} force=1` to check it out again")
    assert src.patches is not None
    series = display(src.patches / SERIES)
    label = f"{name}@{rev[:SHORT]}"
    patches = [load(e) for e in read_series(src)]

    old = {k: v for k, v in ws.state(Key.patch(name)).items() if k != "merged"}
    old_files: dict[str, str | None] = old.get("files", {}) or {}
    # files an interrupted run was writing: {path: [sha256 or None it may hold now]}
    pending: dict[str, list[str | None]] = old.get("pending", {}) or {}
    old_modes: dict[str, int] = old.get("modes", {}) or {}
    log = ws.log(Key.patch(name))
    rejects = ws.logs / f"{Key.patch(name)}.rej"
    shutil.rmtree(rejects, ignore_errors=True)
    scratch = ws.dir / "tmp" / Key.patch(name)
    shutil.rmtree(scratch, ignore_errors=True)
    work = scratch / "tree"
    work.mkdir(parents=True)
    try:
        universe = set(old_files) | set(pending) | set(old_modes)
        for p in patches:
            universe |= p.targets()
        for path in sorted(universe):
            _check_target(tree, path, name)
        base = pristine(src, tree, rev, universe)
        base_mode = {p: old_modes.get(p, _mode(tree / p)) for p in universe}
        for path, data in base.items():
            if data is not None:
                _put(work / path, data, base_mode[path])
        warnings: list[str] = []
        for p in patches:
            warnings += _apply_one(p, work, scratch, log, rejects, name, rev, series)

        extra = {str(f.relative_to(work)) for f in work.rglob("*") if f.is_file()} - universe
        if extra:  # created under names the headers did not predict
            for path in sorted(extra):
                _check_target(tree, path, name)
            base.update(pristine(src, tree, rev, extra))
            base_mode.update({p: _mode(tree / p) for p in extra})
            universe |= extra
        plan, files, modes, edits = [], {}, {}, []
        for path in sorted(universe):
            want = _read(work / path)
            want_mode = _mode(work / path)
            if want != base[path] or (want is not None and want_mode != base_mode[path]):
                files[path] = _sha_or_none(want)
                if base[path] is not None and want is not None and want_mode != base_mode[path]:
                    modes[path] = base_mode[path]
            cur = _read(tree / path)
            if cur == want:
                if want is not None and _mode(tree / path) != want_mode:
                    plan.append((path, want, want_mode))
                continue
            ours = {_sha_or_none(base[path]), old_files.get(path, _MISSING),
                    *pending.get(path, [])}
            if _sha_or_none(cur) not in ours:
                edits.append(path)
            plan.append((path, want, want_mode))
        if edits:
            shown = ", ".join(edits[:3]) + (f" and {len(edits) - 3} more" if len(edits) > 3
                                            else "")
            revert = vcs.revert_command
            raise PatchError(f"src/{name} has changes that are not from {series} ({shown}); "
                             f"add them to the series as a patch, or drop them with `{revert} "
                             f"<file>` in {tree}, then rerun")

        record = {"source": name, "rev": rev, "series": series,
                  "series_digest": series_digest(patches),
                  "patches": [p.record() for p in patches]}
        if plan:  # say what may be half written before writing it (see `ours` above)
            will = {k: list(v) for k, v in pending.items()}
            for path, want, _ in plan:
                will.setdefault(path, []).append(_sha_or_none(want))
            ws.save_state(Key.patch(name), {**old, "pending": will})
        for path, want, want_mode in plan:
            if want is None:
                _remove(tree, path)
            elif _read(tree / path) == want:
                os.chmod(tree / path, want_mode)
            else:
                atomic_write(tree / path, want, want_mode)
        ws.save_state(Key.patch(name), {**record, "files": files, "modes": modes})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for w in warnings:
        print(w)
    print(f"{label}: {len(patches)} patch(es) from {series}; {len(plan)} file(s) written, "
          f"{len(files)} differ from {rev[:SHORT]}")
    return record
