"""`doit bisect` on real upstreams (git repositories, hg served on loopback): each step is the
nightly's graph in a real child doit with real make and gcc. With no [kernel] nothing boots,
so these configs call a failing build bad (``build=bad``); a patch that does not apply stays
a skip. The search itself is checked on its own first."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import git
import pytest

from pipeline.bisect import BAD, GOOD, SKIP, Search, most_steps

from .support.doit import DOIT, run_doit, write_config
from .support.tools import REPO, need
from .support.upstreams import XEN_TREE, GitUpstream, HgUpstream, make_tarball

BROKEN = "#error upstream broke it\n"
FINE = "int main(void) { return 0; }\n"


# ---------------------------------------------------------------------------- the search
def drive(n: int, first_bad: int, skipped: frozenset[int] = frozenset()) -> tuple[Search, int]:
    """Bisect candidates 0..n-1 where *first_bad* and later are bad, *skipped* cannot be
    judged; the final search and the number of tries."""
    cands = tuple(str(i) for i in range(n))
    verdicts: dict[str, str] = {}
    tries = 0
    while (c := Search(cands, verdicts).next()) is not None:
        tries += 1
        assert c not in verdicts
        i = int(c)
        verdicts[c] = SKIP if i in skipped else BAD if i >= first_bad else GOOD
    return Search(cands, verdicts), tries


@pytest.mark.parametrize("n", [1, 2, 3, 6, 7, 8, 33])
def test_search_finds_every_first_bad_within_log2_plus_one(n: int) -> None:
    for first in range(n):
        search, tries = drive(n, first)
        out = search.outcome()
        assert (out.first_bad, out.reproduced) == (str(first), True), (n, first)
        assert tries <= most_steps(n) == (math.ceil(math.log2(n)) + 1 if n > 1 else 1)


def test_search_skip_is_git_bisect_skip() -> None:
    """A skipped candidate is never tried again, the next try is its neighbour; when only
    skipped ones are left between the last good and the first bad, they are the suspects."""
    search, _ = drive(8, 5, frozenset({3}))
    assert search.outcome().first_bad == "5"
    search, _ = drive(8, 4, frozenset({3, 4}))
    out = search.outcome()
    assert (out.first_bad, out.suspects, out.reproduced) == (None, ("3", "4", "5"), True)
    search, _ = drive(4, 99)  # every candidate passes, the bad end too: not reproduced
    out = search.outcome()
    assert (out.first_bad, out.suspects, out.reproduced) == (None, (), False)


# ------------------------------------------------------------------------------ helpers
def xen_tree(up: GitUpstream | HgUpstream) -> None:
    for name, text in XEN_TREE.items():
        up.commit(name, text, f"xen: add {name}")


def history(up: GitUpstream | HgUpstream, n: int, bad_at: int,
            edits: dict[int, tuple[str, str]] | None = None) -> list[str]:
    """*n* commits on top of the tree, commit *bad_at* (1-based) and later breaking the
    build; *edits*: commit number -> (file, text) instead of the default edit."""
    revs = []
    for k in range(1, n + 1):
        if k == bad_at:
            revs.append(up.commit("xen/main.c", BROKEN, f"change {k}: sched: rework"))
            continue
        name, text = (edits or {}).get(k, (f"xen/notes-{k}.txt", f"note {k}\n"))
        revs.append(up.commit(name, text, f"change {k}"))
    return revs


def bisect(cfg: Path, *args: str, expect: int = 0, **kw: Any) -> subprocess.CompletedProcess[str]:
    res = run_doit("bisect", *args, config=cfg, **kw)
    assert res.returncode == expect, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    return res


def report(ws: Path) -> dict[str, Any]:
    return json.loads((ws / "reports" / "bisect.json").read_text())


def git_xen_config(tmp_path: Path, up: GitUpstream, extra: str = "") -> Path:
    need("make")
    need("gcc")
    return write_config(tmp_path, f'[sources.xen]\nvcs = "git"\nurl = "{up.url}"\n'
                        f'rev = "main"\n{extra}\n[xen]\nsource = "xen"\n')


def nightly(cfg: Path, expect: int) -> None:
    res = run_doit("nightly", config=cfg)
    assert res.returncode == expect, res.stdout + res.stderr


# ------------------------------------------------------------------------------- tests
def test_bisect_names_the_breaking_git_commit_from_the_nightly_history(
        tmp_path: Path, git_upstream: GitUpstream) -> None:
    """good and bad default to the last good nightly and the failing one; the first bad
    commit is named with its author, date and summary in one line and in bisect.json, in at
    most ⌈log2 n⌉ + 1 steps; the user's repository and config are untouched."""
    xen_tree(git_upstream)
    cfg = git_xen_config(tmp_path, git_upstream)
    nightly(cfg, 0)
    revs = history(git_upstream, 7, 4)
    nightly(cfg, 1)
    head, text = git_upstream.repo.head.commit.hexsha, cfg.read_text()
    res = bisect(cfg, "source=xen", "build=bad")
    rep = report(tmp_path / "ws")
    bad = revs[3]
    assert rep["result"]["status"] == "found"
    first = rep["result"]["first_bad"]
    assert first["rev"] == bad and first["summary"] == "change 4: sched: rework"
    assert first["author"] == "Test <test@example.org>" and first["date"][:4].isdigit()
    line = next(ln for ln in res.stdout.splitlines() if "first bad revision" in ln)
    assert f"bisect xen: first bad revision {bad[:12]} (Test <test@example.org>, " in line
    assert "change 4: sched: rework" in line and "bisect.json" in line
    assert len(rep["candidates"]) == 7 and len(rep["steps"]) <= most_steps(7)
    assert [s["verdict"] for s in rep["steps"] if s["candidate"] == bad] == [BAD]
    assert all(s["seconds"] > 0 and s["stages"]["build:xen"]["status"] in
               ("passed", "failed", "up-to-date") for s in rep["steps"])
    assert git_upstream.repo.head.commit.hexsha == head and not git_upstream.repo.is_dirty()
    assert cfg.read_text() == text
    again = bisect(cfg)  # finished: shown again, nothing rebuilt
    assert line in again.stdout and "step" not in again.stdout.replace("steps,", "")
    assert "bisect: forgot bisect xen" in bisect(cfg, "reset=1").stdout
    assert "give source=NAME" in bisect(cfg, expect=1).stderr


