"""The doit task graph. ``dodo.py`` re-exports the generators defined here.

Each task is thin: it calls one stage module and decides "up to date?" from a small
fingerprint (resolved revisions, patch digests, requested symbols...), never from a
``file_dep`` on the tens of thousands of files of a kernel tree.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from doit import get_var
from doit.exceptions import TaskFailed
from doit.globals import Globals
from doit.reporter import ConsoleReporter

from pipeline import (
    bisect,
    boot,
    build,
    config,
    digest,
    fetch,
    install,
    kernel,
    nightly,
    passthrough,
    patch,
    pci,
    proc,
    startup,
    target,
)
from pipeline.config import display
from pipeline.errors import XenpipeError, format_error
from pipeline.metadata import signal_name
from pipeline.workspace import Key, Workspace

ERROR_PREFIX = "xenpipe: error:"


class XenpipeReporter(ConsoleReporter):
    """doit's console reporter, but a user error is one line, not a failure dump."""

    desc = "console output; xenpipe user errors as one line"

    def add_failure(self, task: Any, fail: Any) -> None:
        if str(fail.message).startswith(ERROR_PREFIX):
            sys.stderr.write(fail.message.rstrip("\n") + "\n")
            sys.stderr.flush()
            return
        super().add_failure(task, fail)


def load_config(var: str | None = None) -> config.Config:
    """Load the chosen config, or print its one-line error and exit 1 (even for `doit list`)."""
    try:
        # a `doit bisect` step's child doit pins sources (pipeline.bisect.step)
        return bisect.step_config(config.load(config.choose_path(var or get_var("config"))))
    except XenpipeError as exc:
        sys.stderr.write(format_error(exc) + "\n")
        raise SystemExit(1) from None


def load_variants() -> list[config.Config]:
    """`config=a.toml,b.toml` (or XENPIPE_CONFIG) lists variants for `doit nightly`, each
    validated before any task runs; every other task refuses to run with more than one (see
    RunState.variants_refused)."""
    chosen = get_var("config") or os.environ.get("XENPIPE_CONFIG") or ""
    if "," not in chosen or not chosen.strip(" ,"):  # "config=," names no file: load says so
        return [load_config()]
    return [load_config(part.strip()) for part in chosen.split(",") if part.strip()]


@dataclass
class RunState:
    """What one doit run has learnt that every later task must see.

    ``interrupted``: the signal that stopped this doit (the task it hit fails with one line,
    doit then writes its report, e.g. nightly's child --reporter=json, and no later task
    starts, even with --continue). ``check_failed``: the one-line error of an uptodate check
    that failed (see checked), the failure of the task whose action doit runs next.
    ``variants``: the configs given, of which only `doit nightly` takes more than one.
    """

    variants: list[str] = field(default_factory=list)
    interrupted: str | None = None
    check_failed: list[str] = field(default_factory=list)
    # task name -> (its fingerprint, its "outputs still there" check): what `doit install
    # --dry-run` asks to say which stages a real install would run first (see stale_stages)
    checks: dict[str, tuple[Callable[[], Any] | None, Callable[[], bool] | None]] = field(
        default_factory=dict)

    def stopped(self) -> str | None:
        """The signal that stopped this run, also one whose KeyboardInterrupt Python swallowed
        (see startup.SIGNALLED)."""
        self.interrupted = self.interrupted or startup.pending_interrupt()
        return self.interrupted

    def interrupt(self, exc: KeyboardInterrupt) -> str:
        """Record that doit was interrupted (no later task starts); the one line of the task
        it hit."""
        self.interrupted = self.interrupted or signal_name(exc)
        return f"{ERROR_PREFIX} interrupted by {self.interrupted}"

    def variants_refused(self) -> str | None:
        if len(self.variants) < 2:
            return None
        return (f"{ERROR_PREFIX} config= lists {len(self.variants)} files: only `doit nightly` "
                f"runs variants; give other tasks one (config={self.variants[0]})")


USER_ERRORS = (XenpipeError, OSError)  # OSError: see errors.py


