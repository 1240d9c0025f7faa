#!/usr/bin/env python3
"""Measure what a nightly costs when nothing changed upstream: how long `doit nightly` takes
until its report says "nothing changed".

Default scenario (self-contained, loopback only): a Xen-like tree in an hg repository served by
a real `hg serve` on 127.0.0.1 and tracked at `tip`, plus a git repository tracked at branch
`main` (both floating, so every nightly really asks upstream), a real `make build-xen`. One cold
nightly clones and builds, then `--repeat` nightlies find nothing new. For comparison it times
`doit list` (Python + doit + config start-up) and a no-op `doit build`.

With `--config PATH` it measures nightlies of that config instead (e.g. the real kernel's
config of the slow tests, /tmp/xenpipe-test-cache/kernel-<key>/real.toml): one warm-up
nightly, then the repeats. Its workspace gets reports/ and state/nightly-* like any nightly run.

    python bench/nightly.py [--workdir /tmp/xenpipe-bench-nightly] [--repeat 5] [--config PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load  # noqa: E402
from tests.support.upstreams import XEN_TREE  # noqa: E402  the tests' Xen-like tree

ENV = {**os.environ, "HGPLAIN": "1", "HGUSER": "Bench <bench@example.org>", "LC_ALL": "C",
       "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
       "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.org"}


def run(argv: list[str], cwd: Path | None = None) -> None:
    subprocess.run(argv, cwd=cwd, env=ENV, check=True, capture_output=True)


def doit(cfg: Path, *args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    """Run doit as a user does; (seconds, output). Exits on an unexpected status."""
    env = {k: v for k, v in os.environ.items() if k != "XENPIPE_CONFIG"}
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "doit", *args, f"config={cfg}"], cwd=REPO,
                         capture_output=True, text=True, env=env)
    took = time.monotonic() - start
    if res.returncode not in ok:
        sys.exit(f"doit {' '.join(args)} failed:\n{res.stdout}{res.stderr}")
    return took, res.stdout + res.stderr


def upstreams(work: Path) -> tuple[Path, Path]:
    """An hg and a git repository holding the Xen-like tree (made once, then reused)."""
    hg, git = work / "upstream.hg", work / "upstream.git"
    if not (hg / ".hg").is_dir():
        shutil.rmtree(hg, ignore_errors=True)
        run(["hg", "init", str(hg)])
        for name, text in XEN_TREE.items():
            (hg / name).parent.mkdir(parents=True, exist_ok=True)
            (hg / name).write_text(text)
        run(["hg", "commit", "-A", "-m", "xen-like tree"], cwd=hg)
    if not (git / ".git").is_dir():
        shutil.rmtree(git, ignore_errors=True)
        run(["git", "init", "-q", "-b", "main", str(git)])
        (git / "README").write_text("linux-like\n")
        run(["git", "add", "README"], cwd=git)
        run(["git", "commit", "-q", "-m", "initial"], cwd=git)
    return hg, git


def serve(hg: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["hg", "serve", "-R", str(hg), "-a", "127.0.0.1", "-p", str(port)],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, f"http://127.0.0.1:{port}/"
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                sys.exit("hg serve did not start")
            time.sleep(0.05)


def report(cfg: Path) -> dict[str, Any]:
    return json.loads((load(cfg).workspace / "reports" / "report.json").read_text())


def measure(cfg: Path, repeat: int) -> dict[str, Any]:
    """Nightlies of an unchanged upstream: wall time, the child doit run, each stage."""
    walls, inner, stages, times = [], [], {}, {}
    for _ in range(repeat):
        took, out = doit(cfg, "nightly")
        rep = report(cfg)
        for v in rep["variants"]:
            if not v["summary"].startswith("nothing changed"):
                sys.exit(f"expected 'nothing changed', got: {v['summary']}")
        walls.append(took)
        inner.append(sum(v["duration"] for v in rep["variants"]))
        for v in rep["variants"]:
            for st in v["stages"]:
                stages.setdefault(st["name"], []).append(st["status"])
                times.setdefault(st["name"], []).append(st["duration"])
    return {"wall": walls, "child_doit": inner, "stage_seconds": times,
            "stages": {k: sorted(set(v)) for k, v in stages.items()}}


def table(rows: list[tuple[str, list[float]]]) -> str:
    lines = ["| what | median s | min s | max s |", "|---|---|---|---|"]
    for name, xs in rows:
        lines.append(f"| {name} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/xenpipe-bench-nightly"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--config", type=Path, help="measure this config instead of the fixture")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        if args.config:
            cfg = args.config.resolve()
            cold, _ = doit(cfg, "nightly", ok=(0, 1))
        else:
            for tool in ("hg", "git", "make", "gcc"):
                if shutil.which(tool) is None:
                    sys.exit(f"{tool} is not installed")
            hg, git = upstreams(args.workdir)
            server, url = serve(hg)
            ws = args.workdir / "ws"
            shutil.rmtree(ws, ignore_errors=True)
            cfg = args.workdir / "bench.toml"
            cfg.write_text(f'[workspace]\ndir = "{ws}"\n\n'
                           f'[sources.xen]\nvcs = "hg"\nurl = "{url}"\nrev = "tip"\n\n'
                           f'[sources.linux]\nvcs = "git"\nurl = "{git}"\nrev = "main"\n\n'
                           '[xen]\nsource = "xen"\n')
            cold, _ = doit(cfg, "nightly")
        result = measure(cfg, args.repeat)
        lst = [doit(cfg, "list")[0] for _ in range(args.repeat)]
        noop = [doit(cfg, "build")[0] for _ in range(args.repeat)]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
    rows = [("`doit nightly`, nothing changed (wall)", result["wall"]),
            ("  of which the child `doit` run", result["child_doit"]),
            *[(f"    of which `{k}` ({'/'.join(result['stages'][k])})", v)
              for k, v in result["stage_seconds"].items()],
            ("`doit build` no-op (for comparison)", noop),
            ("`doit list` (start-up only)", lst)]
    print(f"config: {cfg}\ncold first nightly: {cold:.2f} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(table(rows))
    out = REPO / "bench" / "results" / "nightly.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": str(cfg), "cold": cold, **result, "build_noop": noop,
                               "list": lst, "load": os.getloadavg(), "cpus": os.cpu_count()},
                              indent=2) + "\n")
    print(f"raw numbers: {out}")


if __name__ == "__main__":
    main()