def test_bisect_hg_skips_what_cannot_be_judged(tmp_path: Path, hg_upstream: HgUpstream
                                               ) -> None:
    """hg served on loopback; a revision where the series does not apply is skipped (not
    bad) and the bisection goes round it; with skips next to the first bad it names the
    suspects rather than guess."""
    need("make")
    need("gcc")
    xen_tree(hg_upstream)
    good = hg_upstream.node()
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "series").write_text("readme.patch\n")
    (patches / "readme.patch").write_text(
        "--- a/README\n+++ b/README\n@@ -1 +1 @@\n-xen-unstable\n+xen-unstable, pciback\n")
    revs = history(hg_upstream, 7, 6, {3: ("README", "rewritten\n"),
                                       4: ("README", "xen-unstable\n")})
    cfg = write_config(tmp_path, f'[sources.xen]\nvcs = "hg"\nurl = "{hg_upstream.url}"\n'
                       f'rev = "tip"\npatches = "{patches}"\n\n[xen]\nsource = "xen"\n')
    run_doit("fetch", config=cfg)
    bisect(cfg, "source=xen", f"good={good}", f"bad={revs[-1][:12]}", "build=bad")
    rep = report(tmp_path / "ws")
    assert rep["result"]["first_bad"]["rev"] == revs[5], rep["steps"]
    assert rep["result"]["first_bad"]["summary"] == "change 6: sched: rework"
    skipped = [s for s in rep["steps"] if s["verdict"] == SKIP]
    assert [s["candidate"] for s in skipped] == [revs[2]]
    assert "readme.patch" in skipped[0]["error"]

    # the break lands where the series does not apply: suspects, not a guess
    fixed = hg_upstream.commit("xen/main.c", FINE, "sched: fix")
    fresh = [hg_upstream.commit("README", "rewritten again\n", "docs: rewrite"),
             hg_upstream.commit("xen/main.c", BROKEN, "sched: rework again"),
             hg_upstream.commit("README", "xen-unstable\n", "docs: revert")]
    res = bisect(cfg, "source=xen", f"good={fixed}", f"bad={fresh[-1]}", "build=bad")
    assert "starting afresh" in res.stdout
    rep = report(tmp_path / "ws")
    assert rep["result"]["status"] == "suspects"
    assert rep["result"]["suspects"] == fresh, rep["steps"]
    assert "the first bad one is among 3 that could not be judged (skipped): " + \
        ", ".join(r[:12] for r in fresh) in res.stdout