def stage(fn: Callable[..., Any], *args: Any, variants: bool = False,
          **kwargs: Any) -> Callable[[], Any]:
    """Wrap a stage function as a doit python-action that turns user errors, and Ctrl-C or
    SIGTERM, into one line. Only an action with ``variants`` runs when config= lists several."""

    def action() -> Any:
        if STATE.check_failed:  # this task's uptodate check was interrupted or failed
            return TaskFailed(STATE.check_failed.pop())
        if STATE.stopped():
            return TaskFailed(f"{ERROR_PREFIX} not started: doit was interrupted by "
                              f"{STATE.interrupted}")
        refused = None if variants else STATE.variants_refused()
        if refused:
            return TaskFailed(refused)
        try:
            result = fn(*args, **kwargs)
        except USER_ERRORS as exc:
            return TaskFailed(format_error(exc))
        except KeyboardInterrupt as exc:
            return TaskFailed(STATE.interrupt(exc))
        if STATE.stopped():  # an interrupt Python swallowed while the stage ran
            return TaskFailed(f"{ERROR_PREFIX} interrupted by {STATE.interrupted}")
        return result if isinstance(result, dict) else None

    action.__name__ = getattr(fn, "__name__", "action")
    action.__doc__ = fn.__doc__
    return action


def checked(check: Callable[..., Any]) -> Callable[..., Any]:
    """A doit ``uptodate`` callable that Ctrl-C, SIGTERM or a user error cannot turn into a
    traceback. doit calls these outside any action (where stage() would catch them), and what
    they raise escapes doit's runner; a fingerprint may block (a FIFO in a patches directory,
    a slow ``git status``). So an interrupt or a user error here makes the check say "not up
    to date" and leaves its one line in STATE.check_failed: doit runs the task's action next, and
    stage() fails the task with that line, as it fails one interrupted during its action (no
    later task starts). Once doit was interrupted, no check runs again."""

    @functools.wraps(check)  # doit passes task and values by the parameters' names
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if STATE.stopped() or STATE.check_failed or STATE.variants_refused():
            return False
        try:
            return check(*args, **kwargs)
        except KeyboardInterrupt as exc:
            STATE.check_failed.append(STATE.interrupt(exc))
        except USER_ERRORS as exc:
            STATE.check_failed.append(format_error(exc))
        return False

    return guarded


def uptodate(name: str, fingerprint: Callable[[], Any] | None = None,
             present: Callable[[], bool] | None = None) -> list[Callable[..., Any]]:
    """A task's doit ``uptodate`` list: its fingerprint unchanged (see unchanged) and its
    outputs present; registered in STATE.checks under the task's full name."""
    STATE.checks[name] = (fingerprint, present)
    return [*([unchanged(fingerprint)] if fingerprint else []),
            *([checked(present)] if present else [])]


def stale_stages() -> list[str]:
    """The stage tasks doit would run now (their checks as doit makes them, against the
    values doit saved), in task order; read-only, for the dry run."""
    dep = Globals.dep_manager
    stale = []
    for name, (fingerprint, present) in STATE.checks.items():
        try:
            saved = dep.get_values(name) if dep is not None else {}
            if (fingerprint is not None and not same_fingerprint(fingerprint, saved)[0]) \
                    or (present is not None and not present()):
                stale.append(name)
        except USER_ERRORS:
            stale.append(name)
    return stale


def same_fingerprint(compute: Callable[[], Any], saved: dict[str, Any]) -> tuple[bool, str]:
    """Whether the fingerprint computed now equals the one doit saved for the task, and the
    fingerprint (the one comparison the real check and the dry run's make)."""
    fp = digest.of_json(compute())
    return saved.get("fingerprint") == fp, fp


def unchanged(compute: Callable[[], Any]) -> Callable[[Any, dict[str, Any]], bool]:
    """A doit ``uptodate`` callable (see checked): compare a fingerprint computed when the task
    is checked (after its dependencies ran) with the one saved at its last success."""

    def check(task: Any, values: dict[str, Any]) -> bool:
        same, fp = same_fingerprint(compute, values)
        task.value_savers.append(lambda: {"fingerprint": fp})
        return same

    return checked(check)


def flag(name: str) -> bool:
    return (get_var(name) or "").lower() in ("1", "yes", "true", "on")


VARIANTS = load_variants()
CFG = VARIANTS[0]
STATE = RunState(variants=[display(v.path) for v in VARIANTS])
WS = Workspace(CFG.workspace)
try:
    WS.dir.mkdir(parents=True, exist_ok=True)
except OSError as exc:  # what config's check of [workspace] dir cannot foresee (e.g. in /proc)
    raise SystemExit(format_error(exc)) from None
WS.check_dep_file()  # before doit opens it: a corrupt one is set aside, never trusted

DOIT_CONFIG = {
    "backend": "sqlite3",
    "dep_file": str(WS.dep_file),
    "default_tasks": ["build"],
    "reporter": XenpipeReporter,
    "verbosity": 2,
}


