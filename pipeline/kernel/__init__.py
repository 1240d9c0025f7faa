"""Make the dom0 kernel ``.config``: base, fragments, forced symbols, verification.

The stage works in an out-of-tree build directory (``make O=<workspace>/out/kernel-build``) so
one source tree serves several configs. Symbols are forced through the kernel's *own*
interactive frontends (``make oldconfig`` or ``make menuconfig``) driven by pexpect rather than
by editing ``.config`` behind Kconfig's back: the frontend applies the dependency rules, and
what it refuses is reported with the kernel's own dependency text.
"""

from __future__ import annotations

import difflib
import re
import select
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import digest, proc
from pipeline.config import FORCED_SYMBOLS, Config, KernelCfg, display
from pipeline.errors import KconfigError
from pipeline.files import atomic_write
from pipeline.workspace import Key, Workspace

FINGERPRINT_VERSION = 1  # bump when this module's output for the same inputs changes
MAKE_TIMEOUT = 1800.0  # one make call that is not interactive (base targets build scripts/kconfig)
INTERACTIVE_TIMEOUT = 900.0  # a whole scripted frontend session, including building it
ROWS, COLS = 50, 160  # fixed terminal; menuconfig needs at least 19x80, search results like width
SETTLE = 0.1  # a screen is rendered when the frontend has been silent this long
BUILD_DIR = "kernel-build"

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_VALUE = re.compile(r'^(?:[ymn]|"(?:[^"\\]|\\.)*"|0[xX][0-9a-fA-F]+|-?\d+)$')


# ------------------------------------------------------------------------------ settings
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


def _text(path: Path) -> str:
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
        text = _text(path)
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


# --------------------------------------------------------------------------------- kbuild
@dataclass(frozen=True)
class Kbuild:
    """``make -C <src> O=<build> <make_args>`` with output in the stage log."""

    src: Path
    build: Path
    make_args: tuple[str, ...]
    log: Path

    @property
    def config(self) -> Path:
        return self.build / ".config"

    def argv(self, *targets: str, variables: Sequence[str] = ()) -> list[str]:
        # KCONFIG_CONFIG on the command line beats one left in the user's environment.
        return ["make", "-C", str(self.src), f"O={self.build}", "KCONFIG_CONFIG=.config",
                *self.make_args, *variables, *targets]

    def make(self, *targets: str, variables: Sequence[str] = (), check: bool = True
             ) -> proc.Result:
        """Run make; the output goes to the log and, for parsing, into the result."""
        what = f"make {' '.join(t for t in targets if not t.startswith('-'))}"
        res = proc.run(self.argv(*targets, variables=variables), log=self.log, capture=True,
                       check=False, timeout=MAKE_TIMEOUT, error=KconfigError, what=what)
        if check and res.returncode != 0:
            why = _make_reason(res.stdout)
            raise KconfigError(f"{what} failed with exit status {res.returncode}"
                               + (f": {why}" if why else "") + f" (log: {self.log})")
        return res

    def release(self) -> str:
        """The release this .config builds; syncconfig first, as kernelrelease reads
        CONFIG_LOCALVERSION from include/config/auto.conf, which only syncconfig refreshes."""
        self.make("syncconfig")
        out = self.make("-s", "kernelrelease").stdout
        lines = [ln.strip() for ln in out.splitlines() if ln.strip() and not ln.startswith("make")]
        if not lines or not re.fullmatch(r"[A-Za-z0-9._+~-]+", lines[-1]):
            raise KconfigError(f"make kernelrelease printed no release (log: {self.log})")
        return lines[-1]

    def top_kconfig(self) -> Path:
        """The top-level Kconfig file (``KBUILD_KCONFIG`` if the make args choose one)."""
        for arg in self.make_args:
            if arg.startswith("KBUILD_KCONFIG="):
                p = Path(arg.split("=", 1)[1])
                return p if p.is_absolute() else self.src / p
        return self.src / "Kconfig"


def _make_reason(output: str) -> str:
    """The line of a failed make that says why: kbuild's ``***`` message, else the last line
    that is not make's own ``Error N`` bookkeeping."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    noise = re.compile(r"^make(\[\d+\])?: (\*\*\* \[.*\] Error \d+|Leaving|Entering)")
    useful = [ln for ln in lines if not noise.match(ln)]
    stars = [ln.strip("* ").strip() for ln in useful if ln.startswith("***")]
    stars = [ln for ln in stars if ln]
    return stars[0] if stars else (useful[-1] if useful else "")


# --------------------------------------------------------------------------- diagnostics
@dataclass
class SymbolInfo:
    """What the kernel's help text says about a symbol."""

    name: str  # without CONFIG_
    value: str = "n"
    type: str = ""
    depends: str | None = None
    selected_by: list[str] = field(default_factory=list)


