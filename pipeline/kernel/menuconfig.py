"""The scripted ``make menuconfig`` frontend: search, jump, set and confirm on the screen.

The pty output is rendered by pyte (Screen), so every key is sent only after the screen shows
what a user would check first: the highlighted entry carries the symbol's prompt.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import KconfigError
from pipeline.kernel.dotconfig import Setting, satisfied
from pipeline.kernel.frontend import COLS, ROWS, FrontendResult, exit_reason, finish, spawn, stop
from pipeline.kernel.kbuild import Kbuild, parse_help

SETTLE = 0.1  # a screen is rendered when the frontend has been silent this long

_MARKS = {
    "y": ("[*]", "<*>", "{*}", "-*-", "(X)"),
    "m": ("<M>", "{M}", "-M-"),
    "n": ("[ ]", "< >", "( )"),
}
# <Esc><Esc> leaves any lxdialog box; a letter like "x" is first a hotkey for a menu entry.
ESC2 = "\x1b\x1b"
_BUTTON = re.compile(r"^<?\s*(Select|Exit|Help|Save|Load|Yes|No|Ok|OK|Cancel)\s*>?$")
_BORDERS = "│┃|┌┐└┘├┤─"


class Screen:
    """A pexpect child rendered by pyte, so checks read what a user would see."""

    def __init__(self, child: Any, log: Path) -> None:
        try:
            import pyte
        except ImportError:
            raise KconfigError("frontend \"menuconfig\" needs the Python package pyte "
                               "(pip install pyte) or use frontend = \"oldconfig\"") from None
        self.child = child
        self.log = log
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.Stream(self.screen)
        self.stream.use_utf8 = False  # LC_ALL=C: honour ESC ( 0, the line-drawing charset
        self.eof = False

    def pump(self, wait: float) -> bool:
        """Feed whatever the child writes within *wait* s; False if it stayed silent."""
        import pexpect

        if self.eof:
            return False
        try:
            data = self.child.read_nonblocking(65536, timeout=wait)
        except pexpect.TIMEOUT:
            return False
        except pexpect.EOF:
            self.eof = True
            return False
        self.stream.feed(data)
        return True

    @property
    def lines(self) -> list[str]:
        return [ln.rstrip() for ln in self.screen.display]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def rows(self) -> list[str]:
        """Screen rows without dialog borders (for parsing help text)."""
        return [ln.strip(_BORDERS + " ") for ln in self.lines]

    def selected_row(self) -> tuple[int, str] | None:
        """The highlighted menu entry (reverse video in the mono theme), buttons excluded."""
        found = []
        for y in range(ROWS):
            row = self.screen.buffer[y]
            text = "".join(row[x].data for x in range(COLS) if row[x].reverse).strip()
            if text and not _BUTTON.match(text):
                found.append((y, text))
        return found[0] if len(found) == 1 else None

    def selected(self) -> str | None:
        row = self.selected_row()
        return row[1] if row else None

    def wait(self, ok: Callable[[Screen], bool], what: str, deadline: float) -> None:
        """Read until *ok* holds on a settled screen; fail cleanly on timeout or exit."""
        while True:
            got = self.pump(SETTLE)
            if not got and ok(self):
                return
            if self.eof or time.monotonic() > deadline:
                self.dump(f"waiting for {what}")
                why = "menuconfig exited" if self.eof else "timed out"
                rows = [r for r in self.rows() if r.strip()]
                shown = (rows[-1] if self.eof else rows[0]) if rows else ""
                raise KconfigError(f"menuconfig: {why} waiting for {what}"
                                   + (f"; screen shows {shown!r}" if shown else "")
                                   + f" (log: {self.log})")

    def send(self, keys: str) -> None:
        self.child.send(keys)

    def dump(self, title: str) -> None:
        with open(self.log, "a") as f:
            f.write(f"--- menuconfig screen: {title} ---\n{self.text.rstrip()}\n---\n")


def _in_menu(s: Screen) -> bool:
    return "Search Results" not in s.text and "Search Configuration" not in s.text \
        and s.selected() is not None and ("Exit >" in s.text or "Select >" in s.text)


def _search_block(s: Screen, bare: str) -> list[str]:
    rows = s.rows()
    head = f"Symbol: {bare} [="
    start = next((i for i, r in enumerate(rows) if r.strip().startswith(head)), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(rows)) if rows[i].strip().startswith("Symbol: ")),
               len(rows))
    return rows[start:end]


def run_menuconfig(kb: Kbuild, requested: Sequence[Setting], deadline: float) -> FrontendResult:
    """Drive ``make menuconfig``: per symbol search (``/``), jump (numbered key), set, confirm.

    Nothing is pressed on an entry before the screen shows that the highlighted entry carries
    the symbol's prompt; the value is then confirmed twice, on the entry's mark and on the
    search result that names the symbol. A symbol that cannot be set is left for verification
    to explain; a screen that never shows up fails cleanly without saving.
    """
    result = FrontendResult()
    # xterm-color: no REP/ECH sequences, so every cell is drawn; mono: selection = reverse video
    env = {"TERM": "xterm-color", "MENUCONFIG_COLOR": "mono", "MENUCONFIG_MODE": "",
           "ESCDELAY": "50"}
    child = spawn(kb, "menuconfig", env, deadline)
    scr = Screen(child, kb.log)
    try:
        scr.wait(_in_menu, "the main menu", deadline)
        for s in requested:
            _menuconfig_symbol(scr, s, result, deadline)
        scr.send(ESC2)
        scr.wait(lambda x: x.eof or "save your new configuration" in x.text, "the save question",
                 deadline)
        if not scr.eof:
            scr.send("y")
            while not scr.eof and time.monotonic() < deadline:
                scr.pump(SETTLE)
        if not scr.eof:
            raise KconfigError(f"menuconfig: did not exit after saving (log: {kb.log})")
        finish(child, deadline)
    finally:
        stop(child)
    if child.exitstatus != 0:
        raise KconfigError(f"make menuconfig {exit_reason(child)} (log: {kb.log})")
    return result


_MARK = re.compile(r"^(?:\[[ *]\]|<[ *M]>|\{[ *M]\}|-[*M-]-|\([ X]\)|\([^)]*\))?\s*")
_TAIL = re.compile(r"\s*(?:\(NEW\))?\s*(?:--->|----)?$")
_CHECK = ("(X)", "( )")


def _entry_prompt(entry: str) -> str:
    """A menu entry's prompt: without its value mark, ``(NEW)`` and submenu arrow."""
    return _TAIL.sub("", _MARK.sub("", entry.strip(), count=1))


