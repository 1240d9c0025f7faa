"""Running a nightly: each variant's child ``doit --reporter=json`` and the stages read from
its output; the report of each variant and of the whole run (triage is in ``triage``)."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import config as config_mod
from pipeline import metadata, proc
from pipeline.config import Config
from pipeline.errors import ConfigError, XenpipeError
from pipeline.files import atomic_write, read_json
from pipeline.nightly import html
from pipeline.nightly import report as report_mod
from pipeline.nightly.report import FAILED, NOTRUN, OK, PASSED, SKIPPED, UPTODATE
from pipeline.nightly.triage import (
    ERROR,
    LAST_GOOD,
    archive_logs,
    boot_section,
    ccache_delta,
    ccache_stats,
    keep_artifacts,
    last_good_run,
    log_marks,
    merged_upstream,
    point,
    prune,
    revisions,
    source_section,
    sweep_runs,
    triage,
)
from pipeline.workspace import Workspace

DODO = config_mod.ROOT / "dodo.py"
EXCEPTION = re.compile(r"^(?:[\w]+\.)*(\w*(?:Error|Exception): .*)$")  # a traceback's last line
INTERRUPTED = "interrupted"  # a variant's and the report's status when a signal stopped the run



@dataclass(frozen=True)
class Variant:
    name: str
    cfg: Config
    ws: Workspace


def variants(cfgs: Sequence[Config]) -> list[Variant]:
    """One variant per config, named by file stem; each must have its own workspace."""
    stems = [c.path.stem for c in cfgs]
    out: list[Variant] = []
    seen: dict[Path, Config] = {}
    for cfg, stem in zip(cfgs, stems, strict=True):
        if cfg.workspace in seen:
            raise ConfigError(
                f"{config_mod.display(cfg.path)} and {config_mod.display(seen[cfg.workspace].path)}"
                f" share the workspace {cfg.workspace}: give each variant its own [workspace] dir"
                " (they can share [workspace] mirror)")
        seen[cfg.workspace] = cfg
        name = stem if stems.count(stem) == 1 else config_mod.display(cfg.path)
        out.append(Variant(name, cfg, Workspace(cfg.workspace)))
    return out


def boot_unavailable(cfg: Config) -> str | None:
    """Why this variant cannot boot (its boot testcase is then skipped, never passed)."""
    if cfg.kernel is None:
        return "boot: not available (no [kernel] to boot)"
    return None


def expected_stages(cfg: Config) -> list[str]:
    """The leaf tasks a nightly runs, in pipeline order."""
    names = [f"fetch:{n}" for n in cfg.sources]
    names += [f"patch:{n}" for n, s in cfg.sources.items() if s.patches is not None]
    names += ["config"] if cfg.kernel else []
    names += ["build:xen"] if cfg.xen else []
    names += ["build:kernel"] if cfg.kernel else []
    return [*names, "boot"]


# ------------------------------------------------------------------------------ the run
def nightly(cfgs: Sequence[Config]) -> dict[str, Any]:
    """Run every variant in turn, write the combined report, fail if any variant failed. Ctrl-C
    or SIGTERM stops the run, and the report says which stage it stopped."""
    vs = variants(cfgs)
    started = dt.datetime.now(dt.UTC)
    run_id = new_run_id([v.ws for v in vs], started)
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    for v in vs:
        results.append(run_variant(v, run_id, started))
        if results[-1]["status"] == INTERRUPTED:
            break
    report = document(results, run_id, started, time.monotonic() - t0,
                      [v.name for v in vs[len(results):]])
    json_path, junit_path = report_mod.write(vs[0].ws.reports, report)
    page = html.write(vs[0].ws.reports, [v.ws.reports for v in vs])
    for r in results:
        print(f"nightly {r['name']}: {r['summary']}")
    print(f"report: {json_path}\njunit:  {junit_path}\npage:   {page}")
    if report["status"] == INTERRUPTED:
        r = results[-1]
        raise XenpipeError(f"nightly {r['name']}: {r['summary']} (report: {json_path})")
    if report["status"] != PASSED:
        bad = [f"{r['name']}: {r['summary']}" for r in results if r["status"] != PASSED]
        raise XenpipeError(f"nightly failed: {'; '.join(bad)} (report: {json_path})")
    return {"status": report["status"], "run": run_id}


def new_run_id(workspaces: Sequence[Workspace], started: dt.datetime) -> str:
    """A UTC timestamp that sorts by time and is unused in every variant's workspace."""
    base, n = started.strftime("%Y%m%dT%H%M%SZ"), 1
    run_id = base
    while any((ws.reports / "runs" / run_id).exists() for ws in workspaces):
        n += 1
        run_id = f"{base}-{n:02d}"
    return run_id


