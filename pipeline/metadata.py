"""``out/metadata.json``: what was built, from what, with which tools, and how it went.

Modelled on tuxmake's metadata: per source the (redacted) URL, the resolved revision and the
patches applied; the kernel config's sha256 and forced symbols; toolchain versions; per stage
its status, duration and exact command lines; every artifact with its size and sha256. The
boot check is a stage too (``boot``: its QEMU command lines, milestones, verdict and what each
guest saw); a rebuild marks it ``pending`` until the next boot.

The file is rewritten atomically when a stage starts, before each command it runs and when it
ends, so a build stopped by Ctrl-C, SIGTERM or even SIGKILL leaves a valid file that says
which stage was running (``running``: killed; ``interrupted``: stopped by a signal).
"""

from __future__ import annotations

import functools
import os
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from pipeline import digest, proc
from pipeline.config import Config
from pipeline.errors import BuildError, XenpipeError, format_error
from pipeline.files import read_json, write_json
from pipeline.startup import signal_name
from pipeline.workspace import Key, Workspace

FORMAT = 1
NAME = "metadata.json"
F = TypeVar("F", bound=Callable[..., Any])
# A stage that reruns makes the stages built from its output stale until they rerun too.
DOWNSTREAM = {"config": ("kernel",), "xen": ("boot",), "kernel": ("boot",)}
TASKS = {"config": "config", "xen": "build:xen", "kernel": "build:kernel", "boot": "boot"}
_ACTIVE: dict[tuple[Path, str], StageRecord] = {}  # the stages running in this process


def path(ws: Workspace) -> Path:
    return ws.out / NAME


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load(ws: Workspace) -> dict[str, Any]:
    """The current metadata (a fresh skeleton when there is none or it is unreadable)."""
    md = read_json(path(ws), {}) or {}
    if not isinstance(md, dict) or md.get("format") != FORMAT:
        md = {}
    md.setdefault("format", FORMAT)
    md.setdefault("tool", {"name": "xenpipe", "version": _version()})
    md.setdefault("stages", {})
    md.setdefault("artifacts", {})
    return md


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("xenpipe")
    except Exception:  # noqa: BLE001 - not installed as a package: a checkout
        return "checkout"


def overall(stages: dict[str, dict[str, Any]]) -> str:
    """One word for the whole build from the stages' statuses."""
    states = {s.get("status") for s in stages.values()}
    for word in ("running", "interrupted", "fail", "pending"):
        if word in states:
            return word
    return "pass" if states else "pending"


# ------------------------------------------------------------------------------ inputs
def cc_of(make_args: Sequence[str], var: str = "CC", default: str = "gcc") -> list[str]:
    """The compiler command a make command line selects (``CC=clang``), without ccache."""
    value = default
    for arg in make_args:
        if arg.startswith(f"{var}="):
            value = arg.split("=", 1)[1]
    words = shlex.split(value) or [default]
    return words[1:] if words[0] == "ccache" and len(words) > 1 else words


def toolchain(make_args: Sequence[str], ccache: bool) -> dict[str, str]:
    """First lines of ``--version`` of the compiler, binutils' ld, make (and ccache)."""
    tools = {
        "cc": cc_of(make_args),
        "binutils": cc_of(make_args, "LD", "ld"),
        "make": ["make"],
    }
    if ccache:
        tools["ccache"] = ["ccache"]
    out = {}
    for key, argv in tools.items():
        try:
            res = proc.run([*argv, "--version"], capture=True, check=False, timeout=30)
        except XenpipeError:
            out[key] = f"{argv[0]}: not found"
            continue
        lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
        out[key] = lines[0] if lines and res.returncode == 0 else f"{argv[0]}: unavailable"
    return out


