"""A recorded nightly history: runs of two variants written by nightly's own writers
(``run.document`` and ``report.write``) into real ``reports/runs/<run>/`` directories, with
their logs, as ``doit nightly`` leaves them. For the report page's tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pipeline.nightly import report as report_mod
from pipeline.nightly.run import document

RUNS = ["20260101T020000Z", "20260102T020000Z", "20260103T020000Z"]
MILESTONES = ["Xen banner", "IOMMU enabled", "dom0 kernel", "pciback seized 0000:00:04.0",
              "guest started", "guest listed", "guest shut down"]


def stage(name: str, status: str, duration: float, log: Path | None = None,
          error: str | None = None) -> dict[str, Any]:
    return {"name": name, "status": status, "duration": duration, "error": error,
            "reason": None if status != "not-run" else "not run: build:xen failed",
            "log": str(log) if log else None}


def boot(miss_at: int | None) -> dict[str, Any]:
    """Boot milestones; the one at index *miss_at* missed and the rest not reached."""
    ms, at = [], 0.0
    for i, name in enumerate(MILESTONES):
        at += 7.5 + i
        status = "passed" if miss_at is None or i < miss_at else (
            "failed" if i == miss_at else "not-run")
        ms.append({"name": name, "status": status, "at": at if status != "not-run" else at,
                   "time": 7.5 + i, "detail": "missed: no line within 600 s"
                   if status == "failed" else ""})
    return {"available": True, "verdict": "pass" if miss_at is None else "fail",
            "log": None, "reason": None, "milestones": ms}


def variant(name: str, run_dir: Path, run: int, failed: bool, miss_at: int | None
            ) -> dict[str, Any]:
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for stem in ("fetch-xen", "build-xen", "build-kernel", "boot", "nightly"):
        (logs / f"{stem}.log").write_text(f"{stem} of {name} in run {run}\n")
    xen = stage("build:xen", "failed" if failed else "passed", 40.0 + run,
                logs / "build-xen.log", "xenpipe: error: make build-xen failed" if failed else None)
    stages = [stage("fetch:xen", "passed", 3.0 + run, logs / "fetch-xen.log"),
              stage("fetch:linux", "passed", 1.5, None),
              stage("patch:xen", "up-to-date", 0.0), xen,
              stage("build:kernel", "up-to-date" if run else "passed", 300.0),
              stage("boot", "not-run" if failed else "passed", 90.0 + 5 * run,
                    logs / "boot.log")]
    return {
        "name": name, "config": f"/srv/configs/{name}.toml", "workspace": str(run_dir),
        "status": "failed" if failed or miss_at is not None else "passed",
        "duration": 500.0, "stages": stages,
        "summary": "build:xen failed: make build-xen failed" if failed else
        f"boot: {MILESTONES[miss_at]} missed" if miss_at is not None else "passed",
        "first_failure": {"name": "build:xen", "error": xen["error"], "log": xen["log"]}
        if failed else None, "triage": [],
        "sources": [{"name": "xen", "vcs": "git", "url": "u", "rev": "main",
                     "old": f"{run:02d}" + "e" * 38, "new": f"{run + 1:02d}" + "e" * 38,
                     "changed": True, "last_good": None},
                    {"name": "linux", "vcs": "tarball", "url": "u", "rev": None,
                     "old": "a" * 40, "new": "a" * 40, "changed": False, "last_good": None}],
        "boot": {"available": True, "milestones": [], "reason": None, "log": None}
        if failed else boot(miss_at),
        "ccache": {"hits": 90, "misses": 10, "direct_hits": 80, "preprocessed_hits": 10},
        "merged_upstream": [{"stage": "patch:xen", "patch": "patches/xen/0001-fix.patch",
                             "source": "xen", "rev": "c" * 40}] if run == 1 else [],
        "last_good": None,
    }


def record(root: Path) -> list[Path]:
    """Two variants' workspaces under *root* (``tip``: passes, then build:xen fails, then
    its boot misses a milestone; ``stable``: passes every night); their reports/ dirs."""
    plan = {"tip": [(False, None), (True, None), (False, 3)],
            "stable": [(False, None)] * 3}
    dirs = []
    for name, runs in plan.items():
        reports = root / name / "reports"
        for i, (failed, miss) in enumerate(runs):
            run_dir = reports / "runs" / RUNS[i]
            v = variant(name, run_dir, i, failed, miss)
            started = dt.datetime.strptime(RUNS[i], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
            report_mod.write(run_dir, document([v], RUNS[i], started, 500.0))
        dirs.append(reports)
    return dirs
