"""A small stand-in for the kernel's scripts/kconfig ``conf`` and ``mconf``.

Why a second Kconfig implementation: pipeline.kernel forces symbols by driving the kernel's own
interactive frontends (``make oldconfig`` answered prompt by prompt, ``make menuconfig`` read
off a pyte-rendered screen), so its tests need a real program behind a real pty. The real
tools need a Linux source tree, and the slow tests (tests/kernel_tree.py) unpack one; the fast
tests instead run this script from tests/fake_kernel.py's kbuild look-alike (a Makefile and a
small Kconfig), so every frontend path (answers, refusals, choices, help text, invisible
symbols, a frontend that never draws) runs in seconds without a kernel. What matters is that
its prompts and screens look like the real tools' where pipeline.kernel parses them, not that
it is a complete Kconfig; the slow tests on real Linux 6.1 check that the two agree.

It reads a subset of the Kconfig language (config/menu/choice/source, bool/tristate/string/
int/hex, prompt, depends on, default, help; a type-less redefinition adds a prompt, as in real
Kconfig) and speaks the same protocol as the real tools:

- oldconfig: ``Prompt (SYM) [M/n/y/?] (NEW) `` prompts, already-answered lines
  (``... [Y/n/?] y``), choices (`` > 1. Item (SYM) (NEW)`` + ``choice[1-N?]: ``) and ``?`` help
  with ``Depends on: A [=y] && B [=n]``;
- helpnewconfig / listnewconfig, olddefconfig, alldefconfig, allnoconfig;
- menuconfig: a full-screen ANSI interface (reverse video for the highlighted entry) with
  ``/`` search, ``(1)`` jump keys, y/m/n, an input box, <Esc><Esc> and the save question.

Usage: fake_kconfig.py --MODE KCONFIG (environment: srctree, KCONFIG_CONFIG).
"""

from __future__ import annotations

import os
import re
import select
import sys
import termios
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TRI = {"n": 0, "m": 1, "y": 2}
NAME = "nmy"


@dataclass
class Entry:
    kind: str  # config, menu, choice, root
    sym: Sym | None = None
    prompt: str | None = None
    deps: list[str] = field(default_factory=list)
    default: str | None = None
    help: str = ""
    children: list[Entry] = field(default_factory=list)
    parent: Entry | None = None
    where: str = ""


@dataclass
class Sym:
    name: str
    type: str | None = None
    entries: list[Entry] = field(default_factory=list)
    choice: Entry | None = None


