"""`doit nightly` against real upstreams that move between runs (hg served on loopback, git),
real doit child runs sharing the workspace's sqlite dependency file, and the JUnit output
checked against the structure of the common JUnit XSD."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pipeline import nightly as nightly_mod
from pipeline.config import load
from pipeline.nightly import report as report_mod

from .support.doit import run_doit, write_config
from .support.realkernel import RealKernel
from .support.tools import REPO, free_port, need
from .support.upstreams import XEN_TREE, GitUpstream, HgUpstream

# ------------------------------------------------------------------ JUnit structural check
_DECIMAL = re.compile(r"^\d+(\.\d+)?$")
SUITE_CHILDREN = {"properties", "testcase", "system-out", "system-err"}
CASE_OUTCOMES = {"failure", "error", "skipped"}


def validate_junit(path: Path) -> dict[str, int]:
    """Check *path* against the shape of the common (Ant/Jenkins) JUnit XSD; return totals.

    Well-formed XML; ``<testsuites>`` of ``<testsuite name tests failures errors skipped
    time>``; each ``<testcase name classname time>`` holds at most one failure, error or
    skipped (failure/error with a ``message``); every count attribute equals what is inside.
    """
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    assert root.tag in ("testsuites", "testsuite"), root.tag
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        assert suite.tag == "testsuite", suite.tag
        for attr in ("name", "tests", "failures", "errors", "time"):
            assert attr in suite.attrib, f"testsuite without {attr}"
        assert _DECIMAL.match(suite.get("time", "")), suite.get("time")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for child in suite:
            assert child.tag in SUITE_CHILDREN, f"unexpected <{child.tag}> in <testsuite>"
            if child.tag == "properties":
                for prop in child:
                    assert prop.tag == "property" and {"name", "value"} <= set(prop.attrib)
                continue
            if child.tag != "testcase":
                continue
            counts["tests"] += 1
            assert child.get("name") and child.get("classname"), child.attrib
            assert _DECIMAL.match(child.get("time", "")), child.attrib
            outcomes = [c for c in child if c.tag in CASE_OUTCOMES]
            assert len(outcomes) <= 1, f"{child.get('name')}: several outcomes"
            assert {c.tag for c in child} <= CASE_OUTCOMES | {"system-out", "system-err"}
            for o in outcomes:
                if o.tag in ("failure", "error"):
                    assert o.get("message"), f"{child.get('name')}: {o.tag} without message"
                key = {"failure": "failures", "error": "errors", "skipped": "skipped"}[o.tag]
                counts[key] += 1
        for key, n in counts.items():
            assert int(suite.get(key, "0")) == n, f"{suite.get('name')}: {key} != {n}"
            totals[key] += n
    if root.tag == "testsuites":
        for key, n in totals.items():
            assert int(root.get(key, "0")) == n, f"testsuites {key}"
    return totals


def cases(path: Path) -> dict[str, ET.Element]:
    return {f"{c.get('classname')}::{c.get('name')}": c for c in ET.parse(path).iter("testcase")}


def outcome(case: ET.Element) -> str:
    tags = [c.tag for c in case if c.tag in CASE_OUTCOMES]
    return tags[0] if tags else "passed"


# ---------------------------------------------------------------------------- helpers
def nightly(cfg: Path, expect: int = 0) -> tuple[subprocess.CompletedProcess[str],
                                                 dict[str, Any]]:
    """Run `doit nightly` as a user does; its exit status and the report it wrote."""
    res = run_doit("nightly", config=cfg)
    assert res.returncode == expect, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    m = re.search(r'dir = "([^"]+)"', cfg.read_text())
    assert m
    return res, json.loads((Path(m[1]) / "reports" / "report.json").read_text())


def stage(variant: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in variant["stages"] if s["name"] == name)


def git_config(tmp_path: Path, up: GitUpstream, name: str = "site", extra: str = "",
               ws: str | None = None, body: str = "") -> Path:
    text = (f'[workspace]\ndir = "{ws or tmp_path / name}"\n{extra}\n'
            f'[sources.xen]\nvcs = "git"\nurl = "{up.url}"\nrev = "main"\n{body}')
    return write_config(tmp_path, text, f"{name}.toml")


def xen_upstream(up: GitUpstream) -> str:
    for name, text in XEN_TREE.items():
        up.commit(name, text, f"xen: add {name}")
    return up.repo.head.commit.hexsha


def xen_config(tmp_path: Path, up: GitUpstream, patches: Path | None = None) -> Path:
    need("make")
    need("gcc")
    xen_upstream(up)
    extra = f'patches = "{patches}"\n' if patches else ""
    return git_config(tmp_path, up, body=extra + '\n[xen]\nsource = "xen"\n')


def names(variant: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in variant["stages"]}


# ------------------------------------------------------------------------------- tests
def test_unchanged_then_new_commit_that_builds(tmp_path: Path, git_upstream: GitUpstream
                                               ) -> None:
    """Nothing changed: every stage up to date, said so; then a new commit is rebuilt. The
    child doit runs share the outer doit's sqlite dependency file: a later `doit build`
    finds everything nightly built up to date."""
    cfg = xen_config(tmp_path, git_upstream)
    _, first = nightly(cfg)
    v = first["variants"][0]
    assert names(v) == {"fetch:xen": "passed", "build:xen": "passed", "boot": "skipped"}
    assert v["sources"][0]["old"] is None and v["sources"][0]["new"]

    res, second = nightly(cfg)
    v = second["variants"][0]
    assert v["summary"].startswith("nothing changed"), v["summary"]
    assert "nothing changed" in res.stdout
    assert names(v)["build:xen"] == "up-to-date"
    src = v["sources"][0]
    assert (src["old"], src["changed"]) == (first["variants"][0]["sources"][0]["new"], False)
    junit = tmp_path / "site" / "reports" / "junit.xml"
    assert validate_junit(junit) == {"tests": 3, "failures": 0, "errors": 0, "skipped": 1}
    boot = cases(junit)["xenpipe.site.boot::boot: not available"]
    assert outcome(boot) == "skipped" and "no [kernel]" in boot.find("skipped").get("message")
    by_hand = run_doit("build", config=cfg)
    assert by_hand.returncode == 0 and "-- build:xen" in by_hand.stdout, by_hand.stdout

    new = git_upstream.commit("xen/main.c", "int main(void) { return 1; }\n", "xen: exit 1")
    _, third = nightly(cfg)
    v = third["variants"][0]
    assert names(v)["build:xen"] == "passed" and v["sources"][0]["new"] == new
    assert v["summary"].startswith(f"passed (xen {src['new'][:12]}->{new[:12]}; ran build:xen")
    runs = sorted((tmp_path / "site" / "reports" / "runs").iterdir())
    assert [r.name for r in runs] == [first["run"], second["run"], third["run"]]
    assert (runs[-1] / "out" / "xen.gz").is_file()  # a good run keeps its artifacts
    reports = tmp_path / "site" / "reports"
    assert (reports / "latest").resolve() == (reports / "last-good").resolve() == runs[-1]
    kept = [r / "out" / "xen.gz" for r in runs]  # the unchanged run links, the rebuilt copies
    assert kept[1].stat().st_ino == kept[0].stat().st_ino != kept[2].stat().st_ino
    good = json.loads((tmp_path / "site" / "state" / "nightly-last-good.json").read_text())
    assert good["run"] == third["run"] and good["revisions"] == {"xen": new}


def test_breaking_commit_names_new_revisions(tmp_path: Path, git_upstream: GitUpstream
                                             ) -> None:
    cfg = xen_config(tmp_path, git_upstream)
    _, good = nightly(cfg)
    git_upstream.commit("xen/README", "docs\n", "docs: explain the scheduler")
    bad = git_upstream.commit("xen/main.c", "#error upstream broke it\n", "sched: rework")
    res, rep = nightly(cfg, expect=1)
    assert res.stderr.count("xenpipe: error:") == 1 and "nightly failed" in res.stderr
    v = rep["variants"][0]
    assert v["status"] == "failed" and v["first_failure"]["name"] == "build:xen"
    assert v["summary"].startswith("build:xen failed:")
    assert "first failing stage: build:xen" in v["triage"]
    note = next(n for n in v["triage"] if n.startswith("new in xen since the last good run"))
    assert good["run"] in note and bad[:7] in note
    assert "sched: rework" in note and "docs: explain the scheduler" in note
    assert v["sources"][0]["new_since_last_good"][0].endswith("sched: rework")
    junit = tmp_path / "site" / "reports" / "junit.xml"
    assert validate_junit(junit)["failures"] == 1
    fail = cases(junit)["xenpipe.site.stage::build:xen"].find("failure")
    assert fail is not None and fail.get("message") == v["first_failure"]["error"]
    assert "--- last lines ---" in fail.text and "#error upstream broke it" in fail.text
    assert Path(v["first_failure"]["log"]).is_file()
    reports = tmp_path / "site" / "reports"
    assert (reports / "last-good" / "out" / "xen.gz").is_file()
    assert (reports / "last-good").resolve().name == good["run"]
    assert (reports / "latest").resolve().name == rep["run"]

    git_upstream.commit("xen/main.c", "int main(void) { return 0; }\n", "sched: fix")
    _, fixed = nightly(cfg)
    assert fixed["variants"][0]["status"] == "passed"
    assert fixed["variants"][0]["last_good"] == good["run"]


def test_patch_merged_upstream_is_reported(tmp_path: Path, git_upstream: GitUpstream) -> None:
    patches = tmp_path / "patches" / "xen"
    patches.mkdir(parents=True)
    (patches / "series").write_text("readme.patch\n")
    (patches / "readme.patch").write_text(
        "--- a/README\n+++ b/README\n@@ -1 +1,2 @@\n linux\n+pciback: hide 00:19.0\n")
    cfg = xen_config(tmp_path, git_upstream, patches)
    _, good = nightly(cfg)
    assert names(good["variants"][0])["patch:xen"] == "passed"
    merged = git_upstream.commit("README", "linux\npciback: hide 00:19.0\n", "merge the fix")
    _, rep = nightly(cfg, expect=1)
    v = rep["variants"][0]
    assert v["first_failure"]["name"] == "patch:xen"
    assert v["merged_upstream"] == [{"stage": "patch:xen", "patch": str(patches / "readme.patch"),
                                     "source": "xen", "rev": merged[:12]}]
    assert any(n.startswith(f"patch {patches / 'readme.patch'} is now upstream in xen@")
               and "drop it from patches/xen/series" in n for n in v["triage"])
    assert names(v)["build:xen"] == "not-run"
    junit = tmp_path / "site" / "reports" / "junit.xml"
    validate_junit(junit)
    skipped = cases(junit)["xenpipe.site.stage::build:xen"].find("skipped")
    assert skipped is not None and skipped.get("message") == "not run: patch:xen failed"


def test_new_hg_revision_is_reported_old_and_new(tmp_path: Path, hg_upstream: HgUpstream
                                                 ) -> None:
    body = f'[sources.xen]\nvcs = "hg"\nurl = "{hg_upstream.url}"\nrev = "tip"\n'
    cfg = write_config(tmp_path, body)
    _, first = nightly(cfg)
    old = hg_upstream.node()
    assert first["variants"][0]["sources"][0]["new"] == old
    mid = hg_upstream.commit("xen/common/sched.c", "int x;\n", "sched: new scheduler knob")
    new = hg_upstream.commit("xen/common/sched.c", "int y;\n", "sched: rename the knob")
    _, second = nightly(cfg)
    src = second["variants"][0]["sources"][0]
    assert (src["old"], src["new"], src["changed"]) == (old, new, True)
    assert src["new_count"] == 2  # newest first, as git log lists them
    assert src["new_revisions"] == [f"{new[:12]} sched: rename the knob",
                                    f"{mid[:12]} sched: new scheduler knob"]
    props = {p.get("name"): p.get("value")
             for p in ET.parse(tmp_path / "ws" / "reports" / "junit.xml").iter("property")}
    assert props["source.xen"] == f"{old}..{new}"


def test_unreachable_upstream_fails_and_retention_keeps_last_good(
        tmp_path: Path, git_upstream: GitUpstream) -> None:
    cfg = git_config(tmp_path, git_upstream, extra="retention = 1")
    _, good = nightly(cfg)
    git_upstream.path.rename(tmp_path / "gone.git")
    failed = [nightly(cfg, expect=1)[1] for _ in range(2)]
    v = failed[-1]["variants"][0]
    assert v["first_failure"]["name"] == "fetch:xen"
    assert v["first_failure"]["error"].startswith("xenpipe: error: git fetch")
    assert v["last_good"] == good["run"]
    validate_junit(tmp_path / "site" / "reports" / "junit.xml")
    runs = sorted(p.name for p in (tmp_path / "site" / "reports" / "runs").iterdir())
    assert runs == [good["run"], failed[-1]["run"]]  # the older failed run is gone


def test_variants_share_one_mirror_and_one_report(tmp_path: Path, git_upstream: GitUpstream
                                                  ) -> None:
    """Two configs, one command: one download in the shared mirror, a workspace each, one
    combined report; ccache (a private cache dir) counts the second variant's hit."""
    need("ccache")
    xen_upstream(git_upstream)
    extra = f'mirror = "{tmp_path / "mirror"}"'
    body = '\n[xen]\nsource = "xen"\n\n[build]\nccache = true\n'
    a = git_config(tmp_path, git_upstream, "a", extra, body=body)
    b = git_config(tmp_path, git_upstream, "b", extra, body=body)
    res = run_doit("nightly", f"config={a},{b}", env={"CCACHE_DIR": str(tmp_path / "ccache")})
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads((tmp_path / "a" / "reports" / "report.json").read_text())
    va, vb = rep["variants"]
    assert (va["name"], vb["name"]) == ("a", "b")
    assert va["sources"][0]["new"] == vb["sources"][0]["new"]
    assert len(list((tmp_path / "mirror").iterdir())) == 1  # one download for both
    assert (tmp_path / "a" / "out" / "xen.gz").is_file()
    assert (tmp_path / "b" / "out" / "xen.gz").is_file()
    assert (va["ccache"]["hits"], va["ccache"]["misses"]) == (0, 1)
    assert (vb["ccache"]["hits"], vb["ccache"]["misses"]) == (1, 0)
    root = ET.parse(tmp_path / "a" / "reports" / "junit.xml").getroot()
    assert [s.get("name") for s in root] == ["a", "b"]
    assert validate_junit(tmp_path / "a" / "reports" / "junit.xml")["tests"] == 6
    own = json.loads((tmp_path / "b" / "reports" / "report.json").read_text())
    assert [v["name"] for v in own["variants"]] == ["b"]


