"""The disk boots of one ``doit boot``: the image built from the keyed base root and
``install.root``, then two QEMU runs on one qcow2 overlay (a power cycle between them): boot 1
must take xenpipe's entry and meet the plan's milestones; boot 2 must land in the known-good
entry when the entry was booted once (``[install] once``) or failed, else in xenpipe's again."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline import digest, proc
from pipeline.boot import probe
from pipeline.boot.disk import console, root
from pipeline.boot.disk.grub2 import Grub2
from pipeline.boot.disk.grub_legacy import MENUS, GrubLegacy
from pipeline.boot.disk.image import (
    DiskError,
    chroot,
    copy_tree,
    drive_argv,
    flatten,
    make_image,
    mounted,
    overlay,
    read_file,
    size_mb,
)
from pipeline.boot.milestone import Milestone, Milestones, milestones
from pipeline.boot.plan import BootPlan
from pipeline.boot.qemu import Session, boot_dir, file_identity, machine_argv, run_qemu
from pipeline.config import Config, display
from pipeline.install.bootloader import read_env
from pipeline.install.stage import entry_name
from pipeline.workspace import Workspace

BASE_VERSION = 2  # bump when the same inputs make a different base root
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


def _base(cfg: Config, ws: Workspace, plan: BootPlan, boot: Loader) -> tuple[Path, str]:
    """The base root (Debian's, :mod:`.root`, with the bootloader's files and the box's
    settings; for GRUB Legacy also the built kernel and the probe as its known-good entry's
    files; the distribution's Xen when none is built), built once per inputs. Returns it and
    Debian's kernel release."""
    legacy = boot.name != "grub2"
    kernel = plan.machine.images.kernel
    xen = cfg.boot.xen if cfg.xen is None else None  # the distribution's, as on the box
    key = digest.of_json([BASE_VERSION, boot.name, boot.version(), root.identity(),
                          legacy and file_identity(kernel), probe.identity(),
                          xen and file_identity(xen)])[:16]
    base = boot_dir(ws) / "disk" / f"base-{boot.name}-{key}"
    if (base / ".release").is_file():
        return base, (base / ".release").read_text()
    archive = root.archive(ws)
    tmp = base.with_name(base.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        root.unpack(archive, tmp, boot.log)
        rel = root.dress(tmp)
        boot.install_files(tmp)
        if legacy:
            shutil.copy2(kernel, tmp / "boot" / KNOWN_KERNEL)
            shutil.copy2(plan.machine.images.initrd, tmp / "boot" / KNOWN_INITRD)
        if xen is not None:
            shutil.copy2(xen, tmp / "boot" / xen.name)
        (tmp / ".release").write_text(rel)
        shutil.rmtree(base, ignore_errors=True)
        tmp.rename(base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in base.parent.glob(f"base-{boot.name}-*"):
        if old != base:
            shutil.rmtree(old, ignore_errors=True)
    return base, rel


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


def initramfs(where: Path, kernel: Path, log: Path) -> str:
    """The dom0 kernel's initramfs made by update-initramfs in the image's root (a chroot of
    the mounted image), as the box makes it; the root's initramfs-tools configuration runs
    xenpipe's probe (:data:`.root.PROBE_HOOK`). Returns the note that says so."""
    rel = kernel.name.removeprefix("vmlinuz-")
    if not (where / "lib/modules" / rel).is_dir():
        raise DiskError("update-initramfs (in the image's root)", f"install.root has no "
                        f"/lib/modules/{rel}: doit install did not install kernel {rel}")
    made = where / "boot" / f"initrd.img-{rel}"
    chroot(where, ["update-initramfs", "-u" if made.exists() else "-c", "-k", rel],
           "update-initramfs (in the image's root)", log)
    return (f"/boot/initrd.img-{rel}: update-initramfs -k {rel} in the image's root "
            f"({made.stat().st_size // 1024} KiB; its init-top runs the boot probe)")


@dataclass(frozen=True)
class Built:
    """The disk image as built: its menu's text, the known-good entry's title, notes."""

    image: Path
    menu: str
    known: str
    notes: list[str]


def build(cfg: Config, ws: Workspace, plan: BootPlan,
          boot: Loader) -> tuple[Path, str, list[str]]:
    """The disk image of the installed system (base root + install.root, the bootloader), its
    menu's text and notes on what stands in for what."""
    made = build_image(cfg, ws, plan, boot)
    return made.image, made.menu, made.notes


def build_image(cfg: Config, ws: Workspace, plan: BootPlan, boot: Loader) -> Built:
    """:func:`build`, with the known-good entry's title: GRUB 2's menu is made by the
    root's own grub-mkconfig in the mounted image, GRUB Legacy's is the root's file."""
    work = boot_dir(ws) / "disk"
    base, rel = _base(cfg, ws, plan, boot)
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    image = work / "disk.img"
    try:
        res = proc.run(["cp", "-a", "--", base, tree], log=boot.log, capture=True, check=False)
        if res.returncode != 0:
            raise DiskError("copying the base root (cp -a)", proc.last_line(res.stdout))
        (tree / ".release").unlink()
        copy_tree(cfg.install.root, tree)
        text = boot.menu(tree, KNOWN)
        notes = [] if text is None else _stand_ins(tree, text, plan.images.initrd)
        boot.layout = replace(boot.layout, size_mb=size_mb(tree), uuid=root.UUID)
        make_image(tree, image, boot.layout, boot.log, boot.boot_sectors(tree))
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    try:
        known = KNOWN_TITLE
        if isinstance(boot, Grub2):
            with mounted(image, boot.layout, work / "mnt", boot.log) as where:
                if cfg.install.initramfs == "update-initramfs":
                    notes.append(initramfs(where, plan.machine.images.kernel, boot.log))
                text = boot.configure(where)
                notes += _stand_ins(where, text, plan.images.initrd)
            known = boot.title_of(text, root.known_id(rel)) or root.known_id(rel)
        boot.setup(image)
    except BaseException:
        image.unlink(missing_ok=True)
        raise
    assert text is not None
    return Built(image, text, known, notes)


def identity(cfg: Config) -> str:
    """What the disk boot's outcome depends on beyond a direct boot's inputs, cheaply: every
    file of install.root (path, size, mtime), the bootloader, once and the disk root's
    packages and apt sources."""
    top = cfg.install.root
    files = sorted([str(p.relative_to(top)), *(file_identity(p) or [])[1:]]
                   for p in top.rglob("*") if p.is_file()) if top.is_dir() else []
    return digest.of_json([BASE_VERSION, cfg.install.bootloader, cfg.install.once, files,
                           root.identity()])


# the bootloader files a box's user or doit install owns: nothing but the one-shot mechanism
# (the state file) may change them
USER_FILES = ("/boot/grub/grub.cfg", *MENUS, "/boot/grub/grubenv", "/boot/grub/default",
              "/etc/default/grub", "/etc/default/grub.d/xenpipe.cfg", "/etc/grub.d/42_xenpipe")


def saved_state(image: Path, disk: Path, boot: Loader, log: Path,
                installed: Path | None = None) -> dict[str, Any]:
    """The bootloader's saved state as built and after the boots (read back from the
    overlay): GRUB 2's grubenv variables (GRUB clears next_entry when it boots the entry
    once), GRUB Legacy's /boot/grub/default number (savedefault writes it back); which of
    :data:`USER_FILES` the boots changed (``changed``: only the state file may be), and with
    *installed* (install.root), which of them the image holds other than as doit install
    wrote them (``differs_from_install``: the menu GRUB 2's grub-mkconfig made, nothing
    else)."""
    after = flatten(disk, disk.with_name("after.img"), log)
    menu = boot.menu_file or MENUS[0]
    try:
        both = {rel: (read_file(image, boot.layout, rel), read_file(after, boot.layout, rel))
                for rel in USER_FILES}
    finally:
        after.unlink(missing_ok=True)
    out: dict[str, Any] = {  # only the saved state may change
        "menu_unchanged": both[menu][0] == both[menu][1],
        "changed": [rel for rel, (b, a) in both.items() if b != a]}
    if installed is not None:
        def wrote(rel: str) -> bytes | None:
            f = installed / rel.lstrip("/")
            return f.read_bytes() if f.is_file() else None
        out["differs_from_install"] = [rel for rel, (b, _) in both.items()
                                       if wrote(rel) is not None and wrote(rel) != b]
    files = {"before": both[boot.state_file][0], "after": both[boot.state_file][1]}
    if boot.name == "grub2":
        return {**out, **{when: read_env(data) for when, data in files.items()}}
    return {**out, **{when: (data or b"").decode(errors="replace").split("\n", 1)[0]
                      .strip("\0 ") for when, data in files.items()}}


def known_good_steps(debian: bool = False) -> Milestones:
    """A plain Linux boot without Xen or pciback: of the probe (GRUB Legacy's known-good
    entry), or with *debian*, of Debian's kernel and initramfs, which mount the disk's root
    and run the box's init (GRUB 2's, from 10_linux)."""
    if not debian:
        return [[console.ENTRY], *(s for s in milestones(()) if s[0].name not in XEN_STEPS)]
    steps = milestones(())
    return [[console.ENTRY], *(s for s in steps if s[0].name == "Linux banner"),
            [Milestone("root from the disk", re.escape(root.UP),
                       "the known-good Linux did not bring the disk's root up",
                       "did Debian's initramfs find root=UUID=...? see the log")],
            *(s for s in steps if s[0].name == "power-off")]


def _judge(session: Session, want: str, xenpipe_title: str,
           known: str = KNOWN_TITLE) -> str | None:
    entries = console.entries(session.console)
    took = entries[0] if entries else None
    if took is None:
        return "the bootloader booted no entry"
    if want == "xenpipe" and took != xenpipe_title:
        return f"took `{took}', not xenpipe's entry"
    if want == "known-good" and took != known:
        return f"took `{took}', not the known-good entry `{known}'"
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
    made = build_image(cfg, ws, plan, boot)
    image, menu, notes = made.image, made.menu, made.notes
    title = boot.entry_title(menu, entry_name(cfg))
    if title is None:
        raise DiskError("the menu", f"{boot.menu_file or 'the GRUB Legacy menu'} has no "
                        f"xenpipe entry {entry_name(cfg)}: run `doit install`")
    results["image"] = {"path": display(image), "seconds": round(time.monotonic() - start, 2),
                        "bootloader": cfg.install.bootloader, "known_good": made.known,
                        "notes": notes}
    disk = overlay(image, boot_dir(ws) / "disk" / "run.qcow2", log)
    argv = machine_argv(plan.qemu, plan.machine.kvm, drive_argv(disk))
    first = run_qemu(argv, ws.log("boot"), [[console.ENTRY], *plan.steps], plan.timeout)
    boots = [DiskBoot(first, next(iter(console.entries(first.console)), None), "xenpipe",
                      _judge(first, "xenpipe", title, made.known))]
    want = "known-good" if cfg.install.once or boots[0].reason else "xenpipe"
    steps = (known_good_steps(isinstance(boot, Grub2)) if want == "known-good"
             else [[console.ENTRY], *plan.steps])
    second = run_qemu(argv, ws.log("boot-2"), steps, plan.timeout)
    boots.append(DiskBoot(second, next(iter(console.entries(second.console)), None), want,
                          _judge(second, want, title, made.known)))
    results["boots"] = [b.json() for b in boots]
    results["grubenv" if boot.name == "grub2" else "default"] = saved_state(
        image, disk, boot, log, cfg.install.root)
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
