"""Run doit as users do (``python -m doit ARGS config=CONFIG`` from the repository root), for
fast tests in a forked child of the test process, and the configs those runs read."""

from __future__ import annotations

import atexit
import contextlib
import errno
import faulthandler
import io
import locale
import logging
import os
import runpy
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

# Most of a `python -m doit` start-up (about half a second, a hundred times per fast run) is
# importing doit, GitPython and the stages' libraries: imported here once, they are already
# there in the forked children that run doit for the fast tests (see _forked_doit).
import doit.cmd_run
import doit.dependency  # noqa: F401
import doit.doit_cmd
import git  # noqa: F401
import pexpect  # noqa: F401
import pyte  # noqa: F401

from .tools import REPO


def write_config(tmp_path: Path, body: str, name: str = "site.toml") -> Path:
    """A config whose workspace is under *tmp_path* unless *body* sets one."""
    if "[workspace]" not in body:
        body = f'[workspace]\ndir = "{tmp_path / "ws"}"\n\n' + body
    path = tmp_path / name
    path.write_text(body)
    return path


DOIT = [sys.executable, "-m", "doit"]

_slow_test = False  # set per test (before its fixtures) by conftest's pytest_runtest_setup
# XENPIPE_TEST_FORK=0: every run_doit starts the real command (to compare, or to rule out the
# fork when a test fails)
FORK = os.environ.get("XENPIPE_TEST_FORK", "1") != "0"


def set_slow_test(slow: bool) -> None:
    """Whether the test about to run is marked slow: its run_doit calls start the real command."""
    global _slow_test
    _slow_test = slow


def default_sigint() -> None:
    """preexec_fn for a doit a test interrupts: SIGINT as a terminal's Ctrl-C finds it, even
    when the tests themselves were started with SIGINT ignored (``cmd &`` in a script)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def held_signals() -> None:
    """A preexec_fn for the thin entry point (``python -m pipeline``, what the installed
    ``doit`` runs): SIGINT at its default, SIGINT and SIGTERM blocked (pending) until the
    entry point unblocks them (a signal inside the interpreter's own start-up, before any
    program code, ends Python with its Fatal Python error whatever a program does)."""
    default_sigint()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def held_reader(fifo: Path, proc: subprocess.Popen[str], timeout: float = 60) -> Iterator[None]:
    """Wait until *proc* opens *fifo* for reading, then hold its write end open (writing
    nothing): the reader stays blocked in its read until the write end closes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO:
                raise
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "doit never read the FIFO"
        time.sleep(0.05)
    try:
        yield
    finally:
        os.close(fd)


def signalled_while_held(argv: list[str], fifo: Path, sig: signal.Signals,
                         env: dict[str, str] | None = None,
                         check: Callable[[], None] | None = None) -> tuple[int, str, str]:
    """Start ``python -m doit ARGV`` (its own session, SIGINT at its default), wait until it
    blocks reading *fifo*, run *check*, send *sig*; its exit status, stdout and stderr. The
    whole process group is killed if it does not end within 60 s."""
    doit = subprocess.Popen(
        [sys.executable, "-m", "doit", *argv], cwd=REPO, text=True,
        env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=default_sigint)
    try:
        with held_reader(fifo, doit):
            if check is not None:
                check()
            doit.send_signal(sig)
            out, err = doit.communicate(timeout=60)
    finally:
        if doit.poll() is None:
            os.killpg(doit.pid, signal.SIGKILL)
            doit.wait()
    return doit.returncode, out, err


def run_doit(*args: str, config: Path | None = None, env: dict[str, str] | None = None,
             timeout: float = 300, cli: bool = False) -> subprocess.CompletedProcess[str]:
    """Run doit as a user does: ``python -m doit ARGS config=CONFIG`` from the repository
    root, with the test's environment plus *env* (without XENPIPE_CONFIG unless *env* sets
    it); its exit status, stdout and stderr (text) as subprocess.run gives them.

    Fast tests run it in a forked child of the test process (doit and GitPython already
    imported, everything else as a fresh ``python -m doit``); *cli* and slow tests start the
    real command, as do the few tests that prove the command-line contract itself (and every
    test under XENPIPE_TEST_FORK=0)."""
    argv = [*args]
    if config is not None:
        argv.append(f"config={config}")
    full_env = {**os.environ, **(env or {})}
    if env is None or "XENPIPE_CONFIG" not in env:
        full_env.pop("XENPIPE_CONFIG", None)
    if cli or _slow_test or not FORK:
        return subprocess.run([*DOIT, *argv], cwd=REPO, env=full_env, capture_output=True,
                              text=True, timeout=timeout)
    return _forked_doit(argv, full_env, timeout)


