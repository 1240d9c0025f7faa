"""The dom0 userland of a guest boot (``[boot] guest = true``): a minimal Debian root with the
Xen toolstack, packed as one gzip-compressed cpio archive and cached in the workspace.

``debootstrap --variant=minbase`` builds the root from the Debian mirror apt is already
configured with (its deb822 ``*.sources`` or one-line ``sources.list``; no other host), then
``apt-get install`` in a chroot adds :data:`PACKAGES` from the same sources, updates and
security suites included, so the tools match the distribution's hypervisor. Documentation, man
pages, locales and apt's caches are pruned (~170 MB unpacked, ~50 MB compressed).

The archive is built once: its name carries a digest of what it is made of (the package list,
the apt sources, the architecture and :data:`RECIPE`), and a later boot finds it in
``<workspace>/rootfs/``. Per-boot files (``/init``, guest configs, kernel modules) go into a
second, small archive that ``guestcheck.py`` appends: the kernel unpacks concatenated archives.

Building needs root (debootstrap, chroot, mknod) and network access to the mirror.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import digest, proc
from pipeline.config import display
from pipeline.errors import BootError
from pipeline.files import atomic_write, read_json, write_json
from pipeline.install.initramfs import which
from pipeline.workspace import Workspace

PACKAGES = ("xen-utils-4.17", "xen-utils-common", "xenstore-utils", "kmod", "pciutils",
            "busybox")
# what the guest's tiny initramfs borrows from the root: pciutils' lspci, its libraries (found
# with ldd in the chroot) and the PCI ID database (busybox has no lspci)
GUEST_TOOLS = ("/usr/bin/lspci",)
GUEST_DATA = ("/usr/share/misc/pci.ids",)
RECIPE = 1  # bump when the steps below change what ends up in the archives
APT_DIR = Path("/etc/apt")
CHROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
PRUNE = ("usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
         "usr/share/linda", "var/cache/man", "var/cache/apt", "var/lib/apt/lists")
KEEP_DOCS = ("copyright",)  # licences stay; the rest of /usr/share/doc goes
BUILD_TIMEOUT = 3600.0


# ---------------------------------------------------------------------------- apt sources
@dataclass(frozen=True)
class AptSource:
    """One ``deb`` source of the host's apt configuration."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None

    def deb822(self) -> str:
        lines = ["Types: deb", f"URIs: {' '.join(self.uris)}", f"Suites: {' '.join(self.suites)}",
                 f"Components: {' '.join(self.components)}"]
        if self.signed_by:
            lines.append(f"Signed-By: {self.signed_by}")
        return "\n".join(lines) + "\n"


def _deb822(text: str) -> list[AptSource]:
    """The enabled ``deb`` stanzas of a deb822 ``.sources`` file (comments and continuation
    lines as apt reads them)."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key is not None:
                fields[key] += "\n" + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        signed = fields.get("signed-by", "").strip()
        out.append(AptSource(
            tuple(fields.get("uris", "").split()), tuple(fields.get("suites", "").split()),
            tuple(fields.get("components", "").split()),
            signed if signed and "\n" not in signed else None))
    return [s for s in out if s.uris and s.suites]


def _one_line(text: str) -> list[AptSource]:
    """The ``deb`` lines of a one-line-style ``sources.list``."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if not m:
            continue
        opts = dict(o.split("=", 1) for o in (m[1] or "").split() if "=" in o)
        out.append(AptSource((m[2],), (m[3],), tuple(m[4].split()), opts.get("signed-by")))
    return out


def apt_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    """Every ``deb`` source of the host's apt configuration, in apt's reading order."""
    found: list[AptSource] = []
    main = apt_dir / "sources.list"
    if main.is_file():
        found += _one_line(main.read_text(errors="replace"))
    parts = apt_dir / "sources.list.d"
    for f in sorted(parts.glob("*")) if parts.is_dir() else []:
        if f.suffix == ".list":
            found += _one_line(f.read_text(errors="replace"))
        elif f.suffix == ".sources":
            found += _deb822(f.read_text(errors="replace"))
    return found


