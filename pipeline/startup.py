"""The thin ``doit`` entry point (``[project.scripts]``) and what start-up needs of signals.

Ctrl-C or SIGTERM while Python is still importing doit, GitPython or the stages would end in a
``KeyboardInterrupt`` traceback: doit's own ``main`` cannot catch what arrives before it
runs. This module imports nothing but the standard library, so ``main`` is in place within
milliseconds of the interpreter's start; it imports doit inside its ``try`` and turns an
interrupt anywhere in the run into xenpipe's one line.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

STARTUP_INTERRUPTED: list[str] = []  # the signal that stopped doit loading dodo.py (cli.py)
# Every SIGINT/SIGTERM this run took, in order. The record is what stops the run when Python
# swallows the KeyboardInterrupt: one raised while a ``__del__`` runs (a Popen collected at
# that moment) is only printed as "Exception ignored" and the run went on to exit 0 (crash
# suite, build SIGINT at 0.307 s, seed 134253053). tasks.py and main consult it.
SIGNALLED: list[str] = []


def signal_name(exc: KeyboardInterrupt) -> str:
    """The signal behind a KeyboardInterrupt: SIGINT, or what a SIGTERM handler says."""
    text = str(exc)
    return text if re.fullmatch(r"SIG[A-Z]+", text) else "SIGINT"


def _interrupt(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    SIGNALLED.append(name)
    raise KeyboardInterrupt(name)


def _unraisable(args: Any) -> None:
    """An interrupt Python could not raise (inside a ``__del__``) is in SIGNALLED: no
    "Exception ignored" traceback for it; anything else is reported as Python does."""
    if args.exc_type is not None and issubclass(args.exc_type, KeyboardInterrupt):
        return
    if SIGNALLED and args.object is not None and "__del__" in repr(args.object):
        return  # an object the interrupt left half built (pexpect's PtyProcess: no .closed)
    sys.__unraisablehook__(args)


def _ignore(signum: int, frame: Any) -> None:
    """A signal after the run is over changes nothing (see main)."""


def handle_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt (named after the signal) and are recorded in
    SIGNALLED, so that one Python swallows still stops the run (see SIGNALLED)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    sys.unraisablehook = _unraisable


def pending_interrupt() -> str | None:
    """The signal this run took, if any (raised or swallowed)."""
    return SIGNALLED[0] if SIGNALLED else None


def main() -> None:
    """``doit ARGS``: doit's own main, with an interrupt at any point one line, exit 1."""
    code, interrupted = 1, False
    try:
        try:
            handle_signals()
            # a launcher may hold the two signals pending until this handler is in place
            # (nothing can handle them while the interpreter itself starts): take them now
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            from doit.doit_cmd import DoitMain

            code = DoitMain().run(sys.argv[1:])
            if SIGNALLED and code == 0:  # one whose KeyboardInterrupt Python swallowed
                raise KeyboardInterrupt(SIGNALLED[0])
        except KeyboardInterrupt as exc:
            code = 1
            interrupted = True
            sys.stderr.write(f"xenpipe: error: interrupted by {signal_name(exc)}\n")
        finally:
            # the run is over: a signal from here on must not kill the interpreter as it
            # ends (its finalization puts the default handlers back: a bare exit -15 or -2),
            # nor raise where nothing catches it (one the C handler took just before the
            # mask runs its Python handler later: at any bytecode, then a no-op)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, _ignore)
    except KeyboardInterrupt:  # it came as the run ended, before the mask took: the run's
        pass  # own outcome stands (an uncaught one, with the signal blocked, is exit 130)
    if interrupted or STARTUP_INTERRUPTED:
        # interrupted in start-up (here or while doit imported dodo.py, see cli), Python
        # would still end "by the signal" (exit 130: it remembers a KeyboardInterrupt that
        # went through its import machinery) although the one line is out: exit 1 now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
