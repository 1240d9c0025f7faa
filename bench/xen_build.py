#!/usr/bin/env python3
"""The hypervisor build's cost: ``doit build`` of Xen against ``make build-xen`` typed by hand
on the same tree, side by side: cold (empty ccache), warm ccache (objects removed with ``make
-C xen clean``), and the no-op.

The tree is Xen's real history (``$XENPIPE_XEN_HG``, else ``../shared/upstreams/xen-4.17.hg``)
at ``--rev`` (RELEASE-4.17.7), cloned by ``doit build`` from a local clone of it (the tests
fetch it over ``hg serve``; here the network is not what is measured). Workspaces and ccache
directories are fresh temporary ones, so nothing is shared with the tests. By hand means the
command doit ran (from metadata.json), typed into the same tree: ``make -C src/xen -jN
'CC=ccache gcc' 'HOSTCC=ccache gcc' build-xen``, with the same CCACHE_BASEDIR and CCACHE_DIR.
Xen stamps each link with the date, so a plain ``make build-xen`` relinks every time: the
no-op by hand is measured both plain and with the XEN_BUILD_DATE/TIME doit fixed.

    python bench/xen_build.py [--rev RELEASE-4.17.7] [--rounds 1] [--dir /tmp/xenpipe-bench-xen]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO.parent / "shared" / "upstreams" / "xen-4.17.hg"
CC_LINE = re.compile(r"^\s+CC\s+\S+\.o$", re.M)


def timed(argv: list[str], env: dict[str, str], cwd: Path = REPO) -> tuple[float, float, str]:
    """Wall and CPU (user+sys of the children) seconds, and the output."""
    before = os.times()
    start = time.monotonic()
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    after = os.times()
    if res.returncode != 0:
        sys.exit(f"{shlex.join(argv)} failed:\n{(res.stdout + res.stderr)[-3000:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system)
    return wall, cpu, res.stdout + res.stderr


def ccache_stats(env: dict[str, str]) -> str:
    out = subprocess.run(["ccache", "--print-stats"], env=env, capture_output=True,
                         text=True).stdout
    vals = dict(ln.split("\t", 1) for ln in out.splitlines() if "\t" in ln)
    return "{} misses / {} direct / {} preprocessed hits".format(
        vals.get("cache_miss", "?"), vals.get("direct_cache_hit", "?"),
        vals.get("preprocessed_cache_hit", "?"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="RELEASE-4.17.7")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/xenpipe-bench-xen"))
    args = ap.parse_args()
    source = os.environ.get("XENPIPE_XEN_HG") or str(BUNDLE)
    base: Path = args.dir
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    env0 = {**os.environ, "HGPLAIN": "1", "LC_ALL": "C"}
    subprocess.run(["hg", "clone", "-U", "--", source, str(base / "xen.hg")], env=env0,
                   check=True, capture_output=True)
    rows: list[tuple[str, str, str]] = []
    for rnd in range(args.rounds):
        ws = base / f"ws{rnd}"
        config = base / f"xen{rnd}.toml"
        config.write_text(
            f'[workspace]\ndir = {json.dumps(str(ws))}\n\n[sources.xen]\nvcs = "hg"\n'
            f'url = {json.dumps(str(base / "xen.hg"))}\nrev = {json.dumps(args.rev)}\n\n'
            '[xen]\nsource = "xen"\n\n[build]\njobs = 0\nccache = true\n')
        doit_cache, hand_cache = base / f"ccache-doit{rnd}", base / f"ccache-hand{rnd}"
        env = {**env0, "CCACHE_DIR": str(doit_cache)}
        doit = [sys.executable, "-m", "doit", "build", f"config={config}"]
        subprocess.run([sys.executable, "-m", "doit", "fetch", f"config={config}"], cwd=REPO,
                       env=env, check=True, capture_output=True)
        # the same tree by hand: a copy of what doit fetched, built by the command doit runs
        hand_tree = base / f"hand{rnd}" / "xen"
        shutil.copytree(ws / "src" / "xen", hand_tree, symlinks=True)

        d_cold = timed(doit, env)
        md = json.loads((ws / "out" / "metadata.json").read_text())
        cmd = shlex.split(md["stages"]["xen"]["commands"][0])
        stamp = [a for a in cmd if a.startswith(("XEN_BUILD_DATE=", "XEN_BUILD_TIME="))]
        hand = [a for a in cmd if a not in stamp]
        hand[hand.index("-C") + 1] = str(hand_tree)
        henv = {**env0, "CCACHE_DIR": str(hand_cache), "CCACHE_BASEDIR": str(hand_tree.parent)}
        h_cold = timed(hand, henv)
        rows.append(("cold (empty ccache): wall s", f"{d_cold[0]:.1f}", f"{h_cold[0]:.1f}"))
        rows.append(("cold: CPU s", f"{d_cold[1]:.1f}", f"{h_cold[1]:.1f}"))
        rows.append(("cold: objects compiled", str(len(CC_LINE.findall(
            (ws / "logs" / "build-xen.log").read_text()))), str(len(CC_LINE.findall(h_cold[2])))))

        d_noop = timed(doit, env)
        h_noop = timed(hand, henv)
        h_noop_stamped = timed([*hand[:-1], *stamp, hand[-1]], henv)
        h_noop_stamped2 = timed([*hand[:-1], *stamp, hand[-1]], henv)
        rows.append(("no-op: wall s", f"{d_noop[0]:.2f}",
                     f"{h_noop[0]:.1f} plain (relinks: new date), {h_noop_stamped2[0]:.1f} "
                     f"with a fixed XEN_BUILD_DATE/TIME (after one relink "
                     f"{h_noop_stamped[0]:.1f})"))
        rows.append(("no-op: CPU s", f"{d_noop[1]:.2f}",
                     f"{h_noop[1]:.1f} plain, {h_noop_stamped2[1]:.1f} fixed date"))

        for tree, e in ((ws / "src" / "xen", env), (hand_tree, henv)):
            subprocess.run(["make", "-C", str(tree / "xen"), "clean"], env=e, check=True,
                           capture_output=True)
        d_warm = timed(doit, env)
        d_stats = ccache_stats(env)
        h_warm = timed(hand, henv)
        rows.append(("warm ccache (after make -C xen clean): wall s", f"{d_warm[0]:.1f}",
                     f"{h_warm[0]:.1f}"))
        rows.append(("warm ccache: CPU s", f"{d_warm[1]:.1f}", f"{h_warm[1]:.1f}"))
        rows.append(("ccache after cold + warm", d_stats, ccache_stats(henv)))
    print(f"Xen {args.rev}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print("| measurement | `doit build` | `make build-xen` by hand |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
