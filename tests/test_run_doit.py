"""support.doit.run_doit: the forked doit that fast tests use behaves as the real command does,
and leaves the test process as it found it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .support.doit import run_doit, write_config
from .support.upstreams import GitUpstream


def outcome(res: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return res.returncode, res.stdout, res.stderr


def git_config(tmp_path: Path, up: GitUpstream, ws: str, rev: str = "v1.0") -> Path:
    return write_config(tmp_path, f'[workspace]\ndir = "{tmp_path / ws}"\n\n[sources.linux]\n'
                                  f'vcs = "git"\nurl = "{up.url}"\nrev = "{rev}"\n',
                        name=f"{ws}.toml")


@pytest.mark.parametrize("case", ["list", "config error", "unknown task", "env config",
                                  "bad option"])
def test_forked_doit_says_what_the_command_says(tmp_path: Path, git_upstream: GitUpstream,
                                                case: str) -> None:
    good = git_config(tmp_path, git_upstream, "ws")
    bad = write_config(tmp_path, '[sources.x]\nvcs = "svn"\nurl = "u"\n', name="bad.toml")
    args, config, env = {
        "list": (("list",), good, None),
        "config error": (("fetch",), bad, None),
        "unknown task": (("no-such-task",), good, None),
        "env config": (("list",), None, {"XENPIPE_CONFIG": str(bad)}),
        "bad option": (("list", "--no-such-option"), good, None),
    }[case]
    cli = run_doit(*args, config=config, env=env, cli=True)
    forked = run_doit(*args, config=config, env=env)
    assert outcome(forked) == outcome(cli)
    assert forked.args == cli.args


def test_forked_doit_fetches_and_finds_it_done_as_the_command_does(
        tmp_path: Path, git_upstream: GitUpstream) -> None:
    """Same task output, exit status and result in two workspaces, one per way of running."""
    results = {}
    for cli in (True, False):
        cfg = git_config(tmp_path, git_upstream, f"ws-{cli}")
        first, again = (run_doit("fetch", config=cfg, cli=cli) for _ in range(2))
        results[cli] = (outcome(first), outcome(again),
                        (tmp_path / f"ws-{cli}" / "state" / "fetch-linux.json").read_text())
    assert results[False] == results[True]
    assert results[True][0] == (0, ".  fetch:linux\n", "")
    assert results[True][1] == (0, "-- fetch:linux\n", "")


def test_forked_doit_leaves_the_test_process_alone(tmp_path: Path,
                                                   git_upstream: GitUpstream) -> None:
    """pipeline.tasks installs a SIGTERM handler and reads argv and the environment; none of
    that, nor the child's fresh pipeline modules, reaches the test process."""
    import pipeline.fetch

    before = (dict(os.environ), os.getcwd(), signal.getsignal(signal.SIGTERM),
              signal.getsignal(signal.SIGINT), sys.stdout, sys.stderr, list(sys.argv),
              sys.modules["pipeline.fetch"], sys.modules.get("pipeline.tasks"),
              sys.modules.get("dodo"))
    cfg = git_config(tmp_path, git_upstream, "ws")
    res = run_doit("fetch", config=cfg, env={"XENPIPE_PROBE": "1"})
    assert res.returncode == 0, res.stderr
    after = (dict(os.environ), os.getcwd(), signal.getsignal(signal.SIGTERM),
             signal.getsignal(signal.SIGINT), sys.stdout, sys.stderr, list(sys.argv),
             sys.modules["pipeline.fetch"], sys.modules.get("pipeline.tasks"),
             sys.modules.get("dodo"))
    assert after == before
    assert sys.modules["pipeline.fetch"] is pipeline.fetch


def zombies() -> list[int]:
    """Children of this process that ended and were not waited for."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def test_forked_doit_times_out_as_subprocess_run_does(tmp_path: Path) -> None:
    """A hung task: TimeoutExpired after *timeout*, the doit child killed and reaped."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pidfile = tmp_path / "hg.pid"
    hang = bin_dir / "hg"
    hang.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 60\n")
    hang.chmod(0o755)
    cfg = write_config(tmp_path, '[sources.xen]\nvcs = "hg"\nurl = "http://127.0.0.1:9/x"\n')
    start = time.monotonic()
    try:
        with pytest.raises(subprocess.TimeoutExpired) as info:
            run_doit("fetch", config=cfg, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
                     timeout=1)
        assert time.monotonic() - start < 30
        assert info.value.timeout == 1
        assert zombies() == []  # the doit child was reaped
    finally:
        if pidfile.exists():  # the hung "hg" outlives doit, as with subprocess.run
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