def test_distcc_compiles_on_the_cluster(tmp_path: Path, git_upstream: GitUpstream) -> None:
    """Distributed compilation as docs/nightly.md sets it up: ccache in front
    (CCACHE_PREFIX=distcc), DISTCC_HOSTS naming the cluster, here one real distccd on
    127.0.0.1; DISTCC_FALLBACK=0 so a compile that did not go to the cluster fails."""
    for tool in ("distcc", "distccd", "ccache"):
        need(tool)
    port = free_port()
    errlog = tmp_path / "distccd.log"
    with open(errlog, "wb") as err:
        daemon = subprocess.Popen(
            ["distccd", "--no-detach", "--daemon", "--log-stderr", "--log-level", "info",
             "--allow", "127.0.0.1", "--listen", "127.0.0.1", "--port", str(port),
             "--jobs", "2"], stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while "listening on" not in errlog.read_text():
            assert daemon.poll() is None and time.monotonic() < deadline, errlog.read_text()
            time.sleep(0.05)
        cfg = xen_config(tmp_path, git_upstream)
        cfg.write_text(cfg.read_text() + "\n[build]\nccache = true\njobs = 2\n")
        env = {"CCACHE_DIR": str(tmp_path / "ccache"), "CCACHE_PREFIX": "distcc",
               "DISTCC_HOSTS": f"127.0.0.1:{port}/2", "DISTCC_FALLBACK": "0"}
        res = run_doit("nightly", config=cfg, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=10)
    assert re.search(r"COMPILE_OK .*main\.c", errlog.read_text()), errlog.read_text()
    rep = json.loads((tmp_path / "site" / "reports" / "report.json").read_text())
    assert rep["variants"][0]["ccache"]["misses"] == 1


def test_sigterm_stops_nightly_and_everything_it_started(tmp_path: Path,
                                                          git_upstream: GitUpstream) -> None:
    """SIGTERM to `doit nightly` reaches the child doit and the make it runs (each in its own
    process group): nothing keeps running, and the report says the run was interrupted, in
    which stage, in one line."""
    cfg = xen_config(tmp_path, git_upstream)
    marker = f"{time.time_ns() % 10**6}.5"  # `sleep <marker>` is this test's own process
    git_upstream.commit("xen/Makefile", f"xen.gz:\n\tsleep {marker}\n", "xen: a slow build")
    argv = [sys.executable, "-m", "doit", "nightly", f"config={cfg}"]
    outer = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    pattern = f"^sleep {re.escape(marker)}$"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode != 0:
            assert outer.poll() is None and time.monotonic() < deadline, "make never started"
            time.sleep(0.1)
        outer.send_signal(signal.SIGTERM)
        _, err = outer.communicate(timeout=60)
    finally:
        if outer.poll() is None:
            os.killpg(outer.pid, signal.SIGKILL)
    assert outer.returncode != 0
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    assert left == "", f"still running after SIGTERM: {left}"
    errors = [ln for ln in err.decode().splitlines() if ln.startswith("xenpipe: error:")]
    assert len(errors) == 1 and "Traceback" not in err.decode(), err.decode()
    report = tmp_path / "site" / "reports" / "report.json"
    assert errors[0] == ("xenpipe: error: nightly site: interrupted by SIGTERM during build:xen "
                         f"(report: {report})")
    rep = json.loads(report.read_text())
    assert rep["status"] == "interrupted"
    assert rep["interrupted"] == {"signal": "SIGTERM", "stage": "build:xen", "variant": "site",
                                  "variants_not_run": []}
    (v,) = rep["variants"]
    assert v["status"] == "interrupted" and v["first_failure"]["name"] == "build:xen"
    assert v["first_failure"]["error"].startswith(
        "xenpipe: error: build:xen: interrupted by SIGTERM")
    assert names(v) == {"fetch:xen": "passed", "build:xen": "failed", "boot": "skipped"}
    assert stage(v, "build:xen")["log"] and "sleep" in stage(v, "build:xen")["log_tail"]
    assert validate_junit(tmp_path / "site" / "reports" / "junit.xml")["failures"] == 1
    md = json.loads((tmp_path / "site" / "out" / "metadata.json").read_text())
    assert md["stages"]["xen"]["status"] == "interrupted"


def test_a_variant_whose_doit_cannot_start_is_reported(tmp_path: Path,
                                                        git_upstream: GitUpstream) -> None:
    """A directory where a variant's dependency file belongs: its child doit stops before
    any task; the report says so in one line, and the other variant still runs. (A corrupt
    dependency file is set aside and rebuilt: tests/crash/test_faults.py.)"""
    a = git_config(tmp_path, git_upstream, "a")
    b = git_config(tmp_path, git_upstream, "b")
    (tmp_path / "b" / ".doit.db").mkdir(parents=True)
    res = run_doit("nightly", f"config={a},{b}")
    assert res.returncode == 1 and "Traceback" not in res.stdout + res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("xenpipe: error: nightly failed: b: ")
    rep = json.loads((tmp_path / "a" / "reports" / "report.json").read_text())
    va, vb = rep["variants"]
    assert va["status"] == "passed" and vb["status"] == "failed"
    assert vb["first_failure"]["name"] == "doit"
    assert re.match(r"xenpipe: error: doit stopped with exit status 1: "
                    r".*/b/\.doit\.db is not a file .*: move it away",
                    vb["first_failure"]["error"]), vb["first_failure"]["error"]
    assert names(vb)["fetch:xen"] == "not-run"
    assert Path(vb["first_failure"]["log"]).name == "nightly.log"
    assert validate_junit(tmp_path / "a" / "reports" / "junit.xml")["failures"] == 1


def test_several_configs_are_for_nightly_only(tmp_path: Path, git_upstream: GitUpstream) -> None:
    a = git_config(tmp_path, git_upstream, "a")
    b = git_config(tmp_path, git_upstream, "b")
    res = run_doit("fetch", f"config={a},{b}")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"xenpipe: error: config= lists 2 files: only `doit nightly` runs variants; give other "
        f"tasks one (config={a})"]
    assert not (tmp_path / "a" / "src").exists()
    assert run_doit("list", f"config={a},{b}").returncode == 0


