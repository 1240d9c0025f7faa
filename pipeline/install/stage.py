"""What ``doit install`` puts into the root, as plan steps: Xen, the dom0 kernel and its
modules, the initramfs, the bootloader entry and the guest configs, after checking the root
and the passthrough devices. :func:`make_plan` has no side effects; :func:`install` prints
the plan or executes it (:mod:`pipeline.install.plan`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import build, digest, kernel, passthrough, pci, proc
from pipeline.build import modules
from pipeline.config import Config, display
from pipeline.errors import DeviceError, InstallError, XenpipeError
from pipeline.install import bootloader, guestcfg, initramfs
from pipeline.install.plan import STAGE, Plan, execute, file_digest
from pipeline.workspace import Key, Workspace


def check_root(cfg: Config) -> tuple[Path, bool]:
    """The install root and whether it is the running system (``/``: as root only)."""
    root = cfg.install.root
    live = os.path.realpath(root) == "/"
    if live and os.geteuid() != 0:
        raise InstallError(
            'install.root = "/" changes the running system\'s /boot and needs root (uid 0); '
            "run it as root on the test box, or install into a staging root (the default)"
        )
    if os.path.lexists(root) and not os.path.isdir(root):
        raise InstallError(f"install.root {root} exists and is not a directory")
    return root, live


def _version_key(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class Kernel:
    """The built dom0 kernel: release and artifacts in ``out/``."""

    release: str
    src: Path
    build: Path
    image: Path
    system_map: Path
    config: Path

    @property
    def modular(self) -> bool:
        return kernel.read_config(self.config).get("CONFIG_MODULES") == "y"


def find_kernel(cfg: Config, ws: Workspace) -> Kernel:
    """The kernel ``doit build`` left in ``out/`` (its release from the build directory)."""
    assert cfg.kernel is not None
    src = ws.source_dir(cfg.kernel.source).resolve()
    build_dir = build.kernel_build_dir(ws)
    release = ws.state(Key.build("kernel")).get("release")  # what doit build recorded
    relfile = build_dir / "include" / "config" / "kernel.release"
    if not release and relfile.is_file():
        release = relfile.read_text().strip() or None
    if release is None:
        images = sorted(ws.out.glob("vmlinuz-*"))
        if len(images) == 1:
            release = images[0].name.removeprefix("vmlinuz-")
    if release is None:
        raise InstallError(f"no built kernel in {ws.out}: run `doit build` first")
    arts = {n: ws.out / f"{n}-{release}" for n in ("vmlinuz", "System.map", "config")}
    missing = [p.name for p in arts.values() if not p.is_file()]
    if missing:
        raise InstallError(f"{', '.join(missing)} missing from {ws.out}: run `doit build` first")
    return Kernel(release, src, build_dir, arts["vmlinuz"], arts["System.map"], arts["config"])


def _modules_id(k: Kernel) -> dict[str, Any]:
    """A cheap fingerprint of the built modules: modules.order and each listed module's
    size and mtime (no walk of the tree)."""
    order = k.build / "modules.order"
    ident: dict[str, Any] = {"image": file_digest(k.image)}
    if order.is_file():
        names = order.read_text().split()
        ident["order"] = file_digest(order)
        stats = []
        for name in names:
            ko = k.build / re.sub(r"\.o$", ".ko", name)
            try:
                st = ko.stat()
                stats.append((name, st.st_size, st.st_mtime_ns))
            except OSError:
                stats.append((name, None, None))
        ident["modules"] = digest.of_json(stats)
    return ident


def xen_version(tree: Path, make_args: Sequence[str]) -> str | None:
    """XEN_FULLVERSION of a Xen tree: ``make xenversion`` (current trees), else the variable
    as the 2009 xen/Makefile computes it."""
    xen = tree / "xen"
    if not (xen / "Makefile").is_file():
        return None
    tries = (["xenversion"], ["--eval=xenpipe-version: ; @echo $(XEN_FULLVERSION)",
                              "xenpipe-version"])
    for goal in tries:
        res = proc.run(["make", "-s", "--no-print-directory", "-C", xen, *make_args, *goal],
                       capture=True, check=False, timeout=120)
        lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
        if res.returncode == 0 and lines and re.fullmatch(r"\d+\.\d+[\w.+~-]*", lines[-1]):
            return lines[-1]
    return None


def _has_target(makefile: Path, target: str) -> bool:
    try:
        text = makefile.read_text(errors="replace")
    except OSError:
        return False
    return re.search(rf"^{re.escape(target)}\s*:", text, re.M) is not None


def plan_xen(cfg: Config, ws: Workspace, plan: Plan) -> tuple[str, str]:
    """Xen into /boot; returns the hypervisor's file (relative to /boot) and version."""
    if cfg.xen is None:
        return _distribution_xen(cfg, plan)
    tree = ws.source_dir(cfg.xen.source)
    gz = ws.out / "xen.gz"
    if not gz.is_file():
        raise InstallError(f"xen.gz missing from {ws.out}: run `doit build` first")
    version = xen_version(tree, cfg.xen.make_args)
    if version is None:
        raise InstallError(f"cannot tell the Xen version of {tree} (no xen/Makefile with "
                           "XEN_FULLVERSION): run `doit fetch` and `doit build`")
    name = f"xen-{version}.gz"
    if _has_target(tree / "Makefile", "install-xen"):
        plan.run(["make", "-C", tree, *cfg.xen.make_args,
                  *build.make_vars(cfg, cfg.xen.make_args), *build.xen_built_stamp(ws),
                  "install-xen",
                  f"DESTDIR={plan.root}"],
                 "Xen: make install-xen", key="xen", inputs=[file_digest(gz), version],
                 outputs=[f"/boot/{name}"], writes=["/boot", "/usr"])
    else:
        plan.copy(gz, f"/boot/{name}", f"Xen {version}: hypervisor")
        syms = ws.out / "xen-syms"
        if syms.is_file():
            plan.copy(syms, f"/boot/xen-syms-{version}", f"Xen {version}: symbols")
        m = re.match(r"(\d+)\.(\d+)", version)
        shorts = [f"{m[1]}.{m[2]}", m[1], ""] if m else [""]
        for short in dict.fromkeys(shorts):
            link = f"xen-{short}.gz" if short else "xen.gz"
            if link != name:
                plan.link(f"/boot/{link}", name, f"Xen: /boot/{link} -> {name}")
    plan.summary.append(f"Xen {version}: /boot/{name}")
    return name, version