def debian_sources(sources: Sequence[AptSource]) -> tuple[str, str, list[AptSource]]:
    """(mirror, suite, sources for the chroot): debootstrap uses the first source's first URI
    and suite; the chroot gets every source of that release (``bookworm``,
    ``bookworm-updates``, ``bookworm-security``) with the ``main`` component."""
    if not sources:
        raise BootError(f"no apt sources in {APT_DIR}/sources.list or sources.list.d/: the dom0 "
                        "userland is built from the Debian mirror apt uses")
    first = sources[0]
    suite = first.suites[0]
    codename = suite.split("-")[0].split("/")[0]
    same = [s for s in sources if "main" in s.components
            and any(x.split("-")[0] == codename for x in s.suites)]
    chroot = [AptSource(s.uris, tuple(x for x in s.suites if x.split("-")[0] == codename),
                        ("main",), s.signed_by) for s in same]
    return first.uris[0], suite, chroot


# ---------------------------------------------------------------------------------- cache
@dataclass(frozen=True)
class Rootfs:
    """The packed dom0 userland, the guest's borrowed tools, and what they hold."""

    image: Path  # rootfs-<key>.cpio.gz: the dom0 root
    tools: Path  # guest-tools-<key>.cpio.gz: lspci and its libraries for the guest
    manifest: dict[str, Any]  # packages with versions, sources, sizes, build time


def arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def key(packages: Sequence[str] = PACKAGES, sources: Sequence[AptSource] | None = None) -> str:
    """What the archives are made of, as a short digest (their cache key)."""
    mirror, suite, chroot = debian_sources(apt_sources() if sources is None else sources)
    blob = json.dumps({"recipe": RECIPE, "packages": sorted(packages), "arch": arch(),
                       "mirror": mirror, "suite": suite, "tools": GUEST_TOOLS + GUEST_DATA,
                       "sources": [s.deb822() for s in chroot]}, sort_keys=True)
    return digest.of_text(blob)[:16]


def cache_dir(ws: Workspace) -> Path:
    return ws.dir / "rootfs"


def _paths(cache: Path, k: str) -> Rootfs:
    return Rootfs(cache / f"rootfs-{k}.cpio.gz", cache / f"guest-tools-{k}.cpio.gz", {})


def _manifest(cache: Path, k: str) -> Path:
    return cache / f"rootfs-{k}.json"


def cached(ws: Workspace, packages: Sequence[str] = PACKAGES,
           sources: Sequence[AptSource] | None = None) -> Rootfs | None:
    """The archives for this package list and these sources, if they were built already."""
    k = key(packages, sources)
    paths = _paths(cache_dir(ws), k)
    manifest = read_json(_manifest(cache_dir(ws), k))
    if paths.image.is_file() and paths.tools.is_file() and isinstance(manifest, dict):
        return Rootfs(paths.image, paths.tools, manifest)
    return None


