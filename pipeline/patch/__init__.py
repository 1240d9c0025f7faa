"""Apply each source's quilt series, all or nothing, rewriting only files whose content changes.

The series is applied with GNU ``patch`` to a scratch copy of the files involved, materialised
from the VCS at the fetched revision (never from the working tree, which may hold the previous
series' result). Only when every patch applied are the real files written, and only those whose
final content differs from what is there now: an unchanged file keeps its mtime, so ``make``
rebuilds just what a patch edit really changed. Each run recomputes from pristine content, so a
run that was interrupted is repaired by the next one.

The state (``state/patch-<name>.json``) records ``files``: {path: sha256 written, or None for a
file the series deletes}, which ``sources.fetch`` uses to tell our changes from a user's edits,
and ``series_digest``, which later stages use as part of the tree's identity.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline import digest, proc
from pipeline import fetch as sources
from pipeline.config import SourceCfg, display
from pipeline.errors import PatchError
from pipeline.files import atomic_write
from pipeline.workspace import Key, Workspace

SERIES = "series"
SHORT = 12  # characters of a revision in messages
_MISSING = object()


def _sha_or_none(data: bytes | None) -> str | None:
    return None if data is None else digest.of_bytes(data)


# -------------------------------------------------------------------------------- series
@dataclass(frozen=True)
class Entry:
    """One line of a series file: a patch and its -pN."""

    name: str
    strip: int
    line: int
    path: Path


def _series_lines(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, tokens) for every line that names a patch; comments and blanks dropped."""
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0] if raw.lstrip().startswith("#") else re.split(r"\s#", raw)[0]
        tokens = line.split()
        if tokens:
            yield no, tokens


def _inside(name: str) -> bool:
    """A relative path that cannot leave the directory it is resolved against."""
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def read_series(src: SourceCfg) -> list[Entry]:
    """Parse ``<patches>/series``; every problem is a one-line PatchError naming file and line."""
    assert src.patches is not None
    series = src.patches / SERIES
    where = display(series)
    try:
        text = series.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        raise PatchError(f"{where}: no such file; list the patches there, one per line "
                         "(an empty file applies none)") from None
    except OSError as exc:
        raise PatchError(f"{where}: cannot read: {exc.strerror}") from None
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for no, tokens in _series_lines(text):
        name, opts = tokens[0], tokens[1:]
        strip = 1
        i = 0
        while i < len(opts):
            m = re.fullmatch(r"-p(\d*)", opts[i])
            if m and not m[1] and i + 1 < len(opts) and opts[i + 1].isdigit():
                strip, i = int(opts[i + 1]), i + 2
                continue
            if not m or not m[1]:
                raise PatchError(f"{where}:{no}: unknown option {opts[i]!r} after {name} "
                                 "(only -pN is supported)")
            strip, i = int(m[1]), i + 1
        if not _inside(name):
            raise PatchError(f"{where}:{no}: {name}: a patch must be a path inside "
                             f"{display(src.patches)}")
        if name in seen:
            raise PatchError(f"{where}:{no}: {name} is listed twice (first on line {seen[name]}); "
                             "remove one")
        seen[name] = no
        path = src.patches / name
        if not path.is_file():
            what = "is not a file" if path.exists() else "no such file"
            raise PatchError(f"{where}:{no}: {name}: {what} in {display(src.patches)}")
        entries.append(Entry(name, strip, no, path))
    return entries


def fingerprint(src: SourceCfg) -> dict[str, Any]:
    """What decides whether the series must be applied again; reads only the patches dir.

    Never raises: a missing or malformed entry shows as None here and as a clear error when
    ``apply`` runs.
    """
    if src.patches is None:
        return {"series": None}
    try:
        text = (src.patches / SERIES).read_bytes()
    except OSError:
        return {"series": None}
    patches: dict[str, str | None] = {}
    for _, tokens in _series_lines(text.decode("utf-8", "replace")):
        name = tokens[0]
        try:
            patches[name] = (digest.of_bytes((src.patches / name).read_bytes())
                             if _inside(name) else None)
        except OSError:
            patches[name] = None
    return {"series": digest.of_bytes(text), "patches": patches}