def test_variants_need_their_own_workspace(tmp_path: Path, git_upstream: GitUpstream) -> None:
    a = git_config(tmp_path, git_upstream, "a", ws=str(tmp_path / "same"))
    b = git_config(tmp_path, git_upstream, "b", ws=str(tmp_path / "same"))
    res = run_doit("nightly", f"config={a},{b}")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("xenpipe: error: ")
    assert "give each variant its own [workspace] dir" in res.stderr


def test_ci_examples_run_shipped_variants_and_publish_their_reports() -> None:
    """The ci/ examples stay true: the variants they name are shipped configs whose
    workspaces are under build/, where their artifact globs look for reports/junit.xml."""
    texts = {f: (REPO / "ci" / f).read_text()
             for f in ("gitlab-ci.yml", "github-actions.yml", "Jenkinsfile")}
    for name, text in texts.items():
        assert "doit nightly config=configs/" in text, name
        assert "build/**/reports/junit.xml" in text, name
    variants = re.findall(r"\[(default, [^]]+)\]", texts["gitlab-ci.yml"])[0].split(", ")
    assert f"[{', '.join(variants)}]" in texts["github-actions.yml"]
    assert ", ".join(f"'{v}'" for v in variants) in texts["Jenkinsfile"]
    for v in variants:
        ws = load(REPO / "configs" / f"{v}.toml").workspace
        assert ws == REPO / "build" or (REPO / "build") in ws.parents, (v, ws)


