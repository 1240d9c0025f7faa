"""The one way xenpipe runs a program.

Argv lists only (never a shell), a predictable environment (``LC_ALL=C``, ``HGPLAIN=1``),
output appended to a log file, and each child in its own process group so that an interrupt
stops make and every compiler it started, not just the top process. Every child also gets
SIGTERM from Linux when xenpipe dies, even by SIGKILL (PR_SET_PDEATHSIG, see die_with_parent),
and its whole process group (make's compilers and assemblers, which PR_SET_PDEATHSIG does not
reach) SIGTERM then SIGKILL from xenpipe's watchdog (see Watchdog): nothing it started goes on
writing into the workspace after it.
"""

from __future__ import annotations

import io
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from pipeline.errors import XenpipeError, advice

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


# An outer make (`make demo`, `make test`) must not leak its level and jobserver into the
# makes xenpipe runs: xenpipe sets -j itself, and make's messages must not depend on it.
OUTER_MAKE = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OUTER_MAKE}
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


def stop_group(pid: int, alive: Callable[[], bool], grace: float = 5.0) -> None:
    """Stop the process group led by *pid* (a child started in its own session: make, QEMU,
    a kernel config frontend): SIGTERM, then SIGKILL if *alive* still says so after *grace*
    seconds. The one copy for every child xenpipe starts, so none outlives an interrupt."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        if not alive():
            return
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop the child's whole process group: TERM, then KILL after *grace* seconds."""
    stop_group(proc.pid, lambda: proc.poll() is None, grace)
    proc.wait()
    Watchdog.reaped(proc.pid)


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
    stdin: Path | None = None,
    error: type[XenpipeError] = XenpipeError,
    what: str | None = None,
    on_line: Callable[[str], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> Result:
    """Run *argv*; raise *error* (a one-line user error) when it fails and *check* is set.

    With *capture* the output is returned (and also logged); otherwise it goes to *log* only.
    With *on_line* the output is streamed: logged as it comes and handed over line by line,
    with *on_tick* called about every TICK seconds even when the child is silent (progress).
    *stdin*: a file the child reads (a tar archive for ssh), instead of *input*.
    """
    args = [os.fspath(a) for a in argv]
    streaming = on_line is not None
    last = ""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    logf = open(log, "ab") if log is not None else None  # noqa: SIM115
    inf = open(stdin, "rb") if stdin is not None else None  # noqa: SIM115
    try:
        if logf is not None:
            logf.write(f"$ {render(args)}\n".encode())
            logf.flush()
        proc = _popen(
            args, error, cwd=cwd, env=env,
            stdin=subprocess.PIPE if input is not None else inf or subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture or streaming or logf is None else logf,
            stderr=subprocess.STDOUT if capture or streaming or logf is not None
            else subprocess.PIPE)
        try:
            if on_line is not None:
                err = b""
                out, last = _pump(proc, on_line, on_tick, logf, capture, timeout, input)
            else:
                out, err = proc.communicate(
                    input=input.encode() if input is not None else None, timeout=timeout
                )
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            raise error(f"{what or render(args)}: timed out after {timeout:.0f} s") from exc
        except OSError as exc:
            _kill_group(proc)
            if exc.filename is None and log is not None:  # writing the child's output
                raise OSError(exc.errno, exc.strerror, str(log)) from None
            raise
        except BaseException:
            _kill_group(proc)
            raise
        Watchdog.reaped(proc.pid)
        text = (out or b"").decode(errors="replace") + (err or b"").decode(errors="replace")
        if logf is not None and capture and not streaming:
            logf.write(text.encode())
    finally:
        if logf is not None:
            logf.close()
        if inf is not None:
            inf.close()
    result = Result(args, proc.returncode, text, time.monotonic() - start)
    if check and proc.returncode != 0:
        detail = last_line(text) or last
        where = f" (log: {log})" if log is not None else ""
        hint = advice(text)
        raise error(
            f"{what or render(args)} failed with exit status {proc.returncode}"
            + (f": {redact(detail)}" if detail else "")
            + where + (f"; {hint}" if hint else "")
        )
    return result


# The watchdog: a process of its own (its own session, no PR_SET_PDEATHSIG) that reads
# "+PGID" / "-PGID" lines from a pipe only this process holds. At end of file (xenpipe ended,
# even by SIGKILL) it stops every group still listed: SIGTERM, up to WATCHDOG_GRACE s, SIGKILL.
WATCHDOG_GRACE = 5.0
_WATCHDOG_CODE = r"""
import os, signal, sys, time
groups = set()
for line in sys.stdin:
    (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
def signal_all(sig):
    for g in list(groups):
        try:
            os.killpg(g, sig)
        except ProcessLookupError:
            groups.discard(g)
        except OSError:
            pass
signal_all(signal.SIGTERM)
deadline = time.monotonic() + float(sys.argv[1])
while groups and time.monotonic() < deadline:
    time.sleep(0.05)
    signal_all(0)
signal_all(signal.SIGKILL)
"""


class Watchdog:
    """Stops the process groups of this process's children when it dies (the grandchildren:
    an ``as`` that make started goes on writing a ``.o`` after a killed make otherwise, and
    the next make takes the empty file for up to date). One per process: a forked process
    (the tests' doit) starts its own."""

    _owner: int | None = None
    _pipe: BinaryIO | None = None

    @classmethod
    def _send(cls, line: str) -> None:
        if cls._owner != os.getpid():
            cls._owner, cls._pipe = os.getpid(), None
            try:
                dog = subprocess.Popen([sys.executable, "-c", _WATCHDOG_CODE,
                                        str(WATCHDOG_GRACE)], stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       env=environment(), start_new_session=True)
            except OSError:
                return
            cls._pipe = dog.stdin
        if cls._pipe is None:
            return
        try:
            cls._pipe.write(line.encode())
            cls._pipe.flush()
        except OSError:  # the watchdog is gone: PR_SET_PDEATHSIG still stops the children
            cls._pipe = None

    @classmethod
    def watch(cls, pgid: int) -> None:
        cls._send(f"+{pgid}\n")

    @classmethod
    def reaped(cls, pgid: int) -> None:
        if cls._owner == os.getpid():
            cls._send(f"-{pgid}\n")


def _popen(args: list[str], error: type[XenpipeError], *, cwd: str | os.PathLike[str] | None,
           env: Mapping[str, str] | None, stdin: object, stdout: object, stderr: object
           ) -> subprocess.Popen[bytes]:
    """Start *args* as every child starts: xenpipe's environment, its own session, SIGTERM
    when xenpipe dies."""
    try:
        child = subprocess.Popen(args, cwd=cwd, env=environment(env), stdin=stdin,  # type: ignore[arg-type]
                                 stdout=stdout, stderr=stderr,  # type: ignore[arg-type]
                                 start_new_session=True, preexec_fn=die_with_parent())
    except FileNotFoundError as exc:
        raise error(f"{args[0]}: command not found (is it installed and on PATH?)") from exc
    Watchdog.watch(child.pid)  # its own session: its pid is its group's id
    return child


def output(argv: Sequence[str | os.PathLike[str]], *, timeout: float | None = None,
           input: str | None = None, error: type[XenpipeError] = XenpipeError
           ) -> tuple[int, bytes, bytes]:
    """Run *argv* for its exact output: exit status, stdout and stderr as bytes, apart (a
    program that prints a banner on stderr and a file's bytes on stdout: debugfs; the blobs
    of ``git cat-file --batch``)."""
    args = [os.fspath(a) for a in argv]
    proc = _popen(args, error, cwd=None, env=None,
                  stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(input=input.encode() if input is not None else None,
                                    timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        raise error(f"{render(args)}: timed out after {timeout:.0f} s") from exc
    except BaseException:
        _kill_group(proc)
        raise
    Watchdog.reaped(proc.pid)
    return proc.returncode, out, err


@contextmanager
def reading(argv: Sequence[str | os.PathLike[str]], *, stdin: Path,
            error: type[XenpipeError] = XenpipeError, what: str | None = None
            ) -> Iterator[BinaryIO]:
    """The output of *argv* (reading *stdin*) as a stream this process reads as it comes (a
    decompressor in a process of its own, beside the reader). The rest of the output is
    drained once the reader is done, then a failure raises *error* with the child's last
    line; if the reader fails, the child's process group is stopped."""
    args = [os.fspath(a) for a in argv]
    with open(stdin, "rb") as inf:
        child = _popen(args, error, cwd=None, env=None, stdin=inf, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    try:
        yield child.stdout
        while child.stdout.read(1 << 16):  # what the reader left (a tar's zero padding)
            pass
        err = child.stderr.read().decode(errors="replace")
        child.wait()
    except BaseException:
        _kill_group(child)
        raise
    finally:
        child.stdout.close()
        child.stderr.close()
        if child.returncode is not None:
            Watchdog.reaped(child.pid)
    if child.returncode != 0:
        detail = last_line(err)
        raise error(f"{what or render(args) + ' < ' + str(stdin)} failed with exit status "
                    f"{child.returncode}"
                    + (f": {redact(detail)}" if detail else ""))


TICK = 0.5  # seconds between on_tick calls while streaming


def _pump(
    proc: subprocess.Popen[bytes],
    on_line: Callable[[str], None],
    on_tick: Callable[[], None] | None,
    logf: BinaryIO | None,
    keep: bool,
    timeout: float | None,
    input: str | None,
) -> tuple[bytes, str]:
    """Read the child's output as it comes: log it, hand each line over, tick while idle.

    Returns the whole output when *keep*, else nothing; and the last non-blank line.
    """
    assert proc.stdout is not None
    if input is not None and proc.stdin is not None:
        proc.stdin.write(input.encode())
        proc.stdin.close()
    deadline = None if timeout is None else time.monotonic() + timeout
    fd = proc.stdout.fileno()
    kept: list[bytes] = []
    pending, last = b"", ""
    while True:
        wait = TICK if deadline is None else min(TICK, deadline - time.monotonic())
        if wait <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout or 0)
        if select.select([fd], [], [], wait)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            if logf is not None:
                logf.write(chunk)
                logf.flush()
            if keep:
                kept.append(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                last = line if line.strip() else last
                on_line(line)
        if on_tick is not None:
            on_tick()
    if pending:
        line = pending.decode(errors="replace")
        last = line if line.strip() else last
        on_line(line)
    proc.wait(timeout=None if deadline is None else max(0.1, deadline - time.monotonic()))
    return b"".join(kept), last.strip()


_PRCTL: list[Callable[..., int] | None] = []  # libc's prctl, looked up once


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn (subprocess, pexpect): ask Linux to SIGTERM the child when this process
    dies (PR_SET_PDEATHSIG), even by SIGKILL.

    make forwards SIGTERM to the jobs it runs, hg rolls its transaction back, git removes its
    lock and temporary files and its helpers see their pipes close: a killed xenpipe leaves
    nothing running. Everything is looked up before the fork: a preexec_fn must not import or
    allocate much.
    """
    if not _PRCTL:
        import ctypes

        _PRCTL.append(getattr(ctypes.CDLL(None, use_errno=True), "prctl", None))
    prctl = _PRCTL[0]
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        if prctl is not None:
            prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def last_line(text: object) -> str:
    """The last line of *text* that is not blank, stripped ("" for none, or for a non-str such
    as pexpect's EOF marker)."""
    if not isinstance(text, str):
        return ""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


class Tee(io.TextIOBase):
    """A console's read log (pexpect's ``logfile_read``): everything goes to the open *log*
    and is kept in memory, where the caller parses it once the child has ended."""

    def __init__(self, log: TextIO) -> None:
        self.log = log
        self.buf = io.StringIO()

    def write(self, s: str) -> int:
        self.log.write(s)
        return self.buf.write(s)

    def flush(self) -> None:
        self.log.flush()

    @property
    def text(self) -> str:
        return self.buf.getvalue()
