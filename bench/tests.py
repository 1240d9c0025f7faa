#!/usr/bin/env python3
"""Measure the fast test suite (`pytest -m "not slow"`): wall time, CPU time of everything it
started, the load average around it, and where the time goes (per test file, slowest tests).

It measures the work tree, or with `--rev REV` the committed tree of REV (`git archive`,
unpacked in a temporary directory: other people's uncommitted edits stay out). With
`--base REV` that revision is measured too, alternating round by round, so that both see the
same machine load as far as possible. Arguments after `--` go to pytest (e.g. `-- -n 2`);
the environment is passed on (e.g. XENPIPE_TEST_FORK=0).

    python bench/tests.py [--rounds 3] [--base REV] [--rev REV] [-- PYTEST_ARGS...]

It prints a table (medians over the rounds) and writes the raw numbers to
bench/results/tests.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def checkout(rev: str, dest: Path) -> Path:
    """The tree of *rev* (committed files only) in *dest*."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_suite(tree: Path, pytest_args: list[str], junit: Path) -> dict[str, Any]:
    """One run of the fast suite in *tree*: its numbers."""
    argv = [sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider",
            f"--junitxml={junit}", *pytest_args]
    load_before = os.getloadavg()
    cpu, start = children_cpu(), time.monotonic()
    # SIGINT at its default even when this script runs in the background (`cmd &` ignores it,
    # and an ignored SIGINT is inherited: the tests that interrupt doit would wait in vain)
    res = subprocess.run(argv, cwd=tree, capture_output=True, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wall, cpu = time.monotonic() - start, children_cpu() - cpu
    load_after = os.getloadavg()
    summary = (res.stdout.strip().splitlines() or [""])[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|error|skipped)", summary)}
    per_file: collections.Counter[str] = collections.Counter()
    tests: dict[str, float] = {}
    for case in ET.parse(junit).iter("testcase"):
        took = float(case.get("time") or 0)
        per_file[case.get("classname", "?").rsplit(".", 1)[-1]] += took
        tests[f"{case.get('classname')}::{case.get('name')}"] = took
    return {"wall": round(wall, 2), "cpu": round(cpu, 2), "load_before": load_before,
            "load_after": load_after, "summary": summary, "counts": counts,
            "exit": res.returncode, "per_file": dict(per_file.most_common()),
            "slowest": dict(sorted(tests.items(), key=lambda kv: -kv[1])[:10])}


def median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--base", help="also measure this git revision, alternating")
    ap.add_argument("--rev", help="measure this git revision instead of the work tree")
    ap.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="xenpipe-bench-tests-") as tmp:
        trees = {f"rev {args.rev}": checkout(args.rev, Path(tmp) / "rev")} if args.rev \
            else {"work tree": REPO}
        if args.base:
            trees = {f"base {args.base}": checkout(args.base, Path(tmp) / "base"), **trees}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for i in range(args.rounds):
            for name, tree in trees.items():
                r = run_suite(tree, args.pytest_args, Path(tmp) / f"junit-{i}.xml")
                runs[name].append(r)
                print(f"round {i + 1} {name}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, "
                      f"load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}: "
                      f"{r['summary']}", flush=True)

    print(f"\n{'':<24}" + "".join(f"{name:>22}" for name in runs))
    for label, key in (("wall (s, median)", "wall"), ("CPU (s, median)", "cpu")):
        print(f"{label:<24}" + "".join(f"{median(rs, key):>22}" for rs in runs.values()))
    files = sorted({f for rs in runs.values() for r in rs for f in r["per_file"]},
                   key=lambda f: -max(r["per_file"].get(f, 0) for rs in runs.values()
                                      for r in rs))
    for f in files[:10]:
        cells = [round(statistics.median(r["per_file"].get(f, 0) for r in rs), 1)
                 for rs in runs.values()]
        print(f"{f:<24}" + "".join(f"{c:>22}" for c in cells))
    out = REPO / "bench" / "results" / "tests.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"pytest_args": args.pytest_args, "runs": runs}, indent=1))
    print(f"\nraw numbers: {out.relative_to(REPO)}")
    if any(r["exit"] != 0 for rs in runs.values() for r in rs):
        sys.exit("some runs failed (see the summaries above)")


if __name__ == "__main__":
    main()