class Kconfig:
    def __init__(self, top: str, srctree: Path) -> None:
        self.srctree = srctree
        self.syms: dict[str, Sym] = {}
        self.root = Entry("root", prompt="Main menu")
        self.values: dict[str, str] = {}
        self.user: dict[str, str] = {}
        self.parse(Path(top) if Path(top).is_absolute() else srctree / top, [self.root])

    # ---------------------------------------------------------------------------- parsing
    def parse(self, path: Path, stack: list[Entry]) -> None:
        cur: Entry | None = None
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            raw = lines[i]
            line = raw.strip()
            rel = path.relative_to(self.srctree) if path.is_relative_to(self.srctree) else path
            where = f"{rel}:{i + 1}"
            i += 1
            if not line or line.startswith("#"):
                continue
            word, _, rest = line.partition(" ")
            rest = rest.strip()
            if word == "mainmenu":
                self.root.prompt = rest.strip('"')
            elif word == "source":
                self.parse(self.srctree / rest.strip('"'), stack)
            elif word == "config":
                sym = self.syms.setdefault(rest, Sym(rest))
                cur = Entry("config", sym=sym, parent=stack[-1], where=where)
                if stack[-1].kind == "choice":
                    sym.choice = stack[-1]
                sym.entries.append(cur)
                stack[-1].children.append(cur)
            elif word in ("menu", "choice"):
                cur = Entry(word, prompt=rest.strip('"') or None, parent=stack[-1], where=where)
                stack[-1].children.append(cur)
                stack.append(cur)
            elif word in ("endmenu", "endchoice"):
                stack.pop()
                cur = None
            elif word in ("bool", "tristate", "string", "int", "hex") and cur is not None:
                if cur.sym is not None:
                    cur.sym.type = word
                if rest:
                    cur.prompt = rest.strip('"')
            elif word == "prompt" and cur is not None:
                cur.prompt = rest.strip('"')
            elif word == "depends" and cur is not None:
                cur.deps.append(rest.removeprefix("on").strip())
            elif word == "default" and cur is not None:
                cur.default = rest
            elif word == "help" and cur is not None:
                text = []
                while i < len(lines) and (not lines[i].strip() or lines[i][:1] in " \t"):
                    text.append(lines[i].strip())
                    i += 1
                cur.help = "\n".join(text).strip()
        for sym in self.syms.values():
            if sym.type is None:
                for e in sym.entries:
                    print(f"{e.where}:warning: config symbol defined without type",
                          file=sys.stderr)

    # ------------------------------------------------------------------------- evaluation
    def expr(self, text: str) -> int:
        """Tristate value of a Kconfig expression (&&, ||, !, parentheses, y/m/n, symbols)."""
        toks = re.findall(r"&&|\|\||!|\(|\)|[A-Za-z0-9_]+", text)
        pos = 0

        def atom() -> int:
            nonlocal pos
            t = toks[pos]
            pos += 1
            if t == "!":
                return 2 - atom()
            if t == "(":
                v = disj()
                pos += 1
                return v
            return TRI.get(t, TRI.get(self.values.get(t, "n"), 0)) if t in TRI else \
                TRI.get(self.values.get(t, "n"), 0)

        def chain(operand: Callable[[], int], op: str, combine: Callable[[int, int], int]
                  ) -> int:
            nonlocal pos
            v = operand()
            while pos < len(toks) and toks[pos] == op:
                pos += 1
                v = combine(v, operand())
            return v

        def conj() -> int:
            return chain(atom, "&&", min)

        def disj() -> int:
            return chain(conj, "||", max)

        return disj()

    def dep_level(self, e: Entry) -> int:
        level = 2
        node: Entry | None = e
        while node is not None:
            for d in node.deps:
                level = min(level, self.expr(d))
            node = node.parent
        return level

    def visible(self, e: Entry) -> bool:
        if e.kind == "choice":
            return self.dep_level(e) > 0 and any(self.visible(c) for c in e.children)
        return e.prompt is not None and self.dep_level(e) > 0 and \
            (e.sym is None or e.sym.type is not None)

    def sym_visible(self, sym: Sym) -> bool:
        return any(self.visible(e) for e in sym.entries)

    def allowed(self, sym: Sym) -> list[str]:
        level = max((self.dep_level(e) for e in sym.entries if self.visible(e)), default=0)
        if sym.type == "bool":
            return ["n", "y"] if level else ["n"]
        modules = self.values.get("MODULES") == "y"
        out = ["n"]
        if level >= 1 and modules:
            out.append("m")
        if level == 2:
            out.append("y")
        return out

    def default(self, sym: Sym) -> str:
        for e in sym.entries:
            if e.default is not None:
                d = e.default
                if d.startswith('"'):
                    return d.strip('"')
                if sym.type in ("bool", "tristate"):
                    return d if d in TRI else self.values.get(d, "n")
                return d
        return "n" if sym.type in ("bool", "tristate") else ("0" if sym.type in ("int", "hex")
                                                          else "")

    def calc(self) -> None:
        """Values from user values and defaults, to a fixed point."""
        for _ in range(20):
            old = dict(self.values)
            for sym in self.syms.values():
                if sym.type is None or sym.choice is not None:
                    continue
                level = max((self.dep_level(e) for e in sym.entries), default=0)
                if sym.type in ("bool", "tristate"):
                    if level == 0:
                        v = "n"
                    elif self.sym_visible(sym) and sym.name in self.user:
                        v = self.user[sym.name]
                    else:
                        v = self.default(sym)
                    if v == "m" and (sym.type == "bool" or self.values.get("MODULES") != "y"):
                        v = "y"  # as Kconfig does: m means y without module support
                    ok = self.allowed(sym) if self.sym_visible(sym) else ["n", "m", "y"]
                    if v not in ok:
                        v = "m" if v == "y" and "m" in ok else "n"
                    self.values[sym.name] = v
                else:
                    self.values[sym.name] = self.user.get(sym.name, self.default(sym)) \
                        if level else ""
            for choice in self.choices():
                members = [c.sym for c in choice.children if c.sym is not None]
                vis = [m for m in members if self.sym_visible(m)]
                pick = next((m for m in vis if self.user.get(m.name) == "y"), None)
                if pick is None:
                    first = vis[0] if vis else None
                    pick = next((m for m in vis if m.name == choice.default), first)
                if not self.visible(choice):
                    pick = None
                for m in members:
                    self.values[m.name] = "y" if m is pick else "n"
            if self.values == old:
                return

    def choices(self, node: Entry | None = None) -> list[Entry]:
        node = node or self.root
        out = [node] if node.kind == "choice" else []
        for c in node.children:
            out += self.choices(c)
        return out

    def is_new(self, sym: Sym) -> bool:
        if sym.choice is not None:
            return not any(c.sym.name in self.user for c in sym.choice.children if c.sym)
        return sym.name not in self.user

    # ----------------------------------------------------------------------------- files
    def read(self, path: Path) -> None:
        if not path.is_file():
            return
        for line in path.read_text().splitlines():
            if m := re.match(r"^CONFIG_(\w+)=(.*)$", line):
                self.user[m[1]] = m[2].strip('"')
            elif m := re.match(r"^# CONFIG_(\w+) is not set$", line):
                self.user[m[1]] = "n"
        for name in list(self.user):
            if name not in self.syms or self.syms[name].type is None:
                del self.user[name]

    def write(self, path: Path) -> None:
        out = ["#", f"# Automatically generated file; DO NOT EDIT.\n# {self.root.prompt}", "#"]
        seen: set[str] = set()

        def walk(node: Entry) -> None:
            for e in node.children:
                if e.sym is not None and e.sym.name not in seen and e.sym.type:
                    seen.add(e.sym.name)
                    sym = e.sym
                    if max(self.dep_level(x) for x in sym.entries) > 0:
                        v = self.values.get(sym.name, "n")
                        if sym.type in ("bool", "tristate"):
                            out.append(f"# CONFIG_{sym.name} is not set" if v == "n"
                                       else f"CONFIG_{sym.name}={v}")
                        elif sym.type == "string":
                            out.append(f'CONFIG_{sym.name}="{v}"')
                        else:
                            out.append(f"CONFIG_{sym.name}={v}")
                walk(e)

        walk(self.root)
        path.write_text("\n".join(out) + "\n")

    # ------------------------------------------------------------------------------ help
    def dep_text(self, e: Entry) -> str:
        deps = []
        node: Entry | None = e
        while node is not None:
            deps = node.deps + deps
            node = node.parent
        return " && ".join(re.sub(r"\b([A-Z][A-Z0-9_]*)\b",
                                  lambda m: f"{m[1]} [={self.values.get(m[1], 'n')}]", d)
                           for d in dict.fromkeys(deps))

    def path_of(self, e: Entry) -> list[Entry]:
        path = []
        node: Entry | None = e
        while node is not None and node.kind != "root":
            path.append(node)
            node = node.parent
        return path[::-1]

    def symbol_text(self, sym: Sym, jump: list[Entry] | None = None) -> str:
        lines = [f"Symbol: {sym.name} [={self.values.get(sym.name, 'n')}]",
                 f"Type  : {sym.type}"]
        for e in sym.entries:
            if e.prompt is None:
                continue
            lines.append(f"Defined at {e.where}")
            lines.append(f"  Prompt: {e.prompt}")
            deps = self.dep_text(e)
            if e.parent is not None and e.parent.kind == "choice":
                deps = "<choice>"  # as Kconfig shows a choice member's dependency
            if deps:
                lines.append(f"  Depends on: {deps}")
            lines.append("  Location:")
            path = self.path_of(e)
            target = next((p for p in reversed(path) if self.visible(p)), None)
            for depth, p in enumerate(path):
                label = p.prompt + (f" ({sym.name} [={self.values.get(sym.name, 'n')}])"
                                    if p is e else " (<choice> [=y])" if p.kind == "choice"
                                    else "")
                pad = " " * (4 + 2 * depth)
                if jump is not None and p is target:
                    jump.append(p)
                    pad = f"({len(jump)})" + pad[3:]
                lines.append(f"{pad}-> {label}")
        return "\n".join(lines) + "\n"

    def help_text(self, e: Entry) -> str:
        head = f"CONFIG_{e.sym.name}:\n\n{e.help}\n" if e.help else \
            "There is no help available for this option.\n"
        return f"\n{head}{self.symbol_text(e.sym)}\n\n"


