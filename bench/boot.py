#!/usr/bin/env python3
"""Milestone times of ``doit boot``, per boot kind and per way of running TCG, side by side in
one run: how long after QEMU started each console milestone came (out/boot.json), with the
load average before and after each boot.

Boot kinds (configs/demo.toml on the slow tests' real kernel, in workspaces of their own
under ``<test cache>/bench-boot/``, linked to the shared build and Debian root read-only):

- ``dom0``: the direct boot (QEMU ``-kernel``), dom0 with the probe, no guest;
- ``guest``: the demo boot, dom0 with the Debian root starting the guest twice, then giving
  its devices back (``[boot] guest = true``).

TCG variants (``[boot] cpus`` and ``tcg``): ``1cpu`` (one vCPU), ``2cpu-single`` (two vCPUs
on one host thread, round robin), ``2cpu-multi`` (two vCPUs, one host thread each). Rounds
alternate the order of the variants. Needs the slow tests' cache (the real kernel built, the
Debian root debootstrap'ed: run the guest slow tests once) and root.

    python bench/boot.py [--rounds 2] [--kinds dom0,guest] [--variants 1cpu,2cpu-multi]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.boot import probe, rootfs  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402
from tests.support.realkernel import cache_dir, demo_with_workspace, set_key  # noqa: E402

VARIANTS = {"1cpu": (1, "multi"), "2cpu-single": (2, "single"), "2cpu-multi": (2, "multi")}
KINDS = ("dom0", "guest")
# the milestones shown, in console order (a kind shows those it has)
SHOWN = ("Linux banner", "probe done", "Xen daemons started", "guest demo started",
         "guest demo listed its devices", "guest demo shut down", "guest demo started again",
         "guest demo listed its devices again", "guest demo shut down again",
         "0000:01:00.0 back in dom0", "power-off")
RECORDED_SYSFS = REPO / "tests" / "data" / "guest" / "pass.log"  # the demo VM's probe dump


def workspace(root: Path, shared: Workspace, name: str) -> Workspace:
    """A workspace of its own for one kind and variant: the shared kernel build and Debian root
    linked in read-only, as the guest slow tests do (tests/test_guest.py guest_ws)."""
    ws = Workspace(root / name)
    if ws.dir.exists():
        shutil.rmtree(ws.dir)
    ws.out.mkdir(parents=True)
    release = json.loads((shared.state_dir / "build-kernel.json").read_text())["release"]
    for p in (f"vmlinuz-{release}", f"System.map-{release}", f"config-{release}",
              "kernel-build"):
        if (shared.out / p).exists():
            (ws.out / p).symlink_to(shared.out / p)
    ws.src.mkdir()
    (ws.src / "linux").symlink_to(shared.source_dir("linux"))
    ws.state_dir.mkdir()
    shutil.copy(shared.state_dir / "build-kernel.json", ws.state_dir)
    (ws.dir / "rootfs").symlink_to(rootfs.cache_dir(shared))
    return ws


def doit(config: Path, *args: str, env: dict[str, str] | None = None,
         check: bool = True) -> tuple[float, str, int]:
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "doit", *args, f"config={config}"], cwd=REPO,
                         capture_output=True, text=True, env={**os.environ, **(env or {})})
    took = time.monotonic() - start
    if check and res.returncode != 0:
        sys.exit(f"doit {' '.join(args)} ({config}) failed:\n{res.stdout}{res.stderr}")
    return took, res.stdout + res.stderr, res.returncode


def prepare(root: Path, shared: Workspace, kind: str, variant: str) -> Path:
    """The config of one kind and variant, its workspace ready (the guest config installed
    for the VM, as the guest slow test does, so no topology boot comes first)."""
    name = f"{kind}-{variant}"
    ws = workspace(root, shared, name)
    cpus, tcg = VARIANTS[variant]
    text = demo_with_workspace(ws.dir)
    text = set_key(text, "boot", "guest", "true" if kind == "guest" else "false")
    text = set_key(text, "boot", "cpus", str(cpus))
    text = set_key(text, "boot", "tcg", json.dumps(tcg))
    config = root / f"{name}.toml"
    config.write_text(text)
    sysfs = probe.record_sysfs(probe.parse(RECORDED_SYSFS.read_text(errors="replace")),
                               root / f"{name}.sysfs")
    doit(config, "-s", "install", env={"XENPIPE_SYSFS": str(sysfs)})  # exits if it fails
    return config


def boot_once(config: Path) -> dict[str, Any]:
    load0 = os.getloadavg()
    took, out, rc = doit(config, "-s", "-a", "boot", check=False)
    load1 = os.getloadavg()
    ws = json.loads((config.parent / config.stem / "out" / "boot.json").read_text())
    marks = {m["name"]: m["seconds"] for m in ws.get("milestones", []) if "seconds" in m}
    failed = out.strip().splitlines()[-1] if rc else None  # a failed boot is a row, not the end
    return {"doit": round(took, 1), "qemu": ws.get("seconds"), "milestones": marks,
            "load": [round(x, 2) for x in (*load0, *load1)], "failed": failed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--workdir", type=Path, default=cache_dir() / "bench-boot")
    a = ap.parse_args()
    shared = Workspace(cache_dir() / "real-ws")
    built = (shared.state_dir / "build-kernel.json").is_file()
    if not built or not rootfs.cache_dir(shared).is_dir():
        sys.exit(f"no real kernel build or Debian root in {shared.dir}: run the guest slow "
                 "tests once (tests/test_guest.py -m slow)")
    kinds, variants = a.kinds.split(","), a.variants.split(",")
    a.workdir.mkdir(parents=True, exist_ok=True)
    configs = {(k, v): prepare(a.workdir, shared, k, v) for k in kinds for v in variants}
    runs: dict[str, list[dict[str, Any]]] = {f"{k} {v}": [] for k, v in configs}
    order = list(configs)
    for r in range(a.rounds):
        for k, v in order if r % 2 == 0 else order[::-1]:
            res = boot_once(configs[(k, v)])
            runs[f"{k} {v}"].append(res)
            print(f"round {r + 1}: {k} {v}: QEMU {res['qemu']} s (doit {res['doit']} s), "
                  f"load {res['load'][0]:.1f} -> {res['load'][3]:.1f}"
                  + (f"; FAILED: {res['failed']}" if res["failed"] else ""), flush=True)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"boot-{stamp}.json").write_text(json.dumps(runs, indent=1))
    print(f"\nmedian of {a.rounds} rounds, seconds after QEMU started "
          f"(raw: bench/results/boot-{stamp}.json)\n")
    cols = list(runs)
    print("| milestone | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name in (*SHOWN, "QEMU exit"):
        cells = []
        for c in cols:
            vals = [r["qemu"] if name == "QEMU exit" and not r["failed"]
                    else r["milestones"].get(name) for r in runs[c]]
            vals = [x for x in vals if x is not None]
            cells.append(f"{statistics.median(vals):.1f}" if vals else "")
        if any(cells):
            print(f"| {name} | " + " | ".join(cells) + " |")
    for c in cols:
        for r in runs[c]:
            if r["failed"]:
                print(f"{c}: failed: {r['failed']}")
    loads = [r["load"][0] for c in cols for r in runs[c]]
    print(f"| load average (1 min) before the boots | {min(loads):.1f} to {max(loads):.1f} |")
    for v in variants:
        d, g = runs.get(f"dom0 {v}"), runs.get(f"guest {v}")
        if d and g and not any(r["failed"] for r in (*d, *g)):
            ratio = statistics.median(r["qemu"] for r in g) / statistics.median(
                r["qemu"] for r in d)
            print(f"{v}: guest boot / dom0-only boot = {ratio:.2f}x")


if __name__ == "__main__":
    main()
