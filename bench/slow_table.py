#!/usr/bin/env python3
"""Keep the slow suite's time per test across changes: bench/slow-tests.csv (one row per test
and run, appended) and bench/slow-tests.md (the table of the last runs, rendered from it).

`make test` writes the slow run's JUnit XML to bench/results/slow.xml and prints the slowest
tests (`--durations`); this script adds that run, with the commit it measured:

    python bench/slow_table.py bench/results/slow.xml [--commit REV] [--note TEXT]
    python bench/slow_table.py slow.log --commit REV   # a log with pytest's durations

From a JUnit XML every test counts (setup, call and teardown together); from a log only the
tests pytest listed among the slowest (its `--durations=N` lines, summed per test), and the
run's total is pytest's closing `in N s` line. Both record the load average of the end of the
run when it is known (the XML does not say: then it is the load at the time of this script).
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CSV = REPO / "bench" / "slow-tests.csv"
TABLE = REPO / "bench" / "slow-tests.md"
FIELDS = ["run", "commit", "date", "test", "seconds", "outcome", "source", "note"]
TOTAL = "(whole slow run, wall)"
RUNS_SHOWN = 8

# pytest's --durations lines: "123.45s call     tests/test_boot.py::test_x[param]"
DURATION = re.compile(r"^(\d+(?:\.\d+)?)s (setup|call|teardown)\s+(\S.*?)\s*$")
SUMMARY = re.compile(r"(\d+ (?:passed|failed|error).*?) in (\d+(?:\.\d+)?)s")


def from_junit(path: Path) -> tuple[dict[str, tuple[float, str]], float | None]:
    """Each test's seconds and outcome, and the run's total, from pytest's JUnit XML."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests: dict[str, tuple[float, str]] = {}
    for case in root.iter("testcase"):
        module = (case.get("classname") or "").replace(".", "/")
        name = f"{module}.py::{case.get('name')}"
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")),
                       "passed")
        tests[name] = (float(case.get("time") or 0), outcome)
    total = float(suite.get("time")) if suite is not None and suite.get("time") else None
    return tests, total


def from_log(path: Path) -> tuple[dict[str, tuple[float, str]], float | None]:
    """The tests pytest's ``--durations`` listed (phases summed), and the run's total."""
    seconds: collections.Counter[str] = collections.Counter()
    total = None
    for line in path.read_text(errors="replace").splitlines():
        m = DURATION.match(line.strip())
        if m:
            seconds[m[3]] += float(m[1])
        s = SUMMARY.search(line)
        if s:
            total = float(s[2])
    return {t: (round(s, 2), "listed") for t, s in seconds.items()}, total


def commit_of(rev: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=10", rev],
                          capture_output=True, text=True, check=True).stdout.strip()


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append(path: Path, rows: list[dict[str, str]]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS, lineterminator="\n")
        if new:
            w.writeheader()
        w.writerows(rows)


def render(rows: list[dict[str, str]]) -> str:
    """The markdown table: a row per test (slowest of the last run first), a column per run."""
    runs = list(dict.fromkeys(r["run"] for r in rows))[-RUNS_SHOWN:]
    by: dict[tuple[str, str], dict[str, str]] = {(r["run"], r["test"]): r for r in rows}
    heads = {r["run"]: r for r in rows}
    last = runs[-1] if runs else ""
    tests = sorted({r["test"] for r in rows if r["run"] in runs and r["test"] != TOTAL},
                   key=lambda t: (-float(by.get((last, t), {}).get("seconds") or -1), t))
    lines = ["# Slow suite: seconds per test, by run", "",
             "Rendered by `bench/slow_table.py` from `bench/slow-tests.csv` (do not edit by "
             "hand). A column per run: the commit measured, its date and notes (load "
             "average, source: `junit` lists every test, `log` only pytest's slowest). "
             "Setup, call and teardown together; `-` not run or not listed.", "",
             "| test | " + " | ".join(
                 f"{heads[r]['commit']} {heads[r]['date'][:10]}" for r in runs) + " |",
             "|---|" + "---|" * len(runs)]
    for t in [TOTAL, *tests]:
        cells = []
        for r in runs:
            row = by.get((r, t))
            cell = "-" if row is None else f"{float(row['seconds']):.1f}"
            if row is not None and row["outcome"] not in ("passed", "listed", "total"):
                cell += f" ({row['outcome']})"
            cells.append(cell)
        lines.append(f"| {'**' + t + '**' if t == TOTAL else '`' + t + '`'} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Runs:", ""]
    lines += [f"- {heads[r]['commit']} ({heads[r]['date']}, from {heads[r]['source']}): "
              f"{heads[r]['note']}" for r in runs]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="JUnit XML (.xml) or a pytest log")
    ap.add_argument("--commit", default="HEAD", help="the revision the run measured")
    ap.add_argument("--note", default="", help="e.g. the machine's load during the run")
    ap.add_argument("--csv", type=Path, default=CSV, help="the runs so far (appended to)")
    ap.add_argument("--table", type=Path, default=TABLE, help="the markdown table (rewritten)")
    args = ap.parse_args()
    if not args.results.is_file():
        sys.exit(f"{args.results}: no such file")
    junit = args.results.suffix == ".xml"
    tests, total = (from_junit if junit else from_log)(args.results)
    if not tests:
        sys.exit(f"{args.results}: no test durations in it")
    rows = read_rows(args.csv)
    run = str(max((int(r["run"]) for r in rows), default=0) + 1)
    common = {"run": run, "commit": commit_of(args.commit),
              "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
              "source": "junit" if junit else "log", "note": args.note}
    new = [{**common, "test": t, "seconds": f"{s:.2f}", "outcome": o}
           for t, (s, o) in sorted(tests.items())]
    if total is not None:
        new.insert(0, {**common, "test": TOTAL, "seconds": f"{total:.2f}", "outcome": "total"})
    append(args.csv, new)
    args.table.write_text(render(read_rows(args.csv)))
    print(f"run {run}: {len(tests)} tests added to {args.csv}; table in {args.table}")


if __name__ == "__main__":
    main()