def _distribution_xen(cfg: Config, plan: Plan) -> tuple[str, str]:
    """No [xen]: the entry boots [boot] xen, else the newest hypervisor in <root>/boot."""
    if cfg.boot.xen is not None:
        target = Path("/") / cfg.boot.xen
        if not target.is_relative_to("/boot"):
            raise InstallError(f"[boot] xen = {cfg.boot.xen}: the bootloader entry needs a "
                               "hypervisor under /boot")
        rel = str(target.relative_to("/boot"))
        if not plan.exists(str(target)):
            plan.note(f"the entry boots {target} ([boot] xen), which {plan.root} lacks: the "
                      "target system must have it (e.g. Debian's xen-hypervisor package)")
    else:
        boot = plan.path("/boot")
        found = sorted((p.name for p in boot.glob("xen-*.gz")
                        if not p.is_symlink() and not p.name.startswith("xen-syms")),
                       key=_version_key) if boot.is_dir() else []
        if not found:
            raise InstallError(f"no [xen] to install and no xen-*.gz in {boot}: set [boot] xen "
                               "to the distribution's hypervisor (e.g. /boot/xen-4.17-amd64.gz)")
        rel = found[-1]
    version = re.sub(r"^xen-|\.gz$", "", Path(rel).name) or rel
    plan.summary.append(f"Xen: the distribution's /boot/{rel} (no [xen] to build)")
    return rel, version