def sources_record(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """Per source: where it came from, the revision fetched and the patches applied on it."""
    out: dict[str, Any] = {}
    for name, src in cfg.sources.items():
        fetched = ws.state(Key.fetch(name))
        patched = ws.state(Key.patch(name))
        patches = patched.get("patches", patched.get("applied", []))
        out[name] = {
            "vcs": src.vcs,
            "url": fetched.get("url") or proc.redact(src.url),
            "rev": src.rev,
            "resolved": fetched.get("resolved"),
            "patches": patches if isinstance(patches, list) else [],
            "series_digest": patched.get("series_digest"),
        }
    return out


# ------------------------------------------------------------------------------ stages
def configured(cfg: Config) -> set[str]:
    """The stages this config has: config, kernel and boot with [kernel], xen with [xen]."""
    return ({"config", "kernel", "boot"} if cfg.kernel else set()) | (
        {"xen"} if cfg.xen else set())


class StageRecord:
    """The running record of one stage; every change is written to disk at once."""

    def __init__(self, cfg: Config, ws: Workspace, name: str, log: Path | None) -> None:
        self.cfg = cfg
        self.ws = ws
        self.name = name
        self.start = time.monotonic()
        self.data: dict[str, Any] = {
            "status": "running",
            "started": now(),
            "commands": [],
        }
        if log is not None:
            self.data["log"] = os.path.relpath(log, ws.dir)

    def update(self, **top: Any) -> None:
        """Merge this stage (and any top-level keys given) into the file, atomically."""
        md = load(self.ws)
        md["config_file"] = str(self.cfg.path)
        md["sources"] = sources_record(self.cfg, self.ws)
        md["stages"][self.name] = self.data
        live = configured(self.cfg)  # a table removed from the config takes its stage along
        md["stages"] = {k: v for k, v in md["stages"].items() if k in live}
        md["artifacts"] = {k: v for k, v in md["artifacts"].items() if v.get("stage") in live}
        for key, value in top.items():
            if key == "artifacts":
                arts = {k: v for k, v in md["artifacts"].items() if v.get("stage") != self.name}
                arts.update(value)
                md["artifacts"] = arts
            else:
                md[key] = value
        md["status"] = overall(md["stages"])
        md["updated"] = now()
        write_json(path(self.ws), md)

    def begin(self, **top: Any) -> None:
        md = load(self.ws)
        for later in DOWNSTREAM.get(self.name, ()):
            if md["stages"].get(later, {}).get("status") == "pass":
                md["stages"][later]["status"] = "pending"
                write_json(path(self.ws), md)
        self.update(**top)

    def command(self, argv: Sequence[str | os.PathLike[str]]) -> None:
        """Record a command line before it runs (a killed build shows what it was doing)."""
        self.data["commands"].append(proc.render(argv))
        self.update()

    def set(self, **items: Any) -> None:
        self.data.update(items)

    def finish(self, status: str, artifacts: dict[str, Path] | None = None,
               error: str | None = None, **top: Any) -> None:
        self.data["status"] = status
        self.data["finished"] = now()
        self.data["duration"] = round(time.monotonic() - self.start, 2)
        if error:
            self.data["error"] = error
        else:
            self.data.pop("error", None)
        if artifacts is not None:
            top["artifacts"] = {
                name: {"path": os.path.relpath(p, self.ws.dir), "size": p.stat().st_size,
                       "sha256": digest.of_file(p), "stage": self.name}
                for name, p in artifacts.items()
            }
        self.update(**top)


def still_built(ws: Workspace, later: str, artifact: str, sha256: str) -> None:
    """A stage that ran again and made the same output leaves the stage built from it as it
    was: *later* (marked ``pending`` when the earlier stage began) is ``pass`` again when
    its *artifact* was built from these very bytes (doit rightly finds it up to date and
    does not run it, so nothing else would say so)."""
    md = load(ws)
    st = md["stages"].get(later)
    art = md["artifacts"].get(artifact) or {}
    if st is not None and st.get("status") == "pending" and art.get("stage") == later \
            and art.get("sha256") == sha256:
        st["status"] = "pass"
        md["status"] = overall(md["stages"])
        write_json(path(ws), md)


def outcome(exc: BaseException) -> tuple[str, str]:
    """The status and one-line error a stage that ended by *exc* records: ``interrupted`` by
    Ctrl-C or SIGTERM, else ``fail`` with the user error's line (an OSError, the system
    refusing a file operation, is one too: errors.py) or the bug's type and message."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", f"interrupted by {signal_name(exc)}"
    if isinstance(exc, XenpipeError | OSError):
        return "fail", format_error(exc).removeprefix("xenpipe: error: ")
    return "fail", f"{type(exc).__name__}: {exc}"


@contextmanager
def stage(cfg: Config, ws: Workspace, name: str, *, log: Path | None = None,
          error: type[XenpipeError] = BuildError, **top: Any) -> Iterator[StageRecord]:
    """Record stage *name* in metadata.json while the body runs.

    The body calls ``rec.finish("pass", artifacts=...)`` when it succeeded; a user error is
    recorded as ``fail``; Ctrl-C or SIGTERM as ``interrupted`` and turned into one-line
    *error* (the child processes are already stopped by proc.run), so doit records the stages
    that finished and the next run continues from there.
    """
    rec = StageRecord(cfg, ws, name, log)
    rec.begin(**top)
    key = (ws.dir.resolve(), name)
    _ACTIVE[key] = rec
    try:
        yield rec
    except BaseException as exc:
        status, why = outcome(exc)
        rec.finish(status, error=why)
        if status == "interrupted":
            again = ("run `doit boot` again" if name == "boot" else
                     "the stages that finished are kept, run `doit build` again to continue")
            raise error(f"{TASKS.get(name, name)}: {why}; {again}") from None
        raise
    else:
        if rec.data["status"] == "running":
            rec.finish("pass")
    finally:
        _ACTIVE.pop(key, None)


def current(ws: Workspace, name: str) -> StageRecord | None:
    """The record of stage *name* while it runs in this process: the stage's helpers add
    their results to it (boot.py's milestones and verdict) without passing it around."""
    return _ACTIVE.get((ws.dir.resolve(), name))


def recorded(name: str, error: type[XenpipeError]) -> Callable[[F], F]:
    """Decorator: run ``fn(cfg, ws, ...)`` as stage *name* (see :func:`stage`), logged to
    ``logs/<name>.log``."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(cfg: Config, ws: Workspace, *args: Any, **kwargs: Any) -> Any:
            with stage(cfg, ws, name, log=ws.log(name), error=error):
                return fn(cfg, ws, *args, **kwargs)

        return cast(F, run)

    return wrap