@pytest.mark.slow
def test_real_kernel_nightly_only_reports(real_kernel: RealKernel,
                                         real_rootfs: Path) -> None:  # noqa: F811
    """`doit nightly` of the shared real kernel (Debian's linux-source-6.1, Debian's Xen,
    booted in QEMU with the demo's guest): the second run finds every stage up to date and
    only reports, the guest's milestones included."""
    rk = real_kernel
    with rk.lock():  # the fixture's build lock
        runs = [run_doit("nightly", config=rk.config, env=rk.env, timeout=3600)
                for _ in range(2)]
    for res in runs:
        assert res.returncode == 0, "\n".join((res.stdout + res.stderr).splitlines()[-30:])
    rep = json.loads((rk.ws.reports / "report.json").read_text())
    v = rep["variants"][0]
    assert v["summary"].startswith("nothing changed"), v["summary"]
    stages = names(v)
    assert {"fetch:linux", "config", "build:kernel", "boot"} <= set(stages)
    assert set(stages.values()) == {"up-to-date"}, stages
    assert v["boot"]["available"] and v["boot"]["verdict"] == "pass"
    got = {m["name"]: m["status"] for m in v["boot"]["milestones"]}
    for milestone in ("Xen banner", "dom0 construction", "Linux banner", "power-off",
                      "Xen daemons started", "guest demo sees 0000:01:00.0"):
        assert got.get(milestone) == "passed", got
    assert isinstance(v["ccache"], dict) and set(v["ccache"]) >= {"hits", "misses"}
    junit = rk.ws.reports / "junit.xml"
    totals = validate_junit(junit)
    checks = v["boot"]["checks"]  # the booted dom0's go/no-go: one case per device
    assert len(checks) == 2 and {c["verdict"] for c in checks} <= {"ok", "warn"}, checks
    assert totals["failures"] == 0 and totals["tests"] == len(stages) + len(got) + len(checks)
    assert outcome(cases(junit)["xenpipe.real.boot::boot: power-off"]) == "passed"


