"""One live line per running make instead of thousands, and the few log lines that matter.

A build's full output goes to its log; the terminal sees how many objects were compiled so
far against how many the last successful build left behind, the elapsed time and an ETA: a
``\\r``-updated line on a terminal, a plain line every ``interval`` seconds otherwise (CI logs).
When make fails, the first compiler ``error:`` line and the last lines of the log are what a
developer wants to see first.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import deque
from pathlib import Path
from typing import TextIO

TAIL = 20
# kbuild and Xen (4.x) quiet output: "  CC      kernel/fork.o", "  CC [M]  drivers/x.o";
# verbose and old Xen builds print the compiler command itself.
_COMPILE = re.compile(
    r"^\s+(?:CC|AS|HOSTCC|CXX)(?: \[M\])?\s+\S+\.o$"
    r"|^\s*(?:\S*/)?(?:ccache\s+)?(?:\S*-)?(?:gcc|cc|clang)(?:-\d+)?\s.*\s-c\s"
)
_ERROR = re.compile(r"(?:^|[\s:])(?:fatal )?error:", re.IGNORECASE)
_MAKE_ERROR = re.compile(r"^make(?:\[\d+\])?: \*\*\* ")


def count_objects(root: Path) -> int:
    """Object files under *root* (what a build leaves behind; ETA base for the next one)."""
    n = 0
    stack = [str(root)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith(".git") and entry.name != ".hg":
                        stack.append(entry.path)
                elif entry.name.endswith(".o"):
                    n += 1
    return n


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Watches one make's output lines (``feed``) and clock (``tick``); shows one status line."""

    def __init__(self, label: str, expected: int | None, *, out: TextIO | None = None,
                 tty: bool | None = None, interval: float = 10.0, refresh: float = 0.5) -> None:
        self.label = label
        self.expected = expected if expected and expected > 0 else None
        self.out = out if out is not None else sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.interval = refresh if self.tty else interval
        self.start = time.monotonic()
        self.shown = self.start  # the first plain line comes after one interval
        self.compiled = 0
        self.first_error: str | None = None
        self.first_make_error: str | None = None
        self.tail: deque[str] = deque(maxlen=TAIL)
        self._width = 0

    # ---------------------------------------------------------------------------- input
    def feed(self, line: str) -> None:
        if _COMPILE.search(line):
            self.compiled += 1
        if self.first_error is None and _ERROR.search(line):
            self.first_error = line.strip()
        if self.first_make_error is None and _MAKE_ERROR.search(line):
            self.first_make_error = line.strip()
        if line.strip():
            self.tail.append(line.rstrip())

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.shown >= self.interval:
            self.shown = now
            self._show(self.status(now))

    # --------------------------------------------------------------------------- output
    def status(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.start
        text = f"{self.label}: {self.compiled}"
        if self.expected and self.compiled <= self.expected:
            text += f"/{self.expected} objects"
            if self.compiled:
                eta = elapsed / self.compiled * (self.expected - self.compiled)
                text += f", {duration(elapsed)} elapsed, ETA {duration(eta)}"
            else:
                text += f", {duration(elapsed)} elapsed"
        else:
            text += f" objects, {duration(elapsed)} elapsed"
        return text

    def _show(self, text: str) -> None:
        if self.tty:
            pad = max(0, self._width - len(text))
            self.out.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def done(self, ok: bool) -> None:
        """End the live line with a summary, so the terminal keeps one line per stage."""
        elapsed = time.monotonic() - self.start
        verdict = "done" if ok else "FAILED"
        text = f"{self.label}: {verdict}, {self.compiled} objects compiled in {duration(elapsed)}"
        if self.tty:
            self._show(text)
            self.out.write("\n")
            self.out.flush()
        else:
            self._show(text)

    def failure_report(self) -> str:
        """What to print before the one-line error: the first error, then the log's tail."""
        lines = []
        first = self.first_error or self.first_make_error
        if first:
            lines.append(f"first error: {first}")
        lines.append(f"last {len(self.tail)} lines of the log:")
        lines += [f"  {ln}" for ln in self.tail]
        return "\n".join(lines) + "\n"