def test_a_revision_that_does_not_build_is_skipped_not_bad(tmp_path: Path,
                                                           git_upstream: GitUpstream) -> None:
    """Issue 23: a revision that does not build is skipped (the default build=skip), not
    called bad, while patch=bad calls a series that stops applying bad. Change 3 breaks the
    build and change 4 mends it; from change 5 on the series no longer applies: change 5 is
    named and change 3 is the one skipped step, with make's failure. Afterwards ``doit
    fetch`` brings the workspace back to the config's revision (README: your tree never
    moves, the workspace's comes back)."""
    xen_tree(git_upstream)
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "series").write_text("readme.patch\n")
    (patches / "readme.patch").write_text(
        "--- a/README\n+++ b/README\n@@ -1 +1 @@\n-xen-unstable\n+xen-unstable, pciback\n")
    good = git_upstream.commit("README", "xen-unstable\n", "docs: README")
    revs = history(git_upstream, 7, 99, {3: ("xen/main.c", BROKEN), 4: ("xen/main.c", FINE),
                                         5: ("README", "rewritten\n")})
    cfg = git_xen_config(tmp_path, git_upstream, f'patches = "{patches}"\n')
    res = bisect(cfg, "source=xen", f"good={good}", "bad=main", "patch=bad")
    rep = report(tmp_path / "ws")
    assert rep["options"] == {"build": SKIP, "patch": BAD}
    assert rep["result"]["first_bad"]["rev"] == revs[4], rep["steps"]
    verdicts = {s["candidate"]: s["verdict"] for s in rep["steps"]}
    assert verdicts[revs[2]] == SKIP and list(verdicts.values()).count(SKIP) == 1, rep["steps"]
    skipped = next(s for s in rep["steps"] if s["verdict"] == SKIP)
    assert skipped["stages"]["build:xen"]["status"] == "failed"
    assert skipped["error"].startswith("xenpipe: error: build:xen: make build-xen failed")
    assert "#error upstream broke it" in skipped["error"]
    assert verdicts[revs[4]] == BAD
    assert f"first bad revision {revs[4][:12]}" in res.stdout
    tree = git.Repo(tmp_path / "ws" / "src" / "xen")
    assert tree.head.commit.hexsha != revs[-1]  # a step's revision is checked out
    assert run_doit("fetch", config=cfg).returncode == 0
    assert tree.head.commit.hexsha == git_upstream.repo.head.commit.hexsha == revs[-1]


def test_ctrl_c_then_rerun_continues_where_it_stopped(tmp_path: Path,
                                                      git_upstream: GitUpstream) -> None:
    """SIGINT during the second step: one line, the first step kept; `doit bisect` again
    continues without repeating it and finds the commit."""
    xen_tree(git_upstream)
    # each build says it started (a file per make) and takes 2 s: a step's child doit is
    # then surely inside its build when the signal comes, however fast it starts
    git_upstream.commit("Makefile", "build-xen:\n\ttouch $(BUILD_MARKS)/$$$$\n\tsleep 2\n"
                        "\t$(MAKE) -C xen\n", "xen: a build that takes a while")
    marks = tmp_path / "marks"
    marks.mkdir()
    good = git_upstream.repo.head.commit.hexsha
    revs = history(git_upstream, 8, 3)
    cfg = git_xen_config(tmp_path, git_upstream)
    state = tmp_path / "ws" / "state" / "bisect.json"
    argv = [*DOIT, "bisect", "source=xen", f"good={good}", "bad=main", "build=bad",
            f"config={cfg}"]
    env = {k: v for k, v in os.environ.items() if k != "XENPIPE_CONFIG"}
    env["BUILD_MARKS"] = str(marks)
    child = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    second = tmp_path / "ws" / "bisect" / "steps" / "02"
    # step 1 saved, step 2's build running
    while not (second.is_dir() and len(list(marks.iterdir())) >= 2):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 1 and "interrupted by SIGINT" in err, out + err
    assert "Traceback" not in out + err
    first = json.loads(state.read_text())["steps"]
    assert len(first) == 1 and first[0].get("result") is None

    res = bisect(cfg, env={"BUILD_MARKS": str(marks)})
    assert "continuing (1 steps done)" in res.stdout
    rep = report(tmp_path / "ws")
    assert rep["steps"][0] == first[0]
    assert [s["candidate"] for s in rep["steps"]].count(first[0]["candidate"]) == 1
    assert rep["result"]["first_bad"]["rev"] == revs[2]


