"""The disk boots of one ``doit boot``: the image built from the keyed base root and
``install.root``, then two QEMU runs on one qcow2 overlay (a power cycle between them): boot 1
must take xenpipe's entry and meet the plan's milestones; boot 2 must land in the known-good
entry when the entry was booted once (``[install] once``) or failed, else in xenpipe's again."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import digest, proc
from pipeline.boot import probe
from pipeline.boot.disk import console
from pipeline.boot.disk.grub2 import Grub2
from pipeline.boot.disk.grub_legacy import MENUS, GrubLegacy
from pipeline.boot.disk.image import (
    DiskError,
    copy_tree,
    drive_argv,
    flatten,
    make_image,
    need,
    overlay,
    read_file,
)
from pipeline.boot.milestone import Milestones, milestones
from pipeline.boot.plan import BootPlan
from pipeline.boot.qemu import Session, boot_dir, file_identity, machine_argv, run_qemu
from pipeline.config import Config, display
from pipeline.install.bootloader import GRUB_DIR, read_env
from pipeline.install.stage import entry_name
from pipeline.workspace import Workspace

BASE_VERSION = 1  # bump when the same inputs make a different base root
KNOWN_KERNEL = "vmlinuz-known-good"
KNOWN_INITRD = "initrd.img-known-good"
KNOWN_TITLE = "Known good: Linux without Xen"
XEN_STEPS = ("Xen banner", "Xen IOMMU", "dom0 construction")
_FILES = re.compile(r"^\s*(?:module2?|initrd|linux|kernel)\s+(/boot/\S+)", re.M)


@dataclass(frozen=True)
class DiskBoot:
    """What one boot from the disk took and how it ended."""

    session: Session
    entry: str | None  # the title the bootloader printed
    want: str  # what this boot had to land in: "xenpipe" or "known-good"
    reason: str | None  # None: passed

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entry": self.entry,
                               "xen": console.started_xen(self.session.console),
                               "verdict": "pass" if self.reason is None else "fail",
                               "console": display(self.session.log),
                               "seconds": round(self.session.seconds, 2)}
        if self.reason is not None:
            out["reason"] = self.reason
        return out


Loader = Grub2 | GrubLegacy
LOADERS: dict[str, type[Loader]] = {"grub2": Grub2, "grub-legacy": GrubLegacy}
KNOWN = (KNOWN_KERNEL, KNOWN_INITRD, KNOWN_TITLE)


def loader(cfg: Config, ws: Workspace, log: Path) -> Loader:
    """The bootloader ``[install] bootloader`` names, to install into the image."""
    kind = LOADERS.get(cfg.install.bootloader)
    if kind is None:
        raise DiskError("the bootloader", f'[boot] via = "disk" boots through the bootloader '
                        f'doit install set up; [install] bootloader = '
                        f'"{cfg.install.bootloader}" sets up none')
    return kind(boot_dir(ws) / "disk", log)


def _base(cfg: Config, ws: Workspace, plan: BootPlan, boot: Loader) -> Path:
    """The base root (the bootloader's files, the known-good Linux, the distribution's Xen
    when none is built), built once per inputs."""
    kernel = plan.machine.images.kernel
    xen = cfg.boot.xen if cfg.xen is None else None  # the distribution's, as on the box
    key = digest.of_json([BASE_VERSION, boot.name, boot.version(), file_identity(kernel),
                          probe.identity(), xen and file_identity(xen)])[:16]
    base = boot_dir(ws) / "disk" / f"base-{boot.name}-{key}"
    if base.is_dir():
        return base
    tmp = base.with_name(base.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "boot").mkdir(parents=True)
        (tmp / "etc" / "default").mkdir(parents=True)
        boot.install_files(tmp)
        shutil.copy2(kernel, tmp / "boot" / KNOWN_KERNEL)
        shutil.copy2(plan.machine.images.initrd, tmp / "boot" / KNOWN_INITRD)
        if xen is not None:
            shutil.copy2(xen, tmp / "boot" / xen.name)
        tmp.rename(base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in base.parent.glob(f"base-{boot.name}-*"):
        if old != base:
            shutil.rmtree(old, ignore_errors=True)
    return base


def _stand_ins(tree: Path, cfg_text: str, initrd: Path) -> list[str]:
    """Files the menu loads that the root lacks: an initramfs that ``doit install`` only named
    (a staging root runs no initramfs tool) gets the boot probe, which stands in for it."""
    notes = []
    for rel in dict.fromkeys(_FILES.findall(cfg_text)):
        dest = tree / rel.lstrip("/")
        if not dest.exists() and "initr" in dest.name:
            shutil.copy2(initrd, dest)
            notes.append(f"{rel}: the boot probe (doit install named it, ran no initramfs tool)")
    return notes


def build(cfg: Config, ws: Workspace, plan: BootPlan,
          boot: Loader) -> tuple[Path, str, list[str]]:
    """The disk image of the installed system (base root + install.root, the bootloader), its
    menu's text and notes on what stands in for what."""
    work = boot_dir(ws) / "disk"
    base = _base(cfg, ws, plan, boot)
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    image = work / "disk.img"
    try:
        shutil.copytree(base, tree, symlinks=True)
        copy_tree(cfg.install.root, tree)
        text = boot.menu(tree, KNOWN)
        if boot.menu_file is not None:
            (tree / boot.menu_file.lstrip("/")).write_text(text)
        notes = _stand_ins(tree, text, plan.images.initrd)
        env = tree / GRUB_DIR.lstrip("/") / "grubenv"
        if boot.name == "grub2" and not env.is_file():  # save_env needs the file
            proc.run([need("grub-editenv", "grub-common"), env, "create"], log=boot.log,
                     error=DiskError)
        make_image(tree, image, boot.layout, boot.log, boot.boot_sectors())
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    try:
        boot.setup(image)
    except BaseException:
        image.unlink(missing_ok=True)
        raise
    return image, text, notes


