"""Triage of a nightly variant after its run: what moved upstream (revisions, new commits),
patches found merged upstream, the boot section, ccache use, and the logs and artifacts a
run keeps (with retention)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from pipeline import fetch, proc
from pipeline.config import Config
from pipeline.files import read_json, sweep_temps
from pipeline.nightly.report import FAILED, NOTRUN, PASSED, SKIPPED
from pipeline.workspace import Key, Workspace

LAST_GOOD = Key.NIGHTLY_LAST_GOOD
LOG_TAIL = 40  # lines of a failing stage's log in junit.xml
MAX_COMMITS = 20  # new upstream revisions listed per source
COUNT_LIMIT = 100_000  # new upstream revisions counted per source
ERROR = "xenpipe: error:"


def last_good_run(ws: Workspace) -> dict[str, Any]:
    """The last good run's record (``run``, ``time``, ``revisions``). When it is missing or
    did not parse (Workspace.state sets such a record aside), it is rebuilt from the run
    reports/last-good points at, whose report says which revisions passed: the run is still
    named in triage and kept from pruning, never silently forgotten."""
    record = ws.state(LAST_GOOD)
    if record or not (ws.reports / "last-good").is_symlink():
        return record
    doc = read_json(ws.reports / "last-good" / "report.json")
    if not isinstance(doc, dict) or doc.get("status") != PASSED or not doc.get("variants"):
        return record
    record = {"run": doc["run"], "time": doc["started"],
              "revisions": {s["name"]: s["new"] for s in doc["variants"][0]["sources"]}}
    ws.save_state(LAST_GOOD, record)
    return record


def merged_upstream(stages: list[dict[str, Any]], ws: Workspace) -> list[dict[str, str]]:
    """The patches a failed patch stage found already upstream, from the record it leaves
    (``merged`` in its state, see patch.apply), never from its message."""
    out = []
    for st in stages:
        name = st["name"]
        if st["status"] != FAILED or not name.startswith("patch:"):
            continue
        m = ws.state(Key.patch(name.split(":", 1)[1])).get("merged")
        if isinstance(m, dict):
            out.append({"stage": name, "patch": m["patch"], "source": m["source"],
                        "rev": m["rev"]})
    return out


# ----------------------------------------------------------------------- sources, triage
def revisions(cfg: Config, ws: Workspace) -> dict[str, str | None]:
    return {name: fetch.resolved(cfg, ws, name) for name in cfg.sources}


def source_section(cfg: Config, ws: Workspace, before: dict[str, str | None],
                   after: dict[str, str | None], last_good: dict[str, Any]
                   ) -> list[dict[str, Any]]:
    good = last_good.get("revisions") or {}
    out = []
    for name, src in cfg.sources.items():
        old, new = before.get(name), after.get(name)
        entry = {"name": name, "vcs": src.vcs, "url": proc.redact(src.url), "rev": src.rev,
                 "old": old, "new": new, "changed": old != new, "last_good": good.get(name)}
        if old and new and old != new and src.vcs != "tarball":  # this run's range
            revs = new_revisions(src.vcs, ws.source_dir(name), old, new, COUNT_LIMIT)
            entry.update(new_count=len(revs), new_revisions=revs[:MAX_COMMITS])
        out.append(entry)
    return out


def new_revisions(src_vcs: str, dest: Path, old: str | None, new: str | None,
                  limit: int = MAX_COMMITS + 1) -> list[str]:
    """``<short> <summary>`` of the revisions in *new* that *old* lacks (newest first)."""
    if not old or not new or old == new:
        return []
    return fetch.vcs_for(src_vcs).log_between(dest, old, new, limit)


def triage(result: dict[str, Any], cfg: Config, ws: Workspace, last_good: dict[str, Any]
           ) -> tuple[str, list[str]]:
    """A one-line summary and the triage notes: first failure, what is new upstream."""
    stages, srcs = result["stages"], result["sources"]
    moved = [s for s in srcs if s["changed"]]
    ran = [s["name"] for s in stages if s["status"] == PASSED and not s["name"].startswith("fetch")]
    notes: list[str] = []
    first = result["first_failure"]
    if first is None:
        if not moved and not ran:
            summary = "nothing changed: every source at the same revision, every stage up to date"
        else:
            what = ", ".join(f"{s['name']} {short(s['old'])}->{short(s['new'])}" for s in moved)
            summary = f"passed ({what or 'upstream unchanged'}; " + (
                f"ran {', '.join(ran)})" if ran else "nothing else ran)")
        if result["boot"].get("reason"):
            notes.append(result["boot"]["reason"])
        return summary, notes

    why = first["error"].removeprefix(ERROR).strip().removeprefix(f"{first['name']}: ")
    summary = f"{first['name']} failed: {why}"
    notes.append(f"first failing stage: {first['name']}")
    for m in result["merged_upstream"]:
        notes.append(f"patch {m['patch']} is now upstream in {m['source']}@{m['rev']}: "
                     f"drop it from patches/{m['source']}/series")
    since = "the last good run" + (f" ({last_good['run']})" if last_good.get("run") else "")
    for s in srcs:
        base = s["last_good"] if last_good.get("revisions") else s["old"]
        if base == s["new"]:
            continue
        if not last_good.get("revisions"):
            since = "the previous run (no good run recorded yet)"
        revs = new_revisions(s["vcs"], ws.source_dir(s["name"]), base, s["new"])
        s["new_since_last_good"] = revs[:MAX_COMMITS]
        more = " and more" if len(revs) > MAX_COMMITS else ""
        listed = "; ".join(revs[:MAX_COMMITS]) + more
        notes.append(f"new in {s['name']} since {since}: {short(base)}->{short(s['new'])}"
                     + (f" ({listed})" if listed else ""))
    if len(notes) == 1 + len(result["merged_upstream"]) and first["name"].split(":")[0] in (
            "patch", "build", "config"):
        notes.append(f"no upstream revision is new since {since}: the change is local "
                     "(config, patches or build environment)")
    return summary, notes


def short(rev: str | None) -> str:
    return rev[:12] if rev else "none"


# --------------------------------------------------------------------------------- boot
def boot_section(ws: Workspace, stages: list[dict[str, Any]], no_boot: str | None
                 ) -> dict[str, Any]:
    """Boot milestones from ``out/boot.json`` (boot.py), when boot ran or is up to date."""
    if no_boot:
        return {"available": False, "reason": no_boot, "milestones": []}
    st = next(s for s in stages if s["name"] == "boot")
    section: dict[str, Any] = {"available": True, "reason": None, "milestones": [],
                               "log": st.get("log"), "verdict": None}
    if st["status"] in (NOTRUN, SKIPPED):
        return section
    record = read_json(ws.out / "boot.json")
    if not isinstance(record, dict):
        return section
    section["verdict"] = record.get("verdict")
    section["milestones"] = milestones(record)
    if isinstance(record.get("checks"), list):  # the go/no-go of the booted Xen (devicecheck)
        section["checks"] = record["checks"]
    return section


MILESTONE_STATUS = {"passed": PASSED, "missed": FAILED}  # boot.py's; "pending": not reached


def milestones(record: dict[str, Any]) -> list[dict[str, Any]]:
    """boot.json's milestones as ``{name, status, time, detail}``; when the first (topology)
    boot already failed, its milestones, prefixed."""
    raw, prefix = record.get("milestones"), ""
    if not isinstance(raw, list) and isinstance(record.get("topology_boot"), dict):
        raw, prefix = record["topology_boot"].get("milestones"), "topology run: "
        record = record["topology_boot"]
    tail = "\n".join(str(x) for x in record.get("tail") or [])
    out, prev = [], 0.0
    for m in raw if isinstance(raw, list) else []:
        if not isinstance(m, dict) or not m.get("name"):
            continue
        status = MILESTONE_STATUS.get(str(m.get("status")), NOTRUN)
        at = float(m.get("seconds") or prev)  # seconds since QEMU started
        out.append({"name": prefix + str(m["name"]), "status": status, "at": at,
                    "time": round(max(0.0, at - prev), 3),  # since the previous milestone
                    "detail": str(m.get("detail") or ("not reached" if status == NOTRUN else "")),
                    **({"log_tail": tail} if status == FAILED else {})})
        prev = at
    return out


# ---------------------------------------------------------------------------- ccache
def ccache_stats(cfg: Config) -> dict[str, int] | None:
    """ccache's counters (``ccache --print-stats``), when the config builds with ccache."""
    if not cfg.build.ccache or shutil.which("ccache") is None:
        return None
    res = proc.run(["ccache", "--print-stats"], capture=True, check=False)
    if res.returncode != 0:
        return None
    stats = {}
    for line in res.stdout.splitlines():
        key, _, value = line.partition("\t")
        if value.strip().isdigit():
            stats[key] = int(value)
    return stats


