"""One bisection step: the nightly's graph (fetch, patch, config, build, boot with the guest
check) run by a child doit on the workspace, with one source at the candidate revision or
one series cut to its first N patches, and the outcome as good, bad or skip.

The step never edits the user's config: it writes ``bisect/step.json`` in the workspace and
names it in ``$XENPIPE_BISECT_STEP``; the child doit's tasks module loads the config through
``step_config``, which pins the sources there (a full revision each: no pull, no network)
and points a cut series at ``bisect/patches/<name>/``. The trees that move are the
workspace's ``src/<name>``, never the user's own clone (the config's url).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import patch
from pipeline.bisect.search import BAD, GOOD
from pipeline.config import Config, SourceCfg
from pipeline.errors import BisectError
from pipeline.files import atomic_write, read_json, write_json
from pipeline.nightly import collect_stages, run
from pipeline.nightly.report import FAILED
from pipeline.nightly.triage import ERROR
from pipeline.patch.series import read_regular
from pipeline.workspace import Workspace

STEP_ENV = "XENPIPE_BISECT_STEP"


def bisect_dir(ws: Workspace) -> Path:
    return ws.dir / "bisect"


def step_config(cfg: Config) -> Config:
    """*cfg* as the running bisection step pins it (unchanged outside a step, or when the
    step is another workspace's: a nightly of several variants started from a step)."""
    path = os.environ.get(STEP_ENV)
    step = read_json(Path(path)) if path else None
    if not isinstance(step, dict) or step.get("workspace") != str(cfg.workspace):
        return cfg
    sources = dict(cfg.sources)
    for name, rev in step.get("revs", {}).items():
        if name in sources:
            sources[name] = dataclasses.replace(sources[name], rev=rev)
    for name, where in step.get("patches", {}).items():
        if name in sources:
            sources[name] = dataclasses.replace(sources[name], patches=Path(where))
    return dataclasses.replace(cfg, sources=sources)


def cut_series(src: SourceCfg, ws: Workspace, count: int) -> Path:
    """A copy of *src*'s series holding its first *count* patches, in the workspace
    (rebuilt whole each time: a reader sees the previous cut or this one)."""
    entries = patch.read_series(src)
    dest = bisect_dir(ws) / "patches" / src.name
    tmp = dest.with_name(f".{src.name}.new")
    shutil.rmtree(tmp, ignore_errors=True)
    for e in entries[:count]:
        atomic_write(tmp / e.name, read_regular(e.path))
    atomic_write(tmp / patch.SERIES, "".join(f"{e.name} -p{e.strip}\n"
                                              for e in entries[:count]))
    old = dest.with_name(f".{src.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def verdict(stages: list[dict[str, Any]], on_build: str, on_patch: str
            ) -> tuple[str, str | None]:
    """good, bad or skip, and the first failure's one line. A boot that fails (a milestone
    missed, pciback not seizing, the guest not using its device) is bad; a patch that does not
    apply, a .config or build that fails is skip unless *on_patch* / *on_build* say bad; a
    fetch that fails stops the bisection (no verdict can come of it)."""
    first = next((s for s in stages if s["status"] == FAILED), None)
    if first is None:
        return GOOD, None
    name, error = first["name"], first.get("error") or f"{first['name']} failed"
    kind = name.split(":")[0]
    if kind == "boot":
        return BAD, error
    if kind == "patch":
        return on_patch, error
    if kind in ("config", "build"):
        return on_build, error
    raise BisectError(f"bisect step stopped: {name}: {error.removeprefix(ERROR).strip()}")


def run_step(cfg: Config, ws: Workspace, number: int, pins: Mapping[str, str],
             cut: tuple[str, int] | None, on_build: str, on_patch: str) -> dict[str, Any]:
    """Run the graph once with *pins* (source -> full revision) and *cut* (a source's first
    N patches); the step's record: verdict, first failure, stages, seconds."""
    record: dict[str, Any] = {"workspace": str(ws.dir), "revs": dict(pins), "patches": {}}
    if cut is not None:
        record["patches"][cut[0]] = str(cut_series(cfg.sources[cut[0]], ws, cut[1]))
    step_file = bisect_dir(ws) / "step.json"
    write_json(step_file, record)
    run_dir = bisect_dir(ws) / "steps" / f"{number:02d}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    no_boot = run.boot_unavailable(cfg)
    targets = ["fetch", "patch", "build", *([] if no_boot else ["boot"])]
    t0 = time.monotonic()
    tasks, doit_error = run.run_doit(run.Variant("bisect", cfg, ws), targets, run_dir,
                                     env={STEP_ENV: str(step_file)}, log_name="bisect")
    seconds = round(time.monotonic() - t0, 1)
    stages = collect_stages(cfg, tasks, doit_error, no_boot)
    said, error = verdict(stages, on_build, on_patch)
    return {"verdict": said, "error": error, "seconds": seconds,
            "stages": {s["name"]: {"status": s["status"], "seconds": s["duration"]}
                       for s in stages}}