def test_bisect_patches_names_the_patch(tmp_path: Path, git_upstream: GitUpstream) -> None:
    """patches=NAME: the first N patches of the series on the bad revision; the third of
    four breaks the build and is named, with its mail subject. The user's patches directory
    is untouched (the cut series lives in the workspace)."""
    xen_tree(git_upstream)
    patches = tmp_path / "patches"
    patches.mkdir()
    names = []
    for k, new in enumerate(["int a;", "int b;", "#error broken", "int d;"], 1):
        name = f"000{k}-change-{k}.patch"
        prev = "int main(void) { return 0; }"
        (patches / name).write_text(
            f"From: Dev <dev@example.org>\nSubject: [PATCH {k}/4] xen: change {k}\n\n---\n"
            f"--- a/xen/main.c\n+++ b/xen/main.c\n@@ -{k} +{k},2 @@\n"
            f" {prev if k == 1 else ['', 'int a;', 'int b;', '#error broken'][k - 1]}\n"
            f"+{new}\n")
        names.append(name)
    (patches / "series").write_text("".join(f"{n}\n" for n in names))
    before = {p.name: p.read_bytes() for p in patches.iterdir()}
    cfg = git_xen_config(tmp_path, git_upstream, f'patches = "{patches}"\n')
    run_doit("fetch", config=cfg)
    res = bisect(cfg, "patches=xen", "build=bad")
    rep = report(tmp_path / "ws")
    first = rep["result"]["first_bad"]
    assert (first["number"], first["patch"], first["summary"]) == (3, names[2], "xen: change 3")
    assert f"first bad patch patch 3 {names[2]}: xen: change 3" in res.stdout
    assert len(rep["steps"]) <= most_steps(4)
    assert {p.name: p.read_bytes() for p in patches.iterdir()} == before


def test_other_sources_that_moved_are_named_and_kept_at_their_bad_revision(
        tmp_path: Path, git_upstream: GitUpstream) -> None:
    """Two sources moved between the good and the bad nightly: bisecting xen says so and
    keeps tools at its bad revision in every step; when tools is the culprit, the bisection
    of xen does not reproduce the failure and says to bisect tools."""
    xen_tree(git_upstream)
    tools = GitUpstream(tmp_path / "tools.git",
                        git.Repo.init(tmp_path / "tools.git", initial_branch="main"))
    with tools.repo.config_writer() as cw:
        cw.set_value("user", "name", "Tools")
        cw.set_value("user", "email", "tools@example.org")
    tools.commit("Makefile", "build-xen:\n\ttrue\n", "tools: initial")
    cfg = git_xen_config(tmp_path, git_upstream,
                         f'\n[sources.tools]\nvcs = "git"\nurl = "{tools.url}"\nrev = "main"\n')
    # xen's build reads tools' header: a tools commit can break it
    git_upstream.commit("xen/Makefile", XEN_TREE["xen/Makefile"].replace(
        "main.o: main.c\n\t$(CC) -c -o main.o main.c",
        "main.o: main.c ../../tools/tools.h\n"
        "\t$(CC) -include ../../tools/tools.h -c -o main.o main.c"),
        "xen: use tools.h")
    tools.commit("tools.h", "/* tools */\n", "tools: header")
    nightly(cfg, 0)
    history(git_upstream, 3, 99)
    bad_tools = tools.commit("tools.h", BROKEN, "tools: break the header")
    nightly(cfg, 1)
    res = bisect(cfg, "source=xen", "build=bad", expect=1)
    assert "bisect xen: tools also moved since the last good run; kept at the bad revision " \
           f"(tools at {bad_tools[:12]})" in res.stdout
    rep = report(tmp_path / "ws")
    assert rep["moved"] == ["tools"] and rep["pins"]["tools"] == bad_tools
    assert rep["result"]["status"] == "not-reproduced"
    # every xen revision fails with tools at its bad revision, then so does xen's good one
    assert [s["verdict"] for s in rep["steps"]] == [BAD] * len(rep["steps"])
    assert rep["steps"][-1]["candidate"] == rep["good"]
    assert res.stderr.count("xenpipe: error:") == 1
    assert f"not reproduced: xen at {rep['good'][:12]} fails too with tools at the bad " \
           "revision: the failure came with tools: bisect them" in res.stderr
    bisect(cfg, "source=tools", "build=bad")
    assert report(tmp_path / "ws")["result"]["first_bad"]["rev"] == bad_tools