def ccache_delta(before: dict[str, int] | None, after: dict[str, int] | None
                 ) -> dict[str, int] | None:
    """Hits and misses during this run (the cache is shared: concurrent builds count too)."""
    if before is None or after is None:
        return None

    def d(*keys: str) -> int:
        return sum(after.get(k, 0) - before.get(k, 0) for k in keys)

    return {"hits": d("direct_cache_hit", "preprocessed_cache_hit"), "misses": d("cache_miss"),
            "direct_hits": d("direct_cache_hit"), "preprocessed_hits": d("preprocessed_cache_hit")}


# ----------------------------------------------------------------- logs, artifacts, pruning
def log_marks(ws: Workspace) -> dict[str, tuple[int, int]]:
    """Where each live log ends before the run (inode, size): the run's output comes after."""
    marks = {}
    for log in ws.logs.glob("*.log") if ws.logs.is_dir() else []:
        st = log.stat()
        marks[log.name] = (st.st_ino, st.st_size)
    return marks


def archive_logs(ws: Workspace, run_dir: Path, marks: dict[str, tuple[int, int]],
                 stages: list[dict[str, Any]], boot: dict[str, Any]) -> None:
    """Copy what this run wrote to each log into the run directory (the live logs are left
    as they are); the report points at those copies."""
    dest = run_dir / "logs"
    dest.mkdir(parents=True, exist_ok=True)
    for log in sorted(ws.logs.glob("*.log")) if ws.logs.is_dir() else []:
        st = log.stat()
        ino, size = marks.get(log.name, (st.st_ino, 0))
        start = size if ino == st.st_ino and size <= st.st_size else 0  # else: rewritten
        if st.st_size == start:
            continue
        with open(log, "rb") as src, open(dest / log.name, "wb") as out:
            src.seek(start)
            shutil.copyfileobj(src, out)
    for st in stages:
        copy = dest / f"{st.pop('log_name', st['name']).replace(':', '-')}.log"
        st["log"] = str(copy) if copy.is_file() else None
        if st["log"] and st["status"] == FAILED:
            st["log_tail"] = tail(copy)
    if boot.get("available"):
        boot["log"] = next((s["log"] for s in stages if s["name"] == "boot"), None)


def tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def keep_artifacts(ws: Workspace, run_dir: Path) -> None:
    """A good run keeps a copy of its artifacts (out/'s files, not the build trees); a file
    unchanged since the last good run is a hard link to that run's copy, not another copy.
    A copy is made beside its name and renamed (a killed run leaves no half artifact under
    the name; sweep_runs removes the rest)."""
    if not ws.out.is_dir():
        return
    dest = run_dir / "out"
    dest.mkdir(exist_ok=True)
    prev = ws.reports / "runs" / str(last_good_run(ws).get("run")) / "out"
    for f in ws.out.iterdir():
        if not f.is_file() or f.name.startswith("."):
            continue
        old, st = prev / f.name, f.stat()
        try:
            ost = old.stat()
            if (ost.st_size, ost.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                os.link(old, dest / f.name)
                continue
        except OSError:
            pass
        part = dest / f".{f.name}.{os.getpid()}.copy.tmp"
        shutil.copy2(f, part)
        os.replace(part, dest / f.name)


TEMP = re.compile(r"\.(.+)\.\d+\.[^/]+\.tmp")  # a temp of NAME, as files.atomic_write names it


def sweep_runs(ws: Workspace) -> None:
    """Remove the temporaries a killed nightly left in its run's directory and the run's
    out/ (a half artifact copy, the child doit's unfinished output, a report being written):
    no later run writes there again, so files.sweep_temps never would. What the killed run
    finished (its logs, whole copies) is kept; a live writer's temps are its own."""
    runs = ws.reports / "runs"
    for d in [*runs.glob("*"), *runs.glob("*/out")] if runs.is_dir() else []:
        for entry in d.iterdir() if d.is_dir() and not d.is_symlink() else []:
            if (m := TEMP.fullmatch(entry.name)) is not None:
                sweep_temps(d / m[1])


def point(link: Path, run_dir: Path) -> None:
    """Make *link* a relative symlink to *run_dir*, replaced atomically (stable CI paths)."""
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(run_dir, link.parent))
    os.replace(tmp, link)


def prune(ws: Workspace, retention: int) -> list[Path]:
    """Delete all but the newest *retention* runs (0: keep all); never the last good run."""
    runs_dir = ws.reports / "runs"
    if retention <= 0 or not runs_dir.is_dir():
        return []
    runs = sorted((p for p in runs_dir.iterdir() if p.is_dir()), key=lambda p: p.name)
    keep = set(runs[-retention:])
    good = last_good_run(ws).get("run")
    if good:
        keep.add(runs_dir / good)
    gone = [p for p in runs if p not in keep]
    for p in gone:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(p)
    return gone


def load_report(path: Path) -> dict[str, Any]:
    """A report.json as written by nightly (for tools and tests)."""
    return json.loads(path.read_text())