def identity() -> str | None:
    """The cache key, for the boot fingerprint (None when apt has no sources)."""
    try:
        return key()
    except BootError:
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder per workspace at a time; a second waits, then finds the archive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def mounts_below(path: Path, mounts: Path = Path("/proc/self/mounts")) -> list[Path]:
    """The mount points at or below *path*, deepest first."""
    root = os.path.realpath(path)
    found = []
    try:
        text = mounts.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        point = fields[1].replace("\\040", " ")
        if point == root or point.startswith(root + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _unmount(path: Path, log: Path) -> None:
    """Unmount what a build (or an interrupted debootstrap) left mounted below *path*."""
    for point in mounts_below(path):
        proc.run(["umount", "-l", point], log=log, check=False)
    left = mounts_below(path)
    if left:
        raise BootError(f"cannot unmount {left[0]}: remove it by hand before rebuilding the "
                        "dom0 userland")


def remove_tree(path: Path, log: Path) -> None:
    """Delete a build tree, never through a mount point (a bound /dev, a proc)."""
    if not path.exists():
        return
    _unmount(path, log)
    shutil.rmtree(path)


# ---------------------------------------------------------------------------------- build
def _chroot(tree: Path, argv: Sequence[str], log: Path, what: str, **kw: Any) -> proc.Result:
    return proc.run(["chroot", tree, *argv], log=log, error=BootError, what=what,
                    env={"PATH": CHROOT_PATH, "DEBIAN_FRONTEND": "noninteractive"},
                    timeout=BUILD_TIMEOUT, **kw)


def prune(tree: Path) -> None:
    """Drop documentation (licences stay), man pages, locales and apt's caches."""
    for rel in PRUNE:
        p = tree / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            p.mkdir()
    doc = tree / "usr" / "share" / "doc"
    if doc.is_dir():
        for dirpath, dirnames, filenames in os.walk(doc, topdown=False):
            for name in filenames:
                if name not in KEEP_DOCS:
                    os.unlink(os.path.join(dirpath, name))
            for name in dirnames:
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    os.unlink(full)
                elif not os.listdir(full):
                    os.rmdir(full)


def pack(tree: Path, dest: Path, log: Path) -> None:
    """*tree* as a gzip-compressed newc cpio archive (owner root) at *dest*, atomically."""
    names = ["."]
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel = os.path.relpath(dirpath, tree)
        for name in sorted(dirnames + filenames):
            names.append(os.path.normpath(os.path.join(rel, name)))
    raw = dest.with_name(f".{dest.name}.cpio")
    with contextlib.suppress(FileNotFoundError):
        raw.unlink()
    try:
        proc.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet", "-F", raw], cwd=tree,
                 input="\n".join(names) + "\n", log=log, error=BootError, what="cpio")
        proc.run(["gzip", "-n", "-f", raw], log=log, error=BootError, what="gzip")
        os.replace(raw.with_name(raw.name + ".gz"), dest)
    finally:
        for leftover in (raw, raw.with_name(raw.name + ".gz")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _console(tree: Path) -> None:
    """The kernel opens /dev/console for init before anything mounts /dev."""
    console = tree / "dev" / "console"
    if not (console.exists() and stat.S_ISCHR(console.lstat().st_mode)):
        with contextlib.suppress(FileNotFoundError):
            console.unlink()
        console.parent.mkdir(exist_ok=True)
        os.mknod(console, stat.S_IFCHR | 0o600, os.makedev(5, 1))


def build(ws: Workspace, packages: Sequence[str] = PACKAGES,
          sources: Sequence[AptSource] | None = None) -> Rootfs:
    """The dom0 userland and guest tools archives: from the cache, or built now (minutes;
    needs root and the mirror). Prints one line when it builds."""
    sources = apt_sources() if sources is None else list(sources)
    mirror, suite, chroot_sources = debian_sources(sources)
    k = key(packages, sources)
    cache = cache_dir(ws)
    paths = _paths(cache, k)
    log = ws.log("rootfs")
    with _locked(cache / ".lock"):
        found = cached(ws, packages, sources)
        if found is not None:
            return found
        if os.geteuid() != 0:
            raise BootError("building the dom0 userland for [boot] guest = true needs root "
                            "(debootstrap, chroot): run doit boot as root, or set guest = false")
        for tool in ("debootstrap", "chroot", "cpio", "gzip"):
            if which(tool) is None:
                raise BootError(f"{tool} not found: apt-get install debootstrap cpio gzip")
        print(f"boot: building the dom0 userland once (debootstrap {suite} from {mirror}, "
              f"{' '.join(packages)}); log: {display(log)}", flush=True)
        start = time.monotonic()
        tree = cache / f"tree-{k}"
        remove_tree(tree, log)
        try:
            argv: list[str | Path] = ["debootstrap", "--variant=minbase", f"--arch={arch()}"]
            keyring = next((s.signed_by for s in sources if s.signed_by
                            and s.signed_by.startswith("/") and Path(s.signed_by).is_file()),
                           None)
            if keyring:
                argv.append(f"--keyring={keyring}")
            proc.run([*argv, suite, tree, mirror], log=log, error=BootError,
                     what=f"debootstrap {suite} {mirror}", timeout=BUILD_TIMEOUT)
            _install(tree, chroot_sources, packages, log)
            versions = _chroot(tree, ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"],
                               log, "dpkg-query", capture=True).stdout
            prune(tree)
            _console(tree)
            guest_tools(tree, paths.tools, log)
            pack(tree, paths.image, log)
        finally:
            remove_tree(tree, log)
        manifest = {
            "key": k, "packages": list(packages), "mirror": mirror, "suite": suite,
            "sources": [s.deb822() for s in chroot_sources],
            "versions": dict(ln.split(" ", 1) for ln in versions.splitlines() if " " in ln),
            "bytes": paths.image.stat().st_size, "tools_bytes": paths.tools.stat().st_size,
            "seconds": round(time.monotonic() - start, 1),
        }
        write_json(_manifest(cache, k), manifest)
        for old in cache.iterdir():  # one set of archives per workspace is enough
            if old.name.startswith(("rootfs-", "guest-tools-")) and k not in old.name:
                old.unlink()
        return Rootfs(paths.image, paths.tools, manifest)


def guest_tools(tree: Path, dest: Path, log: Path) -> None:
    """:data:`GUEST_TOOLS` with the libraries ldd finds for them, and :data:`GUEST_DATA`, as a
    cpio archive at *dest*. Each file keeps the path it is known by (``/lib64/ld-linux...``),
    as a plain file: the guest's root has no merged-/usr links."""
    names = set(GUEST_TOOLS) | set(GUEST_DATA)
    for exe in GUEST_TOOLS:
        out = _chroot(tree, ["ldd", exe], log, f"ldd {exe} (in the chroot)", capture=True).stdout
        names |= set(re.findall(r"(/\S+) \(0x[0-9a-f]+\)", out))
    ordered = sorted(names)
    real = _chroot(tree, ["readlink", "-f", *ordered], log, "readlink (in the chroot)",
                   capture=True).stdout.split()
    stage = dest.with_name(f".{dest.name}.d")
    remove_tree(stage, log)
    try:
        for name, target in zip(ordered, real, strict=True):
            to = stage / name.lstrip("/")
            to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / target.lstrip("/"), to)
        pack(stage, dest, log)
    finally:
        remove_tree(stage, log)


def _install(tree: Path, sources: Sequence[AptSource], packages: Sequence[str],
             log: Path) -> None:
    """apt-get install *packages* in the chroot, from *sources*, starting no service."""
    atomic_write(tree / "usr" / "sbin" / "policy-rc.d", "#!/bin/sh\nexit 101\n", mode=0o755)
    listd = tree / "etc" / "apt" / "sources.list.d"
    for old in [tree / "etc" / "apt" / "sources.list", *listd.glob("*")]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    atomic_write(listd / "debian.sources", "\n".join(s.deb822() for s in sources))
    mounted = proc.run(["mount", "-t", "proc", "proc", tree / "proc"], log=log,
                       check=False).returncode == 0
    try:
        _chroot(tree, ["apt-get", "update", "-q"], log, "apt-get update (in the chroot)")
        _chroot(tree, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                log, "apt-get install (in the chroot)")
        _chroot(tree, ["apt-get", "clean"], log, "apt-get clean")
    finally:
        if mounted:
            proc.run(["umount", "-l", tree / "proc"], log=log, check=False)
        with contextlib.suppress(FileNotFoundError):
            (tree / "usr" / "sbin" / "policy-rc.d").unlink()
