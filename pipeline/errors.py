"""One exception family for user errors.

The doit layer turns any ``XenpipeError`` into a single ``xenpipe: error: ...`` line and a
failed task, and so an ``OSError`` too: the system refused a file operation (a read-only or
full file system, a file where a directory belongs, no permission), which the user fixes
outside xenpipe. Anything else is a bug and may show a traceback.
"""

from __future__ import annotations


class XenpipeError(Exception):
    """A problem the user can fix: bad config, unreachable repository, broken patch, ..."""


class ConfigError(XenpipeError):
    """The config file is malformed, has an unknown key or a value of the wrong type."""


class SourceError(XenpipeError):
    """A source tree could not be fetched, updated or resolved."""


class PatchError(XenpipeError):
    """A patch series does not apply."""


class PatchMergedError(PatchError):
    """A patch of the series is already in the fetched revision: it must leave the series.

    Carries *patch* (the file as the user names it), *source* and *rev* (the short revision)
    as data; the patch stage records them (``merged`` in its state) for nightly's triage.
    """

    def __init__(self, patch: str, source: str, rev: str, where: str) -> None:
        super().__init__(f"patch {patch} is already in {source}@{rev}; drop it from the series "
                         f"({where})")
        self.patch, self.source, self.rev, self.where = patch, source, rev, where

    def __reduce__(self) -> tuple[type[PatchMergedError], tuple[str, str, str, str]]:
        return type(self), (self.patch, self.source, self.rev, self.where)

    def record(self) -> dict[str, str]:
        return {"patch": self.patch, "source": self.source, "rev": self.rev}


class KconfigError(XenpipeError):
    """A requested kernel symbol could not be set."""


class BuildError(XenpipeError):
    """make failed."""


class DeviceError(XenpipeError):
    """A BDF or device path is malformed, absent or unsafe to pass through."""


class InstallError(XenpipeError):
    """Installing would be unsafe or failed."""


class BootError(XenpipeError):
    """The QEMU boot did not reach a milestone."""


class BisectError(XenpipeError):
    """A bisection cannot start or go on: bad arguments, no nightly history, a step that
    cannot run (its fetch failed)."""


class TargetError(XenpipeError):
    """The test box of ``[target]`` is unreachable, refused a step, or did not come back."""


_FULL, _READ_ONLY = 28, 30  # ENOSPC, EROFS (errno's values on Linux, spelled once)
_DISK_FULL = ("No space left on device", "Disk quota exceeded")


def advice(text: str, path: str | None = None) -> str | None:
    """What the user does about a failure the system reported (an OSError's strerror or a
    tool's last line): a full disk or a read-only file system; None for anything else."""
    where = f" of {path} (df -h {path})" if path else ""
    if any(w in text for w in _DISK_FULL):
        return (f"free space on the file system{where} and run the same doit command again "
                "(what finished is kept)")
    if "Read-only file system" in text:
        return (f"remount the file system{where.split(' (')[0]} read-write (or choose another "
                "root) and run the same doit command again")
    return None


def format_error(exc: BaseException) -> str:
    """The one line a user sees for a user error (an OSError as ``PATH: strerror``, with
    what to do about a full disk or a read-only file system)."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
        text = ": ".join([" -> ".join(paths), exc.strerror] if paths else [exc.strerror])
        hint = advice(exc.strerror, paths[0] if paths else None)
        text += f": {hint}" if hint else ""
    text = " ".join(text.split("\n")[0:1]).strip() or exc.__class__.__name__
    return f"xenpipe: error: {text}"
