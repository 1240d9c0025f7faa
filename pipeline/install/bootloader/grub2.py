"""GRUB 2: an ``/etc/grub.d`` script for ``grub-mkconfig``, ``GRUB_DEFAULT=saved`` and the
one-shot ``next_entry`` in grubenv; a staging root gets the entry in its grub.cfg directly.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import proc
from pipeline.errors import InstallError
from pipeline.install.bootloader.base import (
    Bootloader,
    Entry,
    file_bytes,
    file_lines,
    script_check,
    set_block,
)
from pipeline.install.initramfs import which

if TYPE_CHECKING:
    from pipeline.install.plan import Plan

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


class Grub2(Bootloader):
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
        lines = file_lines(plan.read(SCRIPT)) or file_lines(SCRIPT_HEAD.encode())
        lines = set_block(lines, e.name, ["cat <<EOF", *entry, "EOF"], plan.show(SCRIPT))
        script = file_bytes(lines)
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
            new = set_block(file_lines(old) or file_lines(CFG_HEAD.encode()), e.name, body,
                            plan.show(cfg))
            script_check(plan, "\n".join(body) + "\n", f"{cfg} entry")
            if old is None:
                script_check(plan, file_bytes(new).decode(errors="replace"), cfg)
            plan.write(cfg, file_bytes(new), f"bootloader: {e.name} entry in {cfg}", owned=False)
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
        sets = [f"{k}={v}" for k, v in want.items()]
        if all(env.get(k) == v for k, v in want.items()):
            plan.settle_run("grubenv", sets, [env_rel])
            return
        tool = which("grub-editenv")
        if tool is None:
            raise InstallError("grub-editenv not found: install grub-common (GRUB 2's tools)")
        plan.run([tool, plan.path(env_rel), "set", *sets],
                 f"bootloader: {' '.join(sets)} in {env_rel}" + (" (boot once)" if once else ""),
                 key="grubenv", inputs=sets, outputs=[env_rel], backups=[env_rel], needed=True)