def plan_kernel(cfg: Config, ws: Workspace, plan: Plan) -> Kernel:
    """Kernel image, System.map and config into /boot; modules_install; depmod."""
    assert cfg.kernel is not None
    k = find_kernel(cfg, ws)
    r = k.release
    for src, what in ((k.image, "image"), (k.system_map, "System.map"), (k.config, "config")):
        plan.copy(src, f"/boot/{src.name}", f"kernel {r}: {what}")
    plan.summary.append(f"dom0 kernel {r}: /boot/vmlinuz-{r}")
    if not k.modular:
        plan.note(f"kernel {r} has no loadable modules (CONFIG_MODULES is off): no "
                  "modules_install, no depmod")
        return k
    moddir = f"/lib/modules/{r}"
    argv = modules.modules_install_argv(cfg, k.src, k.build, plan.root)
    plan.run(argv, f"kernel {r}: make modules_install", key="modules_install",
             inputs=[argv, _modules_id(k)], outputs=[moddir], writes=["/lib/modules"])
    plan.run(modules.depmod_argv(plan.root, plan.root / "boot" / k.system_map.name, r),
             f"kernel {r}: depmod", key="depmod", inputs=[r, file_digest(k.system_map)],
             outputs=[f"{moddir}/modules.dep"],
             after=["modules_install", f"/boot/{k.system_map.name}"])
    return k


def plan_initramfs(cfg: Config, plan: Plan, k: Kernel) -> str | None:
    """The initramfs for the kernel; returns its file in /boot (None: no initramfs)."""
    tool = initramfs.choose(cfg.install.initramfs, plan.root, plan.live)
    if tool is None:
        if cfg.install.initramfs == "auto":
            plan.note(f"initramfs = auto: {plan.root} has none of "
                      f"{', '.join(initramfs.AUTO_ORDER)}; no initramfs, the entry has no "
                      "initrd line (the dom0 kernel must mount / by itself)")
        plan.summary.append("initramfs: none")
        return None
    image = tool.image(k.release)
    plan.summary.append(f"initramfs: {tool.name}, /boot/{image}")
    argv = tool.argv(k.release, plan.exists(f"/boot/{image}"))
    if not plan.live:
        plan.note(f"initramfs: {tool.name} builds for the system it runs on, not for a "
                  f"staging root, so it is not run here; on the target run: "
                  f"{proc.render(argv)}")
        return image
    plan.run(argv, f"initramfs: {tool.name}", key="initramfs",
             inputs=[argv, file_digest(k.image)], outputs=[f"/boot/{image}"],
             after=["modules_install", "depmod", f"/boot/{k.image.name}"],
             backups=[f"/boot/{image}"])
    return image


def devices(cfg: Config, plan: Plan, box: pci.Box | None = None) -> pci.Topology | None:
    """The PCI topology of the box examined (*box*, None: this machine's), after refusing
    devices the running system needs (pci.py's guard).

    On the box itself (the running system ``/``, the target's copy, a recorded tree) every
    device must be present; this build host's sysfs for a staging root may be another
    machine's, so a device absent there is only noted."""
    there = box.is_target if box is not None else plan.live
    try:
        topo = (pci.scan(box.sysfs, box.whence) if box is not None else pci.scan())
    except XenpipeError as exc:
        if there:
            raise
        plan.note(f"device check skipped: {exc}")
        return None
    proc = box.proc if box is not None else None
    if there:
        pci.check_passthrough(cfg.passthrough.devices, topo, proc,
                              allow_system_devices=cfg.install.allow_system_devices)
        return topo
    needs = pci.system_devices(topo, proc)
    for entry, bdfs in pci.resolve_devices(cfg.passthrough.devices, topo).items():
        for b in bdfs:
            if topo.get(b) is None:
                plan.note(f"passthrough device {entry} is not on this machine ({topo.sysfs}): "
                          "fine if the staging root is for another one")
            elif b in needs and not cfg.install.allow_system_devices:
                raise DeviceError(
                    f"passthrough.devices: {b} {needs[b]}, so dom0 needs it; remove it from "
                    "passthrough.devices or set install.allow_system_devices = true")
    return topo


