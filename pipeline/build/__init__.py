"""``doit build``: make the hypervisor and the dom0 kernel and modules, artifacts in ``out/``.

Each tree is built by its own make, started through proc.run (argv lists, own process group,
killed as a group on Ctrl-C or SIGTERM, SIGTERMed if xenpipe itself is SIGKILLed), its whole
output streamed to ``logs/build-<tree>.log`` and summarised on the terminal as one live line.
make is restartable, so an interrupted build simply continues with the next ``doit build``.

Whether a stage must run is decided by a cheap fingerprint: the resolved revision, the patch
series digest, the tracked files that differ from that revision (``git status``/``hg status``,
which use their own stat caches, plus size and mtime of each changed file: a hand edit is
noticed without hashing 78,000 files), the kernel .config's sha256, make args, jobs, ccache.
The state file ``state/build-<tree>.json`` is written last, after the artifacts.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline import digest
from pipeline import kernel
from pipeline import metadata
from pipeline import proc
from pipeline import fetch
from pipeline.config import Config
from pipeline.errors import BuildError, KconfigError
from pipeline.files import atomic_write
from pipeline.build.progress import Progress, count_objects
from pipeline.workspace import Key, Workspace

FINGERPRINT_VERSION = 1  # bump when the build's output for the same inputs changes
MAKE_TIMEOUT = 6 * 3600.0
# The kernel image target per kernel source arch, and where kbuild leaves it.
IMAGES = {"x86": "bzImage", "arm64": "Image.gz", "arm": "zImage"}
ARCHES = {"x86_64": "x86", "amd64": "x86", "i386": "x86", "i686": "x86", "x86": "x86",
          "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "arm": "arm"}


# ------------------------------------------------------------------------ make options
def jobs(cfg: Config) -> int:
    """[build] jobs, 0 meaning the CPUs this process may run on."""
    if cfg.build.jobs > 0:
        return cfg.build.jobs
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_vars(cfg: Config, make_args: Sequence[str]) -> list[str]:
    """-j and, with [build] ccache, ``CC=ccache <cc>`` / ``HOSTCC=ccache <hostcc>`` (one argv
    item each, after the user's make args so they win, but wrapping the user's compiler)."""
    out = [f"-j{jobs(cfg)}"]
    if cfg.build.ccache:
        if shutil.which("ccache") is None:
            raise BuildError("[build] ccache = true but ccache is not installed: install it "
                             "(apt-get install ccache) or set ccache = false")
        for var in ("CC", "HOSTCC"):
            cc = " ".join(metadata.cc_of(make_args, var, "gcc"))
            out.append(f"{var}=ccache {cc}")
    return out


def make_env(cfg: Config, ws: Workspace) -> dict[str, str]:
    """With ccache, paths under the workspace hash as relative paths: two workspaces share
    hits (unless the user set CCACHE_BASEDIR)."""
    if cfg.build.ccache and "CCACHE_BASEDIR" not in os.environ:
        return {"CCACHE_BASEDIR": str(ws.dir.resolve())}
    return {}


# ------------------------------------------------------------------------- fingerprints
def tree_state(cfg: Config, ws: Workspace, name: str) -> dict[str, Any]:
    """What a source tree holds, cheaply: the revision fetched and each tracked file that
    differs from it with its size and mtime (so a hand edit, or a patch applied, is seen).
    The VCS's own stat cache keeps this fast on big trees."""
    src = cfg.sources[name]
    dest = ws.source_dir(name)
    vcs = fetch.vcs_for(src.vcs)
    edits: list[list[Any]] = []
    if (dest / vcs.marker).is_dir():
        for rel in sorted(vcs.changes(dest, error=BuildError)):
            try:
                st = os.lstat(dest / rel)
                edits.append([rel, st.st_size, st.st_mtime_ns])
            except OSError:
                edits.append([rel, None, None])
    # no series digest: the patches' effect is in *edits*, and a series that writes the same
    # files (a patch reworded, an empty series added) must not rerun make
    return {"rev": fetch.resolved(cfg, ws, name), "edits": edits}


def kernel_build_dir(ws: Workspace) -> Path:
    """Where doit config left the .config (make O=...)."""
    return (ws.out / kernel.BUILD_DIR).resolve()