def _choice_prompt(block: list[str]) -> str | None:
    """The prompt of the choice a searched symbol belongs to (its Location shows it)."""
    for row in block:
        if m := re.match(r"^\s*(?:\(\d\))?\s*-> (.+) \(<choice> \[=", row):
            return m[1]
    return None


def _pick_in_choice(scr: Screen, prompts: list[str], bare: str, deadline: float) -> str:
    """Open the highlighted choice, move to the member with *prompts* and select it.

    Returns the entry highlighted afterwards (the choice, showing the member if it took).
    """
    scr.send("\r")
    scr.wait(lambda x: (x.selected() or "").startswith(_CHECK), f"the choice holding {bare}",
             deadline)
    # The list shows every member: move by the distance between highlight and member.
    here = scr.selected_row()
    rows = scr.rows()
    there = next((y for y, r in enumerate(rows)
                  if r.startswith(_CHECK) and _entry_prompt(r) in prompts), None)
    if here is not None and there is not None:
        delta = there - here[0]
        scr.send(("+" if delta > 0 else "-") * abs(delta))
        scr.wait(lambda x: _entry_prompt(x.selected() or "") in prompts, f"{bare} highlighted",
                 deadline)
        scr.send(" ")
        scr.wait(lambda x: _in_menu(x) and not (x.selected() or "").startswith(_CHECK),
                 f"the menu after choosing {bare}", deadline)
        after = scr.selected() or ""
        return next((p for p in prompts if after.rstrip(" ->").endswith(f"({p})")), after)
    scr.send(ESC2)
    scr.wait(_in_menu, "the menu after leaving the choice", deadline)
    return scr.selected() or ""


