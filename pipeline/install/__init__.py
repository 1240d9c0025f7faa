"""``doit install``: Xen, the dom0 kernel and its modules, the initramfs, the bootloader entry
and the guest configs, into ``[install] root``.

One code path: :func:`make_plan` reads the workspace and the root and builds a :class:`Plan`, an
ordered list of writes, copies, links and commands, each already compared with what the root
holds; ``--dry-run`` prints it (diffs and argv), otherwise :func:`execute` carries it out. A step
whose result is already in place is not in the plan, so a second install with nothing changed
does nothing at all: no command runs, no file (not even a backup) is touched.

Safety: every path is resolved (symlinks included) and must stay inside the root; files are
written atomically; a file that changes and is not wholly xenpipe's own gets a timestamped
backup next to it; xenpipe edits only its own marked blocks and deletes nothing.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import build as build_mod
from pipeline import digest, pci, proc
from pipeline import kernel as kconfig
from pipeline import passthrough as cmdline
from pipeline.config import Config, display
from pipeline.errors import DeviceError, InstallError, XenpipeError
from pipeline.files import atomic_write
from pipeline.install import bootloader, initramfs
from pipeline.install import guestcfg as guests
from pipeline.workspace import Key, Workspace

STAGE = Key.INSTALL
MAKE_TIMEOUT = 3600.0
TOOL_TIMEOUT = 900.0


def file_digest(path: Path) -> str | None:
    """sha256 of a file, ``dir`` for a directory, None when absent."""
    if path.is_dir():
        return "dir"
    try:
        return digest.of_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


# ------------------------------------------------------------------------------ the plan
@dataclass
class Write:
    """Write *data* to *rel* (atomically), backing up the old content to *backup* first."""

    rel: str
    data: bytes
    what: str
    mode: int | None
    old: bytes | None
    backup: str | None


@dataclass
class Copy:
    """Copy the build artifact *src* to *rel* (atomically, with a backup as for Write)."""

    src: Path
    rel: str
    what: str
    mode: int
    exists: bool
    backup: str | None


@dataclass
class Link:
    """Point the symlink *rel* at *target* (replacing an older symlink, never a file)."""

    rel: str
    target: str
    what: str
    old: str | None


@dataclass
class Run:
    """Run *argv*; afterwards each of *outputs* must exist and is recorded for the next plan."""

    argv: list[str]
    what: str
    key: str
    inputs: str
    outputs: tuple[str, ...]
    cwd: Path | None
    backups: tuple[tuple[str, str], ...]  # (file, backup) pairs made before it runs


Step = Write | Copy | Link | Run


@dataclass
class Plan:
    """What an install does to *root*, in order; built without side effects."""

    root: Path
    live: bool
    record: dict[str, Any]  # what the last install into this root left: files and runs
    stamp: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    pending: dict[str, bytes] = field(default_factory=dict)
    scheduled: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.real = Path(os.path.realpath(self.root))
        self.record.setdefault("files", {})
        self.record.setdefault("runs", {})

    # paths ------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        """The real path of *rel* (a path on the target, e.g. ``/boot/grub/grub.conf``),
        symlinks resolved; refuses one that leaves the root."""
        p = self.root / rel.lstrip("/")
        real = Path(os.path.realpath(p))
        if real != self.real and not real.is_relative_to(self.real):
            raise InstallError(
                f"refusing to write {p}: it resolves to {real}, outside install.root {self.root}"
            )
        return real

    def rel(self, rel: str) -> str:
        """*rel* as the real file it names (``menu.lst`` -> ``grub.conf``), root-relative."""
        inner = self.path(rel).relative_to(self.real)
        return "/" if inner == Path(".") else f"/{inner}"

    def show(self, rel: str) -> str:
        return rel if self.live else f"{rel} (in {self.root})"

    def read(self, rel: str) -> bytes | None:
        """What *rel* holds once the steps planned so far have run (None: no such file)."""
        key = self.rel(rel)
        if key in self.pending:
            return self.pending[key]
        try:
            return self.path(rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def exists(self, rel: str) -> bool:
        return self.rel(rel) in self.pending or os.path.lexists(self.path(rel))

    # steps ------------------------------------------------------------------------------
    def _backup(self, rel: str, old: bytes | None, owned: bool) -> str | None:
        """A backup name for *rel*, unless it is new, or wholly xenpipe's and unchanged
        since xenpipe wrote it."""
        if old is None or (owned and self.record["files"].get(rel) == digest.of_bytes(old)):
            return None
        return self._backup_name(rel)

    def _backup_name(self, rel: str) -> str:
        """``<file>.xenpipe-<UTC time>.bak``, unique."""
        taken = {s.backup for s in self.steps if isinstance(s, Write | Copy)}
        taken |= {b for s in self.steps if isinstance(s, Run) for _, b in s.backups}
        n, name = 1, f"{rel}.xenpipe-{self.stamp}.bak"
        while name in taken or os.path.lexists(self.path(name)):
            n += 1
            name = f"{rel}.xenpipe-{self.stamp}-{n}.bak"
        return name

    def write(self, rel: str, data: str | bytes, what: str, *, owned: bool,
              mode: int | None = None) -> bool:
        """Plan writing *data* to *rel* unless it already holds exactly that. *owned*: the
        whole file is xenpipe's (no backup when it still holds what xenpipe last wrote)."""
        raw = data.encode(errors="surrogateescape") if isinstance(data, str) else data
        rel = self.rel(rel)
        old = self.read(rel)
        on_disk = self.path(rel)
        if old == raw and (mode is None or not on_disk.exists()
                           or on_disk.stat().st_mode & 0o7777 == mode):
            return False
        if os.path.isdir(on_disk):
            raise InstallError(f"{self.show(rel)} is a directory; xenpipe wants to write a file")
        self.pending[rel] = raw
        self.scheduled.add(rel)
        existing = next((s for s in self.steps if isinstance(s, Write) and s.rel == rel), None)
        if existing is not None:  # a second change to the same file: one write
            existing.data = raw
            return True
        self.steps.append(Write(rel, raw, what, mode, old, self._backup(rel, old, owned)))
        return True

    def copy(self, src: Path, rel: str, what: str, mode: int = 0o644) -> bool:
        """Plan copying *src* to *rel* unless it already has the same bytes."""
        rel = self.rel(rel)
        dest = self.path(rel)
        current = file_digest(dest)
        if current == file_digest(src):
            return False
        if current == "dir":
            raise InstallError(f"{self.show(rel)} is a directory; xenpipe wants to copy a file")
        backup = None
        if current is not None and current != self.record["files"].get(rel):
            backup = self._backup_name(rel)
        self.scheduled.add(rel)
        self.steps.append(Copy(src, rel, what, mode, current is not None, backup))
        return True

    def link(self, rel: str, target: str, what: str) -> bool:
        """Plan the symlink *rel* -> *target* (relative, next to it); a file there is kept."""
        p = self.root / rel.lstrip("/")
        self.path(rel)  # the directory must be inside the root
        self.path(str(Path(rel).parent / target))  # and so must what it points at
        old = os.readlink(p) if p.is_symlink() else None
        if old == target:
            return False
        if old is None and os.path.lexists(p):
            self.notes.append(f"{self.show(rel)} is a file, not a symlink: left alone")
            return False
        self.scheduled.add(rel)
        self.steps.append(Link(rel, target, what, old))
        return True

    def run(self, argv: Sequence[str | os.PathLike[str]], what: str, *, key: str,
            inputs: Any = None, outputs: Sequence[str] = (), after: Iterable[str] = (),
            writes: Iterable[str] = (), backups: Iterable[str] = (), cwd: Path | None = None,
            needed: bool | None = None) -> bool:
        """Plan a command. It is left out when the last install ran it with the same *inputs*
        and its *outputs* are as it left them, unless a step in *after* is planned; *needed*
        overrides that decision. *writes*: where it writes (checked to be inside the root)."""
        for rel in [*outputs, *writes]:
            self.path(rel)
        if needed is None:
            rec = self.record["runs"].get(key)
            fresh = (rec is not None and rec.get("inputs") == digest.of_json(inputs)
                     and all(file_digest(self.path(o)) == rec["outputs"].get(o) for o in outputs))
            needed = not fresh or any(a in self.scheduled for a in after)
        if not needed:
            return False
        rec = self.record["runs"].get(key, {}).get("outputs", {})
        pairs = []
        for b in map(self.rel, backups):  # a file the command rewrites, unless it left it so
            current = file_digest(self.path(b))
            if current not in (None, "dir") and current != rec.get(b):
                pairs.append((b, self._backup_name(b)))
        self.scheduled.add(key)
        self.steps.append(Run([os.fspath(a) for a in argv], what, key, digest.of_json(inputs),
                              tuple(outputs), cwd, tuple(pairs)))
        return True

    def note(self, text: str) -> None:
        self.notes.append(text)

    # printing ---------------------------------------------------------------------------
    def render(self) -> str:
        """The plan as ``doit install --dry-run`` prints it."""
        where = "the running system (/)" if self.live else f"staging root {self.root}"
        out = [f"xenpipe install plan for {where}", *(f"  {s}" for s in self.summary)]
        if not self.steps:
            out.append("nothing to do: everything is already installed")
        for n, step in enumerate(self.steps, 1):
            out.append(f"{n:3}. {step.what}")
            lines = describe(step)
            if isinstance(step, Write):
                lines += _diff(step.old, step.data, step.rel)
            out.extend(f"       {line}" for line in lines)
        if self.notes:
            out.append("notes:")
            out.extend(f"  - {n}" for n in self.notes)
        return "\n".join(out)