# SIGTERM stops a run as Ctrl-C does: proc.run kills the running make's process group, the
# stage records "interrupted", doit saves the tasks that finished and starts no other. Both
# are recorded (startup.SIGNALLED), so one Python swallowed still stops the next task.
startup.handle_signals()  # doit loads this module in its main thread


def ready(name: str) -> list[str]:
    """The task after which source *name* is in its final state."""
    return [f"patch:{name}"] if CFG.sources[name].patches else [f"fetch:{name}"]


# ---------------------------------------------------------------------------------- tasks
def task_fetch() -> Any:
    """Clone or update every [sources.*] tree at its pinned rev (no network when pinned)."""
    force = flag("force")
    for name, src in CFG.sources.items():
        yield {
            "name": name,
            "doc": f"{src.vcs} {proc.redact(src.url)} @ {src.rev or 'default'}",
            "actions": [stage(fetch.fetch, src, WS, CFG.mirror, force)],
            "uptodate": uptodate(f"fetch:{name}", present=lambda src=src: not force and
                                 fetch.in_place(src, WS)),
        }


def task_patch() -> Any:
    """Apply each source's quilt series (patches/<source>/series), all or nothing."""
    # doit takes the group's doc (and makes `doit patch` run every subtask) only when the
    # name=None entry comes first
    yield {"name": None, "doc": "Apply each source's quilt series, all or nothing."}
    for name, src in CFG.sources.items():
        if src.patches is None:
            continue
        yield {
            "name": name,
            "doc": f"{src.patches}/series on src/{name}",
            "actions": [stage(patch.apply, src, WS)],
            "task_dep": [f"fetch:{name}"],
            "uptodate": uptodate(f"patch:{name}", lambda name=name, src=src: {
                "rev": fetch.resolved(CFG, WS, name),
                "series": patch.fingerprint(src),
            }, lambda name=name: WS.has_state(Key.patch(name))),
        }


def task_config() -> Any:
    """Make the dom0 kernel .config and force CONFIG_XEN_PCIDEV_BACKEND=y with its own tool."""
    kcfg = CFG.kernel
    if kcfg is None:
        return {"actions": None, "doc": "Make the dom0 kernel .config (no [kernel] configured)."}
    return {
        # build.configure runs kernel.configure and records its result (metadata.json)
        "actions": [stage(build.configure, CFG, WS, WS.source_dir(kcfg.source))],
        "task_dep": ready(kcfg.source),
        # the tree's revision and the Kconfig inputs its patches wrote, not the series digest:
        # a patch to a .c file reruns the build, not the configuration
        "uptodate": uptodate("config", lambda: {
            "kconfig": kernel.fingerprint(CFG),
            "rev": fetch.resolved(CFG, WS, kcfg.source),
            "patched": kernel.tree_inputs(
                WS.state(Key.patch(kcfg.source)).get("files")
                if CFG.sources[kcfg.source].patches else None),
        }, lambda: WS.has_state(Key.CONFIG) and kernel.outputs_present(CFG, WS)),
    }


def task_build() -> Any:
    """Build Xen and the dom0 kernel and modules; artifacts and metadata.json in out/."""
    if CFG.xen is None and CFG.kernel is None:
        return nothing_to_build()
    return build_tasks()


def nothing_to_build() -> dict[str, Any]:
    """``doit build`` of a config with neither [xen] nor [kernel]: fetch and patch (all a user
    preparing trees for a build by hand may want), then one line saying nothing was built, so
    an exit status 0 is never mistaken for a build."""

    trees = [WS.source_dir(name) for name in CFG.sources]

    def say() -> None:
        did = (f"sources fetched and patched: {', '.join(map(display, trees))}" if trees
               else "no [sources.*] either")
        print(f"build: nothing to build: {display(CFG.path)} has no [xen] or [kernel] table "
              f"({did})", flush=True)

    return {"doc": "Fetch and patch only: no [xen] or [kernel] to build (the default task).",
            "actions": [stage(say)], "task_dep": ["fetch", "patch"]}


def build_tasks() -> Any:
    # doit takes the group's own dict only when it comes first (later, it drops the subtasks)
    yield {"name": None, "doc": "Build Xen and the dom0 kernel and modules (the default task)."}
    if CFG.xen is not None:
        yield {
            "name": "xen",
            "doc": "make the hypervisor",
            "actions": [stage(build.build_xen, CFG, WS)],
            "task_dep": ready(CFG.xen.source),
            "uptodate": uptodate("build:xen", lambda: build.fingerprint_xen(CFG, WS),
                                 lambda: WS.has_state(Key.build("xen"))
                                 and build.xen_outputs_present(CFG, WS)),
        }
    if CFG.kernel is not None:
        yield {
            "name": "kernel",
            "doc": "make the dom0 kernel and modules",
            "actions": [stage(build.build_kernel, CFG, WS)],
            "task_dep": ["config"],
            "uptodate": uptodate("build:kernel", lambda: build.fingerprint_kernel(CFG, WS),
                                 lambda: WS.has_state(Key.build("kernel"))
                                 and build.kernel_outputs_present(CFG, WS)),
        }


