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

    python bench/build.py [--cache DIR] [--runs 5] [--xen GITDIR] [--xen-rev REV] [--skip-full]
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

from pipeline import build, kconfig, proc  # noqa: E402
from pipeline.config import load  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402
from tests.realkernel import DEMO, cache_dir, demo_with_workspace, set_key  # noqa: E402

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
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--xen", help="a Xen git repository (path or URL) to build too")
    ap.add_argument("--xen-rev", default="RELEASE-4.19.1")
    ap.add_argument("--skip-full", action="store_true", help="skip the full-build comparison")
    args = ap.parse_args()

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
    results: dict[str, Any] = {"machine": machine(), "jobs": build.jobs(cfg)}
    print(results["machine"], flush=True)

    t = doit(cfg_path, env)
    print(f"prepare: doit build {t.wall:.0f} s", flush=True)
    tree = ws.source_dir("linux")
    nfiles = subprocess.run(["git", "-C", str(tree), "ls-files", "-z"], check=True,
                            capture_output=True).stdout.count(b"\0")
    results["kernel_files"] = nfiles
    if not (patches / "bench.patch").is_file():
        write_patch(tree, patches, 1)
        doit(cfg_path, env)
    results["release"] = ws.state("build-kernel")["release"]
    doit(cfg_path, env)  # settle: nothing may run now
    kmake = make_argv(ws, "kernel")
    xmake = make_argv(ws, "xen") if args.xen else None

    # 1. no-op ---------------------------------------------------------------------------
    noop: dict[str, list[float]] = {k: [] for k in
                                    ("doit", "doit_cpu", "make", "make_cpu", "xen", "xen_cpu",
                                     "fingerprint")}
    # doit first: Xen's make relinks xen.gz on every run (a new compile.h), which doit then
    # rightly sees as a changed build tree
    for _ in range(args.runs):
        t = doit(cfg_path, env)
        assert not any(ran(t.out, k) for k in ("config", "build:kernel", "build:xen")), t.out
        noop["doit"].append(t.wall)
        noop["doit_cpu"].append(t.cpu)
        start = time.monotonic()
        build.fingerprint_kernel(cfg, ws)
        noop["fingerprint"].append(time.monotonic() - start)
    for _ in range(args.runs):
        t = run(kmake, menv)
        assert not CC_LINE.search(t.out), t.out
        noop["make"].append(t.wall)
        noop["make_cpu"].append(t.cpu)
    if xmake:
        for _ in range(args.runs):
            t = run(xmake, menv)
            noop["xen"].append(t.wall)
            noop["xen_cpu"].append(t.cpu)
        doit(cfg_path, env)  # republish the relinked xen.gz before the next measurement
    results["noop"] = noop
    print("no-op:", {k: summary(v) for k, v in noop.items() if v}, flush=True)

    # 2. one patch touching one .c -------------------------------------------------------
    variant = int(re.search(r"v(\d+) \*/", (patches / "bench.patch").read_text())[1]) + 1
    write_patch(tree, patches, variant)
    t = doit(cfg_path, env)
    log = (ws.logs / "build-kernel.log").read_text()
    doit_cc = CC_LINE.findall(log)
    stages = stage_durations(ws)
    os.utime(tree / PATCHED)
    raw = run(kmake, menv)
    raw_cc = CC_LINE.findall(raw.out)
    results["patch"] = {"doit": t.wall, "doit_cpu": t.cpu, "doit_cc": doit_cc,
                        "stages": {k: stages.get(k) for k in ("config", "kernel")},
                        "ran": [k for k in ("patch:linux", "config", "build:kernel",
                                            "build:xen") if ran(t.out, k)],
                        "make": raw.wall, "make_cpu": raw.cpu, "make_cc": raw_cc}
    print("patch:", results["patch"], flush=True)

    # 3. full build, warm ccache -----------------------------------------------------------
    if not args.skip_full:
        results["full"] = full_build(cfg_path, cfg, ws, env, menv, kmake)
        print("full:", results["full"], flush=True)

    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "build.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results, bool(args.xen))
    (out / "build.md").write_text(table)
    print(table)