def document(results: list[dict[str, Any]], run_id: str, started: dt.datetime,
             duration: float, not_run: Sequence[str] = ()) -> dict[str, Any]:
    """The whole report; *not_run*: the variants an interruption kept from running."""
    ok = all(r["status"] == PASSED for r in results)
    doc = {"format": report_mod.FORMAT, "run": run_id, "started": started.isoformat(),
           "duration": round(duration, 3), "status": PASSED if ok else FAILED,
           "variants": results}
    stopped = next((r for r in results if r["status"] == INTERRUPTED), None)
    if stopped is not None:
        doc["status"] = INTERRUPTED
        doc["interrupted"] = {**stopped["interrupted"], "variant": stopped["name"],
                              "variants_not_run": list(not_run)}
    return doc


def run_variant(v: Variant, run_id: str, started: dt.datetime) -> dict[str, Any]:
    """One nightly of one config: child doit run, then the record, archive and pruning."""
    ws, cfg = v.ws, v.cfg
    sweep_runs(ws)
    run_dir = ws.reports / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    marks = log_marks(ws)
    before = revisions(cfg, ws)
    last_good = last_good_run(ws)
    cache_before = ccache_stats(cfg)
    no_boot = boot_unavailable(cfg)
    t0 = time.monotonic()
    targets = ["fetch", "patch", "build", *([] if no_boot else ["boot"])]
    print(f"nightly {v.name}: doit {' '.join(targets)} (log: {ws.log('nightly')})", flush=True)
    signal: str | None = None
    try:
        tasks, doit_error = run_doit(v, targets, run_dir)
    except KeyboardInterrupt as exc:  # proc.run has stopped the child doit and what it ran
        signal = metadata.signal_name(exc)
        tasks, doit_error = doit_tasks(run_dir / "doit.json"), ""
    duration = time.monotonic() - t0
    after = revisions(cfg, ws)

    stages = collect_stages(cfg, tasks, doit_error, no_boot)
    stopped = interrupted_stage(stages, ws, signal) if signal else None
    boot = boot_section(ws, stages, no_boot)
    archive_logs(ws, run_dir, marks, stages, boot)
    status = PASSED if all(s["status"] in (*OK, SKIPPED) for s in stages) and not any(
        m["status"] == FAILED for m in boot.get("milestones", [])) else FAILED
    status = INTERRUPTED if signal else status
    srcs = source_section(cfg, ws, before, after, last_good)
    first = next((s for s in stages if s["status"] == FAILED), None)
    result: dict[str, Any] = {
        "name": v.name, "config": str(cfg.path), "workspace": str(ws.dir), "status": status,
        "duration": round(duration, 3), "stages": stages, "sources": srcs, "boot": boot,
        "first_failure": None if first is None else
        {k: first.get(k) for k in ("name", "error", "log")},
        "ccache": ccache_delta(cache_before, ccache_stats(cfg)),
        "last_good": last_good.get("run"),
    }
    result["merged_upstream"] = merged_upstream(stages, ws)
    if signal:
        result["interrupted"] = {"signal": signal, "stage": stopped}
        result["summary"] = f"interrupted by {signal} during {stopped}"
        result["triage"] = ["the stages that finished are kept: the next run continues from "
                            "where this one stopped"]
    else:
        result["summary"], result["triage"] = triage(result, cfg, ws, last_good)
    # the run's own report first: the last-good record and the links name a run only once
    # it is whole (a kill in between left them naming a run without a report)
    if status == PASSED:
        keep_artifacts(ws, run_dir)
    report_mod.write(run_dir, document([result], run_id, started, duration))
    if status == PASSED:
        ws.save_state(LAST_GOOD, {"run": run_id, "time": started.isoformat(),
                                  "revisions": {s["name"]: s["new"] for s in srcs}})
        point(ws.reports / "last-good", run_dir)
    point(ws.reports / "latest", run_dir)
    for name in ("report.json", "junit.xml"):
        atomic_write(ws.reports / name, (run_dir / name).read_bytes())
    prune(ws, cfg.retention)
    return result


def run_doit(v: Variant, targets: list[str], run_dir: Path, env: Mapping[str, str] | None = None,
             log_name: str = "nightly") -> tuple[dict[str, dict[str, Any]], str]:
    """Run the real graph for *targets* in a child doit (with *env* added; its output in
    logs/<log_name>.log): its tasks by name, and what went wrong outside any task (doit
    stopped early: no result, or an exception while checking whether a task is up to
    date), else ""."""
    out = run_dir / "doit.json"
    # doit opens its -o file as it starts and writes it as it ends: a temp until then (named
    # after this process, see files.sweep_temps), so a killed run leaves no half JSON
    part = run_dir / f".{out.name}.{os.getpid()}.child.tmp"
    argv = [sys.executable, "-m", "doit", "-f", str(DODO), "--reporter=json", "-o", str(part),
            "--continue", *targets, f"config={v.cfg.path}"]
    log = v.ws.log(log_name)
    start = log.stat().st_size if log.is_file() else 0
    try:
        # XENPIPE_NIGHTLY: doit boot starts [[guests]] too unless [boot] guest says otherwise
        res = proc.run(argv, cwd=config_mod.ROOT, log=log, check=False,
                       env={"XENPIPE_NIGHTLY": "1", **(env or {})})
    finally:
        if isinstance(read_json(part), dict):
            os.replace(part, out)
        else:
            part.unlink(missing_ok=True)
    tasks = doit_tasks(out)
    if res.returncode == 0 or any(t.get("result") == "fail" for t in tasks.values()):
        return tasks, ""
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    raised = [m[1] for ln in lines if (m := EXCEPTION.match(ln))]
    why = next((ln[ln.index(ERROR) + len(ERROR):].strip() for ln in lines if ERROR in ln),
               raised[-1] if raised else lines[-1] if lines else "no output")
    return tasks, f"doit stopped with exit status {res.returncode}: {why}"


