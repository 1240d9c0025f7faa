"""The scripted ``make oldconfig`` frontend: answer each waiting ``(NEW)`` prompt.

Requested symbols are made new (their lines dropped from .config) so that conf asks for them;
conf then applies the dependency rules and explains (``?``) what it will not take.
"""

from __future__ import annotations

import re
import select
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pipeline import proc
from pipeline.errors import KconfigError
from pipeline.kernel import frontend
from pipeline.kernel.dotconfig import Setting
from pipeline.kernel.frontend import FrontendResult, exit_reason, finish, spawn, stop
from pipeline.kernel.kbuild import Kbuild, parse_help


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


def _timed_out(kb: Kbuild) -> KconfigError:
    return KconfigError(f"make oldconfig: no end after {frontend.INTERACTIVE_TIMEOUT:.0f} s "
                        f"(log: {kb.log})")


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
    child = spawn(kb, "oldconfig", {}, deadline)
    with open(kb.log, "a") as log:
        tee = proc.Tee(log)
        child.logfile_read = tee
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _timed_out(kb)
                i = child.expect([_PROMPT, _CHOICE, pexpect.EOF], timeout=remaining)
                if i == 2:
                    finish(child, deadline)
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
            raise _timed_out(kb) from None
        finally:
            stop(child)
            log.write("\n")
    if child.exitstatus != 0:
        tail = [ln for ln in tee.text.replace("\r", "").splitlines() if ln.strip()]
        last = tail[-1].strip() if tail else ""
        raise KconfigError(f"make oldconfig {exit_reason(child)}" + (f": {last}" if last else "")
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