# ------------------------------------------------------------------------------- oldconfig
def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def readline() -> str:
    line = sys.stdin.readline()
    if not line:
        print("\nError in reading or end of file.", file=sys.stderr)
        sys.exit(1)
    if not sys.stdin.isatty():
        out(line)
    return line.strip()


def ask_sym(kc: Kconfig, e: Entry) -> None:
    sym = e.sym
    while True:
        cur = kc.values.get(sym.name, "n")
        if sym.type in ("bool", "tristate"):
            ok = kc.allowed(sym)
            opts = "/".join([cur.upper()] + [v for v in NAME if v != cur and v in ok] + ["?"])
            line = f"{e.prompt} ({sym.name}) [{opts}] "
        else:
            line = f"{e.prompt} ({sym.name}) [{cur}] "
        if not kc.is_new(sym):
            out(line + cur + "\n")
            return
        out(line + "(NEW) ")
        ans = readline()
        if ans == "?":
            out(kc.help_text(e))
            continue
        if sym.type in ("bool", "tristate"):
            v = {"": cur, "no": "n", "yes": "y"}.get(ans.lower(), ans.lower())
            if v not in NAME:
                continue
            if v not in kc.allowed(sym):
                out(kc.help_text(e))
                continue
        else:
            v = ans or cur
            if sym.type == "int" and not re.fullmatch(r"-?\d+", v):
                continue
            if sym.type == "hex" and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", v):
                continue
        kc.user[sym.name] = v
        kc.calc()
        return


