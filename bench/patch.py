#!/usr/bin/env python3
"""Measure `doit patch` on a kernel-sized tree: a no-op, and re-applying a 3-patch series after
one patch changed.

The source is Debian's /usr/src/linux-source-6.1.tar.xz as a `tarball` source (unpacked and
committed once into a git repository by `doit fetch`; that first fetch takes minutes and is
reused by later runs of this script). The three small patches are generated here, against files
of that tree, for the measurement only.

    python bench/patch.py [--workdir /tmp/xenpipe-bench-patch] [--repeat 3]
"""

from __future__ import annotations

import argparse
import difflib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import fetch as sources  # noqa: E402
from pipeline import patch as patches  # noqa: E402
from pipeline.config import load  # noqa: E402
from pipeline.workspace import Key, Workspace  # noqa: E402

TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
TARGETS = (  # one small edit in each of three files
    ("drivers/xen/xen-pciback/pci_stub.c", "guestdev"),
    ("drivers/pci/pci.c", "reassign"),
    ("Documentation/admin-guide/kernel-parameters.txt", "docs"),
)


def doit(cfg: Path, *args: str) -> tuple[float, str]:
    """Run doit as a user does; (seconds, stdout). Fails loudly on error."""
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "doit", *args, f"config={cfg}"], cwd=REPO,
                         capture_output=True, text=True)
    took = time.monotonic() - start
    if res.returncode != 0:
        sys.exit(f"doit {' '.join(args)} failed:\n{res.stdout}{res.stderr}")
    return took, res.stdout


def make_patch(tree_file: bytes, path: str, tag: str, variant: int) -> bytes:
    """A unified diff (a/ b/) appending a comment block near the top of *path*."""
    old = tree_file.decode("utf-8", "surrogateescape").splitlines(keepends=True)
    new = list(old)
    at = min(20, len(new))
    new[at:at] = [f"/* xenpipe bench: {tag} v{variant} */\n"] if not path.endswith(".txt") \
        else [f"\txenpipe_bench_{tag}=v{variant}\n"]
    diff = difflib.unified_diff(old, new, f"a/{path}", f"b/{path}")
    return "".join(diff).encode("utf-8", "surrogateescape")


def write_series(cfg_dir: Path, pdir: Path, ws: Workspace, rev: str, variant: int) -> None:
    git = sources.vcs_for("tarball")
    tree = ws.source_dir("linux")
    names = []
    for k, (path, tag) in enumerate(TARGETS, 1):
        data = git.cat(tree, rev, path)
        assert data is not None, f"{path} is not in the tarball"
        name = f"000{k}-{tag}.patch"
        (pdir / name).write_bytes(make_patch(data, path, tag, variant if k == 2 else 1))
        names.append(name)
    (pdir / "series").write_text("\n".join(names) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/xenpipe-bench-patch"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not TARBALL.is_file():
        sys.exit(f"{TARBALL} is missing: apt-get install linux-source-6.1")
    work = args.workdir
    pdir = work / "patches"
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / "series").touch()
    cfg = work / "bench.toml"
    cfg.write_text(f'[workspace]\ndir = "{work / "ws"}"\n\n[sources.linux]\nvcs = "tarball"\n'
                   f'url = "{TARBALL}"\npatches = "{pdir}"\n')
    ws = Workspace(work / "ws")
    results: dict[str, object] = {}

    took, _ = doit(cfg, "fetch")
    results["fetch (first run unpacks and commits the tarball)"] = round(took, 2)
    rev = ws.state(Key.fetch("linux"))["resolved"]
    tracked = subprocess.run(["git", "-C", str(ws.source_dir("linux")), "ls-files", "-z"],
                             check=True, capture_output=True).stdout.count(b"\0")
    results["files in the tree"] = tracked

    write_series(cfg.parent, pdir, ws, rev, variant=1)
    took, out = doit(cfg, "patch")
    results["patch: apply the 3-patch series (doit)"] = round(took, 2)

    noop = []
    for _ in range(args.repeat):
        took, out = doit(cfg, "patch")
        assert "-- patch:linux" in out, out
        noop.append(took)
    results["patch: no-op (doit, median)"] = round(statistics.median(noop), 3)
    took, _ = doit(cfg, "list")
    results["doit list (start-up baseline)"] = round(took, 3)

    reapply, inproc = [], []
    src = load(cfg).sources["linux"]
    for variant in range(2, 2 + args.repeat):
        write_series(cfg.parent, pdir, ws, rev, variant)
        stub = ws.source_dir("linux") / TARGETS[0][0]
        before = stub.stat().st_mtime_ns
        took, out = doit(cfg, "patch")
        assert ".  patch:linux" in out, out
        assert stub.stat().st_mtime_ns == before, "an unchanged patch's file was rewritten"
        reapply.append(took)
        write_series(cfg.parent, pdir, ws, rev, variant + 100)
        start = time.monotonic()
        patches.apply(src, ws)
        inproc.append(time.monotonic() - start)
    results["patch: re-apply after patch 2 changed (doit, median)"] = \
        round(statistics.median(reapply), 2)
    results["patch: re-apply, patches.apply() alone (median)"] = \
        round(statistics.median(inproc), 2)
    width = max(map(len, results))
    for k, v in results.items():
        print(f"{k:<{width}}  {v}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
