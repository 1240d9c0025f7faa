"""The crash-consistency harness: run a doit stage, kill it at a random moment with a real
signal, check what it left, rerun it plainly and compare the result with an uninterrupted
run's, byte for byte.

Right after the kill (one_kill): doit ended within EXIT_WAIT (SIGINT/SIGTERM: with one
``xenpipe: error:`` line and no traceback); no process it started is left after CHILD_GRACE
(by its process group, by a token in the environment every child inherits, by a cwd or
command line in the workspace or root); every JSON record parses and doit's db passes
sqlite's integrity check; each watched file (bootloader files, guest configs) is wholly its
old or new bytes and a grub.cfg passes grub-script-check; every other file is as before the
run, as after an uninterrupted one, or a temporary a next run sweeps (TEMP, half_done).

The comparison (``snapshot``), precisely:

- every entry of the workspace and the install root, by relative path: its type, its mode
  (``st_mode``: permissions included), a symlink's target, a file's sha256; mtimes are not
  compared (a rerun writes later), nor is ``logs/`` (the rerun's logs say more);
- a JSON file (state/, metadata.json, boot and nightly records) is compared as parsed JSON
  with the values of VOLATILE keys (times, durations, the counts of what this very run
  compiled) replaced by a marker: every other value must be equal;
- two names hold a time and are compared without it: a backup ``NAME.xenpipe-<UTC
  stamp>.bak`` becomes ``NAME.xenpipe-<stamp N>.bak`` (N: its rank among that file's
  backups, so their number and contents are still compared); and the durations in
  ``out/kconfig-summary.txt`` (``0.27 s``) are masked, its other lines compared;
- ``.doit.db`` (doit's sqlite3 backend, ``DOIT_CONFIG['backend']``) row by row as JSON,
  masked the same way; a row that saved nothing (EMPTY_ROW) counts as no row;
- a VCS's own directory (``.git``, ``.hg``) by what it means rather than its files (packs
  and dirstates hold times): the checked-out revision, every ref or head and tag, a clean
  ``status`` and a passing ``git fsck`` / ``hg verify``;
- what a stage writes anew at each run, named and filled by its run id (nightly's
  ``reports/``), by the scenario's own checks right after the kill and after the rerun
  (Site.own, Site.killed, Site.rerun), and a record's keys that hold such an id or a time
  (Site.masks).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..support.doit import held_signals
from ..support.tools import REPO

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
VOLATILE = {"duration", "started", "finished", "updated", "steps", "compiled",
            "frontend_seconds", "when", "seconds"}
VCS_DIRS = (".git", ".hg")
MARK = "<volatile>"
# a task that saved nothing (no values, no file_dep) as doit records it: doit decides such a
# task by its uptodate checks alone, so the row and its absence mean the same
EMPTY_ROW = {"_values_:": {}, "checker:": "MD5Checker", "deps:": []}
BACKUP = re.compile(r"^(?P<name>.+)\.xenpipe-\d{8}T\d{6}(-\d+)?\.bak$")
DURATION = re.compile(rb"\b\d+(\.\d+)? s\b")
TEXT_MASKS = {"kconfig-summary.txt": DURATION}
EXIT_WAIT = 60.0  # seconds a signalled doit has to end (SIGINT/SIGTERM: it stops make first)
CHILD_GRACE = 20.0  # seconds its children have to end after it (PR_SET_PDEATHSIG's SIGTERM)


def seed() -> int:
    """XENPIPE_CRASH_SEED replays a run; otherwise a fresh seed (printed by the caller)."""
    given = os.environ.get("XENPIPE_CRASH_SEED")
    return int(given) if given else random.SystemRandom().randrange(1 << 32)


def volatile(key: str) -> bool:
    return key in VOLATILE or key.endswith(("_ns", "_seconds"))


def masked(value: Any, also: frozenset[str] = frozenset()) -> Any:
    """*value* with the values of VOLATILE keys (and of the keys *also*) replaced by MARK."""
    if isinstance(value, dict):
        return {k: MARK if volatile(k) or k in also else masked(v, also)
                for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, also) for v in value]
    return value


def _vcs_view(tree: Path) -> dict[str, Any]:
    """What a clone means: HEAD, refs (or heads and tags), a clean status, an fsck."""
    env = {**os.environ, "HGPLAIN": "1", "LC_ALL": "C"}

    def out(*argv: str) -> str:
        res = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
        assert res.returncode == 0, f"{' '.join(argv)} in {tree}: {res.stdout}{res.stderr}"
        return res.stdout

    if (tree / ".git").is_dir():
        out("git", "fsck", "--no-progress")
        return {"head": out("git", "rev-parse", "HEAD"),
                "refs": out("git", "for-each-ref", "--format=%(objectname) %(refname)"),
                "status": out("git", "status", "--porcelain", "--untracked-files=all"),
                "config": out("git", "config", "--list", "--local")}
    out("hg", "verify", "-q")
    return {"parent": out("hg", "log", "-r", ".", "--template", "{node}"),
            "heads": out("hg", "heads", "--template", "{node} {branch}\n"),
            "tags": out("hg", "tags", "--debug"),
            "status": out("hg", "status", "-mardu")}


def snapshot(*roots: Path, own: tuple[str, ...] = (),
             masks: dict[str, frozenset[str]] | None = None) -> dict[str, Any]:
    """Everything compared about *roots* (see the module docstring); but the top-level
    directories *own* (a scenario compares them itself: Site.own), and with the keys
    ``masks[rel]`` of the JSON file ``root:rel`` masked too (Site.masks)."""
    snap: dict[str, Any] = {}
    for root in roots:
        if not root.exists():
            snap[f"{root.name}:"] = "absent"
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            rel_here = here.relative_to(root)
            if rel_here.parts[:1] in (("logs",), *((d,) for d in own)):
                dirnames[:] = []
                continue
            for vcs in VCS_DIRS:
                if vcs in dirnames:
                    dirnames.remove(vcs)
                    snap[f"{root.name}:{rel_here}/{vcs}"] = _vcs_view(here)
            for name, shown in ranked([*dirnames, *filenames]):
                p = here / name
                rel = f"{root.name}:{(here / shown).relative_to(root)}"
                st = p.lstat()
                if p.is_symlink():
                    snap[rel] = ("link", os.readlink(p))
                elif p.is_dir():
                    snap[rel] = ("dir", st.st_mode)
                elif name == ".doit.db":
                    snap[rel] = ("doit-db", doit_rows(p, (masks or {}).get(rel, frozenset())))
                elif name.endswith(".json"):
                    also = (masks or {}).get(rel, frozenset())
                    snap[rel] = ("json", st.st_mode, masked(json.loads(p.read_bytes()), also))
                else:
                    snap[rel] = ("file", st.st_mode, content_digest(p))
    return snap


TEMP = re.compile(r"^\..+\.(\d+)\.[^/]+\.tmp$|^\..+\.clone-\d+-[^/]*$|^\.download-\d+-"
                  r"|^\..+\.xenpipe-tmp$|^\..+\.(old|new)$")


# make's own work: the O= build directory of the kernel and the Xen tree's objects, where make
# (and kconfig, for .config) write in place and make removes a target it was building when
# stopped; the stage's record says whether it finished, and the rerun's comparison holds the
# directory to an uninterrupted run's
WORK = ("ws:out/kernel-build/", "ws:src/xen/xen/")
SCRATCH = ("logs", "tmp")  # the workspace's logs and scratch (ws/tmp: a stage empties its own)


def entries(*roots: Path, own: tuple[str, ...] = ()) -> dict[str, tuple[object, ...]]:
    """Every file and symlink under *roots* with its mode and sha256 (or target), outside
    what has its own check: VCS directories (their fsck), logs/ and the scratch tmp/ (the
    rerun's comparison sees tmp/ again: it must end as an uninterrupted run leaves it), JSON
    records and doit's db (they must parse), the contents of a temporary's directory, and the
    top-level directories *own* (Site.own: the scenario's own checks)."""
    out: dict[str, tuple[object, ...]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            rel_here = here.relative_to(root)
            dirnames[:] = [d for d in dirnames if d not in VCS_DIRS and not TEMP.match(d)
                           and not (rel_here == Path(".") and d in (*SCRATCH, *own))]
            for name, shown in ranked(filenames):
                p = here / name
                if name.endswith(".json") or name.startswith(".doit.db") or TEMP.match(name):
                    continue
                rel = f"{root.name}:{(here / shown).relative_to(root)}"
                out[rel] = ("link", os.readlink(p)) if p.is_symlink() else \
                    ("file", p.lstat().st_mode, content_digest(p))
    return out


def ranked(names: list[str]) -> list[tuple[str, str]]:
    """Each name and the name compared: a backup's stamp replaced by its rank (BACKUP)."""
    ranks: dict[str, int] = {}
    out = []
    for name in sorted(names):
        m = BACKUP.match(name)
        shown = name
        if m:
            ranks[m["name"]] = ranks.get(m["name"], 0) + 1
            shown = f"{m['name']}.xenpipe-<stamp {ranks[m['name']]}>.bak"
        out.append((name, shown))
    return out


def content_digest(p: Path) -> str:
    """sha256 of a file's bytes, TEXT_MASKS applied."""
    data = p.read_bytes()
    if p.name in TEXT_MASKS:
        data = TEXT_MASKS[p.name].sub(MARK.encode(), data)
    return hashlib.sha256(data).hexdigest()


def half_done(before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]],
              now: dict[str, tuple[object, ...]], ws: Path) -> list[str]:
    """Right after a kill: each file is as it was before the run, as an uninterrupted run
    leaves it, or a temporary a next run sweeps (TEMP); nothing else (a half-written file
    under its final name is what a next run would take for a result). The one exception is
    a tree its fetch record says is being checked out (``checkout``: the next fetch does it
    again, and the rerun's comparison holds it to that), and make's WORK directories."""
    busy = []
    for rec in (ws / "state").glob("fetch-*.json"):
        with contextlib.suppress(ValueError, OSError):
            if json.loads(rec.read_bytes()).get("checkout"):
                busy.append(f"ws:src/{rec.stem.removeprefix('fetch-')}/")
    return [f"{rel}: neither as before the run nor as after it, and not a temporary"
            for rel, entry in sorted(now.items())
            if entry != before.get(rel) and entry != after.get(rel)
            and not rel.startswith((*busy, *WORK))]


def doit_rows(db: Path, also: frozenset[str] = frozenset()) -> dict[str, Any]:
    """doit's sqlite3 dependency records, parsed and masked (*also*: more keys masked; raises
    if it does not open). Read as the next doit finds them: a copy of the database and of the
    hot journal a kill inside a transaction leaves, opened read-write so that sqlite rolls
    the journal back (a read-only connection cannot: "attempt to write a readonly
    database"), without touching the workspace."""
    with tempfile.TemporaryDirectory(prefix="xenpipe-crash-db-") as tmp:
        copy = Path(tmp) / db.name
        shutil.copyfile(db, copy)
        journal = db.with_name(f"{db.name}-journal")
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(journal, copy.with_name(journal.name))
        con = sqlite3.connect(f"file:{copy}?mode=rw", uri=True)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",), db
            rows = {task: masked(json.loads(data), also)
                    for task, data in con.execute("SELECT task_id, task_data FROM doit")}
        finally:
            con.close()
    return {task: row for task, row in rows.items() if row != EMPTY_ROW}


def differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """What differs between two snapshots, one line per path (empty: they are equal)."""
    lines = []
    for key in sorted(set(want) | set(got)):
        if want.get(key) != got.get(key):
            where, a, b = _first_difference(want.get(key), got.get(key))
            lines.append(f"{key}{where}: uninterrupted {str(a)[:300]} != rerun {str(b)[:300]}")
    return lines


def _first_difference(a: Any, b: Any, where: str = "") -> tuple[str, Any, Any]:
    """The path (``[key][1]``) to the first place two values differ, and the two values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}[{k!r}]")
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return where, a, b


def copy_tree(src: Path, dest: Path) -> None:
    """*src* to *dest* with modes, mtimes and symlinks (make decides by mtimes)."""
    if dest.exists():
        shutil.rmtree(dest)
    if src.exists():
        shutil.copytree(src, dest, symlinks=True)


# ------------------------------------------------------------------------- processes
def _stat(pid: str) -> list[str] | None:
    try:
        return (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def leftovers(token: str, pgid: int, paths: tuple[Path, ...], spare: set[int]) -> list[str]:
    """Live processes the run started: in its process group, with its token in their
    environment (every child inherits it), or with a cwd or command line in *paths*."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spare | {me}:
            continue
        fields = _stat(entry.name)
        if fields is None or fields[0] in ("Z", "X"):
            continue
        why = []
        if int(fields[2]) == pgid:
            why.append("process group")
        with contextlib.suppress(OSError):
            if token.encode() in (entry / "environ").read_bytes():
                why.append("environment")
        with contextlib.suppress(OSError):
            cwd = os.readlink(entry / "cwd")
            if any(cwd == str(p) or cwd.startswith(f"{p}/") for p in paths):
                why.append(f"cwd {cwd}")
        cmdline = ""
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            if any(str(p) in cmdline for p in paths):
                why.append("command line")
        if why:
            found.append(f"{entry.name} ({', '.join(why)}): {cmdline[:200]}")
    return found


def wait_no_leftovers(token: str, pgid: int, paths: tuple[Path, ...], spare: set[int]
                      ) -> list[str]:
    """Leftovers after the grace their PR_SET_PDEATHSIG SIGTERM gives them (empty: none)."""
    deadline = time.monotonic() + CHILD_GRACE
    while True:
        left = leftovers(token, pgid, paths, spare)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# ----------------------------------------------------------------------------- runs
@dataclass
class Site:
    """What a scenario prepared: a config, its workspace and install root, the files the
    stage edits in place (bootloader files, guest configs), the environment its doit needs,
    and processes of the test's own that live in its paths (an ``hg serve``)."""

    config: Path
    ws: Path
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    watched: tuple[str, ...] = ()  # paths relative to root: wholly old or wholly new
    spare: set[int] = field(default_factory=set)
    paths: tuple[Path, ...] = ()  # where the run's processes would live (ws, root, ...)
    # what a stage writes anew at each run (nightly's reports/: run ids and times in names
    # and contents): top-level workspace directories compared by the scenario's own checks,
    # right after a kill (killed) and after the rerun (rerun), not byte for byte; and the
    # keys of a JSON record that hold such a name or time, by "root:rel" path
    own: tuple[str, ...] = ()
    masks: dict[str, frozenset[str]] = field(default_factory=dict)
    killed: Callable[[Site], list[str]] | None = None
    rerun: Callable[[Site], list[str]] | None = None


def site_snapshot(site: Site) -> dict[str, Any]:
    """snapshot() of the site's workspace and root, with its own directories and masks."""
    return snapshot(site.ws, site.root, own=site.own, masks=site.masks)


def site_entries(site: Site) -> dict[str, tuple[object, ...]]:
    return entries(site.ws, site.root, own=site.own)


def start(site: Site, task: list[str], token: str) -> subprocess.Popen[bytes]:
    """``doit TASK config=...`` as a user starts it (the installed entry point: ``python -m
    pipeline``, see held_signals), in its own process group, XENPIPE_CRASH_TOKEN in its
    environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *task, f"config={site.config}"], cwd=REPO,
        env={**os.environ, **site.env, "XENPIPE_CRASH_TOKEN": token},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=held_signals)


SUICIDE = """import os, signal, sys
def _hook(event, args):
    if event == {event!r} and {match!r} in repr(args):
        os.kill(os.get{who}pid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(_hook)
"""


def killed_at(where: Path, event: str, match: str, parent: bool = False) -> dict[str, str]:
    """The environment for start() in which each Python process of the run (xenpipe, its
    child doit) SIGKILLs itself (and with *parent*, first its parent: xenpipe, when its
    child doit raises it) the moment it raises the audit event *event* (``os.symlink``,
    ``subprocess.Popen``...) with *match* in the repr of its arguments: a real kill at a
    chosen point, which a kill at a random moment reaches only by chance. A sitecustomize
    module in *where*, first on PYTHONPATH."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "sitecustomize.py").write_text(SUICIDE.format(event=event, match=match,
                                                           who="p" if parent else ""))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(where),
                                                        os.environ.get("PYTHONPATH")]))}