def ask_choice(kc: Kconfig, c: Entry) -> None:
    members = [m for m in c.children if m.sym is not None and kc.visible(m)]
    new = kc.is_new(members[0].sym)
    while True:
        out(f"{c.prompt}\n")
        cur = 1
        for i, m in enumerate(members, 1):
            on = kc.values.get(m.sym.name) == "y"
            cur = i if on else cur
            out(f"{'>' if on else ' '} {i}. {m.prompt} ({m.sym.name})"
                + (" (NEW)" if m.sym.name not in kc.user else "") + "\n")
        if not new:
            out(f"choice[1-{len(members)}?]: {cur}\n")
            return
        out(f"choice[1-{len(members)}?]: ")
        ans = readline()
        if ans == "?":
            out(f"\n{c.help or 'There is no help available for this option.'}\n\n")
            continue
        pick = cur if ans == "" else int(ans) if ans.isdigit() else 0
        if not 1 <= pick <= len(members):
            continue
        for i, m in enumerate(members, 1):
            kc.user[m.sym.name] = "y" if i == pick else "n"
        kc.calc()
        return


def new_entries(kc: Kconfig, menu: Entry) -> bool:
    for e in menu.children:
        if e.kind == "config" and kc.visible(e) and kc.is_new(e.sym):
            return True
        if e.kind == "choice" and kc.visible(e) and \
                kc.is_new(next(m.sym for m in e.children if m.sym)):
            return True
    return False


def menus(node: Entry) -> list[Entry]:
    out_ = [node] if node.kind in ("root", "menu") else []
    for c in node.children:
        if c.kind == "menu":
            out_ += menus(c)
    return out_


def oldconfig(kc: Kconfig) -> None:
    while True:
        todo = [m for m in menus(kc.root)
                if (m.kind == "root" or kc.visible(m)) and new_entries(kc, m)]
        if not todo:
            return
        out("*\n* Restart config...\n*\n")
        menu = todo[0]
        out(f"*\n* {menu.prompt}\n*\n")
        for e in menu.children:
            if not kc.visible(e):
                continue
            if e.kind == "config":
                ask_sym(kc, e)
            elif e.kind == "choice":
                ask_choice(kc, e)