# --------------------------------------------------------------------------------- diffs
@dataclass(frozen=True)
class Section:
    """One file's part of a patch: its names in the tree (None is /dev/null) and its lines."""

    old: str | None
    new: str | None
    start: int  # index of its first header line
    end: int  # index after its last line

    @property
    def target(self) -> str:
        return self.new or self.old or ""


@dataclass(frozen=True)
class Patch:
    entry: Entry
    shown: str  # the patch file as the user names it
    sha256: str
    text: bytes  # what GNU patch reads: the diff, mail transfer encodings undone
    sections: tuple[Section, ...]
    crlf: bool  # every line ends in CRLF (mangled by a mail client or an editor)

    def targets(self) -> set[str]:
        return {n for s in self.sections for n in (s.old, s.new) if n}

    def record(self) -> dict[str, Any]:
        return {"name": self.entry.name, "strip": self.entry.strip, "sha256": self.sha256}


_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_STAMP = re.compile(r"\s+(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( ?[+-]\d{4})?"
                    r"|(Mon|Tue|Wed|Thu|Fri|Sat|Sun) .*\d{4}( [+-]\d{4})?)$")
_DIFF_START = re.compile(rb"(?m)^(diff --git |--- \S|\+\+\+ \S|@@ -)")
_OCTAL = re.compile(r"\\([0-7]{3}|.)")


def _unquote(name: str) -> str:
    """Git's C-style quoting of unusual file names ("a/tab\\there")."""
    if not (len(name) >= 2 and name[0] == name[-1] == '"'):
        return name
    raw = bytearray()
    simple = {"n": b"\n", "t": b"\t", '"': b'"', "\\": b"\\", "a": b"\a", "b": b"\b",
              "f": b"\f", "r": b"\r", "v": b"\v"}
    pos = 0
    body = name[1:-1]
    for m in _OCTAL.finditer(body):
        raw += body[pos:m.start()].encode()
        esc = m[1]
        raw += bytes([int(esc, 8)]) if len(esc) == 3 else simple.get(esc, esc.encode())
        pos = m.end()
    raw += body[pos:].encode()
    return raw.decode("utf-8", "surrogateescape")


def _header_name(value: bytes) -> str | None:
    """The file name of a ``---``/``+++`` line, without its timestamp; None for /dev/null."""
    text = value.decode("utf-8", "surrogateescape").rstrip("\r\n")
    text = text.split("\t", 1)[0] if not text.startswith('"') else text
    text = _STAMP.sub("", text).rstrip()
    text = _unquote(text)
    return None if text == "/dev/null" else text


def strip_path(name: str | None, strip: int, where: str) -> str | None:
    """Drop *strip* leading components like ``patch -pN``; refuse names that leave the tree."""
    if name is None:
        return None
    rest = name
    for _ in range(strip):
        idx = rest.find("/")
        if idx < 0:
            raise PatchError(f"{where}: cannot strip {strip} leading components from {name!r} "
                             "(wrong -pN in the series?)")
        rest = rest[idx:].lstrip("/")
    if not _inside(rest) or rest in (".", ""):
        raise PatchError(f"{where}: refusing {name!r}: a patch may only touch files inside "
                         "the source tree")
    return str(PurePosixPath(rest))


