"""The box's transport: the OpenSSH client as argv, so the user's ``~/.ssh/config``,
ProxyJump, agent and ``known_hosts`` apply; host keys are checked as ssh checks them
(xenpipe never adds ``StrictHostKeyChecking=no``), and ``BatchMode=yes`` means keys or the
agent only, never a password prompt.

ssh sends the remote command as one string that the box's login shell parses, so every
remote command is built from an argv with :func:`shlex.join`: a path or a BDF with spaces or
quotes stays one word, and no config text is ever pasted into a shell.
"""

from __future__ import annotations

import os
import shlex
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import proc
from pipeline.config.model import TargetCfg
from pipeline.errors import TargetError

SSH = "ssh"
CONNECT_TIMEOUT = 30  # seconds for ssh to reach the box (ConnectTimeout)
STEP_TIMEOUT = 1800.0  # seconds for one remote command
NEW = ".xenpipe-new"  # the suffix files arrive under, renamed into place on the box
# a fixed script (never config text): per path read from stdin, its sha256 or symlink target
_DIGESTS = ('while IFS= read -r p; do if [ -L "$p" ]; then printf "L %s %s\\n" '
            '"$(readlink -- "$p")" "$p"; elif [ -f "$p" ]; then sha256sum -- "$p"; fi; done')
# per "final<TAB>backup" line of stdin: back up final if asked, rename final.xenpipe-new onto it
_PLACE = ('tab=$(printf "\\t"); while IFS="$tab" read -r f b; do if [ -n "$b" ]; then '
          'cp -p -- "$f" "$b" || exit 1; fi; mv -f -- "$f' + NEW + '" "$f" || exit 1; done')


def sh(script: str, *args: str) -> list[str]:
    """A fixed POSIX sh *script* with *args* as its positional parameters ($1...)."""
    return ["sh", "-c", script, "xenpipe", *args]


@dataclass(frozen=True)
class Ssh:
    """ssh to one box; each :meth:`run` is one connection."""

    dest: str
    args: tuple[str, ...] = ()
    log: Path | None = None

    @classmethod
    def of(cls, target: TargetCfg, log: Path | None = None) -> Ssh:
        return cls(target.ssh, target.ssh_args, log)

    def argv(self, remote: Sequence[str]) -> list[str]:
        """The local argv that runs *remote* (an argv) on the box."""
        if not remote:
            raise ValueError("no remote command")
        return [SSH, "-o", "BatchMode=yes", *self.args,  # ssh keeps an option's first value:
                "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",  # ssh_args may set another
                self.dest, "--", shlex.join(remote)]

    def run(self, remote: Sequence[str], what: str, *, input: str | None = None,
            stdin: Path | None = None, check: bool = True,
            timeout: float = STEP_TIMEOUT) -> proc.Result:
        """Run *remote* on the box and return its output; a failure is one line naming the
        box and the step (ssh's own exit status 255: the box was not reached)."""
        res = proc.run(self.argv(remote), log=self.log, capture=True, check=False,
                       input=input, stdin=stdin, timeout=timeout, error=TargetError,
                       what=f"{self.dest}: {what}")
        if check and res.returncode != 0:
            raise self.error(res, what)
        return res

    def error(self, res: proc.Result, what: str) -> TargetError:
        lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
        full = [ln for ln in lines if "No space left on device" in ln]  # tar says it first
        detail = proc.redact((full or lines or [""])[-1])
        if res.returncode == 255:
            return TargetError(f"ssh {self.dest}: {what}: cannot reach the box"
                               + (f": {detail}" if detail else ""))
        return TargetError(f"{self.dest}: {what} failed with exit status {res.returncode}"
                           + (f": {detail}" if detail else "")
                           + (f" (log: {self.log})" if self.log else ""))

    def reachable(self, timeout: float = 60.0) -> bool:
        """Whether the box answers ssh now (``true`` runs)."""
        try:
            return self.run(["true"], "ssh", check=False, timeout=timeout).returncode == 0
        except TargetError:  # timed out
            return False

    # files ---------------------------------------------------------------------------
    def digests(self, paths: Sequence[str]) -> dict[str, str]:
        """What each of *paths* holds on the box: its sha256, ``L <target>`` for a symlink;
        absent paths are left out."""
        if not paths:
            return {}
        res = self.run(sh(_DIGESTS), "compare files", input="".join(f"{p}\n" for p in paths))
        out: dict[str, str] = {}
        for line in res.stdout.splitlines():
            if line.startswith("L "):
                target, _, path = line[2:].rpartition(" ")
                out[path] = f"L {target}"
            elif len(line) > 66 and line[64:66] == "  ":
                out[line[66:]] = line[:64]
        return out

    def put(self, root: Path, rels: Sequence[str], backups: dict[str, str],
            workdir: Path) -> None:
        """Bring *rels* (``/boot/...``) from the local *root* to the same paths on the box:
        one tar stream of ``<path>.xenpipe-new`` files, then each renamed into place (atomic
        per file), after copying the box's file to ``backups[path]`` where given."""
        if not rels:
            return
        odd = next((r for r in rels if "\n" in r or "\t" in r), None)
        if odd is not None:
            raise TargetError(f"cannot transfer {odd!r}: a tab or newline in its name")
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix="put-", suffix=".tar") as tmp:
            with tarfile.open(fileobj=tmp, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for rel in rels:
                    info = tar.gettarinfo(root / rel.lstrip("/"), arcname=rel.lstrip("/") + NEW)
                    info.uid = info.gid = 0
                    info.uname = info.gname = "root"
                    if info.isfile():
                        with open(root / rel.lstrip("/"), "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
            tmp.flush()
            size = os.path.getsize(tmp.name)
            self.run(["tar", "-x", "-p", "-C", "/", "-f", "-"],
                     f"transfer {len(rels)} file(s), {size} bytes", stdin=Path(tmp.name))
        lines = "".join(f"{rel}\t{backups.get(rel, '')}\n" for rel in rels)
        self.run(sh(_PLACE), f"put {len(rels)} file(s) in place", input=lines)