def _diff(old: bytes | None, new: bytes, rel: str) -> list[str]:
    def lines(b: bytes) -> list[str]:
        return b.decode(errors="replace").splitlines()

    if b"\0" in new or (old is not None and b"\0" in old):
        return [f"(binary, {len(new)} bytes)"]
    return list(difflib.unified_diff(lines(old or b""), lines(new),
                                     "/dev/null" if old is None else f"a{rel}", f"b{rel}",
                                     lineterm="", n=2))


def describe(step: Step) -> list[str]:
    """What a step will do, in a line or two (the printed plan adds a Write's diff)."""
    backup = getattr(step, "backup", None)
    extra = [f"backup the current file to {backup}"] if backup else []
    if isinstance(step, Write):
        mode = f", mode {step.mode:o}" if step.mode is not None else ""
        return [f"{'create' if step.old is None else 'update'} {step.rel}{mode}", *extra]
    if isinstance(step, Copy):
        verb = "replace" if step.exists else "create"
        return [f"{verb} {step.rel}: copy of {step.src} ({step.src.stat().st_size} bytes)",
                *extra]
    if isinstance(step, Link):
        was = f" (was -> {step.old})" if step.old else ""
        return [f"symlink {step.rel} -> {step.target}{was}"]
    lines = [f"backup {f} to {b}" for f, b in step.backups]
    cwd = f"(in {step.cwd}) " if step.cwd else ""
    return [*lines, f"{cwd}$ {proc.render(step.argv)}"]


