"""Reading a config file: where it is, the TOML with every key's line, and validation.

Validation is strict and happens before any task runs: every problem is one line naming the
file, the line, the table and the key.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pipeline.config.model import (
    BootCfg,
    BuildCfg,
    Config,
    GuestCfg,
    InstallCfg,
    KernelCfg,
    PassthroughCfg,
    SourceCfg,
    TargetCfg,
    XenCfg,
)
from pipeline.config.schema import FORCED_SYMBOLS, SCHEMA, TOP_LEVEL, Key
from pipeline.errors import ConfigError, XenpipeError

ROOT = Path(__file__).resolve().parents[2]  # the repository: configs/ and dodo.py
DEFAULT_CONFIG = ROOT / "configs" / "default.toml"


def choose_path(var: str | None = None) -> Path:
    """``config=PATH`` on the doit command line, else ``$XENPIPE_CONFIG``, else the default.
    A ``config=`` that names no file is an error, not the default (an unset shell variable
    must not build configs/default.toml from the network)."""
    name, chosen = "config=", var
    if var is None:
        name, chosen = "XENPIPE_CONFIG=", os.environ.get("XENPIPE_CONFIG") or str(DEFAULT_CONFIG)
    if not chosen.strip(" ,"):
        raise ConfigError(f"{name}{chosen} names no config file; give its path "
                          "(config=configs/site.toml), or leave config= out for "
                          "$XENPIPE_CONFIG or configs/default.toml")
    return resolve_path(chosen, Path.cwd())


def resolve_path(value: str, base: Path = ROOT) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def display(path: Path) -> str:
    """A path as the user would write it: relative to the repository when inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


_PART = r"""(?:"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[A-Za-z0-9_-]+)"""
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEYLINE = re.compile(rf"^\s*({_DOTTED})\s*=")


def _parts(dotted: str) -> tuple[str, ...]:
    """A TOML dotted key as its parts, quotes removed (``sources."a b"`` -> sources, a b)."""
    return tuple(m[1] if m[1] is not None else m[2] if m[2] is not None else m[3]
                 for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)',
                                      dotted))