def parse_help(text: str, skip_file: str | None = None) -> dict[str, SymbolInfo]:
    """Parse Kconfig help blocks (``?`` in oldconfig, ``helpnewconfig``, menuconfig search).

    Definitions made in *skip_file* (the probe overlay) are ignored.
    """
    infos: dict[str, SymbolInfo] = {}
    cur: SymbolInfo | None = None
    skipping = False
    in_selected = False
    for raw in text.replace("\r", "").splitlines():
        line = raw.rstrip()
        if m := re.match(r"^\s*Symbol: (\w+) \[=(.*)\]$", line):
            cur = infos.setdefault(m[1], SymbolInfo(m[1], m[2]))
            skipping = in_selected = False
            continue
        if cur is None:
            continue
        if m := re.match(r"^\s*Type\s*: (\w+)", line):
            cur.type = m[1]
        elif m := re.match(r"^\s*Defined at (.+):\d+$", line):
            skipping = skip_file is not None and m[1] == skip_file
            in_selected = False
        elif (m := re.match(r"^\s*Depends on: (.+)$", line)) and not skipping:
            cur.depends = cur.depends or m[1].strip()
        elif re.match(r"^\s*Selected by \[[ym]\]:", line):
            in_selected = True
        elif in_selected and (m := re.match(r"^\s*- (.+)$", line)):
            cur.selected_by.append(m[1].strip())
        elif in_selected and not line.startswith(" "):
            in_selected = False
    return infos


def probe(kb: Kbuild, names: Iterable[str]) -> dict[str, SymbolInfo] | None:
    """The kernel's own help text for *names*, even for symbols that are not visible.

    ``make helpnewconfig`` only describes visible new symbols, so a throw-away top-level
    Kconfig adds a dependency-free, type-less prompt for each name; Kconfig then shows the
    symbol with every definition, the real one's ``Depends on:`` included. A name missing from
    the answer is not defined by this kernel. None when the probe itself failed.
    """
    bare = sorted({n.removeprefix("CONFIG_") for n in names})
    if not bare:
        return {}
    overlay = kb.build / "xenpipe-probe.Kconfig"
    probe_cfg = kb.build / "xenpipe-probe.config"
    try:
        top = _text(kb.top_kconfig())
    except OSError:
        return None
    entries = "".join(f'\nconfig {b}\n\tprompt "xenpipe probe"\n' for b in bare)
    atomic_write(overlay, top.rstrip("\n") + "\n" + entries)
    atomic_write(probe_cfg, drop(_text(kb.config), [f"CONFIG_{b}" for b in bare]))
    res = kb.make("-s", "helpnewconfig",
                  variables=[f"KBUILD_KCONFIG={overlay}", f"KCONFIG_CONFIG={probe_cfg}"],
                  check=False)
    for p in (overlay, probe_cfg):
        p.unlink(missing_ok=True)
    if res.returncode != 0:
        return None
    infos = parse_help(res.stdout, skip_file=str(overlay))
    return {f"CONFIG_{b}": infos[b] for b in bare if b in infos and infos[b].type}


def undefined(name: str, final: dict[str, str], unsure: str = "") -> str:
    """*name* is no symbol of this kernel: say so, with the symbol of *final* it was probably
    meant to be (else *unsure*)."""
    hint = difflib.get_close_matches(name, list(final), n=1, cutoff=0.85)
    return f"{name} is not defined by this kernel" + (f" (did you mean {hint[0]}?)" if hint
                                                      else unsure)


def explain(s: Setting, got: str | None, info: SymbolInfo | None, final: dict[str, str]) -> str:
    """One clause: why *s* is not in the final config, in the kernel's words where possible."""
    if info is None:
        return undefined(s.name, final)
    now = "" if got is None or got == "n" else f" (it is {got})"
    head = f"{s} did not survive{now}"
    if s.value == "n" and info.selected_by:
        return f"{head}: selected by {' || '.join(info.selected_by)}"
    if s.value == "m" and final.get("CONFIG_MODULES") != "y":
        return f"{head}: needs CONFIG_MODULES=y"
    if info.depends and info.depends.startswith("<choice>"):
        rest = info.depends.removeprefix("<choice>").removeprefix(" && ")
        return f"{head}: its choice kept another member" + (f"; depends on {rest}" if rest else "")
    if info.depends:
        return f"{head}: depends on {info.depends}"
    return f"{head}: Kconfig gives no dependency (a select, range or choice decides it)"