def entry_name(cfg: Config) -> str:
    """The name of this config's bootloader entry (its markers and id): the config file's."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", cfg.path.stem)


def make_plan(cfg: Config, ws: Workspace, box: pci.Box | None = None) -> Plan:
    """Everything an install would do, checked, without changing anything; device paths
    resolved on *box* (the box examined; None: this machine)."""
    root, live = check_root(cfg)
    if cfg.kernel is None:
        raise InstallError("no [kernel] configured: there is no dom0 kernel to install")
    state = ws.state(STAGE).get("roots", {}).get(os.path.realpath(root), {})
    plan = Plan(root, live, state)
    topo = devices(cfg, plan, box)
    guest_bdfs = guestcfg.check(cfg, topo)
    flavour = passthrough.flavour(cfg, ws)
    dom0 = passthrough.dom0_cmdline(cfg, flavour, topo)
    xen_file, xen_ver = plan_xen(cfg, ws, plan)
    k = plan_kernel(cfg, ws, plan)
    initrd = plan_initramfs(cfg, plan, k)
    entry = bootloader.Entry(
        name=entry_name(cfg), xen_version=xen_ver, release=k.release, xen=xen_file,
        xen_args=passthrough.xen_cmdline(cfg), kernel=k.image.name, kernel_args=dom0,
        initrd=initrd,
    )
    plan.summary.append(f"dom0 flavour {flavour}: {dom0}")
    bootloader.plan(cfg.install.bootloader, plan, entry, cfg.install.once)
    for guest in cfg.guests:
        guestcfg.plan(plan, guest, guest_bdfs[guest.name], display(cfg.path))
    return plan


def install(cfg: Config, ws: Workspace, dry_run: bool = False,
            box: pci.Box | None = None) -> dict[str, Any]:
    """``doit install``: plan, then print the plan (``--dry-run``) or carry it out."""
    plan = make_plan(cfg, ws, box)
    if dry_run:
        print(plan.render(), flush=True)
    else:
        execute(plan, ws)
        if not plan.steps:
            print(f"install: nothing to do, {plan.root} is up to date", flush=True)
        for text in plan.notes:
            print(f"note: {text}", flush=True)
    return {"root": str(plan.root), "dry_run": dry_run,
            "steps": [s.what for s in plan.steps], "notes": plan.notes}



def missing_artifacts(cfg: Config, ws: Workspace) -> list[str]:
    """The build results an install needs that ``out/`` lacks (``<release>`` while no
    kernel was ever built), as the user would look for them."""
    missing = [ws.out / "xen.gz"] if cfg.xen is not None else []
    if cfg.kernel is not None:
        release = ws.state(Key.build("kernel")).get("release")
        missing += [ws.out / f"{n}-{release or '<release>'}"
                    for n in ("vmlinuz", "System.map", "config")]
    return [display(p) for p in missing if "<release>" in p.name or not p.is_file()]


def dry_run(cfg: Config, ws: Workspace, stale: Sequence[str],
            box: pci.Box | None = None, checks: str = "") -> dict[str, Any]:
    """``doit install --dry-run``: changes nothing anywhere, not even the workspace (no
    fetch, no build). First what a real install would build first (*stale*: the stage
    tasks that are not up to date), the device *checks* the task made, then the plan: in
    full when every artifact is there, else what is known of it, naming the artifacts that
    do not exist yet."""
    print("install: dry run: " + (f"would build first: {', '.join(stale)}" if stale
                                  else "the build is up to date"), flush=True)
    if checks:  # the go/no-go per device the task made, on the box examined
        print(checks, flush=True)
    missing = missing_artifacts(cfg, ws)
    if not missing:
        return install(cfg, ws, dry_run=True, box=box)
    root, live = check_root(cfg)
    where = "the running system (/)" if live else f"staging root {root}"
    lines = [f"xenpipe install plan for {where} (partial: nothing is built yet)",
             f"  not built yet: {', '.join(missing)}",
             *([f"  Xen: make install-xen from {display(ws.source_dir(cfg.xen.source))} "
                "into /boot"] if cfg.xen is not None else []),
             *(["  dom0 kernel: image, System.map and config into /boot, modules_install, "
                "depmod"] if cfg.kernel is not None else []),
             f"  initramfs: {cfg.install.initramfs}",
             f"  bootloader: {cfg.install.bootloader} entry {entry_name(cfg)!r} "
             f"(xen: {passthrough.xen_cmdline(cfg)}; once = {str(cfg.install.once).lower()})",
             *(f"  guest {g.name}: {g.config}" for g in cfg.guests)]
    print("\n".join(lines), flush=True)
    return {"root": str(root), "dry_run": True, "missing": missing, "stale": list(stale)}