def run(site: Site, task: list[str], timeout: float = 600) -> tuple[float, str]:
    """An uninterrupted run: its duration and output (it must succeed)."""
    t0 = time.monotonic()
    doit = start(site, task, "uninterrupted")
    out, err = doit.communicate(timeout=timeout)
    text = out.decode(errors="replace") + err.decode(errors="replace")
    assert doit.returncode == 0, f"doit {' '.join(task)} failed:\n{text}"
    return time.monotonic() - t0, text


@dataclass
class Kill:
    stage: str
    sig: signal.Signals
    at: float
    rc: int | None = None
    stderr: str = ""
    problems: list[str] = field(default_factory=list)


def one_kill(site: Site, task: list[str], sig: signal.Signals, at: float, stage: str,
             reference: dict[str, Any], old: dict[str, bytes | None],
             new: dict[str, bytes | None], check_tree: Callable[[Site], list[str]] | None = None,
             states: tuple[dict[str, Any], dict[str, Any]] | None = None) -> Kill:
    """Start the stage, send *sig* after *at* seconds, check what it left, rerun, compare."""
    kill = Kill(stage, sig, at)
    token = f"xenpipe-crash-{os.getpid()}-{time.monotonic_ns()}"
    doit = start(site, task, token)
    time.sleep(at)
    with contextlib.suppress(ProcessLookupError):
        os.kill(doit.pid, sig)
    try:
        out, err = doit.communicate(timeout=EXIT_WAIT)
    except subprocess.TimeoutExpired:
        os.killpg(doit.pid, signal.SIGKILL)
        out, err = doit.communicate()
        kill.problems.append(f"doit did not end within {EXIT_WAIT:.0f} s of {sig.name}")
    kill.rc = doit.returncode
    kill.stderr = err.decode(errors="replace")
    if "Traceback" in kill.stderr or "Traceback" in out.decode(errors="replace"):
        kill.problems.append(f"traceback: {kill.stderr[-2000:]}")
    if sig != signal.SIGKILL and doit.returncode not in (0, 1):
        kill.problems.append(f"exit status {doit.returncode} after {sig.name}")
    if sig != signal.SIGKILL and doit.returncode == 1:
        lines = [ln for ln in kill.stderr.splitlines() if ln.strip()]
        if not lines or not lines[-1].startswith("xenpipe: error:") or \
                sum(ln.startswith("xenpipe: error:") for ln in lines) != 1:
            kill.problems.append(f"not one xenpipe: error: line: {kill.stderr[-1500:]}")
    paths = site.paths or (site.ws, site.root)
    for left in wait_no_leftovers(token, doit.pid, paths, site.spare):
        kill.problems.append(f"left running: {left}")
    kill.problems += consistent(site, old, new)
    if states is not None:
        kill.problems += half_done(*states, site_entries(site), site.ws)
    if check_tree is not None:
        kill.problems += check_tree(site)
    if site.killed is not None:
        kill.problems += site.killed(site)
    # a plain rerun converges
    try:
        _, text = run(site, task)
    except AssertionError as exc:
        kill.problems.append(f"rerun: {exc}")
        return kill
    kill.problems += differences(reference, site_snapshot(site))
    if site.rerun is not None:
        kill.problems += [f"rerun: {p}" for p in site.rerun(site)]
    return kill