# ------------------------------------------------------------------------------ menuconfig
class Tui:
    """Just enough of mconf: menus, search, jump, set, input box, save question."""

    def __init__(self, kc: Kconfig, config: Path) -> None:
        self.kc = kc
        self.config = config
        self.changed = False
        self.rows, self.cols = os.get_terminal_size(0).lines, os.get_terminal_size(0).columns

    def key(self) -> str:
        c = os.read(0, 1).decode(errors="replace")
        if c != "\x1b":
            return c
        if select.select([0], [], [], 0.05)[0]:
            c2 = os.read(0, 1).decode(errors="replace")
            if c2 == "\x1b":
                return "ESC2"
            if c2 == "[":
                return {"A": "UP", "B": "DOWN"}.get(os.read(0, 1).decode(), "")
        return "ESC"

    def draw(self, title: str, body: list[str], selected: int | None = None,
             buttons: str = "<Select>    < Exit >    < Help >") -> None:
        s = ["\x1b[H\x1b[2J", f"\x1b[1;1H .config - {self.kc.root.prompt}",
             f"\x1b[3;3H+--- {title} ---+"]
        for i, line in enumerate(body[: self.rows - 8]):
            text = line[: self.cols - 8]
            if i == selected:
                text = f"\x1b[7m{text}\x1b[0m"
            s.append(f"\x1b[{5 + i};3H| {text}")
        first, _, rest = buttons.partition(" ")
        s.append(f"\x1b[{self.rows - 2};10H\x1b[7m{first}\x1b[0m {rest}")
        out("".join(s))

    def item(self, e: Entry) -> str:
        kc = self.kc
        if e.kind == "menu":
            return f"    {e.prompt}  --->"
        if e.kind == "choice":
            cur = next((m.prompt for m in e.children if m.sym and kc.values.get(m.sym.name) == "y"),
                       "")
            return f"    {e.prompt} ({cur})  --->"
        v = kc.values.get(e.sym.name, "n")
        if e.sym.choice is not None:
            mark = "(X)" if v == "y" else "( )"
        elif e.sym.type == "bool":
            mark = "[*]" if v == "y" else "[ ]"
        elif e.sym.type == "tristate":
            mark = {"y": "<*>", "m": "<M>", "n": "< >"}[v]
        else:
            mark = f"({v})"
        return f"{mark} {e.prompt}"

    def menu(self, menu: Entry, selected: Entry | None = None) -> None:
        pos = 0
        while True:
            items = [e for e in menu.children if self.kc.visible(e)]
            if selected is not None and selected in items:
                pos = items.index(selected)
                selected = None
            pos = max(0, min(pos, len(items) - 1))
            self.draw(menu.prompt or "", ["Arrow keys navigate the menu.  <Enter> selects "
                                          "submenus --->", ""] + [self.item(e) for e in items],
                      pos + 2)
            k = self.key()
            e = items[pos] if items else None
            if k == "ESC2":
                return
            if k == "UP":
                pos -= 1
            elif k == "DOWN":
                pos += 1
            elif k == "/":
                self.search()
            elif e is None:
                continue
            elif k in ("y", "m", "n", " ") and e.kind == "config" and e.sym.type in ("bool",
                                                                                   "tristate"):
                self.set(e, k)
            elif k == "\r" or k == "\n":
                if e.kind == "choice":
                    self.checklist(e)
                elif e.kind == "menu":
                    self.menu(e)
                elif e.sym.type in ("string", "int", "hex"):
                    self.inputbox(e)
                else:
                    self.set(e, "y")

    def checklist(self, choice: Entry) -> None:
        """Like mconf's choice dialog: '+' moves down, space or Enter selects and returns."""
        members = [m for m in choice.children if m.sym is not None and self.kc.visible(m)]
        pos = next((i for i, m in enumerate(members) if self.kc.values.get(m.sym.name) == "y"), 0)
        while True:
            self.draw(choice.prompt or "", ["Use the arrow keys to navigate this window.", ""]
                      + [self.item(m) for m in members], pos + 2, "<Select>      < Help >")
            k = self.key()
            if k == "ESC2":
                return
            if k in ("+", "DOWN"):
                pos = min(pos + 1, len(members) - 1)
            elif k in ("-", "UP"):
                pos = max(pos - 1, 0)
            elif k in (" ", "s", "\r", "\n"):
                self.set(members[pos], "y")
                return

    def set(self, e: Entry, k: str) -> None:
        kc = self.kc
        if k == " ":
            k = "n" if kc.values.get(e.sym.name) == "y" else "y"
        if e.sym.choice is not None:
            if k == "y":
                for m in e.sym.choice.children:
                    kc.user[m.sym.name] = "y" if m is e else "n"
        elif k in kc.allowed(e.sym):
            kc.user[e.sym.name] = k
        else:
            return
        self.changed = True
        kc.calc()

    def inputbox(self, e: Entry) -> None:
        text = self.kc.values.get(e.sym.name, "")
        while True:
            self.draw(e.prompt, [f"Please enter a {e.sym.type} value.", "", f"[{text}]"], None,
                      "<  Ok  >      < Help >")
            k = self.key()
            if k in ("\r", "\n"):
                self.kc.user[e.sym.name] = text
                self.changed = True
                self.kc.calc()
                return
            if k == "ESC2":
                return
            if k in ("\x7f", "\x08"):
                text = text[:-1]
            elif len(k) == 1 and k.isprintable():
                text += k

    def search(self) -> None:
        text = ""
        while True:
            self.draw("Search Configuration Parameter",
                      ["Enter (sub)string or regexp to search for", "", f"[{text}]"], None,
                      "<  Ok  >      < Help >")
            k = self.key()
            if k == "ESC2":
                return
            if k in ("\r", "\n"):
                break
            if k in ("\x7f", "\x08"):
                text = text[:-1]
            elif len(k) == 1 and k.isprintable():
                text += k
        pattern = re.compile(text.removeprefix("CONFIG_"), re.I)
        while True:
            jumps: list[Entry] = []
            found = [s for n, s in sorted(self.kc.syms.items()) if pattern.search(n) and s.type]
            body = "".join(self.kc.symbol_text(s, jumps) for s in found) or "No matches found.\n"
            self.draw("Search Results", body.splitlines(), None, "< Exit >")
            k = self.key()
            if k.isdigit() and 1 <= int(k) <= len(jumps):
                target = jumps[int(k) - 1]
                if target.sym is not None and target.sym.choice is not None:
                    target = target.sym.choice  # mconf shows the choice, not its member
                self.menu(target.parent if target.parent else self.kc.root, target)
                continue
            if k in ("ESC2", "x", "\r", "\n"):
                return

    def run(self) -> int:
        if self.rows < 19 or self.cols < 80:
            print("Your display is too small to run Menuconfig!\n"
                  "It must be at least 19 lines by 80 columns.", file=sys.stderr)
            return 1
        old = termios.tcgetattr(0)
        tty.setraw(0)
        try:
            out("\x1b[?1049h")
            self.menu(self.kc.root)
            save = False
            while self.changed:
                self.draw("", ["Do you wish to save your new configuration?",
                               "(Press <ESC><ESC> to continue kernel configuration.)"], None,
                          "< Yes >      <  No  >")
                k = self.key()
                if k in ("y", "\r", "\n"):
                    save = True
                    break
                if k == "n":
                    break
                if k == "ESC2":
                    self.menu(self.kc.root)
            out("\x1b[?1049l")
        finally:
            termios.tcsetattr(0, termios.TCSADRAIN, old)
        if save:
            self.kc.write(self.config)
            out("\r\n\r\n*** End of the configuration.\r\n")
        elif self.changed:
            out("\r\n\r\nYour configuration changes were NOT saved.\r\n")
        return 0


