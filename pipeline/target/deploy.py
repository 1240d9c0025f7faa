"""``doit install`` with ``[target]``: the plan is staged as today into a local staging root
(``<workspace>/target/<box>/root``), then what changed there goes to the box over ssh and the
box runs what only it can run (:mod:`pipeline.target.box`).

"What changed" is decided against the box itself: one ssh command reports the sha256 (or
symlink target) of every staged path on the box, and only the paths that differ travel, in
one tar stream. A box file that differs from what xenpipe last sent gets a timestamped backup
on the box before it is replaced. When nothing travelled and the box steps of the last
install finished, a second install runs nothing on the box.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import digest, pci, proc
from pipeline.config import Config
from pipeline.install import initramfs, stage
from pipeline.install.plan import execute
from pipeline.target import box
from pipeline.target.ssh import Ssh
from pipeline.workspace import Workspace

STATE = "target"


def slug(dest: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "-", dest)


def staging_root(ws: Workspace, dest: str) -> Path:
    return ws.dir / "target" / slug(dest) / "root"


def staged(cfg: Config, ws: Workspace) -> Config:
    """*cfg* with ``[install] root`` set to the box's staging root."""
    assert cfg.target is not None
    root = staging_root(ws, cfg.target.ssh)
    return dataclasses.replace(cfg, install=dataclasses.replace(cfg.install, root=root))


def local_files(root: Path) -> dict[str, str]:
    """Every file and symlink of the staging root that goes to the box, with what it holds
    (sha256, or ``L <target>``); the box's own files (:data:`box.BOX_OWNED`) stay out."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames
                                        if os.path.islink(os.path.join(dirpath, d))]):
            full = os.path.join(dirpath, name)
            rel = "/" + os.path.relpath(full, root)
            if box.BOX_OWNED.search(rel):
                continue
            out[rel] = (f"L {os.readlink(full)}" if os.path.islink(full)
                        else digest.of_file(Path(full)))
    return out


def box_steps(cfg: Config, ws: Workspace, ssh: Ssh | None) -> list[box.BoxStep]:
    """The box's commands for this config (*ssh*: ask the box which initramfs tool it has;
    None, for --dry-run: show the probe instead)."""
    k = stage.find_kernel(cfg, ws)
    steps = [box.depmod(k.release)] if k.modular else []
    tool = cfg.install.initramfs
    if tool == "auto":
        if ssh is None:
            steps.append(box.BoxStep("initramfs: the first tool the box has",
                                     box.initramfs_probe()))
            tool = "none"
        else:
            found = ssh.run(box.initramfs_probe(), "find the initramfs tool").stdout.split()
            tool = found[0] if found else "none"
    if tool != "none":
        image = initramfs.TOOLS[tool].image(k.release)
        exists = ssh is not None and bool(ssh.digests([f"/boot/{image}"]))
        steps.append(box.initramfs_step(tool, k.release, exists))
    steps += box.bootloader_steps(cfg, stage.entry_name(cfg))
    return steps


def deploy(cfg: Config, ws: Workspace, dry_run: bool = False,
           seen: pci.Box | None = None, checks: str = "") -> dict[str, Any]:
    """``doit install`` to ``[target]``: stage, transfer what changed, run the box steps;
    device paths resolved on *seen* (the target's /sys, see examine.py); a dry run
    prints the device *checks* the task made with the plan."""
    assert cfg.target is not None
    scfg = staged(cfg, ws)
    ssh = Ssh.of(cfg.target, ws.log(STATE))
    plan = stage.make_plan(scfg, ws, seen)
    if dry_run:
        if checks:
            print(checks, flush=True)
        print(plan.render(), flush=True)
        print(f"then on {cfg.target.ssh}: compare the staged files with the box's (sha256 "
              "over ssh), transfer only those that differ (tar over ssh), then run:", flush=True)
        for step in box_steps(cfg, ws, None):
            print(f"  {step.what}\n       $ {proc.render(ssh.argv(step.argv))}", flush=True)
        return {"target": cfg.target.ssh, "dry_run": True,
                "steps": [s.what for s in plan.steps]}
    execute(plan, ws)
    start = time.monotonic()
    root = scfg.install.root
    state = ws.state(STATE)
    record = state.setdefault("boxes", {}).setdefault(cfg.target.ssh, {"sent": {}})
    files = local_files(root)
    remote = ssh.digests(list(files))
    changed = [rel for rel, held in files.items() if remote.get(rel) != held]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    backups = {rel: f"{rel}.xenpipe-{stamp}.bak" for rel in changed
               if rel in remote and not remote[rel].startswith("L ")
               and remote[rel] != record["sent"].get(rel)}
    ran: list[str] = []
    if changed or record.get("pending"):
        steps = box_steps(cfg, ws, ssh)  # before anything changes: a failed probe stops here
        record["pending"] = True
        ws.save_state(STATE, state)
        if changed:
            print(f"install: {cfg.target.ssh}: transferring {len(changed)} changed file(s)"
                  + (f", {len(backups)} backed up on the box" if backups else ""), flush=True)
            ssh.put(root, changed, backups, root.parent)
            record["sent"].update({rel: files[rel] for rel in changed})
            ws.save_state(STATE, state)
            print(f"install: {cfg.target.ssh}: transferred in {time.monotonic() - start:.0f} s",
                  flush=True)
        for n, step in enumerate(steps, 1):
            print(f"install: {cfg.target.ssh} [{n}/{len(steps)}] {step.what}", flush=True)
            ssh.run(step.argv, step.what)
            ran.append(step.what)
        record["pending"] = False
        ws.save_state(STATE, state)
        print(f"install: {cfg.target.ssh}: deployed in {time.monotonic() - start:.0f} s",
              flush=True)
    else:
        print(f"install: nothing to do, {cfg.target.ssh} is up to date", flush=True)
    return {"target": cfg.target.ssh, "dry_run": False, "transferred": changed,
            "backups": backups, "ran": ran, "steps": [s.what for s in plan.steps]}