def consistent(site: Site, old: dict[str, bytes | None], new: dict[str, bytes | None]
               ) -> list[str]:
    """Right after a kill: every JSON record parses, doit's db opens, each watched file is
    wholly the old or wholly the new bytes (and a GRUB 2 file passes grub-script-check)."""
    problems = []
    for base in (site.ws, site.root):
        if not base.exists():
            continue
        for p in base.rglob("*.json"):
            if any(part in VCS_DIRS for part in p.parts) or not p.is_file():
                continue
            try:
                json.loads(p.read_bytes())
            except (ValueError, OSError) as exc:
                problems.append(f"{p}: does not parse: {exc}")
    db = site.ws / ".doit.db"
    if db.exists():
        try:
            doit_rows(db)
        except (sqlite3.Error, AssertionError, ValueError) as exc:
            problems.append(f"{db}: {exc}")
    for rel in site.watched:
        p = site.root / rel
        now = p.read_bytes() if p.is_file() else None
        if now != old.get(rel) and now != new.get(rel):
            problems.append(f"{p}: neither the old nor the new content")
        if now is not None and rel.endswith("grub.cfg"):
            res = subprocess.run(["grub-script-check", str(p)], capture_output=True, text=True)
            if res.returncode != 0:
                problems.append(f"{p}: grub-script-check: {res.stdout}{res.stderr}")
    return problems


