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


def format_error(exc: BaseException) -> str:
    """The one line a user sees for a user error (an OSError as ``PATH: strerror``)."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
        text = ": ".join([" -> ".join(paths), exc.strerror] if paths else [exc.strerror])
    text = " ".join(text.split("\n")[0:1]).strip() or exc.__class__.__name__
    return f"xenpipe: error: {text}"
