"""Safe file writes: a reader (or a crash) only ever sees the old or the new content."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: bytes | str, mode: int | None = None) -> None:
    """Write *data* to *path* via a temp file in the same directory, fsync, then rename."""
    if isinstance(data, str):
        data = data.encode(errors="surrogateescape")  # bytes read with surrogateescape
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    sweep_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                   suffix=".tmp")
    except OSError as exc:  # the user knows the file, not its temp
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def sweep_temps(path: Path, names: str | None = None) -> None:
    """Remove the temp files a killed writer of *path* left beside it (named after their
    process: a live writer keeps its own), so that nothing half-written stays beside it.
    *names*: a regular expression for the file names whose temps go instead of *path*'s own
    (the backups of a file, whose next one has another name)."""
    name = names if names is not None else re.escape(path.name)
    pattern = re.compile(rf"\.(?:{name})\.(\d+)\.[^/]+\.tmp")
    try:
        entries = os.listdir(path.parent)
    except FileNotFoundError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry)
        if m is not None and not pid_alive(int(m[1])):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path.parent / entry)


def pid_alive(pid: int) -> bool:
    """Whether a process *pid* exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default
