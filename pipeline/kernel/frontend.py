"""What both scripted frontends share: the pty session they run in and the result they give.

A frontend is the kernel's own ``make oldconfig`` or ``make menuconfig`` under a pty of a
fixed size, in its own session so that stopping it stops everything it started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pipeline import proc
from pipeline.errors import KconfigError
from pipeline.kernel.kbuild import Kbuild, SymbolInfo

INTERACTIVE_TIMEOUT = 900.0  # a whole scripted frontend session, including building it
ROWS, COLS = 50, 160  # fixed terminal; menuconfig needs at least 19x80, search results like width


@dataclass
class FrontendResult:
    """What a scripted frontend saw: help text it captured and choice groups it listed."""

    helps: dict[str, SymbolInfo] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # CONFIG_X -> why the tool refused
    choices: list[list[str]] = field(default_factory=list)  # members (CONFIG_X) of listed choices
    answers: int = 0


def spawn(kb: Kbuild, target: str, env: dict[str, str], deadline: float) -> Any:
    """The frontend under a pty of a fixed size, no send delay, in its own session."""
    import pexpect

    argv = kb.argv(target)
    with open(kb.log, "a") as f:
        f.write(f"$ {proc.render(argv)}\n")
    try:
        child = pexpect.spawn(argv[0], argv[1:], env=proc.environment(env), encoding="utf-8",
                              codec_errors="replace", dimensions=(ROWS, COLS),
                              timeout=max(1.0, deadline - time.monotonic()), maxread=65536,
                              preexec_fn=proc.die_with_parent())
    except pexpect.ExceptionPexpect as exc:
        raise KconfigError(f"make {target}: cannot start: {exc}") from None
    child.delaybeforesend = None
    return child


def stop(child: Any) -> None:
    """End the frontend and every process it started (it leads its own session)."""
    proc.stop_group(child.pid, child.isalive, grace=2.5)
    child.close(force=True)


def finish(child: Any, deadline: float) -> None:
    """After EOF: let the frontend exit by itself (so its status is real), then clean up."""
    end = min(deadline, time.monotonic() + 30)
    while child.isalive() and time.monotonic() < end:
        time.sleep(0.02)
    stop(child)


def exit_reason(child: Any) -> str:
    """How the frontend ended, for a message: the signal that killed it or its status."""
    if child.signalstatus is not None:
        return f"was killed by signal {child.signalstatus}"
    return f"failed with exit status {child.exitstatus}"