def fingerprint_kernel(cfg: Config, ws: Workspace) -> dict[str, Any]:
    kcfg = cfg.kernel
    if kcfg is None:
        return {}
    dotconfig = kernel_build_dir(ws) / ".config"
    return {
        "version": FINGERPRINT_VERSION,
        "tree": tree_state(cfg, ws, kcfg.source),
        "config": digest.of_file(dotconfig) if dotconfig.is_file() else None,
        "make_args": list(kcfg.make_args),
        "jobs": cfg.build.jobs,
        "ccache": cfg.build.ccache,
    }


def fingerprint_xen(cfg: Config, ws: Workspace) -> dict[str, Any]:
    xcfg = cfg.xen
    if xcfg is None:
        return {}
    return {
        "version": FINGERPRINT_VERSION,
        "tree": tree_state(cfg, ws, xcfg.source),
        "targets": list(xcfg.targets) if xcfg.targets is not None else None,
        "make_args": list(xcfg.make_args),
        "jobs": cfg.build.jobs,
        "ccache": cfg.build.ccache,
    }


def outputs_present(ws: Workspace, tree: str) -> bool:
    """Are the artifacts the last successful build of *tree* recorded still as written, in
    out/ and in the build tree they came from? (A second doit ``uptodate`` check: a deleted
    vmlinuz, a ``make clean`` or a make run by hand that changed the bytes reruns the stage.)
    Size and mtime decide cheaply; an mtime that moved is confirmed by the content: kbuild
    rewrites bzImage on every make, so a hand-run make that compiled nothing must not rerun
    make (the sha256 publish recorded decides)."""
    arts = ws.state(Key.build(tree)).get("artifacts")
    if not arts:
        return False
    for rec in arts.values():
        try:
            for path, size, mtime in ((ws.dir / rec["path"], rec["size"], rec["mtime_ns"]),
                                      (Path(rec["from"]), rec["from_size"],
                                       rec["from_mtime_ns"])):
                st = os.stat(path)
                if st.st_size != size:
                    return False
                if st.st_mtime_ns != mtime and digest.of_file(path) != rec.get("sha256"):
                    return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def kernel_outputs_present(cfg: Config, ws: Workspace) -> bool:
    return outputs_present(ws, "kernel")


def xen_outputs_present(cfg: Config, ws: Workspace) -> bool:
    return outputs_present(ws, "xen")


# -------------------------------------------------------------------------------- make
def run_make(rec: metadata.StageRecord, argv: list[str], targets: Sequence[str], *,
             log: Path, label: str, expected: int | None,
             env: dict[str, str] | None = None) -> Progress:
    """Run one make: output to *log*, one live line on the terminal, a short report on failure."""
    rec.command(argv)
    prog = Progress(label, expected)
    what = f"make {' '.join(targets)}"
    try:
        res = proc.run(argv, env=env, log=log, check=False, timeout=MAKE_TIMEOUT,
                       error=BuildError, what=what, on_line=prog.feed,
                       on_tick=prog.tick)
    except BaseException:
        prog.done(False)
        raise
    if res.returncode != 0:
        prog.done(False)
        sys.stdout.flush()
        sys.stderr.write(prog.failure_report())
        sys.stderr.flush()
        first = prog.first_error or prog.first_make_error
        raise BuildError(f"{label}: {what} failed with exit status {res.returncode}"
                         + (f": {first}" if first else "") + f" (log: {log})")
    prog.done(True)
    return prog