# ------------------------------------------------------------------------------ frontends
@dataclass
class FrontendResult:
    """What a scripted frontend saw: help text it captured and choice groups it listed."""

    helps: dict[str, SymbolInfo] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # CONFIG_X -> why the tool refused
    choices: list[list[str]] = field(default_factory=list)  # members (CONFIG_X) of listed choices
    answers: int = 0


def _spawn(kb: Kbuild, target: str, env: dict[str, str], deadline: float) -> Any:
    """The frontend under a pty of a fixed size, no send delay, in its own session."""
    import pexpect

    argv = kb.argv(target)
    with open(kb.log, "a") as f:
        f.write(f"$ {proc.render(argv)}\n")
    try:
        child = pexpect.spawn(argv[0], argv[1:], env=proc.environment(env), encoding="utf-8",
                              codec_errors="replace", dimensions=(ROWS, COLS),
                              timeout=max(1.0, deadline - time.monotonic()), maxread=65536)
    except pexpect.ExceptionPexpect as exc:
        raise KconfigError(f"make {target}: cannot start: {exc}") from None
    child.delaybeforesend = None
    return child


def _stop(child: Any) -> None:
    """End the frontend and every process it started (it leads its own session)."""
    proc.stop_group(child.pid, child.isalive, grace=2.5)
    child.close(force=True)


def _finish(child: Any, deadline: float) -> None:
    """After EOF: let the frontend exit by itself (so its status is real), then clean up."""
    end = min(deadline, time.monotonic() + 30)
    while child.isalive() and time.monotonic() < end:
        time.sleep(0.02)
    _stop(child)


def _status(child: Any) -> str:
    if child.signalstatus is not None:
        return f"was killed by signal {child.signalstatus}"
    return f"failed with exit status {child.exitstatus}"


def _pending(child: Any, wait: float) -> bool:
    """True if the child wrote more within *wait* s (then the last match was not a prompt)."""
    return bool(select.select([child.child_fd], [], [], wait)[0])


_PROMPT = re.compile(
    r"(?P<prompt>[^\n]*?) \((?P<sym>[A-Za-z0-9_]+)\) (?:\[(?P<opts>[^\]\n]*)\] )?\(NEW\) \Z"
)
_CHOICE = re.compile(r"choice\[1-(?P<n>\d+)\?\]: \Z")
_CHOICE_ITEM = re.compile(
    r"^\s*(?P<def>>)?\s*(?P<no>\d+)\. .*?\((?P<sym>[A-Za-z0-9_]+)\)(?: \(NEW\))?$"
)
_TRISTATE_OPTS = re.compile(r"[YMN](?:/[ymn])*/\?")


def _choice_groups(text: str) -> list[list[tuple[int, str, bool]]]:
    """Every choice listing in *text*: [(number, CONFIG_X, is_default)]."""
    groups: list[list[tuple[int, str, bool]]] = []
    cur: list[tuple[int, str, bool]] = []
    for line in text.replace("\r", "").splitlines():
        if m := _CHOICE_ITEM.match(line):
            if int(m["no"]) == 1:
                cur = []
            cur.append((int(m["no"]), f"CONFIG_{m['sym']}", bool(m["def"])))
        elif line.lstrip().startswith("choice[") and cur:
            groups.append(cur)
            cur = []
    if cur:
        groups.append(cur)
    return groups