def full_build(cfg_path: Path, cfg: Any, ws: Workspace, env: dict[str, str],
               menv: dict[str, str], kmake: list[str]) -> dict[str, Any]:
    """doit config+build from an empty build directory vs the same steps by hand."""
    bdir = build.kernel_build_dir(ws)
    res: dict[str, Any] = {}
    for attempt in range(2):  # alternate, to spread the machine's load over both
        shutil.rmtree(bdir)
        run([sys.executable, "-m", "doit", "forget", "config", "build:kernel",
                    f"config={cfg_path}"], env)
        t = doit(cfg_path, env)
        assert ran(t.out, "config") and ran(t.out, "build:kernel"), t.out
        st = stage_durations(ws)
        res.setdefault("doit", []).append(t.wall)
        res.setdefault("doit_cpu", []).append(t.cpu)
        res.setdefault("doit_config", []).append(st["config"])
        res.setdefault("doit_kernel", []).append(st["kernel"])

        shutil.rmtree(bdir)
        src = ws.source_dir("linux")
        kb = kconfig.Kbuild(src.resolve(), bdir, tuple(cfg.kernel.make_args), Path(LOG))
        steps = [kb.argv(cfg.kernel.base)]
        hand = {"wall": 0.0, "cpu": 0.0}
        for argv in steps:
            t = run(argv, menv)
            hand["wall"] += t.wall
            hand["cpu"] += t.cpu
        dotconfig = bdir / ".config"
        with open(dotconfig, "a") as f:  # what a developer does with a fragment
            for frag in cfg.kernel.fragments:
                f.write(frag.read_text())
            f.write("".join(f"{s}\n" for s in cfg.kernel.symbols))
        t_cfg = run(kb.argv("olddefconfig"), menv)
        t_rel = run(kb.argv("-s", "kernelrelease"), menv)
        config_wall = hand["wall"] + t_cfg.wall + t_rel.wall
        t_make = run(kmake, menv)
        release = t_rel.out.strip().splitlines()[-1]
        doit_config = ws.out / f"config-{release}"
        res.setdefault("same_config", []).append(
            doit_config.is_file() and doit_config.read_bytes() == dotconfig.read_bytes())
        start = time.monotonic()
        for name, p in ((f"vmlinuz-{release}", bdir / "arch/x86/boot/bzImage"),
                        (f"System.map-{release}", bdir / "System.map"),
                        (f"config-{release}", dotconfig)):
            shutil.copy(p, ws.out / name)
        cp = time.monotonic() - start
        res.setdefault("hand_config", []).append(config_wall)
        res.setdefault("hand_make", []).append(t_make.wall)
        res.setdefault("hand", []).append(config_wall + t_make.wall + cp)
        res.setdefault("hand_cpu", []).append(hand["cpu"] + t_cfg.cpu + t_rel.cpu + t_make.cpu)
        print(f"full build round {attempt + 1}: {res}", flush=True)
    # leave the workspace as doit knows it
    run([sys.executable, "-m", "doit", "forget", "config", "build:kernel",
                f"config={cfg_path}"], env)
    doit(cfg_path, env)
    return res


def render(r: dict[str, Any], with_xen: bool) -> str:
    n = r["noop"]
    p = r["patch"]
    rows = [
        "| measurement | doit build | by hand (make) | ratio / note |",
        "|---|---|---|---|",
    ]
    kb = statistics.median(n["make"]) + (statistics.median(n["xen"]) if with_xen else 0)
    doit_noop = statistics.median(n["doit"])
    what = "kernel + Xen" if with_xen else "kernel"
    rows.append(f"| no-op, wall s ({what}) | {summary(n['doit'])} | "
                f"{summary(n['make'])}" + (f" + Xen {summary(n['xen'])}" if with_xen else "")
                + f" | {doit_noop / kb:.2f}x |")
    kbc = statistics.median(n["make_cpu"]) + (statistics.median(n["xen_cpu"]) if with_xen
                                               else 0)
    rows.append(f"| no-op, CPU s | {summary(n['doit_cpu'])} | {summary(n['make_cpu'])}"
                + (f" + Xen {summary(n['xen_cpu'])}" if with_xen else "")
                + f" | {statistics.median(n['doit_cpu']) / kbc:.2f}x |")
    rows.append(f"| kernel fingerprint (git status of {r['kernel_files']} files + .config "
                f"sha256), s | {summary(n['fingerprint'])} | | in-process |")
    rows.append(f"| one patch changed (touches {PATCHED}), wall s | {p['doit']:.1f} "
                f"(config {p['stages']['config']:.1f}, build:kernel {p['stages']['kernel']:.1f})"
                f" | {p['make']:.1f} (touch + make) | tasks run: {', '.join(p['ran'])} |")
    rows.append(f"| one patch changed: objects compiled (CC lines) | {len(p['doit_cc'])}: "
                f"{', '.join(p['doit_cc'])} | {len(p['make_cc'])}: {', '.join(p['make_cc'])} | "
                f"{'same' if p['doit_cc'] == p['make_cc'] else 'DIFFERENT'} |")
    if "full" in r:
        f = r["full"]

        def nums(key: str) -> str:
            return ", ".join(f"{x:.1f}" for x in f[key])

        def pct(a: str, b: str) -> str:
            return f"{(statistics.median(f[a]) / statistics.median(f[b]) - 1) * 100:+.1f} %"

        rows += [
            f"| full build, kernel make (warm ccache), wall s | {nums('doit_kernel')} | "
            f"{nums('hand_make')} | {pct('doit_kernel', 'hand_make')} |",
            f"| full build, config, wall s | {nums('doit_config')} (oldconfig via pexpect, "
            f"verified) | {nums('hand_config')} (tinyconfig, cat fragment, olddefconfig) | |",
            f"| full build, total, wall s | {nums('doit')} | {nums('hand')} | "
            f"{pct('doit', 'hand')} |",
            f"| full build, total, CPU s | {nums('doit_cpu')} | {nums('hand_cpu')} | "
            f"{pct('doit_cpu', 'hand_cpu')} |",
        ]
    return (f"Machine: {r['machine']}. Kernel {r['release']}, {r['kernel_files']} files, "
            f"-j{r['jobs']}.\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