def doit_tasks(path: Path) -> dict[str, dict[str, Any]]:
    """The tasks of a child doit's ``--reporter=json`` output, by name ({} when it wrote none)."""
    data = read_json(path)
    return {t["name"]: t for t in (data or {}).get("tasks", [])
            if isinstance(t, dict) and "name" in t} if isinstance(data, dict) else {}


def interrupted_stage(stages: list[dict[str, Any]], ws: Workspace, signal: str) -> str:
    """The stage *signal* stopped, marked failed as interrupted (the stages it kept from
    starting: not run); its name. The child doit says which task the signal hit; when it was
    killed before it could, metadata.json's running stage, else the first unfinished one."""

    def refused(st: dict[str, Any]) -> bool:  # the child's later tasks (tasks.INTERRUPTED)
        return st["status"] == FAILED and "not started" in (st.get("error") or "")

    hit = next((s for s in stages if s["status"] == FAILED and not refused(s)
                and "interrupted by" in (s.get("error") or "")), None)
    if hit is None:
        running = [metadata.TASKS.get(k, k) for k, st in metadata.load(ws)["stages"].items()
                   if st.get("status") in ("running", "interrupted")]
        hit = next((s for s in stages if s["name"] in running), None) or next(
            (s for s in stages if s["status"] not in (*OK, SKIPPED)), None)
        if hit is None:
            return "the report"  # every stage had finished
        hit["error"] = f"{ERROR} {hit['name']}: interrupted by {signal}"
    hit.update(status=FAILED, reason="interrupted")
    for st in stages:
        if st is not hit and (refused(st) or st["status"] == NOTRUN):
            st.update(status=NOTRUN, error=None,
                      reason=f"not run: interrupted during {hit['name']}")
    return str(hit["name"])


def collect_stages(cfg: Config, tasks: dict[str, dict[str, Any]], doit_error: str,
                   no_boot: str | None) -> list[dict[str, Any]]:
    """Each leaf task's status, duration, log and one-line error, in pipeline order."""
    names = expected_stages(cfg)
    groups = {"fetch", "patch", "build"} | {n.split(":")[0] for n in tasks if ":" in n}
    names += [n for n in tasks if n not in names and n not in groups]
    stages = []
    for name in names:
        st: dict[str, Any] = {"name": name, "duration": 0.0, "error": None, "reason": None}
        t = tasks.get(name)
        if name == "boot" and no_boot:
            st.update(status=SKIPPED, reason=no_boot)
        elif t is None or t.get("result") in (None, "ignore"):
            st.update(status=NOTRUN, reason="not run")
        elif t["result"] == "up-to-date":
            st.update(status=UPTODATE)
        elif t["result"] == "success":
            st.update(status=PASSED, duration=round(t.get("elapsed") or 0.0, 3))
        elif t.get("started") is None:  # doit: a dependency failed, this task never started
            st.update(status=NOTRUN, reason=f"not run: {root_cause(tasks, name)} failed")
        else:
            st.update(status=FAILED, duration=round(t.get("elapsed") or 0.0, 3),
                      error=one_line(t.get("error") or ""))
        stages.append(st)
    if doit_error:  # the stage doit was checking carries it; doit itself, if it ran none
        st = next((s for s in stages if s["status"] == NOTRUN), None) if tasks else None
        if st is None:
            st = {"name": "doit", "duration": 0.0, "reason": None}
            stages.insert(0, st)
        st.update(status=FAILED, error=f"{ERROR} {doit_error}", log_name="nightly")
    return stages


def root_cause(tasks: dict[str, dict[str, Any]], name: str) -> str:
    """The task that really failed behind *name*: doit names the failed dependency of a task
    that never started, which may itself be a group or a task that never started."""
    seen = {name}
    while True:
        t = tasks.get(name) or {}
        deps = (t.get("error") or "").split()
        if name not in tasks or t.get("started") is not None or not deps or deps[0] in seen:
            return name
        name = deps[0]
        seen.add(name)
        members = [n for n in tasks if n.startswith(f"{name}:")
                   and tasks[n].get("result") == "fail"]
        if members:  # a group: its failed member is the culprit
            name = members[0]


def one_line(error: str) -> str:
    """The ``xenpipe: error:`` line of a failure, else (a bug) the traceback's last line."""
    lines = [ln.strip() for ln in error.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(ERROR):
            return ln
    return f"{ERROR} (bug) {lines[-1]}" if lines else f"{ERROR} failed without a message"