def run_oldconfig(kb: Kbuild, requested: Sequence[Setting], deadline: float) -> FrontendResult:
    """Drive ``make oldconfig``: answer only waiting ``(NEW)`` prompts.

    Requested symbols get their value (a tristate prompt that does not offer it gets ``?``
    first, to keep the kernel's explanation), every other new symbol and choice its default.
    A line that already carries its answer (``... [Y/n/?] y``) is never a prompt: only text at
    the very end of the output, with nothing more pending, is.
    """
    import pexpect

    want = {s.bare: s for s in requested}
    result = FrontendResult()
    asked: Counter[str] = Counter()
    awaiting_help: str | None = None
    child = _spawn(kb, "oldconfig", {}, deadline)
    with open(kb.log, "a") as log:
        tee = proc.Tee(log)
        child.logfile_read = tee
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise KconfigError(f"make oldconfig: no end after {INTERACTIVE_TIMEOUT:.0f} s "
                                       f"(log: {kb.log})")
                i = child.expect([_PROMPT, _CHOICE, pexpect.EOF], timeout=remaining)
                if i == 2:
                    _finish(child, deadline)
                    break
                if _pending(child, 0.02):
                    continue  # the answer followed on the same line: already answered
                if i == 0:
                    sym, opts = child.match["sym"], child.match["opts"]
                    if awaiting_help == sym:
                        result.helps.update(parse_help(child.before))
                    awaiting_help = None
                    answer = _answer_symbol(want.get(sym), opts, asked, sym, result)
                    if answer == "?":
                        awaiting_help = sym
                else:
                    answer = _answer_choice(_choice_groups(child.before), want)
                result.answers += 1
                child.sendline(answer)
        except pexpect.TIMEOUT:
            raise KconfigError(f"make oldconfig: no end after {INTERACTIVE_TIMEOUT:.0f} s "
                               f"(log: {kb.log})") from None
        finally:
            _stop(child)
            log.write("\n")
    if child.exitstatus != 0:
        tail = [ln for ln in tee.text.replace("\r", "").splitlines() if ln.strip()]
        last = tail[-1].strip() if tail else ""
        raise KconfigError(f"make oldconfig {_status(child)}" + (f": {last}" if last else "")
                           + f" (log: {kb.log})")
    result.choices = [[sym for _, sym, _ in g] for g in _choice_groups(tee.buf.getvalue())]
    return result


def _answer_symbol(s: Setting | None, opts: str | None, asked: Counter[str], sym: str,
                   result: FrontendResult) -> str:
    asked[sym] += 1
    if s is None:
        return ""  # not ours: the default
    if opts is not None and _TRISTATE_OPTS.fullmatch(opts):
        offered = {o.lower() for o in opts.split("/") if o != "?"}
        if s.value in offered:
            return s.value
        result.notes[s.name] = f"oldconfig offered only [{opts}]"
        return "?" if asked[sym] == 1 else ""
    if asked[sym] > 2:  # the value was refused (out of range): keep the default
        result.notes[s.name] = "oldconfig refused the value"
        return ""
    v = s.value
    return v[1:-1].replace('\\"', '"').replace("\\\\", "\\") if v.startswith('"') else v


def _answer_choice(groups: list[list[tuple[int, str, bool]]], want: dict[str, Setting]) -> str:
    if not groups:
        return ""
    members = groups[-1]
    for no, sym, _ in members:
        s = want.get(sym.removeprefix("CONFIG_"))
        if s is not None and s.value == "y":
            return str(no)
    default = next((sym for _, sym, d in members if d), None)
    refused = {sym for _, sym, _ in members if (s := want.get(sym.removeprefix("CONFIG_")))
               and s.value == "n"}
    if default in refused:
        for no, sym, _ in members:
            if sym not in refused:
                return str(no)
    return ""


# menuconfig --------------------------------------------------------------------------
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
    child = _spawn(kb, "menuconfig", env, deadline)
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
        _finish(child, deadline)
    finally:
        _stop(child)
    if child.exitstatus != 0:
        raise KconfigError(f"make menuconfig {_status(child)} (log: {kb.log})")
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


FRONTENDS: dict[str, Callable[[Kbuild, Sequence[Setting], float], FrontendResult]] = {
    "oldconfig": run_oldconfig,
    "menuconfig": run_menuconfig,
}


# ---------------------------------------------------------------------------------- stage
def _base(kb: Kbuild, base: str) -> dict[str, str]:
    """Start the .config from a make target or a config file; describe the base."""
    kb.build.mkdir(parents=True, exist_ok=True)
    if Path(base).is_absolute():
        p = Path(base)
        try:
            atomic_write(kb.config, p.read_bytes())
        except OSError as exc:
            raise KconfigError(f"[kernel] base {display(p)}: cannot read: {exc.strerror}") from None
        return {"file": display(p), "sha256": digest.of_file(p)}
    if not re.fullmatch(r"[A-Za-z0-9_.-]*config", base):
        raise KconfigError(f"[kernel] base {base!r} is neither a *config make target nor a file")
    kb.make(base)
    if not kb.config.is_file():
        raise KconfigError(f"make {base} wrote no .config in {kb.build} (log: {kb.log})")
    return {"target": base}