def _git_names(line: bytes) -> tuple[str, str] | None:
    """The two names of ``diff --git a/X b/Y`` (used when no ---/+++ lines follow)."""
    rest = line[len(b"diff --git "):].decode("utf-8", "surrogateescape").rstrip("\r\n")
    if rest.startswith('"'):
        m = re.fullmatch(r'("(?:[^"\\]|\\.)*") (.+)', rest)
        return (_unquote(m[1]), _unquote(m[2])) if m else None
    parts = rest.split(" ")
    if len(parts) == 2:
        return parts[0], _unquote(parts[1])
    for cut in range(1, len(parts)):  # names with spaces: the split where both sides agree
        a, b = " ".join(parts[:cut]), " ".join(parts[cut:])
        if a.split("/", 1)[-1] == b.split("/", 1)[-1]:
            return a, b
    return None


def _looks_like_mail(data: bytes) -> bool:
    return data.startswith(b"From ") or re.match(rb"[A-Za-z][A-Za-z0-9-]*: ", data) is not None


def unmail(data: bytes) -> bytes:
    """The diff inside a mail whose transfer encoding would hide it from ``patch``.

    A ``git format-patch`` mail is plain text and passes through unchanged; a message saved
    from a list archive may be quoted-printable, base64, or carry the patch as an attachment.
    """
    if not _looks_like_mail(data):
        return data
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0]
    if not re.search(rb"(?im)^content-transfer-encoding:[ \t]*(quoted-printable|base64)"
                     rb"|^content-type:[ \t]*multipart/", head):
        return data
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    bodies = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and _DIFF_START.search(payload):
            bodies.append(payload if payload.endswith(b"\n") else payload + b"\n")
    return b"".join(bodies) or data


def parse_diff(text: bytes, strip: int, where: str) -> list[Section]:
    """The file sections of a unified diff (plain, ``git format-patch`` or ``hg export``)."""
    lines = text.splitlines(keepends=True)
    sections: list[Section] = []
    git: dict[str, Any] | None = None  # a "diff --git" header waiting for its ---/+++ lines

    def flush_git(end: int) -> None:
        nonlocal git
        if git is not None and (git["binary"] or git["meta"]):
            names = _git_names(lines[git["start"]])
            if names is None:
                raise PatchError(f"{where}:{git['start'] + 1}: cannot read the file names")
            old = None if git["new_file"] else strip_path(names[0], strip, where)
            new = None if git["deleted"] else strip_path(names[1], strip, where)
            if git["binary"]:
                raise PatchError(f"{where}: binary diff for {new or old}; xenpipe applies text "
                                 "diffs only (regenerate the patch without it)")
            sections.append(Section(old, new, git["start"], end))
        git = None

    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if line.startswith(b"diff --git "):
            flush_git(i)
            git = {"start": i, "binary": False, "meta": False, "new_file": False,
                   "deleted": False}
        elif git is not None and line.startswith((b"GIT binary patch", b"Binary files ")):
            git["binary"] = True
        elif git is not None and line.startswith((b"rename ", b"copy ", b"old mode ",
                                                   b"new mode ", b"new file mode ",
                                                   b"deleted file mode ")):
            git["meta"] = True
            if line.startswith(b"new file mode "):
                git["new_file"] = True
            elif line.startswith(b"deleted file mode "):
                git["deleted"] = True
            if line.split()[-1].startswith(b"120"):
                raise PatchError(f"{where}:{i + 1}: symbolic links are not supported in patches")
        elif re.match(rb"Binary files? .* (differ|has changed)\r?$", line):
            name = line.split(b" ")[2].decode("utf-8", "surrogateescape")
            raise PatchError(f"{where}: binary diff for {name}; xenpipe applies text diffs "
                             "only (regenerate the patch without it)")
        elif line.startswith(b"*** ") and i + 1 < n and lines[i + 1].startswith(b"--- ") \
                and i + 2 < n and lines[i + 2].startswith(b"*****"):
            raise PatchError(f"{where}:{i + 1}: context diffs are not supported; "
                             "regenerate it as a unified diff (diff -u, git diff, hg diff)")
        elif line.startswith(b"--- ") and i + 1 < n and lines[i + 1].startswith(b"+++ "):
            start = git["start"] if git is not None else i
            if git is not None and git["binary"]:
                flush_git(i)
            old = strip_path(_header_name(line[4:]), strip, where)
            new = strip_path(_header_name(lines[i + 1][4:]), strip, where)
            if git is not None and git["new_file"]:
                old = None
            if git is not None and git["deleted"]:
                new = None
            git = None
            i += 2
            while i < n and (m := _HUNK.match(lines[i])):
                old_left = int(m[2]) if m[2] is not None else 1
                new_left = int(m[4]) if m[4] is not None else 1
                i += 1
                while i < n and (old_left > 0 or new_left > 0):
                    c = lines[i][:1]
                    if c in (b" ", b"\n", b"\r"):
                        old_left, new_left = old_left - 1, new_left - 1
                    elif c == b"-":
                        old_left -= 1
                    elif c == b"+":
                        new_left -= 1
                    elif c != b"\\":
                        break  # damaged hunk: GNU patch will say where
                    i += 1
                if i < n and lines[i].startswith(b"\\"):
                    i += 1
            sections.append(Section(old, new, start, i))
            continue
        i += 1
    flush_git(n)
    return sections