def _menuconfig_symbol(scr: Screen, s: Setting, result: FrontendResult, deadline: float) -> None:
    bare = s.bare
    scr.send("/")
    scr.wait(lambda x: "Search Configuration Parameter" in x.text, "the search box", deadline)
    scr.send(f"^{bare}$\r")
    scr.wait(lambda x: "Search Results" in x.text
             and (bool(_search_block(x, bare)) or "No matches found" in x.text),
             f"search results for {bare}", deadline)
    block = _search_block(scr, bare)
    scr.dump(f"search {bare}")

    def leave_results() -> None:
        scr.send(ESC2)
        scr.wait(_in_menu, "the main menu", deadline)

    if not block:
        result.notes[s.name] = "menuconfig found no such symbol"
        leave_results()
        return
    # The screen may cut long lines: its help is used for the type and value only, the
    # dependency text of a failure comes from the probe.
    info = parse_help("\n".join(block)).get(bare)
    prompts = [m[1].strip() for r in block if (m := re.match(r"^\s*Prompt: (.+)$", r))]
    keys = [m[1] for r in block if (m := re.match(r"^\s*\((\d)\)\s*->", r))]
    if not prompts or not keys:
        result.notes[s.name] = "menuconfig offers no entry for it (no prompt or no jump key)"
        leave_results()
        return
    scr.send(keys[0])
    scr.wait(_in_menu, f"the menu holding {bare}", deadline)
    entry = scr.selected() or ""
    choice = _choice_prompt(block)
    if choice and s.value == "y" and _entry_prompt(entry).startswith(choice):
        # mconf jumps to the choice holding a member: open it and walk to the member
        entry = _pick_in_choice(scr, prompts, bare, deadline)
        result.answers += 1
    prompt = next((p for p in prompts if _entry_prompt(entry) == p), None)
    if prompt is None:
        result.notes[s.name] = f"menuconfig highlighted {entry!r}, not its prompt: not visible"
        scr.dump(f"jump for {bare} landed elsewhere")
        scr.send(ESC2)
        scr.wait(lambda x: "Search Results" in x.text, "the search results", deadline)
        leave_results()
        return
    kind = info.type if info else ""
    if choice and s.value == "y":
        pass  # selected above; confirmed on the search result below
    elif kind in ("bool", "tristate"):
        if not entry.startswith(_MARKS[s.value]):
            scr.send(s.value)
            result.answers += 1
            end = min(deadline, time.monotonic() + 10)
            try:
                scr.wait(lambda x: (x.selected() or "").startswith(_MARKS[s.value]),
                         f"{bare} marked {s.value}", end)
            except KconfigError:
                if time.monotonic() >= deadline:
                    raise
                result.notes[s.name] = f"menuconfig kept {scr.selected()!r}"
    else:
        value = s.value[1:-1] if s.value.startswith('"') else s.value
        current = info.value if info else ""
        scr.send("\r")
        result.answers += 1
        scr.wait(lambda x: "Please enter" in x.text, f"the input box of {bare}", deadline)
        scr.send("\x7f" * (len(current) + 8) + value + "\r")
        scr.wait(lambda x: _in_menu(x) and (x.selected() or "").startswith(f"({value})"),
                 f"{bare} set to {value}", deadline)
    scr.dump(f"{bare} set")
    scr.send(ESC2)  # back to the search results, re-rendered with the new value
    scr.wait(lambda x: "Search Results" in x.text and bool(_search_block(x, bare)),
             f"the search results for {bare}", deadline)
    now = parse_help("\n".join(_search_block(scr, bare))).get(bare)
    shown = now.value if now else None
    if not satisfied(s.value.strip('"') if s.value.startswith('"') else s.value,
                     shown if shown not in ("", None) else None):
        result.notes.setdefault(s.name, f"menuconfig shows {bare} [={shown}]")
    leave_results()