def fresh_log(ws: Workspace, stage: str) -> Path:
    """The stage's log, emptied: it holds this run's complete make output."""
    log = ws.log(stage)
    atomic_write(log, f"# xenpipe {stage} {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return log


def expected_objects(ws: Workspace, tree: str, root: Path) -> int | None:
    """Objects still to compile if this build ends like the last successful one did (exact
    when resuming an interrupted build; None when the tree already has them all)."""
    last = ws.state(Key.build(tree)).get("objects")
    if not isinstance(last, int) or last <= 0:
        return None
    left = last - count_objects(root)
    return left if left > 0 else None


def publish(ws: Workspace, tree: str, files: dict[str, Path], state: dict[str, Any]) -> dict[
        str, Path]:
    """Copy build results to out/ atomically, then record them in state/build-<tree>.json
    (written last: it is what says the stage finished)."""
    prev = ws.state(Key.build(tree)).get("artifacts") or {}
    out: dict[str, Path] = {}
    sums: dict[str, str] = {}
    for name, src in files.items():
        dest = ws.out / name
        data = src.read_bytes()
        sums[name] = digest.of_bytes(data)
        # a make that changed nothing leaves out/ alone: its mtimes are the boot's, install's
        # and nightly's inputs
        if not (dest.is_file() and dest.stat().st_size == len(data)
                and dest.read_bytes() == data):
            atomic_write(dest, data, mode=0o644)
        out[name] = dest
    for name, old in prev.items():  # a previous release's files, no longer built
        if name not in out and isinstance(old, dict) and "path" in old:
            (ws.dir / old["path"]).unlink(missing_ok=True)
    arts = {}
    for name, dest in out.items():
        st, built = dest.stat(), files[name].stat()
        arts[name] = {"path": os.path.relpath(dest, ws.dir), "size": st.st_size,
                      "mtime_ns": st.st_mtime_ns, "from": str(files[name]),
                      "from_size": built.st_size, "from_mtime_ns": built.st_mtime_ns,
                      "sha256": sums[name]}
    ws.save_state(Key.build(tree), {**state, "artifacts": arts})
    return out


# A make that xenpipe did not see end (xenpipe SIGKILLed, the machine lost power) may have left
# a file half written that make takes for up to date at its next run: System.map, which the
# vmlinux link writes as a side effect, empty beside a complete vmlinux (crash suite, build
# SIGKILL at 1.218 s, seed 2642685587: the rerun published the empty System.map). Its start
# is recorded; a make whose end xenpipe sees (pass, fail, or stopped by xenpipe on Ctrl-C,
# when make itself removes what it was writing) clears the record.
MARGIN_NS = 50_000_000  # file times come from the kernel's coarse clock, a tick behind
# What the killed make was writing was written last: the files of its last seconds are made
# again, not the whole run's work (a killed 15-minute build keeps its objects).
LAST_WRITES_NS = 10_000_000_000


def _running_marker(ws: Workspace, stage: str) -> Path:
    """``state/make-<stage>.json``: ``{"started_ns": ...}`` while a make runs."""
    return ws.state_dir / f"make-{stage}.json"


def sweep_killed_make(ws: Workspace, stage: str, scratch: Path | None,
                      keep: Sequence[Path] = (), only: str | None = None) -> list[Path]:
    """After a make that was killed unseen, remove the files of *scratch* (a directory only
    make writes: the kernel's O=) that it wrote in its last LAST_WRITES_NS, except *keep* (the
    .config that doit config writes there), so that the next make writes them again.
    Returns them."""
    marker = _running_marker(ws, stage)
    started = ws.state(f"make-{stage}").get("started_ns")
    if not isinstance(started, int):
        return []
    written: list[tuple[int, Path]] = []
    if scratch is not None and scratch.is_dir():
        kept = {p.resolve() for p in keep}
        for dirpath, _, names in os.walk(scratch):
            for n in names:
                path = Path(dirpath) / n
                if only is not None and not path.match(only):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    mtime = path.lstat().st_mtime_ns
                    if mtime >= started and path.resolve() not in kept:
                        written.append((mtime, path))
    last = max((m for m, _ in written), default=0) - LAST_WRITES_NS
    removed = [p for m, p in written if m >= last]
    for path in removed:
        path.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def make_running(ws: Workspace, stage: str, scratch: Path | None,
                 keep: Sequence[Path] = (), only: str | None = None) -> Iterator[None]:
    """Around one make: first undo what a make killed unseen left (sweep_killed_make), then
    record this one's start until it ends in a way xenpipe sees."""
    removed = sweep_killed_make(ws, stage, scratch, keep, only)
    if removed:
        print(f"build:{stage}: the last make was killed: the {len(removed)} files it wrote "
              f"last are made again", flush=True)
    ws.save_state(f"make-{stage}", {"started_ns": time.time_ns() - MARGIN_NS})
    try:
        yield
    finally:
        _running_marker(ws, stage).unlink(missing_ok=True)


@contextlib.contextmanager
def make_stage(cfg: Config, ws: Workspace, stage: str, make_args: Sequence[str],
               argv: list[str], targets: list[str], root: Path, log: Path,
               scratch: Path | None = None, keep: Sequence[Path] = (),
               only: str | None = None, **fields: Any) -> Iterator[tuple[metadata.StageRecord, Progress]]:
    """One tree's make inside its metadata.json stage record (the half that Xen and the
    kernel share); the caller publishes the artifacts and finishes the record. *scratch*:
    where make writes, swept after a make killed unseen (see make_running): the kernel's O=
    whole, Xen's tree for *only* its objects (the user's files live there too)."""
    with metadata.stage(cfg, ws, stage, log=log,
                        toolchain=metadata.toolchain(make_args, cfg.build.ccache),
                        build=build_record(cfg)) as rec:
        rec.set(targets=targets, **fields)
        with make_running(ws, stage, scratch, keep, only):
            prog = run_make(rec, argv, targets, log=log, label=f"build:{stage}",
                            expected=expected_objects(ws, stage, root), env=make_env(cfg, ws))
        yield rec, prog


# --------------------------------------------------------------------------------- Xen
def xen_targets(cfg: Config, src: Path) -> list[str]:
    """[xen] targets, else the hypervisor alone: ``build-xen`` on current trees, ``xen`` on
    old ones (3.x, where it is ``dist-xen``), as the tree's top Makefile offers."""
    assert cfg.xen is not None
    if cfg.xen.targets is not None:
        return list(cfg.xen.targets)
    try:
        text = (src / "Makefile").read_text(errors="replace")
    except OSError:
        raise BuildError(f"Xen tree {src} has no Makefile: run doit fetch first") from None
    for target in ("build-xen", "xen"):
        if re.search(rf"^{re.escape(target)}\s*:(?!=)", text, re.MULTILINE):
            return [target]
    raise BuildError(f"{src}/Makefile has neither a build-xen nor a xen target: set "
                     f"[xen] targets to the make targets that build the hypervisor")


def xen_stamp(src: Path, make_args: Sequence[str]) -> list[str]:
    """``XEN_BUILD_DATE=``/``XEN_BUILD_TIME=`` of now, when the tree stamps its build with
    them (xen/Makefile) and the user set neither: Xen regenerates compile.h, so relinks a new
    hypervisor, whenever the date in its command changes. Recorded with the build, the same
    values make ``make install-xen`` install the very hypervisor built (same build-id)."""
    try:
        text = (src / "xen" / "Makefile").read_text(errors="replace")
    except OSError:
        return []
    if "XEN_BUILD_DATE" not in text or any(
            a.startswith(("XEN_BUILD_DATE=", "XEN_BUILD_TIME=")) for a in make_args):
        return []
    now = time.gmtime()
    return [f"XEN_BUILD_DATE={time.strftime('%a %b %d %H:%M:%S UTC %Y', now)}",
            f"XEN_BUILD_TIME={time.strftime('%H:%M:%S', now)}"]


def xen_built_stamp(ws: Workspace) -> list[str]:
    """The ``XEN_BUILD_*`` make variables the last successful Xen build ran with."""
    return [str(v) for v in ws.state(Key.build("xen")).get("stamp") or []]


def build_xen(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """make the hypervisor (or the configured targets); out/xen.gz and out/xen-syms."""
    xcfg = cfg.xen
    if xcfg is None:
        raise BuildError("no [xen] table in the config: the distribution's hypervisor is used")
    src = ws.source_dir(xcfg.source).resolve()
    targets = xen_targets(cfg, src)
    log = fresh_log(ws, "build-xen")
    stamp = xen_stamp(src, xcfg.make_args)
    argv = ["make", "-C", str(src), *xcfg.make_args, *make_vars(cfg, xcfg.make_args), *stamp,
            *targets]
    # Xen builds in its tree, among the user's files: only objects are swept after a make
    # killed unseen (an empty common/kernel.o the rerun's make took for up to date: crash
    # suite, build SIGKILL at 0.408 s, seed 2488375126)
    with make_stage(cfg, ws, "xen", xcfg.make_args, argv, targets, src, log,
                    scratch=src, only="*.o", tree=str(src)) as (rec, prog):
        files = {}
        for name in ("xen.gz", "xen-syms"):
            built = src / "xen" / name
            if not built.is_file():
                raise BuildError(f"make {' '.join(targets)} left no xen/{name} in {src}: do "
                                 f"[xen] targets build the hypervisor? (log: {log})")
            files[name] = built
        state = {"targets": targets, "objects": count_objects(src), "compiled": prog.compiled,
                 "stamp": stamp}
        out = publish(ws, "xen", files, state)
        rec.finish("pass", artifacts=out)
    return {"artifacts": {k: str(v) for k, v in out.items()}, "compiled": prog.compiled}


# ------------------------------------------------------------------------------ kernel
def kernel_arch(make_args: Sequence[str]) -> str:
    """The kernel source arch (arch/<x>) that ARCH= in the make args, or the host, selects."""
    arch = platform.machine()
    for arg in make_args:
        if arg.startswith("ARCH="):
            arch = arg.split("=", 1)[1]
    if arch not in ARCHES:
        raise BuildError(f"[kernel] make_args: ARCH={arch}: xenpipe knows the kernel image of "
                         f"{', '.join(sorted(set(ARCHES.values())))} only")
    return ARCHES[arch]


def kernel_targets(arch: str, dotconfig: Path) -> list[str]:
    """The image for the arch, plus modules when the config enables them."""
    targets = [IMAGES[arch]]
    if kernel.read_config(dotconfig).get("CONFIG_MODULES") == "y":
        targets.append("modules")
    return targets


def build_record(cfg: Config) -> dict[str, Any]:
    return {"jobs": jobs(cfg), "ccache": cfg.build.ccache}


def build_kernel(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """make the image and modules in out/kernel-build with doit config's .config; publish
    out/vmlinuz-<release>, out/System.map-<release> and out/config-<release>."""
    kcfg = cfg.kernel
    if kcfg is None:
        raise BuildError("no [kernel] table in the config: nothing to build")
    src = ws.source_dir(kcfg.source).resolve()
    build = kernel_build_dir(ws)
    log = fresh_log(ws, "build-kernel")
    kb = kernel.Kbuild(src, build, tuple(kcfg.make_args), log)
    if not kb.config.is_file():
        raise BuildError(f"no .config in {build}: run doit config first")
    arch = kernel_arch(kcfg.make_args)
    targets = kernel_targets(arch, kb.config)
    argv = kb.argv(*targets, variables=make_vars(cfg, kcfg.make_args))
    with make_stage(cfg, ws, "kernel", kcfg.make_args, argv, targets, build, log,
                    scratch=build, keep=[kb.config, kb.config.with_name(".config.old")],
                    build_dir=str(build)) as (rec, prog):
        try:
            release = (build / "include" / "config" / "kernel.release").read_text().strip()
        except OSError:
            release = ""
        if not re.fullmatch(r"[A-Za-z0-9._+~-]+", release):
            raise BuildError(f"the kernel build left no include/config/kernel.release in {build}")
        image = build / "arch" / arch / "boot" / IMAGES[arch]
        files = {f"vmlinuz-{release}": image, f"System.map-{release}": build / "System.map"}
        for name, path in files.items():
            if not path.is_file():
                raise BuildError(f"make {' '.join(targets)} left no {path} for {name} "
                                 f"(log: {log})")
        # doit config wrote config-<release>; refresh it only if the build changed the .config
        dotconfig = ws.out / f"config-{release}"
        if not dotconfig.is_file() or dotconfig.read_bytes() != kb.config.read_bytes():
            atomic_write(dotconfig, kb.config.read_bytes(), mode=0o644)
        state = {"release": release, "arch": arch, "targets": targets, "build_dir": str(build),
                 "modules": "modules" in targets, "objects": count_objects(build),
                 "compiled": prog.compiled}
        out = publish(ws, "kernel", files, state)
        rec.set(release=release)
        rec.finish("pass", artifacts={**out, dotconfig.name: dotconfig})
    return {"release": release, "artifacts": {k: str(v) for k, v in out.items()},
            "compiled": prog.compiled}


# ------------------------------------------------------------------------------ config
def configure(cfg: Config, ws: Workspace, src: Path) -> dict[str, Any]:
    """doit config, recorded: kernel.configure inside a metadata stage; its record (release,
    config sha256, forced symbols) goes to state/config.json and metadata.json."""
    log = ws.log("config")
    start = log.stat().st_size if log.is_file() else 0
    with metadata.stage(cfg, ws, "config", log=log, error=KconfigError) as rec:
        try:
            record = kernel.configure(cfg, ws, src)
        finally:
            rec.set(commands=logged_commands(log, start))
        ws.save_state(Key.CONFIG, record)
        rec.finish("pass", kconfig=record)
    metadata.still_built(ws, "kernel", f"config-{record['release']}", record["config"]["sha256"])
    return record


def logged_commands(log: Path, start: int) -> list[str]:
    """The ``$ command`` lines proc.run wrote to *log* after offset *start*."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [ln[2:] for ln in text.splitlines() if ln.startswith("$ ")]