def load(entry: Entry) -> Patch:
    """Read, decode and check one patch of the series."""
    shown = display(entry.path)
    try:
        data = entry.path.read_bytes()
    except OSError as exc:
        raise PatchError(f"{shown}: cannot read: {exc.strerror}") from None
    if not data.strip():
        raise PatchError(f"{shown} is empty; remove it from {display(entry.path.parent)}/series "
                         f"(line {entry.line}) or fill it")
    text = unmail(data)
    sections = parse_diff(text, entry.strip, shown)
    if not sections:
        raise PatchError(f"{shown} contains no diff (a cover letter? an empty commit?); remove "
                         f"it from the series (line {entry.line})")
    lines = text.splitlines(keepends=True)
    ended = [ln for ln in lines if ln.endswith(b"\n")]
    crlf = bool(ended) and all(ln.endswith(b"\r\n") for ln in ended)
    return Patch(entry, shown, digest.of_bytes(data), text, tuple(sections), crlf)


def series_digest(patches: Iterable[Patch]) -> str:
    """Identity of the applied series: names, -pN and content, in order."""
    return digest.of_json([p.record() for p in patches])


# ---------------------------------------------------------------------------- pristine
def pristine(src: SourceCfg, tree: Path, rev: str,
             paths: Iterable[str]) -> dict[str, bytes | None]:
    """Each path's content at *rev* (None when absent), from the VCS, never the working tree."""
    return sources.vcs_for(src.vcs).cat(tree, rev, paths)


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
               label: str, series: str) -> list[str]:
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
        raise PatchError(f"patch {p.shown} is already in {label}; drop it from the series "
                         f"({series} line {p.entry.line})")
    saved = f"; rejected hunks in {display(rejects)}" if rejects.exists() else ""
    raise PatchError(f"{p.shown} does not apply to {label}: {failure.target} {failure.detail} "
                     f"({series} line {p.entry.line}{saved})")


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
    """Bring ``src/<name>`` to pristine + series; write only the files whose content changes."""
    name = src.name
    tree = ws.source_dir(name)
    rev = ws.state(Key.fetch(name)).get("resolved")
    vcs = sources.vcs_for(src.vcs)
    if not rev or not (tree / vcs.marker).is_dir():
        raise PatchError(f"src/{name} has not been fetched; run `doit fetch:{name}` first")
    if vcs.current(tree) != rev:
        raise PatchError(f"src/{name} is not at the fetched revision {rev[:SHORT]}; run "
                         f"`doit fetch:{name} force=1` to check it out again")
    assert src.patches is not None
    series = display(src.patches / SERIES)
    label = f"{name}@{rev[:SHORT]}"
    patches = [load(e) for e in read_series(src)]

    old = ws.state(Key.patch(name))
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
            warnings += _apply_one(p, work, scratch, log, rejects, label, series)

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