@pytest.mark.parametrize(("args", "says"), [
    (["source=xen", "patches=xen"], "give source=NAME or patches=NAME, not both"),
    ([], "give source=NAME (which changeset broke it) or patches=NAME"),
    (["source=xne", "build=bad"], 'no [sources.xne] in site.toml (did you mean "xen"?)'),
    (["source=xen", "build=maybe"], "build=maybe: expected build=bad or build=skip"),
    (["source=xen"], "has no [kernel]: nothing boots, so no step can be bad"),
    (["source=xen", "build=bad"], "good= not given and no nightly has passed in this workspace"),
    (["source=xen", "build=bad", "good=nosuchrev", "bad=main"],
     "good=nosuchrev: not a revision, tag or branch of "),
    (["source=xen", "build=bad", "good=main", "bad=v1.0"], "is not an ancestor of"),
    (["source=xen", "build=bad", "good=main", "bad=main"], "are the same revision"),
    (["patches=xen", "build=bad"], "[sources.xen] has no patches to bisect"),
    (["source=pkg", "build=bad"], "[sources.pkg] is a tarball: one revision, nothing to bisect"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, git_upstream: GitUpstream,
                                    args: list[str], says: str) -> None:
    git_upstream.commit("xen/main.c", FINE, "xen: after v1.0")
    tar = make_tarball(tmp_path / "pkg-1.0.tar.gz", {"Makefile": "all:\n"})
    cfg = git_xen_config(tmp_path, git_upstream,
                         f'\n[sources.pkg]\nvcs = "tarball"\nurl = "{tar}"\n')
    res = bisect(cfg, *args, expect=1)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("xenpipe: error: "), res.stderr
    assert says in lines[0], lines[0]


def test_a_step_pins_only_its_own_workspace(tmp_path: Path, git_upstream: GitUpstream,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The step file pins revisions and cuts a series for the workspace it names; a config
    of another workspace (a nightly started from inside a step) loads as written."""
    from pipeline.bisect import STEP_ENV, step_config
    from pipeline.config import load

    cfg = load(git_xen_config(tmp_path, git_upstream))
    other = load(write_config(tmp_path, f'[workspace]\ndir = "{tmp_path / "other"}"\n'
                              f'[sources.xen]\nvcs = "git"\nurl = "{git_upstream.url}"\n',
                              "other.toml"))
    step = tmp_path / "step.json"
    step.write_text(json.dumps({"workspace": str(cfg.workspace), "revs": {"xen": "a" * 40},
                                "patches": {"xen": str(tmp_path / "cut")}}))
    monkeypatch.setenv(STEP_ENV, str(step))
    pinned = step_config(cfg)
    assert (pinned.sources["xen"].rev, pinned.sources["xen"].patches) == \
        ("a" * 40, tmp_path / "cut")
    assert step_config(other) == other
    monkeypatch.delenv(STEP_ENV)
    assert step_config(cfg) == cfg


def test_bisect_takes_good_from_a_rebuilt_last_good_record(tmp_path: Path) -> None:
    """A corrupt ``state/nightly-last-good.json`` (set aside by Workspace.state) made bisect's
    default good= "no nightly has passed": it read the record itself. It now asks the
    nightly's triage, which rebuilds the record from the run ``reports/last-good`` names."""
    from pipeline.bisect.session import nightly_history
    from pipeline.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    run = ws.reports / "runs" / "20261207-1"
    run.mkdir(parents=True)
    (run / "report.json").write_text(json.dumps({
        "run": "20261207-1", "started": "2026-12-07T10:00:00Z", "status": "passed",
        "variants": [{"status": "passed", "sources": [{"name": "xen", "new": "a" * 40}]}]}))
    (ws.reports / "last-good").symlink_to(run)
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    (ws.state_dir / "nightly-last-good.json").write_text("{not json")
    good, bad = nightly_history(ws)
    assert (good, bad) == ({"xen": "a" * 40}, {})