# ------------------------------------------------------------------------------------ main
def main(argv: list[str]) -> int:
    mode, top = argv[1].removeprefix("--"), argv[2]
    srctree = Path(os.environ.get("srctree", "."))  # noqa: SIM112  (kbuild's spelling)
    config = Path(os.environ.get("KCONFIG_CONFIG", ".config"))
    kc = Kconfig(top, srctree)
    if mode in ("alldefconfig", "allnoconfig"):
        if mode == "allnoconfig":
            kc.user = {n: "n" for n, s in kc.syms.items() if s.type in ("bool", "tristate")
                       and s.choice is None}
    else:
        kc.read(config)
    kc.calc()
    if mode == "oldconfig":
        oldconfig(kc)
    elif mode in ("helpnewconfig", "listnewconfig"):
        for sym in kc.syms.values():
            if sym.type and kc.sym_visible(sym) and kc.is_new(sym) and sym.choice is None:
                if mode == "listnewconfig":
                    print(f"CONFIG_{sym.name}={kc.values.get(sym.name)}")
                else:
                    e = next(x for x in sym.entries if kc.visible(x))
                    print(f"-----{kc.help_text(e)}-----")
        for sym in kc.syms.values():  # a choice member redefined outside its choice (probe)
            outside = [x for x in sym.entries if x.parent and x.parent.kind != "choice"]
            if sym.choice is not None and mode == "helpnewconfig" and sym.name not in kc.user \
                    and any(kc.visible(x) for x in outside):
                print(f"-----{kc.help_text(outside[0])}-----")
        return 0
    elif mode == "menuconfig":
        return Tui(kc, config).run()
    kc.write(config)
    out("#\n# configuration written to .config\n#\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