def test_junit_writer_escapes_terminal_output(tmp_path: Path) -> None:
    """The writer alone, on a report with a colourised, control-character log tail."""
    tail = "\x1b[31mgcc: error\x1b[0m: bad\x07 input\x00 here"
    rep = {"started": "2026-01-01T02:00:00+00:00", "variants": [{
        "name": "v", "config": "c.toml", "summary": "build:xen failed", "triage": [],
        "sources": [{"name": "xen", "old": "a", "new": "b"}],
        "stages": [
            {"name": "fetch:xen", "status": "up-to-date", "duration": 0},
            {"name": "build:xen", "status": "failed", "duration": 1.5,
             "error": "xenpipe: error: make failed", "log": "/l.log", "log_tail": tail},
            {"name": "build:kernel", "status": "not-run", "reason": "not run: build:xen failed"},
        ],
        "boot": {"available": True, "log": "/b.log", "milestones": [
            {"name": "xen", "status": "passed", "time": 2.0},
            {"name": "dom0", "status": "failed", "time": 0, "detail": "no login prompt"}]},
    }]}
    _, path = report_mod.write(tmp_path, rep)
    text = path.read_text()
    assert validate_junit(path) == {"tests": 5, "failures": 2, "errors": 0, "skipped": 1}
    root = ET.fromstring(text)
    assert "\x1b" not in text and "\x07" not in text and "\x00" not in text
    fail = root.find(".//testcase[@name='build:xen']/failure")
    assert fail is not None and "gcc: error: bad input here" in fail.text
    assert root.find(".//testcase[@name='build:kernel']/skipped") is not None


