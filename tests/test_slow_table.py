"""bench/slow_table.py: a slow run's durations (pytest's log or its JUnit XML) become rows of
bench/slow-tests.csv and a column of the rendered table."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from .support.tools import REPO

LOG = """\
...........................                                              [100%]
============================= slowest 30 durations =============================
596.96s setup    tests/test_boot.py::test_real_build_and_boot
122.66s call     tests/test_boot.py::test_real_build_and_boot
14.96s call     tests/test_kconfig.py::test_real_kernel_dom0_fragment[menuconfig]
27 passed, 503 deselected in 2379.48s (0:39:39)
done 0
"""

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0"
failures="1" skipped="0" tests="2" time="130.5"><testcase classname="tests.test_boot"
name="test_real_build_and_boot" time="100.25" /><testcase classname="tests.test_disk"
name="test_x[a]" time="30.0"><failure message="boom">boom</failure></testcase></testsuite>
</testsuites>
"""


def table(tmp_path: Path, results: Path, note: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "bench" / "slow_table.py"), str(results),
                           "--note", note, "--csv", str(tmp_path / "t.csv"),
                           "--table", str(tmp_path / "t.md")],
                          capture_output=True, text=True, cwd=REPO)


def test_a_log_and_a_junit_run_become_rows_and_columns(tmp_path: Path) -> None:
    (tmp_path / "slow.log").write_text(LOG)
    (tmp_path / "slow.xml").write_text(JUNIT)
    assert table(tmp_path, tmp_path / "slow.log", "load 5").returncode == 0
    res = table(tmp_path, tmp_path / "slow.xml", "load 3")
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "t.csv", newline="") as f:
        rows = {(r["run"], r["test"]): r for r in csv.DictReader(f)}
    assert rows[("1", "tests/test_boot.py::test_real_build_and_boot")]["seconds"] == "719.62"
    assert rows[("1", "(whole slow run, wall)")]["seconds"] == "2379.48"
    assert rows[("2", "tests/test_boot.py::test_real_build_and_boot")]["seconds"] == "100.25"
    assert rows[("2", "tests/test_disk.py::test_x[a]")]["outcome"] == "failure"
    assert rows[("2", "(whole slow run, wall)")]["seconds"] == "130.50"
    md = (tmp_path / "t.md").read_text()
    assert "| `tests/test_boot.py::test_real_build_and_boot` | 719.6 | 100.2 |" in md
    assert "| `tests/test_kconfig.py::test_real_kernel_dom0_fragment[menuconfig]` | 15.0 | - |" \
        in md
    assert "| `tests/test_disk.py::test_x[a]` | - | 30.0 (failure) |" in md
    assert ": load 5" in md and ": load 3" in md


def test_a_file_without_durations_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.log").write_text("no tests ran\n")
    res = table(tmp_path, tmp_path / "empty.log", "")
    assert res.returncode == 1 and "no test durations" in res.stderr
    assert not (tmp_path / "t.csv").exists()
