"""The ``.config`` and fragment model: settings, their parsing, comparison and merging.

Pure text work with no kbuild involved, so the stage, the probe and the build stage (which
reads CONFIG_MODULES) share one reading of ``CONFIG_X=v`` and ``# CONFIG_X is not set``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import display
from pipeline.errors import KconfigError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_VALUE = re.compile(r'^(?:[ymn]|"(?:[^"\\]|\\.)*"|0[xX][0-9a-fA-F]+|-?\d+)$')


@dataclass(frozen=True)
class Setting:
    """One ``CONFIG_X=value`` request and where it came from (for messages)."""

    name: str  # CONFIG_X
    value: str  # y, m, n, "string", 0x1f, 42
    origin: str  # "configs/kernel/x.config:12" or "[kernel] symbols"

    @property
    def bare(self) -> str:
        """The name as Kconfig spells it (no CONFIG_ prefix)."""
        return self.name.removeprefix("CONFIG_")

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


def parse_line(line: str) -> tuple[str, str] | None:
    """``CONFIG_X=v`` or ``# CONFIG_X is not set`` as (name, value); None for anything else."""
    line = line.strip()
    if m := _SET.match(line):
        return m[1], m[2]
    if m := _UNSET.match(line):
        return m[1], "n"
    return None


def read_text(path: Path) -> str:
    """A .config, fragment or Kconfig file as text, bytes that are not UTF-8 kept as they are
    (a Latin-1 comment, a string value): atomic_write writes them back unchanged."""
    return path.read_text(errors="surrogateescape")


def read_config(path: Path) -> dict[str, str]:
    """A .config as {CONFIG_X: value}; ``is not set`` reads as ``n``."""
    values: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if (kv := parse_line(line)) is not None:
            values[kv[0]] = kv[1]
    return values


def parse_fragment(path: Path) -> list[Setting]:
    """A fragment's settings, in order; a line that is neither a setting nor a comment is fatal."""
    try:
        text = read_text(path)
    except OSError as exc:
        raise KconfigError(f"{display(path)}: cannot read fragment: {exc.strerror}") from None
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        kv = parse_line(stripped)
        where = f"{display(path)}:{no}"
        if kv is None:
            if not stripped or stripped.startswith("#"):
                continue  # blank or comment
            shown = stripped.encode(errors="surrogateescape").decode(errors="replace")
            raise KconfigError(f"{where}: expected CONFIG_NAME=value or "
                               f"'# CONFIG_NAME is not set', got {shown!r}")
        if not _VALUE.match(kv[1]):
            raise KconfigError(f"{where}: {kv[0]}: value {kv[1]!r} is not y, m, n, "
                               '"text" or a number')
        out.append(Setting(kv[0], kv[1], where))
    return out


def parse_symbols(symbols: Iterable[str]) -> list[Setting]:
    """``[kernel] symbols`` (already validated by the config loader) as settings."""
    out = []
    for sym in symbols:
        name, _, value = sym.partition("=")
        out.append(Setting(name, value, "[kernel] symbols"))
    return out


def _canon(value: str | None) -> str:
    """Compare values as Kconfig does: absent is n, numbers by value, strings verbatim."""
    if value is None:
        return "n"
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", value):
        return hex(int(value, 16))
    if re.fullmatch(r"-?\d+", value):
        return str(int(value))
    return value


def satisfied(want: str, got: str | None) -> bool:
    return _canon(want) == _canon(got)


def merge(config_text: str, settings: Sequence[Setting]) -> str:
    """Apply *settings* to a .config text: drop each symbol's old line, append the new one.

    Appending (rather than editing in place) makes the last word win, which is what a
    fragment that picks another member of a choice needs.
    """
    kept = drop(config_text, [s.name for s in settings]).splitlines()
    final: dict[str, Setting] = {}
    for s in settings:
        final.pop(s.name, None)
        final[s.name] = s
    added = [f"# {s.name} is not set" if s.value == "n" else str(s) for s in final.values()]
    return "\n".join([*kept, *added]) + "\n"


def drop(config_text: str, names: Iterable[str]) -> str:
    """Remove the lines of *names* so that Kconfig treats them as new."""
    gone = set(names)
    kept = [ln for ln in config_text.splitlines()
            if (kv := parse_line(ln)) is None or kv[0] not in gone]
    return "\n".join(kept) + "\n"
