"""The one way xenpipe runs a program.

Argv lists only (never a shell), a predictable environment (``LC_ALL=C``, ``HGPLAIN=1``),
output appended to a log file, and each child in its own process group so that an interrupt
stops make and every compiler it started, not just the top process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import XenpipeError

BASE_ENV = {"LC_ALL": "C", "LANG": "C", "HGPLAIN": "1", "GIT_TERMINAL_PROMPT": "0"}

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]*)(:[^/@\s]*)?@")


def redact(text: str) -> str:
    """Replace the password in every URL of *text* by ``***``."""
    return _USERINFO.sub(
        lambda m: f"{m['scheme']}{m['user']}{':***' if m.group(3) else ''}@", text
    )


def render(argv: Sequence[str | os.PathLike[str]]) -> str:
    """An argv list as a copy-pasteable, redacted command line."""
    return redact(shlex.join(str(a) for a in argv))


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(BASE_ENV)
    if extra:
        env.update(extra)
    return env


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    duration: float


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop the child's whole process group: TERM, then KILL after *grace* seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    capture: bool = False,
    check: bool = True,
    timeout: float | None = None,
    input: str | None = None,
    error: type[XenpipeError] = XenpipeError,
    what: str | None = None,
) -> Result:
    """Run *argv*; raise *error* (a one-line user error) when it fails and *check* is set.

    With *capture* the output is returned (and also logged); otherwise it goes to *log* only.
    """
    args = [os.fspath(a) for a in argv]
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    logf = open(log, "ab") if log is not None else None  # noqa: SIM115
    try:
        if logf is not None:
            logf.write(f"$ {render(args)}\n".encode())
            logf.flush()
        try:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=environment(env),
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture or logf is None else logf,
                stderr=subprocess.STDOUT if capture or logf is not None else subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise error(f"{args[0]}: command not found (is it installed and on PATH?)") from exc
        try:
            out, err = proc.communicate(
                input=input.encode() if input is not None else None, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            raise error(f"{what or render(args)}: timed out after {timeout:.0f} s") from exc
        except BaseException:
            _kill_group(proc)
            raise
        text = (out or b"").decode(errors="replace") + (err or b"").decode(errors="replace")
        if logf is not None and capture:
            logf.write(text.encode())
    finally:
        if logf is not None:
            logf.close()
    result = Result(args, proc.returncode, text, time.monotonic() - start)
    if check and proc.returncode != 0:
        detail = _last_line(text)
        where = f" (log: {log})" if log is not None else ""
        raise error(
            f"{what or render(args)} failed with exit status {proc.returncode}"
            + (f": {redact(detail)}" if detail else "")
            + where
        )
    return result


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""
