"""Kill doit anywhere, lose nothing: each stage killed by SIGINT, SIGTERM and SIGKILL at
random moments, then checked (nothing left running, records parse, bootloader files and guest
configs wholly old or new, a plain rerun ends byte-identical to an uninterrupted run; see
harness.py for the exact comparison).

The seed is printed; ``XENPIPE_CRASH_SEED=N`` replays a run. The fast suite kills a short
seeded subset; the whole matrix (XENPIPE_CRASH_KILLS per signal and stage, 20 by default) is
slow.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from ..support.tools import need
from ..support.upstreams import HgServer
from . import harness
from .harness import Site
from .scenarios import (
    fetch_site,
    kbuild_site,
    nightly_site,
    prepared,
    unlink_served,
    updated_site,
)

SEED = harness.seed()
PER_SIGNAL = int(os.environ.get("XENPIPE_CRASH_KILLS") or 20)


def rng_for(stage: str) -> random.Random:
    return random.Random(f"{SEED}-{stage}")


def _sites(tmp: Path, server: HgServer) -> dict[str, tuple[Callable[[], Site], list[str]]]:
    """stage -> (the site as the stage finds it, doit's arguments)."""
    return {
        "fetch": (lambda: fetch_site(tmp, server), ["fetch"]),
        "fetch-update": (lambda: updated_site(tmp, server), ["fetch"]),
        "patch": (lambda: prepared(kbuild_site(tmp), "fetch"), ["patch"]),
        "config": (lambda: prepared(kbuild_site(tmp), "fetch", "patch"), ["config"]),
        "build": (lambda: prepared(kbuild_site(tmp), "fetch", "patch", "config"), ["build"]),
        "install-grub-legacy": (lambda: prepared(kbuild_site(tmp), "build"), ["install"]),
        "install-grub2": (lambda: prepared(kbuild_site(tmp, "grub2"), "build"), ["install"]),
        "nightly": (lambda: nightly_site(tmp), ["nightly"]),
    }


def kill_stage(stage: str, tmp: Path, server: HgServer, per_signal: int,
               signals: tuple[signal.Signals, ...] = harness.SIGNALS) -> list[harness.Kill]:
    for tool in ("make", "gcc", "hg", "git", "depmod", "grub-script-check"):
        need(tool)
    print(f"crash seed: XENPIPE_CRASH_SEED={SEED} ({stage})")
    make, task = _sites(tmp / "site", server)[stage]
    site = make()
    try:
        kills = harness.matrix(site, task, stage, tmp / "saved", rng_for(stage), per_signal,
                               signals=signals)
    finally:
        unlink_served(site, server)
    return kills


@pytest.mark.parametrize(("stage", "sig"), [
    ("fetch", signal.SIGKILL), ("build", signal.SIGTERM), ("install-grub2", signal.SIGINT),
    ("install-grub-legacy", signal.SIGKILL), ("nightly", signal.SIGINT),
])
def test_a_seeded_kill(stage: str, sig: signal.Signals, tmp_path: Path,
                       hg_server: HgServer) -> None:
    """The fast subset: one kill of a stage at a seeded random moment."""
    kills = kill_stage(stage, tmp_path, hg_server, 1, (sig,))
    assert not any(k.problems for k in kills), harness.report(kills, SEED)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["fetch", "fetch-update", "patch", "config", "build",
                                   "install-grub-legacy", "install-grub2", "nightly"])
def test_kill_matrix(stage: str, tmp_path: Path, hg_server: HgServer) -> None:
    """PER_SIGNAL kills per signal of the stage at random moments."""
    kills = kill_stage(stage, tmp_path, hg_server, PER_SIGNAL)
    counts = {s.name: sum(k.sig == s for k in kills) for s in harness.SIGNALS}
    print(f"crash {stage}: kills {counts}, seed {SEED}")
    assert not any(k.problems for k in kills), harness.report(kills, SEED)


@pytest.mark.parametrize(("event", "match", "parent", "rc"), [
    ("subprocess.Popen", "['make'", False, 1),  # the child doit dies as it starts make
    ("subprocess.Popen", "['make'", True, -9),  # xenpipe dies while its child doit runs make
    ("os.symlink", ".last-good.tmp", False, -9),  # as it points last-good at the run
    ("os.rename", ".copy.tmp", False, -9),  # as it puts a kept artifact's copy in place
], ids=["child-doit", "xenpipe-during-child", "pointing-last-good", "keeping-artifacts"])
def test_nightly_killed_at_a_chosen_moment(event: str, match: str, parent: bool, rc: int,
                                           tmp_path: Path) -> None:
    """A nightly SIGKILLed at moments a random kill reaches only by chance (harness.killed_at):
    every record still parses (the child doit's JSON output was left empty under its name),
    the last-good record and reports/'s links name only runs whose report is written (they
    were pointed at the run before its report), and the rerun ends as a good run with no
    temporary left in the runs (a killed run's are swept)."""
    for tool in ("make", "gcc", "git"):
        need(tool)
    site = nightly_site(tmp_path / "site")
    env = harness.killed_at(tmp_path / "hook", event, match, parent)
    doit = harness.start(dataclasses.replace(site, env={**site.env, **env}), ["nightly"],
                         "chosen")
    _, err = doit.communicate(timeout=600)
    assert doit.returncode == rc, err.decode(errors="replace")
    assert site.killed is not None and site.rerun is not None
    problems = harness.consistent(site, {}, {}) + site.killed(site)
    assert not problems, "\n".join(problems)
    harness.run(site, ["nightly"])
    assert not site.rerun(site), "\n".join(site.rerun(site))