def _force(kb: Kbuild, kcfg: KernelCfg, requested: list[Setting], deadline: float
           ) -> tuple[FrontendResult, dict[str, str]]:
    """Run the frontend; retry once with whole choices made new when a member was asked for."""
    before = _text(kb.config)
    extra: set[str] = set()
    while True:
        if kcfg.frontend == "oldconfig":
            atomic_write(kb.config, drop(before, [s.name for s in requested] + sorted(extra)))
        res = FRONTENDS[kcfg.frontend](kb, requested, deadline)
        final = read_config(kb.config)
        missed = [s.name for s in requested if not satisfied(s.value, final.get(s.name))]
        more = {m for g in res.choices if any(n in g for n in missed) for m in g}
        if kcfg.frontend != "oldconfig" or not more - extra:
            return res, final
        extra |= more


def _check(kb: Kbuild, fragments: list[Setting], requested: list[Setting], final: dict[str, str],
           res: FrontendResult) -> tuple[list[str], list[str]]:
    """(errors for requested symbols, warnings for fragment lines) against the final config."""
    last: dict[str, Setting] = {}
    for s in fragments:
        last[s.name] = s
    req = {s.name for s in requested}
    bad_frag = [s for s in last.values() if s.name not in req
                and (s.name not in final or not satisfied(s.value, final.get(s.name)))]
    bad_req = [s for s in requested if not satisfied(s.value, final.get(s.name))
               or s.name not in final and s.value == "n"]
    need = [s.name for s in bad_frag + bad_req if s.bare not in res.helps or s.name not in final]
    probed = probe(kb, need) if need else {}
    if probed is None:
        probed = {}
        unknown = f"dependency information unavailable (log: {kb.log})"
    else:
        unknown = ""

    def info(s: Setting) -> SymbolInfo | None:
        got = probed.get(s.name) or res.helps.get(s.bare)
        return got if got or not unknown else SymbolInfo(s.bare, depends=unknown)

    warnings = []
    for s in bad_frag:
        i = info(s)
        if i is None:
            warnings.append(f"{s.origin}: {undefined(s.name, final, ' (typo?)')}")
        elif not satisfied(s.value, final.get(s.name)):
            warnings.append(f"{s.origin}: {explain(s, final.get(s.name), i, final)}")
    errors = []
    for s in bad_req:
        i = info(s)
        if i is None or not satisfied(s.value, final.get(s.name)):
            errors.append(explain(s, final.get(s.name), i, final))
    return errors, warnings