# ----------------------------------------------------------------------------- executing
def _log(log: Path, text: str) -> None:
    with open(log, "a") as f:
        f.write(f"# {text}\n")


def _save(ws: Workspace, plan: Plan) -> None:
    state = ws.state(STAGE)
    state.setdefault("roots", {})[str(plan.real)] = plan.record
    ws.save_state(STAGE, state)


def _make_backup(plan: Plan, rel: str, backup: str) -> None:
    src = plan.path(rel)
    atomic_write(plan.path(backup), src.read_bytes(), mode=src.stat().st_mode & 0o7777)


def apply(step: Step, plan: Plan, log: Path) -> None:
    """Carry out one step."""
    if isinstance(step, Write | Copy):
        if step.backup:
            _make_backup(plan, step.rel, step.backup)
        data = step.data if isinstance(step, Write) else step.src.read_bytes()
        atomic_write(plan.path(step.rel), data, mode=step.mode)
        plan.record["files"][step.rel] = digest.of_bytes(data)
    elif isinstance(step, Link):
        p = plan.path(str(Path(step.rel).parent)) / Path(step.rel).name
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.parent / f".{p.name}.xenpipe-tmp"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(step.target)
        os.replace(tmp, p)
    else:
        for rel, backup in step.backups:
            _make_backup(plan, rel, backup)
        proc.run(step.argv, cwd=step.cwd, log=log, error=InstallError, what=step.what,
                 timeout=MAKE_TIMEOUT)
        missing = [o for o in step.outputs if not os.path.lexists(plan.path(o))]
        if missing:
            raise InstallError(f"{step.what}: {proc.render(step.argv)} did not create "
                               f"{', '.join(missing)} (log: {log})")
        plan.record["runs"][step.key] = {
            "inputs": step.inputs,
            "outputs": {o: file_digest(plan.path(o)) for o in step.outputs},
        }


