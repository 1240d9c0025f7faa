"""Reading patches: unified and git diffs (also inside mails), down to the files each one
touches in the tree, so the apply step knows which pristine files to materialise."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pipeline import digest
from pipeline.config import display
from pipeline.errors import PatchError
from pipeline.patch.series import Entry, inside


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
    if not inside(rest) or rest in (".", ""):
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

