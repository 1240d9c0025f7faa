"""The bootloader entry for the installed Xen and dom0 kernel: GRUB legacy (``grub.conf`` /
``menu.lst``, the 2009 way) or GRUB 2 (an ``/etc/grub.d`` script for ``grub-mkconfig``).

xenpipe owns only what it writes between ``### BEGIN xenpipe <name> ###`` and
``### END xenpipe ###``; a second install replaces that block and leaves every other line of the
file byte-for-byte as the user wrote it. ``<name>`` is the config file's name, so two configs
installing into one root keep one entry each.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import proc
from pipeline.errors import InstallError
from pipeline.install.initramfs import which

if TYPE_CHECKING:
    from pipeline.install.plan import Plan

BEGIN = "### BEGIN xenpipe {} ###"
END = "### END xenpipe ###"


@dataclass(frozen=True)
class Entry:
    """What the entry boots. File names are relative to /boot."""

    name: str
    xen_version: str
    release: str
    xen: str
    xen_args: str
    kernel: str
    kernel_args: str
    initrd: str | None


# ------------------------------------------------------------------------- marked blocks
def _lines(data: bytes | None) -> list[str]:
    # surrogateescape: bytes that are not UTF-8 come back out unchanged
    return (data or b"").decode(errors="surrogateescape").splitlines(keepends=True)


def _text(lines: Sequence[str]) -> bytes:
    return "".join(lines).encode(errors="surrogateescape")


def _newline(lines: Sequence[str]) -> str:
    return "\r\n" if lines and lines[0].endswith("\r\n") else "\n"


def find_block(lines: Sequence[str], name: str, where: str) -> tuple[int, int] | None:
    """Line indices of the BEGIN and END markers of block *name*, or None."""
    begin = BEGIN.format(name)
    for i, line in enumerate(lines):
        if line.strip() != begin:
            continue
        for j in range(i + 1, len(lines)):
            if lines[j].strip() == END:
                return i, j
            if lines[j].lstrip().startswith("### BEGIN xenpipe "):
                break
        raise InstallError(f"{where}: '{begin}' has no '{END}' after it; restore the file from "
                           "its .xenpipe-*.bak backup or add the END line by hand")
    return None


def blocks(lines: Sequence[str]) -> list[tuple[int, int]]:
    """Every xenpipe block (any name) as (BEGIN, END) line indices."""
    out = []
    for i, line in enumerate(lines):
        if line.lstrip().startswith("### BEGIN xenpipe "):
            j = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == END), None)
            if j is not None:
                out.append((i, j))
    return out


def set_block(lines: list[str], name: str, body: Sequence[str], where: str,
              at: int | None = None) -> list[str]:
    """*lines* with block *name* holding *body*: replaced where it is, else inserted at line
    *at* (default: appended after a blank line)."""
    nl = _newline(lines)
    block = [BEGIN.format(name) + nl, *(b + nl for b in body), END + nl]
    span = find_block(lines, name, where)
    if span is not None:
        return [*lines[: span[0]], *block, *lines[span[1] + 1:]]
    if at is not None:
        return [*lines[:at], *block, *lines[at:]]
    out = list(lines)
    if out and not out[-1].endswith("\n"):
        out[-1] += nl  # the last user line gets its missing newline; its text is unchanged
    if out and out[-1].strip():
        out.append(nl)
    return [*out, *block]


def block_body(lines: Sequence[str], name: str, where: str) -> list[str]:
    span = find_block(lines, name, where)
    return [] if span is None else [ln.rstrip("\r\n") for ln in lines[span[0] + 1: span[1]]]


# ----------------------------------------------------------------------------- checking
def script_check(plan: Plan, text: str, what: str) -> None:
    """Run ``grub-script-check`` on GRUB script *text*; a rejection is an error. Without the
    tool (grub-common) the plan says it could not check."""
    tool = which("grub-script-check")
    if tool is None:
        plan.note(f"grub-script-check not found (package grub-common): {what} not validated")
        return
    with tempfile.TemporaryDirectory(prefix="xenpipe-grub-") as tmp:
        path = Path(tmp) / "check.cfg"
        path.write_text(text)
        res = proc.run([tool, path], capture=True, check=False, timeout=60)
    if res.returncode != 0:
        detail = " ".join(res.stdout.split())[:200]
        raise InstallError(f"grub-script-check rejects the {what} xenpipe generated: {detail}")


# ---------------------------------------------------------------------------- GRUB legacy
_TITLE = re.compile(r"^\s*title[\s=]")
_DEFAULT = re.compile(r"^\s*default[\s=]+(\S+)")
_ROOT = re.compile(r"^\s*root[\s=]+(\(.*\))\s*$")
_KERNEL = re.compile(r"^\s*kernel[\s=]+(?:--\S+\s+)*(\S+)")
DEFAULT_FILE_PAD = [
    *["#"] * 10,
    "# WARNING: If you want to edit this file directly, do not remove any line",
    "# from this file, including this warning. Using `grub-set-default' is",
    "# strongly recommended.",
]


class GrubLegacy:
    """GRUB 0.97: ``/boot/grub/grub.conf`` (else ``menu.lst``), as in the 2009 procedure.

    Boot once: GRUB legacy has no one-shot entry in its config language, but it has a saved
    default: ``default saved`` boots the entry whose number is in ``/boot/grub/default``
    (written here, in ``grub-set-default``'s format), and ``savedefault N`` in an entry stores
    N there when that entry boots. So the xenpipe entry is booted next, and on the way it puts
    the previous default back: the boot after that, or after a hang and a reset, is the old
    system. (Red Hat's GRUB keeps the saved default inside stage2 instead; there use
    ``savedefault --default=N --once`` in the grub shell, as the plan notes on a live root.)
    """

    name = "grub-legacy"

    def conf(self, plan: Plan) -> str:
        for rel in ("/boot/grub/grub.conf", "/boot/grub/menu.lst"):
            if plan.exists(rel):
                return rel
        return "/boot/grub/grub.conf"

    def plan(self, plan: Plan, e: Entry, once: bool) -> None:
        rel = self.conf(plan)
        where = plan.show(rel)
        lines = _lines(plan.read(rel))
        ours = {i for a, b in blocks(lines) for i in range(a, b + 1)}
        user = [(i, ln) for i, ln in enumerate(lines) if i not in ours]
        previous = self._previous(plan, lines, e.name, where, user)
        root_dev, prefix, indent = self._style(user, previous)

        body = [f"title Xen-{e.xen_version.title()} ({e.release})",
                f"{indent}root {root_dev}",
                f"{indent}kernel {prefix}/{e.xen} {e.xen_args}".rstrip(),
                f"{indent}module {prefix}/{e.kernel} {e.kernel_args}".rstrip()]
        if e.initrd:
            body.append(f"{indent}module {prefix}/{e.initrd}")
        if once:
            body.append(f"{indent}savedefault {previous}")
        lines = set_block(lines, e.name, body, where)

        # the default, before the first entry (a later `default` line overrides an earlier one)
        span = find_block(lines, e.name, where)
        assert span is not None
        index = sum(1 for ln in lines[: span[0]] if _TITLE.match(ln))
        gname = f"{e.name}:default"
        if once:
            glob = [f"# xenpipe: boot entry {index} ({e.name}) once: `default saved` reads "
                    "/boot/grub/default,",
                    f"# and that entry's `savedefault {previous}` restores the previous default",
                    "default saved"]
        else:
            glob = [f"# xenpipe: boot entry {index} ({e.name}) by default", f"default {index}"]
        existing = find_block(lines, gname, where)
        at = None
        if existing is None:
            at = next((i for i, ln in enumerate(lines)
                       if _TITLE.match(ln) or ln.lstrip().startswith("### BEGIN xenpipe ")),
                      len(lines))
        lines = set_block(lines, gname, glob, where, at)
        plan.write(rel, _text(lines), f"bootloader: {e.name} entry in {rel}", owned=False)
        if once:
            default = "\n".join([str(index), *DEFAULT_FILE_PAD]) + "\n"
            plan.write("/boot/grub/default", default,
                       f"bootloader: boot entry {index} once (/boot/grub/default)", owned=True)
            if plan.live:
                plan.note(f"GRUB legacy builds that keep the saved default in stage2 (Red Hat) "
                          f"ignore /boot/grub/default: there run `savedefault --default={index} "
                          "--once` in the grub shell")

    @staticmethod
    def _previous(plan: Plan, lines: Sequence[str], name: str, where: str,
                  user: Sequence[tuple[int, str]]) -> int:
        """The default to fall back to: kept from our entry's ``savedefault`` on a rerun,
        else the user's ``default`` (a number, or the saved one)."""
        for ln in block_body(lines, name, where):
            m = re.match(r"\s*savedefault\s+(\d+)\s*$", ln)
            if m:
                return int(m[1])
        value = None
        for _, ln in user:
            if _TITLE.match(ln):
                break
            m = _DEFAULT.match(ln)
            if m:
                value = m[1]
        if value == "saved":
            saved = (plan.read("/boot/grub/default") or b"").decode(errors="replace")
            m = re.match(r"\s*(\d+)", saved)
            return int(m[1]) if m else 0
        return int(value) if value and value.isdigit() else 0

    @staticmethod
    def _style(user: Sequence[tuple[int, str]], previous: int) -> tuple[str, str, str]:
        """The GRUB root device, the /boot prefix and the indentation, as the user's own
        entries (the default one, else the first) have them; else the 2009 ones."""
        entries: list[list[str]] = []
        for _, ln in user:
            if _TITLE.match(ln):
                entries.append([])
            elif entries:
                entries[-1].append(ln)
        ref = entries[previous] if previous < len(entries) else (entries[0] if entries else [])
        root_dev, prefix, indent = "(hd0,0)", "/boot", " " * 8
        for ln in ref:
            if m := _ROOT.match(ln):
                root_dev = m[1]
            if m := _KERNEL.match(ln):
                path = re.sub(r"^\(.*?\)", "", m[1])  # (hd0,0)/vmlinuz
                prefix = "/boot" if path.startswith("/boot/") else ""
            if ln.strip() and ln[0] in " \t":
                indent = ln[: len(ln) - len(ln.lstrip())]
        return root_dev, prefix, indent


# --------------------------------------------------------------------------------- GRUB 2
SCRIPT = "/etc/grub.d/42_xenpipe"
DEFAULTS = "/etc/default/grub.d/xenpipe.cfg"
GRUB_DIR = "/boot/grub"
_SAFE_WORD = re.compile(r"[A-Za-z0-9_./:=@,+%()\-]+")
SCRIPT_HEAD = """#!/bin/sh
# Written by xenpipe (`doit install`) for grub-mkconfig: one menu entry per xenpipe config,
# each between its "### BEGIN xenpipe NAME ###" and "### END xenpipe ###" lines, which
# `doit install` rewrites. Lines outside them are left alone.
set -e
# /boot as GRUB sees it: "" when /boot is a filesystem of its own
xenpipe_boot=/boot
if [ -n "${pkgdatadir:-}" ] && [ -r "${pkgdatadir}/grub-mkconfig_lib" ]; then
  . "${pkgdatadir}/grub-mkconfig_lib"
  xenpipe_boot="$(make_system_path_relative_to_its_root /boot)"
fi
"""
CFG_HEAD = """# GRUB 2 configuration written by xenpipe for a staging root. On the target system
# `grub-mkconfig -o /boot/grub/grub.cfg` replaces it, taking xenpipe's entries from
# /etc/grub.d/42_xenpipe.
if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${next_entry}" ] ; then
  set default="${next_entry}"
  set next_entry=
  save_env next_entry
else
  set default="${saved_entry}"
fi
set timeout=5
"""
DEFAULTS_TEXT = """# Written by xenpipe (`doit install`). GRUB_DEFAULT=saved makes the default the
# entry named by saved_entry in /boot/grub/grubenv, so that next_entry (grub-reboot) can
# boot xenpipe's entry once and the usual default comes back after it.
GRUB_DEFAULT=saved
"""


def grub_word(arg: str) -> str:
    """*arg* as one GRUB script word (``pci=resource_alignment=`` holds ';': quoted)."""
    if _SAFE_WORD.fullmatch(arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def _sh_heredoc(text: str) -> str:
    """*text* safe inside an unquoted shell here-document."""
    return text.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")


def read_env(data: bytes | None) -> dict[str, str]:
    """The variables of a grubenv block."""
    env = {}
    for ln in (data or b"").decode(errors="replace").splitlines():
        if ln and not ln.startswith("#") and "=" in ln:
            k, v = ln.split("=", 1)
            env[k] = v
    return env


def shell_assignments(data: bytes | None, var: str) -> str | None:
    """The last value a /etc/default/grub style file assigns to *var* (quotes removed)."""
    value = None
    for ln in (data or b"").decode(errors="replace").splitlines():
        m = re.match(rf"\s*(?:export\s+)?{var}=(.*)$", ln)
        if m:
            try:
                words = shlex.split(m[1], comments=True)
            except ValueError:
                continue
            value = words[0] if words else ""
    return value


class Grub2:
    """GRUB 2: ``/etc/grub.d/42_xenpipe`` for grub-mkconfig, ``GRUB_DEFAULT=saved`` in
    ``/etc/default/grub.d/xenpipe.cfg`` and the one-shot ``next_entry`` in grubenv (what
    grub-reboot sets). On the running system ``grub-mkconfig`` regenerates grub.cfg; a staging
    root gets the same entry in its ``/boot/grub/grub.cfg`` directly."""

    name = "grub2"

    @staticmethod
    def menuentry(e: Entry, boot: str, esc: Callable[[str], str] = lambda s: s) -> list[str]:
        def words(path: str, args: str) -> str:
            return " ".join([f"{boot}/{esc(path)}", *(esc(grub_word(a)) for a in args.split())])

        title = f"Xen {e.xen_version}, Linux {e.release} (xenpipe {e.name})"
        lines = [f"menuentry {esc(grub_word(title))} --id {esc(grub_word('xenpipe-' + e.name))} {{",
                 f"\tmultiboot2 {words(e.xen, e.xen_args)}",
                 f"\tmodule2 {words(e.kernel, e.kernel_args)}"]
        if e.initrd:
            lines.append(f"\tmodule2 {words(e.initrd, '')}")
        return [*lines, "}"]

    def plan(self, plan: Plan, e: Entry, once: bool) -> None:
        # /etc/grub.d/42_xenpipe: what grub-mkconfig puts in grub.cfg
        placeholder = "\0BOOT\0"
        entry = [_sh_heredoc(ln).replace(placeholder, "${xenpipe_boot}")
                 for ln in self.menuentry(e, placeholder)]
        lines = _lines(plan.read(SCRIPT)) or _lines(SCRIPT_HEAD.encode())
        lines = set_block(lines, e.name, ["cat <<EOF", *entry, "EOF"], plan.show(SCRIPT))
        script = _text(lines)
        self._check_script(plan, script)
        plan.write(SCRIPT, script, f"bootloader: {e.name} entry in {SCRIPT}", owned=True,
                   mode=0o755)
        plan.write(DEFAULTS, DEFAULTS_TEXT, f"bootloader: GRUB_DEFAULT=saved in {DEFAULTS}",
                   owned=True)
        cfg = f"{GRUB_DIR}/grub.cfg"
        if plan.live:
            plan.run(["grub-mkconfig", "-o", cfg], "bootloader: grub-mkconfig", key="grub-mkconfig",
                     inputs=[script, DEFAULTS_TEXT], outputs=[cfg], after=[SCRIPT, DEFAULTS],
                     backups=[cfg])
        else:
            old = plan.read(cfg)
            body = self.menuentry(e, "/boot")
            new = set_block(_lines(old) or _lines(CFG_HEAD.encode()), e.name, body,
                            plan.show(cfg))
            script_check(plan, "\n".join(body) + "\n", f"{cfg} entry")
            if old is None:
                script_check(plan, _text(new).decode(errors="replace"), cfg)
            plan.write(cfg, _text(new), f"bootloader: {e.name} entry in {cfg}", owned=False)
            plan.note(f"staging root: {cfg} was edited directly; on the target, grub-mkconfig "
                      f"takes the entry from {SCRIPT}, and {DEFAULTS} sets GRUB_DEFAULT=saved, "
                      "which booting the entry once (next_entry) needs")
        self._grubenv(plan, e, once)

    @staticmethod
    def _check_script(plan: Plan, script: bytes) -> None:
        """Run the generated grub.d script as grub-mkconfig would and check its output."""
        with tempfile.TemporaryDirectory(prefix="xenpipe-grubd-") as tmp:
            path = Path(tmp) / "42_xenpipe"
            path.write_bytes(script)
            res = proc.run(["sh", path], capture=True, check=False, timeout=60,
                           env={"pkgdatadir": ""})
        if res.returncode != 0:
            raise InstallError(f"{SCRIPT} as generated fails under sh: "
                               f"{' '.join(res.stdout.split())[:200]}")
        script_check(plan, res.stdout, f"output of {SCRIPT}")

    @staticmethod
    def _grubenv(plan: Plan, e: Entry, once: bool) -> None:
        """once: ``next_entry`` (grub-reboot), keeping the previous default as saved_entry;
        else ``saved_entry`` (grub-set-default)."""
        env_rel = f"{GRUB_DIR}/grubenv"
        env = read_env(plan.read(env_rel))
        ident = f"xenpipe-{e.name}"
        want = {"next_entry": ident} if once else {"saved_entry": ident}
        if once and "saved_entry" not in env:
            previous = None
            for rel in ("/etc/default/grub", *sorted(
                    f"/etc/default/grub.d/{p.name}"
                    for p in plan.path("/etc/default/grub.d").glob("*.cfg")
                    if p.name != Path(DEFAULTS).name)):
                previous = shell_assignments(plan.read(rel), "GRUB_DEFAULT") or previous
            if previous not in (None, "", "0", "saved"):
                want["saved_entry"] = previous
        if all(env.get(k) == v for k, v in want.items()):
            return
        tool = which("grub-editenv")
        if tool is None:
            raise InstallError("grub-editenv not found: install grub-common (GRUB 2's tools)")
        sets = [f"{k}={v}" for k, v in want.items()]
        plan.run([tool, plan.path(env_rel), "set", *sets],
                 f"bootloader: {' '.join(sets)} in {env_rel}" + (" (boot once)" if once else ""),
                 key="grubenv", inputs=sets, outputs=[env_rel], backups=[env_rel], needed=True)


class NoBootloader:
    name = "none"

    def plan(self, plan: Plan, e: Entry, once: bool) -> None:
        plan.note(f"bootloader = none: no entry written; boot /boot/{e.xen} {e.xen_args} with "
                  f"module /boot/{e.kernel} {e.kernel_args}"
                  + (f" and module /boot/{e.initrd}" if e.initrd else ""))


LOADERS: dict[str, type[GrubLegacy] | type[Grub2] | type[NoBootloader]] = {
    "grub-legacy": GrubLegacy, "grub2": Grub2, "none": NoBootloader,
}


def plan(kind: str, install_plan: Plan, e: Entry, once: bool) -> None:
    """Add the bootloader steps for *kind* (``[install] bootloader``) to the plan."""
    LOADERS[kind]().plan(install_plan, e, once)

