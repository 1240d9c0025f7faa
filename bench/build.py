#!/usr/bin/env python3
"""Measure `doit build` against plain make, side by side in one run, on real trees.

The kernel is Debian's /usr/src/linux-source-6.1.tar.xz configured as configs/demo.toml does
(tinyconfig + configs/kernel/xen-dom0.config, ccache on), in its own workspace
``<cache>/bench-ws`` (the first run fetches and builds it: minutes); ccache is shared with the
slow tests (``<cache>/ccache``). With ``--xen GITDIR`` a Xen tree (e.g. a clone of
xen-project/xen) is added at ``--xen-rev`` and the hypervisor is built too.

1. no-op: ``doit build`` vs make's own no-op with the very command doit ran (from
   metadata.json): ``make -C src O=out/kernel-build ... bzImage modules`` (and Xen's make).
2. one patch that touches one .c changed: ``doit build`` (patch, config, build reruns) vs
   ``touch`` of that file + the same make; compile (CC) lines counted in both.
3. full build (warm ccache): ``doit build`` after ``doit forget`` and removing the build
   directory vs the same commands typed by hand (make tinyconfig, fragment, olddefconfig,
   make bzImage modules, cp).

Wall time is noisy on a shared machine; CPU time (user+sys of all child processes) is also
reported. Each no-op is measured --runs times (median and minimum reported).

    python bench/build.py [--cache DIR] [--runs 5] [--rounds 2] [--parts noop,patch,full]
                           [--xen GITDIR] [--xen-rev REV]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import build, proc  # noqa: E402
from pipeline import kernel as kconfig  # noqa: E402
from pipeline.config import load  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402
from tests.support.realkernel import DEMO, cache_dir, demo_with_workspace, set_key  # noqa: E402

PATCHED = "drivers/xen/xen-pciback/conf_space.c"  # built in; the demo series leaves it
CC_LINE = re.compile(r"^\s+CC(?: \[M\])?\s+(\S+\.o)$", re.M)
LOG = "/tmp/xenpipe-bench-build.out"


class Timed:
    """Wall and CPU seconds (user+sys of the child and everything it waited for)."""

    def __init__(self, wall: float, cpu: float, out: str) -> None:
        self.wall, self.cpu, self.out = wall, cpu, out


def run(argv: list[str], env: dict[str, str], cwd: Path = REPO,
               check: bool = True) -> Timed:
    """Run *argv* (output to a scratch file); wall time, and CPU time from os.wait4."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: exec with output to a pipe-less temp file
        try:
            os.chdir(cwd)
            fd = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - start
    out = Path(LOG).read_text(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if check and code != 0:
        sys.exit(f"{shlex.join(argv)} failed ({code}):\n{out[-4000:]}")
    return Timed(wall, usage.ru_utime + usage.ru_stime, out)


def doit(cfg: Path, env: dict[str, str], *args: str) -> Timed:
    return run([sys.executable, "-m", "doit", *(args or ("build",)), f"config={cfg}"],
                      env)


def ran(out: str, task: str) -> bool:
    return re.search(rf"^\.\s+{re.escape(task)}$", out, re.M) is not None


def bench_config(cache: Path, ws: Path, patches: Path, xen: str | None, xen_rev: str) -> Path:
    """configs/demo.toml with the workspace in the cache, a linux patch series, maybe Xen."""
    text = set_key(demo_with_workspace(ws), "sources.linux", "patches", json.dumps(str(patches)))
    # snapshots of the fragments: an edit in the repository during a run changes nothing
    frags = []
    for frag in load(DEMO).kernel.fragments:
        copy = cache / "bench-fragments" / frag.name
        copy.parent.mkdir(exist_ok=True)
        if not copy.is_file() or copy.read_bytes() != frag.read_bytes():
            shutil.copy(frag, copy)
        frags.append(str(copy))
    text = set_key(text, "kernel", "fragments", json.dumps(frags))
    if xen:
        text += (f'\n[sources.xen]\nvcs = "git"\nurl = "{xen}"\nrev = "{xen_rev}"\n'
                 '\n[xen]\nsource = "xen"\n')
    path = cache / "bench.toml"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def sync_series(patches: Path) -> None:
    """The demo's linux series (if any), then bench.patch once it exists."""
    patches.mkdir(parents=True, exist_ok=True)
    demo = load(DEMO).sources["linux"].patches
    lines = []
    if demo is not None:
        for f in demo.iterdir():
            if f.is_file():
                shutil.copy(f, patches / f.name)
        lines = (demo / "series").read_text().splitlines()
    if (patches / "bench.patch").is_file():
        lines.append("bench.patch")
    (patches / "series").write_text("\n".join(lines) + "\n")


def write_patch(tree: Path, patches: Path, variant: int) -> None:
    """One patch adding a line to PATCHED, against the tree's committed (pristine) content."""
    pristine = subprocess.run(["git", "-C", str(tree), "show", f"HEAD:{PATCHED}"], check=True,
                              capture_output=True, text=True).stdout
    old = pristine.splitlines(keepends=True)
    new = list(old)
    new.insert(20, f"/* xenpipe bench: v{variant} */\n")
    diff = "".join(difflib.unified_diff(old, new, f"a/{PATCHED}", f"b/{PATCHED}"))
    (patches / "bench.patch").write_text(diff)
    sync_series(patches)


def stage_durations(ws: Workspace) -> dict[str, float]:
    md = json.loads((ws.out / "metadata.json").read_text())
    return {k: v.get("duration", 0.0) for k, v in md["stages"].items()}


def make_argv(ws: Workspace, stage: str) -> list[str]:
    md = json.loads((ws.out / "metadata.json").read_text())
    return shlex.split(md["stages"][stage]["commands"][-1])


def summary(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} (min {min(xs):.2f})"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return (f"{cpu}, {len(os.sched_getaffinity(0))} CPUs, {mem:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
            f"load average at start {load[0]:.1f} (shared machine)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=cache_dir())
    ap.add_argument("--runs", type=int, default=5, help="no-op runs of each")
    ap.add_argument("--rounds", type=int, default=2, help="full builds of each (alternating)")
    ap.add_argument("--parts", default="noop,patch,full",
                    help="which measurements (the others are kept from the last results)")
    ap.add_argument("--xen", help="a Xen git repository (path or URL) to build too")
    ap.add_argument("--xen-rev", default="RELEASE-4.19.1")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    cache = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    wsdir = cache / "bench-ws"
    patches = cache / "bench-patches" / "linux"
    sync_series(patches)
    cfg_path = bench_config(cache, wsdir, patches, args.xen, args.xen_rev)
    cfg = load(cfg_path)
    ws = Workspace(wsdir)
    env = {**os.environ, "CCACHE_DIR": str(cache / "ccache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # users keep .pyc files; so does the benchmark
    env.pop("XENPIPE_CONFIG", None)
    env.pop("CCACHE_BASEDIR", None)
    # make by hand runs in the environment doit gives make: LC_ALL=C and ccache's base
    # directory (ccache hashes both: another locale would miss every object)
    menv = proc.environment({"CCACHE_DIR": env["CCACHE_DIR"], **build.make_env(cfg, ws)})
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    saved = out / "build.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.is_file() else {}
    results.update({"machine": machine(), "jobs": build.jobs(cfg), "xen": bool(args.xen)})
    print(results["machine"], flush=True)

    t = doit(cfg_path, env)
    print(f"prepare: doit build {t.wall:.0f} s", flush=True)
    tree = ws.source_dir("linux")
    results["kernel_files"] = subprocess.run(["git", "-C", str(tree), "ls-files", "-z"],
                                             check=True, capture_output=True).stdout.count(b"\0")
    if not (patches / "bench.patch").is_file():
        write_patch(tree, patches, 1)
        doit(cfg_path, env)
    results["release"] = ws.state("build-kernel")["release"]
    doit(cfg_path, env)  # settle: nothing may run now
    kmake = make_argv(ws, "kernel")
    xmake = make_argv(ws, "xen") if args.xen else None

    if "noop" in parts:
        results["noop"] = noop(cfg_path, cfg, ws, env, menv, kmake, xmake, args.runs)
    if "patch" in parts:
        results["patch"] = one_patch(cfg_path, ws, env, menv, kmake, tree, patches)
    if "full" in parts:
        results["full"] = full_build(cfg_path, cfg, ws, env, menv, kmake, args.rounds)

    saved.write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (out / "build.md").write_text(table)
    print(table)


def noop(cfg_path: Path, cfg: Any, ws: Workspace, env: dict[str, str], menv: dict[str, str],
         kmake: list[str], xmake: list[str] | None, runs: int) -> dict[str, Any]:
    """``doit build`` with nothing to do vs make's own no-op, *runs* times each."""
    res: dict[str, Any] = {"load": os.getloadavg()[0]}
    # doit first: Xen's make relinks xen.gz on every run (a new compile.h), which doit then
    # rightly sees as a changed build tree
    for _ in range(runs):
        t = doit(cfg_path, env)
        assert not any(ran(t.out, k) for k in ("config", "build:kernel", "build:xen")), t.out
        res.setdefault("doit", []).append(t.wall)
        res.setdefault("doit_cpu", []).append(t.cpu)
        start = time.monotonic()
        build.fingerprint_kernel(cfg, ws)
        res.setdefault("fingerprint", []).append(time.monotonic() - start)
    for _ in range(runs):
        t = run(kmake, menv)
        assert not CC_LINE.search(t.out), t.out
        res.setdefault("make", []).append(t.wall)
        res.setdefault("make_cpu", []).append(t.cpu)
    if xmake:
        for _ in range(runs):
            t = run(xmake, menv)
            res.setdefault("xen", []).append(t.wall)
            res.setdefault("xen_cpu", []).append(t.cpu)
        doit(cfg_path, env)  # republish the relinked xen.gz before the next measurement
    print("no-op:", {k: summary(v) for k, v in res.items() if isinstance(v, list)}, flush=True)
    return res


def one_patch(cfg_path: Path, ws: Workspace, env: dict[str, str], menv: dict[str, str],
              kmake: list[str], tree: Path, patches: Path) -> dict[str, Any]:
    """Change the one-line patch: ``doit build`` vs ``touch`` + make; CC lines of both."""
    variant = int(re.search(r"v(\d+) \*/", (patches / "bench.patch").read_text())[1]) + 1
    write_patch(tree, patches, variant)
    load = os.getloadavg()[0]
    t = doit(cfg_path, env)
    doit_cc = CC_LINE.findall((ws.logs / "build-kernel.log").read_text())
    stages = stage_durations(ws)
    os.utime(tree / PATCHED)
    raw = run(kmake, menv)
    res = {"load": load, "doit": t.wall, "doit_cpu": t.cpu, "doit_cc": doit_cc,
           "stages": {k: stages.get(k) for k in ("config", "kernel")},
           "ran": [k for k in ("patch:linux", "config", "build:kernel", "build:xen")
                   if ran(t.out, k)],
           "make": raw.wall, "make_cpu": raw.cpu, "make_cc": CC_LINE.findall(raw.out)}
    print("patch:", res, flush=True)
    return res


CCACHE_COUNTERS = ("cache_miss", "direct_cache_hit", "preprocessed_cache_hit")


def ccache_stats(env: dict[str, str]) -> dict[str, int]:
    """ccache's counters (both sides of a comparison must do the same compiler work: a
    preprocessed hit costs a preprocessor run, a direct one does not)."""
    out = subprocess.run(["ccache", "--print-stats"], env=env, capture_output=True,
                         text=True).stdout
    return {k: int(re.search(rf"^{k}\t(\d+)$", out, re.M)[1]) for k in CCACHE_COUNTERS}


def ccache_delta(env: dict[str, str], before: dict[str, int]) -> dict[str, int]:
    now = ccache_stats(env)
    return {k: now[k] - before[k] for k in CCACHE_COUNTERS}


def full_build(cfg_path: Path, cfg: Any, ws: Workspace, env: dict[str, str],
               menv: dict[str, str], kmake: list[str], rounds: int) -> dict[str, Any]:
    """From an empty build directory (warm ccache): ``doit config`` + ``doit build`` vs the
    same steps typed by hand; which goes first alternates from round to round."""
    bdir = build.kernel_build_dir(ws)
    res: dict[str, Any] = {"load": os.getloadavg()[0]}

    def add(key: str, value: Any) -> None:
        res.setdefault(key, []).append(value)

    def by_doit() -> None:
        shutil.rmtree(bdir, ignore_errors=True)
        run([sys.executable, "-m", "doit", "forget", "config", "build:kernel",
             f"config={cfg_path}"], env)
        t_cfg = doit(cfg_path, env, "config")
        before = ccache_stats(env)
        t_build = doit(cfg_path, env, "build")
        add("doit_ccache", ccache_delta(env, before))
        assert ran(t_cfg.out, "config") and ran(t_build.out, "build:kernel"), t_build.out
        add("doit_config", t_cfg.wall)
        add("doit_config_cpu", t_cfg.cpu)
        add("doit_build", t_build.wall)
        add("doit_build_cpu", t_build.cpu)
        add("doit_kernel_stage", stage_durations(ws)["kernel"])

    def by_hand() -> None:
        shutil.rmtree(bdir, ignore_errors=True)
        kb = kconfig.Kbuild(ws.source_dir("linux").resolve(), bdir, tuple(cfg.kernel.make_args),
                            Path(LOG))
        t_base = run(kb.argv(cfg.kernel.base), menv)
        dotconfig = bdir / ".config"
        with open(dotconfig, "a") as f:  # what a developer does with a fragment
            for frag in cfg.kernel.fragments:
                f.write(frag.read_text())
            f.write("".join(f"{s}\n" for s in cfg.kernel.symbols))
        t_old = run(kb.argv("olddefconfig"), menv)
        t_rel = run(kb.argv("-s", "kernelrelease"), menv)
        before = ccache_stats(env)
        t_make = run(kmake, menv)
        add("hand_ccache", ccache_delta(env, before))
        release = t_rel.out.strip().splitlines()[-1]
        doit_config = ws.out / f"config-{release}"
        add("same_config", doit_config.read_bytes() == dotconfig.read_bytes())
        start = time.monotonic()
        for name, src in ((f"vmlinuz-{release}", bdir / "arch/x86/boot/bzImage"),
                          (f"System.map-{release}", bdir / "System.map"),
                          (f"config-{release}", dotconfig)):
            shutil.copy(src, ws.out / name)
        add("hand_config", t_base.wall + t_old.wall + t_rel.wall)
        add("hand_config_cpu", t_base.cpu + t_old.cpu + t_rel.cpu)
        add("hand_build", t_make.wall + time.monotonic() - start)
        add("hand_build_cpu", t_make.cpu)

    for i in range(rounds):
        for step in (by_doit, by_hand) if i % 2 == 0 else (by_hand, by_doit):
            step()
        print(f"full build round {i + 1}: {res}", flush=True)
    # leave the workspace as doit knows it
    run([sys.executable, "-m", "doit", "forget", "config", "build:kernel",
         f"config={cfg_path}"], env)
    doit(cfg_path, env)
    return res


def render(r: dict[str, Any]) -> str:
    """The Markdown table of whatever parts *r* holds."""
    rows = ["| measurement | doit | by hand | doit vs by hand |", "|---|---|---|---|"]

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    def nums(xs: list[float]) -> str:
        return ", ".join(f"{x:.1f}" for x in xs)

    def counters(xs: list[dict[str, int]]) -> str:
        return ", ".join(" / ".join(str(x[k]) for k in CCACHE_COUNTERS) for x in xs)

    def pct(a: float, b: float) -> str:
        return f"{(a / b - 1) * 100:+.1f} %"

    if "noop" in r:
        n = r["noop"]
        xen = "xen" in n
        what = "kernel + Xen trees" if xen else "kernel tree"
        hand = med(n["make"]) + (med(n["xen"]) if xen else 0)
        hand_cpu = med(n["make_cpu"]) + (med(n["xen_cpu"]) if xen else 0)
        rows += [
            f"| no-op, {what}: wall s, median (min) of {len(n['doit'])} | {summary(n['doit'])} "
            f"| kernel make {summary(n['make'])}"
            + (f" + Xen make {summary(n['xen'])}" if xen else "")
            + f" | {med(n['doit']) / hand:.3f}x |",
            f"| no-op: CPU s | {summary(n['doit_cpu'])} | kernel {summary(n['make_cpu'])}"
            + (f" + Xen {summary(n['xen_cpu'])}" if xen else "")
            + f" | {med(n['doit_cpu']) / hand_cpu:.3f}x |",
            f"| no-op: kernel fingerprint in-process (git status over {r['kernel_files']} "
            f"files, .config sha256), s | {summary(n['fingerprint'])} | | |",
        ]
    if "patch" in r:
        p = r["patch"]
        same = "identical" if p["doit_cc"] == p["make_cc"] else "DIFFERENT"
        rows += [
            f"| one patch changed (touches `{PATCHED}`): wall s | {p['doit']:.1f} "
            f"({', '.join(p['ran'])}; "
            + " + ".join(f"{task} {p['stages'][stage]:.1f}"
                         for task, stage in (("config", "config"), ("build:kernel", "kernel"))
                         if task in p["ran"])
            + f") | {p['make']:.1f} (touch + make) | |",
            f"| one patch changed: objects compiled | {len(p['doit_cc'])} | "
            f"{len(p['make_cc'])} | {same}: {', '.join(p['doit_cc'])} |",
        ]
    if "full" in r:
        f = r["full"]
        rows += [
            f"| full build, kernel (warm ccache): wall s per round | {nums(f['doit_build'])} "
            f"(`doit build`) | {nums(f['hand_build'])} (make bzImage modules, cp) | "
            f"{pct(med(f['doit_build']), med(f['hand_build']))} |",
            f"| full build, kernel: CPU s | {nums(f['doit_build_cpu'])} | "
            f"{nums(f['hand_build_cpu'])} | "
            f"{pct(med(f['doit_build_cpu']), med(f['hand_build_cpu']))} |",
            f"| full build, kernel: ccache misses / direct hits / preprocessed hits | "
            f"{counters(f.get('doit_ccache', []))} | {counters(f.get('hand_ccache', []))} | |",
            f"| full build, config: wall s | {nums(f['doit_config'])} (`doit config`: "
            f"oldconfig by pexpect, verification) | {nums(f['hand_config'])} (tinyconfig, cat "
            f"fragment, olddefconfig) | same .config: {all(f['same_config'])} |",
        ]
    loads = ", ".join(f"{k} {r[k]['load']:.1f}" for k in ("noop", "patch", "full")
                      if k in r and "load" in r[k])
    return (f"Machine: {r['machine']}. Kernel {r['release']}, {r['kernel_files']} files, "
            f"-j{r['jobs']}. Load average when each part started: {loads}.\n\n"
            + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