def test_boot_milestones_from_boot_json() -> None:
    """boot.py's record (out/boot.json) of a boot that missed a milestone: passed ones with
    the time since the previous one, the missed one failed with the console tail, the rest
    not reached; a failed topology boot's milestones when there was no second boot."""
    record = {"verdict": "fail", "tail": ["(XEN) ...", "Kernel panic - not syncing"],
              "milestones": [
                  {"name": "Xen banner", "status": "passed", "seconds": 1.5, "detail": "(XEN)"},
                  {"name": "Linux banner", "status": "passed", "seconds": 4.0, "detail": "L"},
                  {"name": "init started", "status": "missed", "detail": "the kernel panicked"},
                  {"name": "power-off", "status": "pending"}]}
    got = nightly_mod.milestones(record)
    assert [(m["name"], m["status"], m["time"]) for m in got] == [
        ("Xen banner", "passed", 1.5), ("Linux banner", "passed", 2.5),
        ("init started", "failed", 0.0), ("power-off", "not-run", 0.0)]
    assert got[2]["detail"] == "the kernel panicked" and "Kernel panic" in got[2]["log_tail"]
    first = nightly_mod.milestones({"verdict": "fail", "topology_boot": record})
    assert first[0]["name"] == "topology run: Xen banner"


def test_interrupted_stage_when_the_child_doit_wrote_no_report(tmp_path: Path) -> None:
    """The child doit was killed before it could say which task the signal hit: metadata.json's
    running stage names it; the stages after it did not run, and the report says so."""
    from pipeline import metadata
    from pipeline.files import write_json
    from pipeline.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    write_json(metadata.path(ws), {**metadata.load(ws), "stages": {
        "config": {"status": "pass"}, "kernel": {"status": "running"}}})
    stages = nightly_mod.collect_stages(
        load(write_config(tmp_path, '[sources.linux]\nvcs = "git"\nurl = "/x"\n'
                          '[kernel]\nsource = "linux"\n')),
        {"fetch:linux": {"result": "success", "started": "x", "elapsed": 1.0}}, "", None)
    assert nightly_mod.interrupted_stage(stages, ws, "SIGINT") == "build:kernel"
    assert [(s["name"], s["status"], s["reason"]) for s in stages] == [
        ("fetch:linux", "passed", None), ("config", "not-run", "not run: interrupted during "
                                          "build:kernel"),
        ("build:kernel", "failed", "interrupted"),
        ("boot", "not-run", "not run: interrupted during build:kernel")]
    assert stages[2]["error"] == "xenpipe: error: build:kernel: interrupted by SIGINT"
    v = {"name": "v", "status": "interrupted", "interrupted": {"signal": "SIGINT",
                                                               "stage": "build:kernel"}}
    doc = nightly_mod.document([v], "r", dt.datetime.now(dt.UTC), 1.0,
                               ["w"])
    assert doc["status"] == "interrupted" and doc["interrupted"] == {
        "signal": "SIGINT", "stage": "build:kernel", "variant": "v", "variants_not_run": ["w"]}
