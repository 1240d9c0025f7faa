"""doit's own command-line errors in xenpipe's words: ``doit biuld`` or ``doit install
--dryrun`` print one ``xenpipe: error:`` line with a did-you-mean and exit 1, as every other
user error does (doit itself prints several lines and exits 3).

This is doit's ``run`` command (what ``doit TASK`` runs) registered again under its own name
by ``[tool.doit.plugins.command]`` in pyproject.toml; only its error handling differs. It
imports doit only: doit loads it before dodo.py, and the tasks (and the config) are not
loaded until the command runs.

It also makes Ctrl-C or SIGTERM during start-up (doit loading dodo.py: GitPython, the
stages, the config) one line instead of a traceback: from here on SIGTERM raises
KeyboardInterrupt as it does once the task layer runs (tasks.py installs the same), and the
command turns one that escapes doit into ``xenpipe: error: interrupted by SIG...``.
"""

from __future__ import annotations

import difflib
import itertools
import re
import sys
from collections.abc import Iterable
from typing import Any

from doit.cmd_run import Run
from doit.cmdparse import CmdParseError
from doit.exceptions import InvalidCommand, InvalidTask

from pipeline.errors import format_error
from pipeline.startup import STARTUP_INTERRUPTED, handle_signals, signal_name

handle_signals()  # doit loads plugins in its main thread


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of *known*, or nothing."""
    close = difflib.get_close_matches(word, sorted(set(known)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _task_names(tasks: Iterable[Any]) -> list[str]:
    return [t.name for t in tasks]


class XenpipeRun(Run):
    """``doit run`` (and a bare ``doit TASK``) with command-line errors as one line."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = list(kwargs.get("cmds") or [])  # for the did-you-mean

    def parse_execute(self, in_args: list[str]) -> int:
        try:
            return super().parse_execute(in_args)
        except InvalidCommand as err:
            return self._fail(self._unknown(err))
        except (CmdParseError, InvalidTask) as err:
            return self._fail(self._bad_option(str(err)))
        except KeyboardInterrupt as exc:  # during start-up: inside a task, stage() has it
            STARTUP_INTERRUPTED.append(signal_name(exc))
            return self._fail(f"interrupted by {signal_name(exc)}")

    def _execute(self, outfile: Any, verbosity: Any = None, always: bool = False,
                 continue_: bool = False, reporter: Any = "console", num_process: int = 0,
                 par_type: str = "process", single: bool = False,
                 auto_delayed_regex: bool = False, force_verbosity: bool = False,
                 failure_verbosity: int = 0, pdb: bool = False) -> int:
        # doit passes the parameters by the names of this signature: keep it Run._execute's
        self._dry_runs_build_nothing()
        return super()._execute(outfile, verbosity, always, continue_, reporter, num_process,
                                par_type, single, auto_delayed_regex, force_verbosity,
                                failure_verbosity, pdb)

    def _dry_runs_build_nothing(self) -> None:
        """`doit install --dry-run` changes nothing, so it must not fetch or build first. doit
        fixes a task's dependencies before its options reach the action; this command parses
        the command line, so it drops the dependency of a task selected with --dry-run."""
        selected = list(self.sel_tasks or [])
        for task in getattr(self, "task_list", None) or []:
            if task.name not in selected or not any(p.get("long") == "dry-run"
                                                     for p in task.params or []):
                continue
            after = selected[selected.index(task.name) + 1:]
            options = list(itertools.takewhile(lambda a: a.startswith("-"), after))
            if "--dry-run" in options:
                task.task_dep = []

    def _fail(self, text: str) -> int:
        sys.stdout.flush()
        sys.stderr.write(format_error(Exception(text)) + "\n")
        sys.stderr.flush()
        return 1

    def _unknown(self, err: InvalidCommand) -> str:
        word = str(err.not_found) if err.not_found is not None else str(err).split("\n")[0]
        tasks = _task_names(getattr(self, "task_list", None) or [])
        return (f"no task or command {word!r}{did_you_mean(word, [*tasks, *self.commands])}; "
                "`doit list` shows the tasks")

    def _bad_option(self, text: str) -> str:
        m = re.search(r"option (\S+) not recognized", text)
        if m is None:
            return " ".join(text.split("\n")[0].split())
        known = [f"--{o.long}" for o in self.get_options() if o.long]
        for task in getattr(self, "task_list", None) or []:
            known += [f"--{p['long']}" for p in task.params or [] if p.get("long")]
        what = "task" if text.startswith("Error parsing Task") else "command"
        return f"{what} option {m[1]} not recognized{did_you_mean(m[1], known)}"