class _Checker:
    """Generic schema checking with positions in the file for every message.

    tomllib keeps no positions, so the text is indexed once: every table header and key line
    with the full path it defines (``[[guests]]`` entries counted: ``("guests", 1, "config")``
    is the second guest's config).
    """

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.where: list[tuple[tuple[str | int, ...], int]] = []
        table: tuple[str | int, ...] = ()
        count: dict[tuple[str, ...], int] = {}
        for n, line in enumerate(self.lines, 1):
            if m := _HEADER.match(line):
                parts = _parts(m[2])
                if m[1] == "[[":
                    count[parts] = count.get(parts, -1) + 1
                    table = (*parts, count[parts])
                else:
                    table = parts
                self.where.append((table, n))
            elif m := _KEYLINE.match(line):
                self.where.append(((*table, *_parts(m[1])), n))

    def fail(self, table: tuple[str | int, ...], key: str | None, msg: str,
             value: str | None = None) -> ConfigError:
        """A ConfigError ``file:line: [table] key: msg``; with *value*, the line of that
        list item (a list may span lines)."""
        line = self.locate((*table, key) if key else table, value)
        where = f"{display(self.path)}:{line}" if line else display(self.path)
        names = [str(p) for p in table if isinstance(p, str)]
        array = any(isinstance(p, int) for p in table)
        head = (f"[[{'.'.join(names)}]]" if array else f"[{'.'.join(names)}]") if names else ""
        head = " ".join(x for x in (head, key) if x)
        return ConfigError(f"{where}: {head}: {msg}")

    def locate(self, path: tuple[str | int, ...], value: str | None = None) -> int | None:
        """The line that defines *path* (or, when it is not written, the nearest table or key
        that holds it), else None; with *value*, the line at or after it quoting *value*."""
        while path:
            for i, (defined, n) in enumerate(self.where):
                if defined[: len(path)] == path:
                    if value is None:
                        return n
                    end = self.where[i + 1][1] if i + 1 < len(self.where) else len(self.lines) + 1
                    return next((k + 1 for k in range(n - 1, end - 1)
                                 if f'"{value}"' in self.lines[k]
                                 or f"'{value}'" in self.lines[k]), n)
            path = path[:-1]
        return None

    def table(self, path: tuple[str | int, ...], schema: dict[str, Key],
              data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(path, None, f"expected a table, got {_tname(data)}")
        out: dict[str, Any] = {}
        for key in data:
            if key not in schema:
                hint = difflib.get_close_matches(key, list(schema), n=1)
                sugg = f' (did you mean "{hint[0]}"?)' if hint else ""
                known = ", ".join(schema)
                raise self.fail(path, key, f"unknown key{sugg}; known keys: {known}")
        for key, spec in schema.items():
            if key not in data:
                if spec.required:
                    raise self.fail(path, None, f'missing required key "{key}"')
                out[key] = spec.default
                continue
            out[key] = self.value(path, key, spec, data[key])
        return out

    def value(self, table: tuple[str | int, ...], key: str, spec: Key, value: Any) -> Any:
        ok = isinstance(value, spec.type) and not (spec.type is int and isinstance(value, bool))
        if not ok:
            raise self.fail(
                table, key, f"expected {_tname_t(spec.type)}, got {_tname(value)} {value!r}"
            )
        if spec.items is not None:
            for item in value:
                if not isinstance(item, spec.items):
                    raise self.fail(
                        table, key, f"expected a list of {_tname_t(spec.items)[2:]}s, got {item!r}"
                    )
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and "\0" in text:  # no path or argument can hold one
                raise self.fail(table, key, f"{text!r} holds a NUL character")
        if spec.type is str and not spec.empty and not value.strip():
            raise self.fail(table, key, "expected a non-empty string, got an empty one")
        if spec.choices and value not in spec.choices:
            opts = ", ".join(f'"{c}"' for c in spec.choices[:-1]) + f' or "{spec.choices[-1]}"'
            raise self.fail(table, key, f'expected {opts}, got "{value}"')
        if spec.type is int and value < 0:
            raise self.fail(table, key, f"expected a number >= 0, got {value}")
        if spec.check is not None:
            for item in value if isinstance(value, list) else [value]:
                try:
                    spec.check(item)
                except XenpipeError as exc:
                    raise self.fail(table, key, str(exc), item) from None
        return value


def _tname(v: Any) -> str:
    names = {bool: "a boolean", int: "a number", str: "a string", list: "a list", dict: "a table"}
    return names.get(type(v), type(v).__name__)


def _tname_t(t: type | tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "a number", str: "a string", list: "a list"}
    return names.get(t, str(t))  # type: ignore[call-overload]


def _is_url(value: str) -> bool:
    return "://" in value


def _unwritable(path: Path) -> str | None:
    """Why xenpipe could not make *path* a directory and write in it, or None."""
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    where = "" if probe == path else f"{display(probe)} "
    if not probe.is_dir():
        dangling = probe.is_symlink() and not probe.exists()
        return f"{where}is {'a dangling symlink' if dangling else 'a file'}, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{where}is not writable"
    return None


def _absent(noun: str, path: Path) -> str:
    """Why *path*, a *noun* (a "directory" or a kind of file), is not there."""
    if not os.path.lexists(path):
        return f"{noun} {display(path)} does not exist"
    return f"{display(path)} is {'a directory, not a file' if path.is_dir() else 'not a directory'}"


def load(path: Path) -> Config:
    """Read, parse and validate *path*; raise ConfigError with a one-line message."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        # absolute: `doit -f .../dodo.py` runs from the repository, not where it was typed
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{display(path)}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{display(path)}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                          "a TOML file is UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        msg = re.sub(r"\s*\(at line.*\)", "", str(exc))
        where = f"{display(path)}:{m[1]}" if m else display(path)
        raise ConfigError(f"{where}: not valid TOML: {msg}") from None
    return parse(path, text, data)


def parse(path: Path, text: str, data: dict[str, Any]) -> Config:
    c = _Checker(path, text)
    for top in data:
        if top not in TOP_LEVEL:
            hint = difflib.get_close_matches(top, TOP_LEVEL, n=1)
            sugg = f' (did you mean "[{hint[0]}]"?)' if hint else ""
            what = "table" if isinstance(data[top], dict | list) else "key"
            head: tuple[str, ...] = (top,) if what == "table" else ()
            raise c.fail(head, None if head else top,
                         f"unknown {what}{sugg}; known tables: {', '.join(TOP_LEVEL)}")

    ws = c.table(("workspace",), SCHEMA["workspace"], data.get("workspace", {}))
    workspace = resolve_path(ws["dir"])
    mirror = resolve_path(ws["mirror"]) if ws["mirror"] else None
    for key, where in (("dir", workspace), ("mirror", mirror)):
        why = _unwritable(where) if where is not None else None
        if why:
            raise c.fail(("workspace",), key, f"{display(where)}: {why}")

    raw_sources = data.get("sources", {})
    if not isinstance(raw_sources, dict):
        raise c.fail(("sources",), None, "expected tables [sources.<name>]")
    sources: dict[str, SourceCfg] = {}
    for name, body in raw_sources.items():
        tname = ("sources", name)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise c.fail(tname, None, "a name may hold only letters, digits, '-', '_' and '.'")
        v = c.table(tname, SCHEMA["sources.*"], body)
        url = v["url"] if _is_url(v["url"]) else str(resolve_path(v["url"]))
        if v["vcs"] == "tarball" and v["rev"] is not None:
            raise c.fail(tname, "rev", "a tarball has no revisions; pin it by its file name or URL")
        patches = None
        if v["patches"] is not None:
            patches = resolve_path(v["patches"])
            if not patches.is_dir():
                raise c.fail(tname, "patches", _absent("directory", patches))
        sources[name] = SourceCfg(name, v["vcs"], url, v["rev"], patches)

    def source_ref(table: str, name: str) -> str:
        if name not in sources:
            known = ", ".join(sources) or "none defined"
            hint = difflib.get_close_matches(name, list(sources), n=1)
            sugg = f' (did you mean "{hint[0]}"?)' if hint else ""
            raise c.fail((table,), "source", f'no [sources.{name}] table{sugg}; sources: {known}')
        return name

    xen = None
    if "xen" in data:
        v = c.table(("xen",), SCHEMA["xen"], data["xen"])
        xen = XenCfg(
            source_ref("xen", v["source"]),
            tuple(v["targets"]) if v["targets"] is not None else None,
            tuple(v["make_args"]),
        )

    kernel = None
    if "kernel" in data:
        v = c.table(("kernel",), SCHEMA["kernel"], data["kernel"])
        fragments = []
        for frag in v["fragments"]:
            p = resolve_path(frag)
            if not p.is_file():
                raise c.fail(("kernel",), "fragments", _absent("fragment", p),
                             frag)
            fragments.append(p)
        base = v["base"]
        if "/" in base or base.endswith(".config"):
            bp = resolve_path(base)
            if not bp.is_file():
                raise c.fail(("kernel",), "base", _absent("config file", bp))
            base = str(bp)
        symbols: dict[str, str] = {}
        for sym in [*v["symbols"], *FORCED_SYMBOLS]:
            if not re.fullmatch(r"CONFIG_[A-Za-z0-9_]+=(y|m|n|\".*\"|0x[0-9a-fA-F]+|-?\d+)", sym):
                raise c.fail(("kernel",), "symbols", f'expected "CONFIG_NAME=value", got "{sym}"',
                             sym)
            name = sym.partition("=")[0]
            if symbols.get(name, sym) != sym:
                why = " (xenpipe always sets it)" if sym in FORCED_SYMBOLS else ""
                raise c.fail(("kernel",), "symbols",
                             f'"{symbols[name]}" conflicts with "{sym}"{why}', symbols[name])
            symbols[name] = sym
        kernel = KernelCfg(
            source_ref("kernel", v["source"]), base, tuple(fragments), tuple(symbols.values()),
            v["frontend"], tuple(v["make_args"]), v["flavour"], v["strict"],
        )

    b = c.table(("build",), SCHEMA["build"], data.get("build", {}))
    build = BuildCfg(b["jobs"], b["ccache"])

    i = c.table(("install",), SCHEMA["install"], data.get("install", {}))
    install = InstallCfg(
        resolve_path(i["root"]) if i["root"] else workspace / "root",
        i["bootloader"], i["initramfs"], i["xen_cmdline"], i["dom0_cmdline"], i["once"],
        i["allow_system_devices"],
    )

    p = c.table(("passthrough",), SCHEMA["passthrough"], data.get("passthrough", {}))
    passthrough = PassthroughCfg(tuple(p["devices"]), p["reassign"], p["mode"])

    raw_guests = data.get("guests", [])
    if not isinstance(raw_guests, list):
        raise c.fail(("guests",), None, "expected [[guests]] entries")
    guests = []
    for n, g in enumerate(raw_guests):
        v = c.table(("guests", n), SCHEMA["guests[]"], g)
        if not v["config"].startswith("/"):
            raise c.fail(("guests", n), "config",
                         f'expected an absolute path inside install.root, got "{v["config"]}"')
        guests.append(GuestCfg(v["name"], v["config"], v["toolstack"], tuple(v["devices"]),
                               v["type"]))

    bt = c.table(("boot",), SCHEMA["boot"], data.get("boot", {}))
    boot = BootCfg(
        resolve_path(bt["xen"]) if bt["xen"] else None, bt["qemu"], bt["machine"],
        tuple(bt["devices"]), bt["timeout"], bt["memory"], bt["guest"], bt["via"],
        bt["cpus"], bt["tcg"],
    )

    target = None
    if "target" in data:
        t = c.table(("target",), SCHEMA["target"], data["target"])
        for key in ("console", "power_cycle"):
            if t[key] and not t[key][0].strip():
                raise c.fail(("target",), key, "expected a command (argv), its first item empty")
        if t["boot_timeout"] == 0:
            raise c.fail(("target",), "boot_timeout", "expected a number of seconds > 0, got 0")
        target = TargetCfg(t["ssh"], tuple(t["ssh_args"]), tuple(t["console"]),
                           tuple(t["power_cycle"]), t["boot_timeout"])

    return Config(path=path, workspace=workspace, mirror=mirror, retention=ws["retention"],
                  sources=sources, xen=xen, kernel=kernel, build=build, install=install,
                  passthrough=passthrough, guests=tuple(guests), boot=boot, target=target)
