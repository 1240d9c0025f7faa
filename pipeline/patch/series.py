"""Quilt series files: which patches, in what order, with what -pN, and the cheap fingerprint
that decides whether the series must be applied again."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline import digest
from pipeline.config import SourceCfg, display
from pipeline.errors import PatchError

SERIES = "series"

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


def inside(name: str) -> bool:
    """A relative path that cannot leave the directory it is resolved against."""
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str | None:
    """None for a regular file, else what it is ("a FIFO", ...)."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in KINDS if test(mode)), "not a regular file")


def non_regular(path: Path) -> str | None:
    """What *path* is when it exists and is not a regular file (after symbolic links)."""
    try:
        return _kind(os.stat(path).st_mode)
    except OSError:
        return None


def read_regular(path: Path) -> bytes:
    """The bytes of *path*, refusing (PatchError naming it) anything but a regular file.
    Opened non-blocking and checked on the open file: reading a FIFO would wait for a writer
    forever, and a check before the open could be raced."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        what = _kind(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if what is not None:
        os.close(fd)
        raise PatchError(f"{display(path)} is {what}, not a regular file: the patches "
                         "directory may hold only regular files (remove or replace it)")
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_series(src: SourceCfg) -> list[Entry]:
    """Parse ``<patches>/series``; every problem is a one-line PatchError naming file and line."""
    assert src.patches is not None
    series = src.patches / SERIES
    where = display(series)
    try:
        text = read_regular(series).decode("utf-8", "replace")
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
        if not inside(name):
            raise PatchError(f"{where}:{no}: {name}: a patch must be a path inside "
                             f"{display(src.patches)}")
        if name in seen:
            raise PatchError(f"{where}:{no}: {name} is listed twice (first on line {seen[name]}); "
                             "remove one")
        seen[name] = no
        path = src.patches / name
        what = non_regular(path)
        if what is not None:
            raise PatchError(f"{where}:{no}: {name} is {what}, not a regular file: a patch "
                             "must be a regular file (remove or replace it)")
        if not path.is_file():
            what = "is not a file" if path.exists() else "no such file"
            raise PatchError(f"{where}:{no}: {name}: {what} in {display(src.patches)}")
        entries.append(Entry(name, strip, no, path))
    return entries


def fingerprint(src: SourceCfg) -> dict[str, Any]:
    """What decides whether the series must be applied again; reads only the patches dir.

    Never raises, never blocks: a missing, malformed or non-regular entry (a FIFO would block
    the read) shows as None here and as a clear error when ``apply`` runs.
    """
    if src.patches is None:
        return {"series": None}
    try:
        text = read_regular(src.patches / SERIES)
    except (OSError, PatchError):
        return {"series": None}
    patches: dict[str, str | None] = {}
    for _, tokens in _series_lines(text.decode("utf-8", "replace")):
        name = tokens[0]
        try:
            patches[name] = (digest.of_bytes(read_regular(src.patches / name))
                             if inside(name) else None)
        except (OSError, PatchError):
            patches[name] = None
    return {"series": digest.of_bytes(text), "patches": patches}