def device_checks(box: pci.Box, dry_run: bool = False) -> tuple[str, XenpipeError | None]:
    """The go/no-go per device on *box* as printed, and the no-go's one-line error to raise
    (None: all go, force=1, or a dry run, which says a real install would refuse)."""
    found = passthrough.device_verdicts(CFG, WS, build.kernel_build_dir(WS) / ".config", box)
    lines = [pci.render(found)]
    if not box.is_target and box.hint and CFG.passthrough.devices:
        lines.append(f"warning: the device checks read {box.origin}: {box.hint}")
    error = pci.nogo_error(found)
    if error is not None and flag("force"):
        lines.append(f"force=1: going on despite: {error}")
    elif error is not None and dry_run:
        lines.append(f"a real install refuses: {error}")
    else:
        return "\n".join(lines), error
    return "\n".join(lines), None


def task_install() -> Any:
    """Install Xen, kernel, modules, initramfs, bootloader, guest configs (--dry-run: plan);
    first the go/no-go per device (target.examined: the box's), refusing a no-go unless
    force=1. With --dry-run the run command drops the build dependency (pipeline.cli)."""

    def go(dry_run: bool) -> Any:
        with target.examined(CFG, WS, remote=not dry_run) as box:
            checks, error = device_checks(box, dry_run)
            if not CFG.passthrough.devices:
                checks = ""
            if not dry_run and checks:
                print(checks, flush=True)
            if error is not None:
                raise error
            if CFG.target is not None:  # a test box over ssh: stage here, deploy there
                return target.deploy(CFG, WS, dry_run=dry_run, seen=box, checks=checks)
            if dry_run:
                return install.dry_run(CFG, WS, stale_stages(), box=box, checks=checks)
            return install.install(CFG, WS, dry_run=False, box=box)

    def run(dry_run: bool) -> Any:
        return stage(go, dry_run)()

    return {
        "actions": [run],
        "params": [{"name": "dry_run", "long": "dry-run", "type": bool, "default": False,
                    "help": "print the plan (files with diffs, commands) and change nothing"}],
        "task_dep": ["build"],
        "uptodate": [lambda: False],
    }


def task_devices() -> Any:
    """Print the PCI devices, warnings, the dom0 line and a go/no-go per device (force=1)."""

    def show() -> None:
        with target.examined(CFG, WS) as box:
            print(passthrough.devices_report(CFG, WS, box), flush=True)
            checks, error = device_checks(box)
            print(checks, flush=True)
            if error is not None:
                raise error

    return {"actions": [stage(show)], "uptodate": [lambda: False]}


def task_boot() -> Any:
    """Boot the built Xen + dom0 in QEMU (with [target]: the box, once, falling back by
    itself); pass only when pciback seized every device."""
    return {
        "actions": [stage(boot.boot, CFG, WS)],
        # via = "disk" boots what doit install wrote into install.root
        "task_dep": ["build", *(["install"] if CFG.boot.via == "disk" else [])],
        "uptodate": [unchanged(lambda: boot.fingerprint(CFG, WS))],
    } if CFG.target is None else {  # the test box of [target]: reboot it, verify, fall back
        "actions": [stage(target.boot, CFG, WS)],
        "uptodate": [lambda: False],
    }


def task_nightly() -> Any:
    """Update sources, build and boot; write reports/report.json and junit.xml."""
    return {"actions": [stage(nightly.nightly, VARIANTS, variants=True)],
            "uptodate": [lambda: False]}


def task_report() -> Any:
    """Write reports/index.html: the nightly history of every variant given (grid, plots)."""

    def page() -> None:
        path = nightly.write_page(WS.reports, [Workspace(v.workspace).reports
                                               for v in VARIANTS])
        print(f"report page: {path}", flush=True)

    return {"actions": [stage(page, variants=True)], "uptodate": [lambda: False]}


def task_bisect() -> Any:
    """Find the changeset (source=NAME) or patch (patches=NAME) that broke the run."""
    return {"actions": [stage(lambda: bisect.bisect(CFG, WS, {k: get_var(k) for k in
                                                              bisect.VARS}))],
            "uptodate": [lambda: False]}
