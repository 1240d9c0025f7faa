#!/usr/bin/env python3
"""Measure the tarball import (`[sources.*] vcs = "tarball"`) against a plain `tar -xJf` of the
same tarball into the same directory, side by side in one run.

xenpipe's side is `pipeline.fetch.fetch` of the tarball into a fresh workspace (the import,
the checkout of the pinned revision and the fetch record: what the first `doit fetch` does),
run as its own Python process from the work tree, or from the committed tree of `--base REV`
as well (e.g. the commit before the streamed import, for before/after). The runs alternate
round by round so that all sides see the same machine load as far as possible; each is
preceded by a `sync` so that the writeback of the previous one is not charged to it.

    python bench/tarball.py [--tarball /usr/src/linux-source-6.1.tar.xz] [--rounds 2]
                            [--dir DIR] [--base REV]

It prints wall and CPU seconds (the process tree's), the load average around each run and
the ratio to tar, checks that every import gave the same revision, and writes the raw numbers
to bench/results/tarball.json. DIR (default: the slow tests' cache directory, on the disk the
tests use) needs about three times the unpacked size free.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.tests import checkout  # noqa: E402
from tests.support.realkernel import TARBALL, cache_dir  # noqa: E402

# xenpipe's side: one first fetch of the tarball into a fresh workspace, as doit fetch does it
IMPORT = """
import sys
from pathlib import Path
from pipeline.config import SourceCfg
from pipeline.fetch import fetch
from pipeline.workspace import Workspace
print(fetch(SourceCfg("linux", "tarball", sys.argv[1], None, None), Workspace(Path(sys.argv[2]))
            ).resolved)
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], cwd: Path | None = None) -> dict[str, Any]:
    """Run *argv* once: wall and CPU seconds, load average before and after, its stdout."""
    os.sync()
    load = os.getloadavg()[0]
    cpu, start = children_cpu(), time.monotonic()
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    wall, cpu = time.monotonic() - start, children_cpu() - cpu
    if res.returncode != 0:
        sys.exit(f"{argv[0]} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return {"wall": round(wall, 2), "cpu": round(cpu, 2), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), "stdout": res.stdout.strip()}


def du(path: Path) -> int:
    """Bytes under *path* (what the run left on disk)."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tarball", type=Path, default=TARBALL)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=cache_dir() / "bench-tarball")
    ap.add_argument("--base", help="also measure the import of this committed revision")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    sides: dict[str, Path | None] = {"tar -xJf": None, "xenpipe (work tree)": REPO}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="trees-") as trees:
        if args.base:
            rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.base],
                                 capture_output=True, text=True, check=True).stdout.strip()
            sides[f"xenpipe {rev}"] = checkout(args.base, Path(trees) / rev)
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for rnd in range(args.rounds):
            for side, tree in sides.items():
                out = args.dir / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                if tree is None:
                    run = timed(["tar", "-xJf", str(args.tarball), "-C", str(out)])
                else:
                    run = timed([sys.executable, "-c", IMPORT, str(args.tarball),
                                 str(out / "ws")], cwd=tree)
                    run["revision"] = run["stdout"].splitlines()[-1]
                run["bytes"] = du(out)
                runs[side].append(run)
                print(f"round {rnd + 1} {side}: {run['wall']} s wall, {run['cpu']} s CPU, "
                      f"load {run['load_before']} -> {run['load_after']}", flush=True)
        shutil.rmtree(args.dir / "out", ignore_errors=True)
    revisions = {r["revision"] for side in runs.values() for r in side if "revision" in r}
    results = {"tarball": str(args.tarball), "size": args.tarball.stat().st_size,
               "cpus": os.cpu_count(), "rounds": args.rounds, "runs": runs,
               "revisions": sorted(revisions)}
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "tarball.json").write_text(json.dumps(results, indent=2) + "\n")
    tar = runs["tar -xJf"]
    base_wall = statistics.median(r["wall"] for r in tar)
    base_cpu = statistics.median(r["cpu"] for r in tar)
    print(f"\n{args.tarball} ({args.tarball.stat().st_size} bytes), {os.cpu_count()} CPUs, "
          f"medians of {args.rounds}")
    print("| what | wall s | CPU s | wall vs tar | CPU vs tar | on disk, MB | load average |")
    print("|---|---|---|---|---|---|---|")
    for side, rs in runs.items():
        wall = statistics.median(r["wall"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        loads = ", ".join(f"{r['load_before']}->{r['load_after']}" for r in rs)
        print(f"| {side} | {wall:.1f} | {cpu:.1f} | {wall / base_wall:.2f}x | "
              f"{cpu / base_cpu:.2f}x | {rs[0]['bytes'] // 10**6} | {loads} |")
    print(f"revisions: {', '.join(sorted(revisions))}"
          + ("" if len(revisions) == 1 else "  <- NOT the same revision"))
    if len(revisions) != 1:
        sys.exit(1)


if __name__ == "__main__":
    main()