def _forked_doit(args: list[str], env: dict[str, str], timeout: float
                 ) -> subprocess.CompletedProcess[str]:
    """``python -m doit *args`` in a forked child: a process of its own (exit status, signals,
    file descriptors 0-2, cwd, environment) that skips the interpreter start-up and the imports
    of doit and GitPython. Output is read as subprocess.run(text=True) reads it."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(out_r)
            os.close(err_r)
            _doit_child(args, env, out_w, err_w)
        finally:
            os._exit(70)
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            for fd in chunks:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    out, err = (b"".join(chunks[fd]) for fd in (out_r, err_r))
                    raise subprocess.TimeoutExpired([*DOIT, *args], timeout, out, err)
                for key, _ in sel.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        sel.unregister(key.fd)
    finally:
        os.close(out_r)
        os.close(err_r)
    status = os.waitpid(pid, 0)[1]
    out, err = (_text(b"".join(chunks[fd])) for fd in (out_r, err_r))
    return subprocess.CompletedProcess([*DOIT, *args], os.waitstatus_to_exitcode(status),
                                       out, err)


def _text(data: bytes) -> str:
    """Bytes as subprocess.run(text=True) decodes them (universal newlines)."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n") \
        .replace("\r", "\n")


def _doit_child(args: list[str], env: dict[str, str], out_w: int, err_w: int) -> None:
    """Become ``python -m doit *args`` started from the repository root, then exit."""
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    os.chdir(REPO)
    os.environ.clear()
    os.environ.update(env)
    # what pytest changed in this process: signal handlers, std streams, hooks, warnings,
    # logging handlers
    faulthandler.disable()
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in signal.valid_signals():
        handler = signal.getsignal(sig)
        if callable(handler) and handler is not signal.default_int_handler:
            signal.signal(sig, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # Python keeps an ignored SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False),
                                                   encoding="utf-8")
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False),
                                                   encoding="utf-8", errors="backslashreplace",
                                                   line_buffering=True)
    sys.excepthook = sys.__excepthook__
    sys.unraisablehook = sys.__unraisablehook__
    threading.excepthook = threading.__excepthook__
    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                     ResourceWarning):
        warnings.simplefilter("ignore", category, append=True)
    warnings.showwarning = warnings._showwarning_orig  # type: ignore[attr-defined]
    warnings._showwarnmsg_impl = _showwarnmsg  # type: ignore[attr-defined]
    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)
    atexit._clear()
    # xenpipe itself is imported afresh, as doit loads dodo.py (its module state depends on
    # argv and the environment)
    for name in [m for m in sys.modules if m in ("dodo", "doit.__main__", "pipeline")
                 or m.startswith("pipeline.")]:
        del sys.modules[name]
    sys.path[:] = [str(REPO), *(p for p in sys.path if p not in ("", str(REPO)))]
    sys.argv = ["-m", *args]
    # what doit took from sys at its import: its program name (sys.argv[0] is still "-m" when
    # `python -m doit` imports it), `doit run`'s default output
    doit.doit_cmd.DoitMain.BIN_NAME = "-m"
    doit.cmd_run.opt_outfile["default"] = sys.stdout
    code: int | str | None = 0
    try:
        runpy.run_module("doit", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    # as the interpreter ends: threads, atexit, streams
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
    except OSError:
        code = 120
    sys.stderr.flush()
    if code == -signal.SIGINT:  # as Python does after an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit((code or 0) & 0xFF)


def _showwarnmsg(msg: warnings.WarningMessage) -> None:
    """The interpreter's own warning printer (pytest records warnings instead)."""
    file = msg.file or sys.stderr
    with contextlib.suppress(OSError):
        file.write(warnings._formatwarnmsg(msg))  # type: ignore[attr-defined]