def configure(cfg: Config, ws: Workspace, src: Path) -> dict[str, Any]:
    """The whole config stage for the kernel; returns the record for metadata.json."""
    kcfg = cfg.kernel
    if kcfg is None:
        raise KconfigError("no [kernel] table in the config: nothing to configure")
    if kcfg.frontend not in FRONTENDS:
        known = ", ".join(FRONTENDS)
        raise KconfigError(f"[kernel] frontend {kcfg.frontend!r}: expected one of {known}")
    start = time.monotonic()
    if not (src / "Makefile").is_file():
        raise KconfigError(f"kernel tree {src} has no Makefile: run doit fetch first")
    kb = Kbuild(src.resolve(), (ws.out / BUILD_DIR).resolve(), tuple(kcfg.make_args),
                ws.log("config"))
    with open(kb.log, "a") as f:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        f.write(f"# xenpipe config {stamp}: frontend {kcfg.frontend}\n")

    fragments = [s for path in kcfg.fragments for s in parse_fragment(path)]
    requested = parse_symbols(kcfg.symbols)
    steps: dict[str, float] = {}
    mark = start

    def step(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        steps[name] = round(now - mark, 2)
        mark = now

    base = _base(kb, kcfg.base)
    step("base")
    if fragments:
        atomic_write(kb.config, merge(_text(kb.config), fragments))
    kb.make("olddefconfig")
    step("fragments")
    res, final = _force(kb, kcfg, requested, time.monotonic() + INTERACTIVE_TIMEOUT)
    step("frontend")
    errors, warnings = _check(kb, fragments, requested, final, res)
    step("verify")
    with open(kb.log, "a") as f:
        for name, note in res.notes.items():
            f.write(f"xenpipe: note: {name}: {note}\n")
        for w in warnings:
            f.write(f"xenpipe: warning: {w}\n")
        for e in errors:
            f.write(f"xenpipe: error: {e}\n")
    if errors:
        raise KconfigError("; ".join(errors))

    release = kb.release()
    step("release")
    out = ws.out / f"config-{release}"
    atomic_write(out, kb.config.read_bytes())
    forced = set(FORCED_SYMBOLS)
    record: dict[str, Any] = {
        "release": release,
        "base": base,
        "fragments": [{"path": display(p), "sha256": digest.of_file(p)} for p in kcfg.fragments],
        "symbols": [{"symbol": s.name, "requested": s.value, "final": final.get(s.name, "n"),
                     "forced": str(s) in forced} for s in requested],
        "config": {"path": str(out), "sha256": digest.of_file(out)},
        "build_dir": str(kb.build),
        "warnings": warnings,
        "frontend": kcfg.frontend,
        "frontend_answers": res.answers,
        "frontend_seconds": steps["frontend"],
        "steps": steps,
        "duration": round(time.monotonic() - start, 2),
    }
    atomic_write(ws.out / "kconfig-summary.txt", summary(record))
    return record


def summary(record: dict[str, Any]) -> str:
    """The short human-readable account written next to config-<release>."""
    base = record["base"].get("target") or record["base"].get("file")
    lines = [
        f"kernel release: {record['release']}",
        f"base:           {base}",
        *[f"fragment:       {f['path']} (sha256 {f['sha256'][:12]})" for f in record["fragments"]],
        f"frontend:       {record['frontend']} ({record['frontend_seconds']} s, "
        f"{record['frontend_answers']} answers)",
        *[f"symbol:         {s['symbol']}={s['requested']} -> {s['final']}"
          + (" (forced)" if s["forced"] else "") for s in record["symbols"]],
        f"config:         {record['config']['path']} (sha256 {record['config']['sha256'][:12]})",
        *[f"warning:        {w}" for w in record["warnings"]],
        f"duration:       {record['duration']} s",
    ]
    return "\n".join(lines) + "\n"


# What `make <base>`, olddefconfig/oldconfig and kernelrelease read from a source tree: every
# Kconfig file, the kconfig tool and the scripts Kconfig calls, the top and arch Makefiles
# (version, SRCARCH, KBUILD_DEFCONFIG), defconfigs and config fragments, localversion files.
KCONFIG_INPUT = re.compile(
    r"(?:^|/)Kconfig(?:\.[^/]*)?$|^scripts/|^Makefile$|^arch/[^/]+/Makefile$"
    r"|(?:^|/)configs/[^/]+$|^localversion[^/]*$")


def tree_inputs(patched: dict[str, str | None] | None) -> dict[str, str | None]:
    """The files a patch series wrote (path -> sha256, None if deleted) that kconfig reads:
    a patch to a .c file must not rerun ``doit config``, one to a Kconfig file must."""
    return {path: sha for path, sha in sorted((patched or {}).items())
            if KCONFIG_INPUT.search(path)}


def outputs_present(cfg: Config, ws: Workspace) -> bool:
    """Is the .config doit config last made still in the build directory, as it made it?
    (A removed build directory, or a .config edited by hand, reruns doit config instead of
    failing the build with "run doit config first" while config says it is up to date.)"""
    want = (ws.state(Key.CONFIG).get("config") or {}).get("sha256")
    dotconfig = ws.out / BUILD_DIR / ".config"
    return bool(want) and dotconfig.is_file() and digest.of_file(dotconfig) == want


def fingerprint(cfg: Config) -> dict[str, Any]:
    """The cheap inputs that decide whether ``config`` must run again."""
    kcfg = cfg.kernel
    if kcfg is None:
        return {}
    if Path(kcfg.base).is_absolute():
        p = Path(kcfg.base)
        base: dict[str, str] = {"file": display(p),
                                "sha256": digest.of_file(p) if p.is_file() else "missing"}
    else:
        base = {"target": kcfg.base}
    return {
        "version": FINGERPRINT_VERSION,
        "base": base,
        "fragments": [{"path": display(p),
                       "sha256": digest.of_file(p) if p.is_file() else "missing"}
                      for p in kcfg.fragments],
        "symbols": list(kcfg.symbols),
        "frontend": kcfg.frontend,
        "make_args": list(kcfg.make_args),
    }