def identity(cfg: Config) -> str:
    """What the disk boot's outcome depends on beyond a direct boot's inputs, cheaply: every
    file of install.root (path, size, mtime), the bootloader and once."""
    root = cfg.install.root
    files = sorted([str(p.relative_to(root)), *(file_identity(p) or [])[1:]]
                   for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return digest.of_json([BASE_VERSION, cfg.install.bootloader, cfg.install.once, files])


def saved_state(image: Path, disk: Path, boot: Loader, log: Path) -> dict[str, Any]:
    """The bootloader's saved state as built and after the boots (read back from the
    overlay): GRUB 2's grubenv variables (GRUB clears next_entry when it boots the entry
    once), GRUB Legacy's /boot/grub/default number (savedefault writes it back)."""
    after = flatten(disk, disk.with_name("after.img"), log)
    menu = boot.menu_file or MENUS[0]
    try:
        files = {when: read_file(img, boot.layout, boot.state_file)
                 for when, img in (("before", image), ("after", after))}
        same = read_file(image, boot.layout, menu) == read_file(after, boot.layout, menu)
    finally:
        after.unlink(missing_ok=True)
    out: dict[str, Any] = {"menu_unchanged": same}  # only the saved state may change
    if boot.name == "grub2":
        return {**out, **{when: read_env(data) for when, data in files.items()}}
    return {**out, **{when: (data or b"").decode(errors="replace").split("\n", 1)[0]
                      .strip("\0 ") for when, data in files.items()}}


def known_good_steps() -> Milestones:
    """A plain Linux boot of the probe: no Xen, no pciback."""
    return [[console.ENTRY], *(s for s in milestones(()) if s[0].name not in XEN_STEPS)]


def _judge(session: Session, want: str, xenpipe_title: str) -> str | None:
    entries = console.entries(session.console)
    took = entries[0] if entries else None
    if took is None:
        return "the bootloader booted no entry"
    if want == "xenpipe" and took != xenpipe_title:
        return f"took `{took}', not xenpipe's entry"
    if want == "known-good" and took != KNOWN_TITLE:
        return f"took `{took}', not the known-good entry `{KNOWN_TITLE}'"
    w = session.watch
    if not w.ok:
        assert w.missed is not None
        return f"{w.missed.missed} ({w.reason})"
    return None


def run(cfg: Config, ws: Workspace, plan: BootPlan,
        results: dict[str, Any]) -> tuple[Session, list[str]]:
    """Build the image, boot it twice; *results* gets ``image`` and ``boots``. Returns boot
    1's session (which the stage verifies as it does a direct boot) and the problems of the
    boots after it."""
    log = ws.log("boot-disk")
    log.unlink(missing_ok=True)
    start = time.monotonic()
    boot = loader(cfg, ws, log)
    image, menu, notes = build(cfg, ws, plan, boot)
    title = boot.entry_title(menu, entry_name(cfg))
    if title is None:
        raise DiskError("the menu", f"{boot.menu_file or 'the GRUB Legacy menu'} has no "
                        f"xenpipe entry {entry_name(cfg)}: run `doit install`")
    results["image"] = {"path": display(image), "seconds": round(time.monotonic() - start, 2),
                        "bootloader": cfg.install.bootloader, "notes": notes}
    disk = overlay(image, boot_dir(ws) / "disk" / "run.qcow2", log)
    argv = machine_argv(plan.qemu, plan.machine.kvm, drive_argv(disk))
    first = run_qemu(argv, ws.log("boot"), [[console.ENTRY], *plan.steps], plan.timeout)
    boots = [DiskBoot(first, next(iter(console.entries(first.console)), None), "xenpipe",
                      _judge(first, "xenpipe", title))]
    want = "known-good" if cfg.install.once or boots[0].reason else "xenpipe"
    steps = known_good_steps() if want == "known-good" else [[console.ENTRY], *plan.steps]
    second = run_qemu(argv, ws.log("boot-2"), steps, plan.timeout)
    boots.append(DiskBoot(second, next(iter(console.entries(second.console)), None), want,
                          _judge(second, want, title)))
    results["boots"] = [b.json() for b in boots]
    results["grubenv" if boot.name == "grub2" else "default"] = saved_state(image, disk, boot,
                                                                         log)
    problems = [f"boot {i} {b.reason}" for i, b in enumerate(boots, 1)
                if b.reason and (i > 1 or b.session.watch.ok)]  # a missed milestone: the stage's
    if boots[0].reason and not boots[1].reason:
        problems.append(f"boot 2 (power cycle) came back in `{boots[1].entry}'")
    return first, problems


def summary(results: dict[str, Any]) -> str:
    """The disk boots in the one-line summary: each boot's entry and verdict ("" without)."""
    done = results.get("boots") or []
    return "".join(f"; boot {i}: `{b.get('entry')}' {b.get('verdict')}"
                   for i, b in enumerate(done, 1))