def files(root: Path, rels: tuple[str, ...]) -> dict[str, bytes | None]:
    return {r: (root / r).read_bytes() if (root / r).is_file() else None for r in rels}


@contextlib.contextmanager
def saved(site: Site, where: Path) -> Iterator[Callable[[], None]]:
    """Save the workspace and root as they are; yield a function restoring them."""
    copy_tree(site.ws, where / "ws")
    copy_tree(site.root, where / "root")

    def restore() -> None:
        copy_tree(where / "ws", site.ws)
        copy_tree(where / "root", site.root)

    yield restore


def matrix(site: Site, task: list[str], stage: str, tmp: Path, rng: random.Random,
           per_signal: int, check_tree: Callable[[Site], list[str]] | None = None,
           signals: tuple[signal.Signals, ...] = SIGNALS) -> list[Kill]:
    """*per_signal* kills of ``doit TASK`` per signal, each at a random moment of an
    uninterrupted run's duration, from the same starting state."""
    with saved(site, tmp / "before") as restore:
        old = files(site.root, site.watched)
        before = site_entries(site)
        took, _ = run(site, task)
        reference = site_snapshot(site)
        if site.rerun is not None:  # the checks hold for an uninterrupted run
            assert not site.rerun(site), site.rerun(site)
        new = files(site.root, site.watched)
        after = site_entries(site)
        kills = []
        plan = [(sig, rng.uniform(0.0, took * 1.05)) for sig in signals
                for _ in range(per_signal)]
        rng.shuffle(plan)
        for sig, at in plan:
            restore()
            kills.append(one_kill(site, task, sig, at, stage, reference, old, new,
                                  check_tree, (before, after)))
        return kills


def report(kills: list[Kill], rng_seed: int) -> str:
    """The failures, each with what replays it."""
    bad = [k for k in kills if k.problems]
    lines = [f"{len(bad)} of {len(kills)} kills failed (XENPIPE_CRASH_SEED={rng_seed})"]
    for k in bad:
        lines.append(f"- {k.stage} {k.sig.name} at {k.at:.3f}s (exit {k.rc}):")
        lines += [f"    {p}" for p in k.problems[:12]]
    return "\n".join(lines)