def execute(plan: Plan, ws: Workspace) -> None:
    """Run the plan's steps in order, logging each and recording what was done."""
    log = ws.log(STAGE)
    _log(log, f"install into {plan.root}: {len(plan.steps)} step(s)")
    if plan.steps:
        plan.real.mkdir(parents=True, exist_ok=True)
    for n, step in enumerate(plan.steps, 1):
        _log(log, f"[{n}/{len(plan.steps)}] {step.what}: {'; '.join(describe(step))}")
        print(f"install [{n}/{len(plan.steps)}] {step.what}", flush=True)
        apply(step, plan, log)
        _save(ws, plan)
    for text in plan.notes:
        _log(log, f"note: {text}")


# --------------------------------------------------------------------------------- inputs
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
        return kconfig.read_config(self.config).get("CONFIG_MODULES") == "y"


def find_kernel(cfg: Config, ws: Workspace) -> Kernel:
    """The kernel ``doit build`` left in ``out/`` (its release from the build directory)."""
    assert cfg.kernel is not None
    src = ws.source_dir(cfg.kernel.source).resolve()
    build = build_mod.kernel_build_dir(ws)
    release = ws.state(Key.build("kernel")).get("release")  # what doit build recorded
    relfile = build / "include" / "config" / "kernel.release"
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
    return Kernel(release, src, build, arts["vmlinuz"], arts["System.map"], arts["config"])


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
                  *build_mod.make_vars(cfg, cfg.xen.make_args), "install-xen",
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
    # the make variables of the build (CC=ccache gcc...): kbuild must not see a new compiler
    kb = kconfig.Kbuild(k.src, k.build, tuple(cfg.kernel.make_args), ws.log(STAGE))
    variables = [*build_mod.make_vars(cfg, cfg.kernel.make_args), f"INSTALL_MOD_PATH={plan.root}"]
    argv = kb.argv("modules_install", variables=variables)
    plan.run(argv, f"kernel {r}: make modules_install", key="modules_install",
             inputs=[argv, _modules_id(k)], outputs=[moddir], writes=["/lib/modules"])
    plan.run(["depmod", "-b", plan.root, "-F", plan.root / "boot" / k.system_map.name, r],
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


def devices(cfg: Config, plan: Plan) -> pci.Topology | None:
    """The PCI topology, after refusing devices the running system needs (pci.py's guard).

    On the running system (``/``) every device must be present; a staging root may be meant
    for another machine, so a device absent here is only noted."""
    try:
        topo = pci.scan()
    except XenpipeError as exc:
        if plan.live:
            raise
        plan.note(f"device check skipped: {exc}")
        return None
    if plan.live:
        pci.check_passthrough(cfg.passthrough.devices, topo,
                              allow_system_devices=cfg.install.allow_system_devices)
        return topo
    needs = pci.system_devices(topo)
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


def make_plan(cfg: Config, ws: Workspace) -> Plan:
    """Everything an install would do, checked, without changing anything."""
    root, live = check_root(cfg)
    if cfg.kernel is None:
        raise InstallError("no [kernel] configured: there is no dom0 kernel to install")
    state = ws.state(STAGE).get("roots", {}).get(os.path.realpath(root), {})
    plan = Plan(root, live, state)
    topo = devices(cfg, plan)
    guest_bdfs = guests.check(cfg, topo)
    flavour = cmdline.flavour(cfg, ws)
    dom0 = cmdline.dom0_cmdline(cfg, flavour, topo)
    xen_file, xen_ver = plan_xen(cfg, ws, plan)
    k = plan_kernel(cfg, ws, plan)
    initrd = plan_initramfs(cfg, plan, k)
    entry = bootloader.Entry(
        name=entry_name(cfg), xen_version=xen_ver, release=k.release, xen=xen_file,
        xen_args=cmdline.xen_cmdline(cfg), kernel=k.image.name, kernel_args=dom0,
        initrd=initrd,
    )
    plan.summary.append(f"dom0 flavour {flavour}: {dom0}")
    bootloader.plan(cfg.install.bootloader, plan, entry, cfg.install.once)
    for guest in cfg.guests:
        guests.plan(plan, guest, guest_bdfs[guest.name], display(cfg.path))
    return plan


def install(cfg: Config, ws: Workspace, dry_run: bool = False) -> dict[str, Any]:
    """``doit install``: plan, then print the plan (``--dry-run``) or carry it out."""
    plan = make_plan(cfg, ws)
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

