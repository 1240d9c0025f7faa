"""The install plan: the steps (write, copy, link, run), each already compared with what the
root holds, and the one code path that prints them (``--dry-run``) or carries them out.

A step whose result is already in place is never planned, so a second install with nothing
changed does nothing: no command runs, no file (not even a backup) is touched. Every path is
resolved (symlinks included) and must stay inside the root; files are written atomically; a
file that changes and is not wholly xenpipe's gets a timestamped backup next to it.
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

from pipeline import digest, proc
from pipeline.errors import InstallError
from pipeline.files import atomic_write, sweep_temps
from pipeline.workspace import Key, Workspace

STAGE = Key.INSTALL
MAKE_TIMEOUT = 3600.0


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
    # files that already hold what xenpipe would write (sha256): recorded as written, as if
    # this run had written them (a killed install wrote them and died before recording)
    settled: dict[str, str] = field(default_factory=dict)
    settled_runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # likewise, commands

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
        if self.backed_up(rel, digest.of_bytes(old)):
            return None
        return self._backup_name(rel)

    def backed_up(self, rel: str, sha256: str) -> bool:
        """Whether a backup of *rel* with these very bytes is already there (an install
        killed after its backup, before its write, made it): one is enough."""
        p = self.path(rel)
        return any(digest.of_file(b) == sha256 for b in p.parent.glob(f"{p.name}.xenpipe-*.bak")
                   if b.is_file() and not b.is_symlink())

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
            self.settled[rel] = digest.of_bytes(raw)
            return False
        if os.path.isdir(on_disk):
            raise InstallError(f"{self.show(rel)} is a directory; xenpipe wants to write a "
                               "file: move the directory away and run doit install again")
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
            if current not in (None, "dir"):
                self.settled[rel] = current
            return False
        if current == "dir":
            raise InstallError(f"{self.show(rel)} is a directory; xenpipe wants to copy a "
                               "file: move the directory away and run doit install again")
        backup = None
        if current is not None and current != self.record["files"].get(rel):
            backup = None if self.backed_up(rel, current) else self._backup_name(rel)
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

    def settle_run(self, key: str, inputs: Any, outputs: Sequence[str]) -> None:
        """A command not needed because its outputs already are what it would make: recorded
        as run with *inputs* (see settled)."""
        self.settled_runs[key] = {"inputs": digest.of_json(inputs),
                                  "outputs": {o: file_digest(self.path(o)) for o in outputs}}

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
            if current not in (None, "dir") and current != rec.get(b) \
                    and not self.backed_up(b, current):
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


def _sweep_backup_temps(plan: Plan, rel: str) -> None:
    """The temp of a backup a killed install was writing: its next backup has another stamp,
    so that write never sweeps it (crash suite, install-grub-legacy SIGKILL at 0.821 s, seed
    3923721691: ``.GUEST.hvm.xenpipe-<stamp>.bak.<pid>.<random>.tmp`` stayed)."""
    p = plan.path(rel)
    sweep_temps(p, rf"{re.escape(p.name)}\.xenpipe-[^/]*\.bak")


def apply(step: Step, plan: Plan, log: Path) -> None:
    """Carry out one step."""
    if isinstance(step, Write | Copy):
        _sweep_backup_temps(plan, step.rel)
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
            _sweep_backup_temps(plan, rel)
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
    unrecorded = {k: v for k, v in plan.settled.items() if plan.record["files"].get(k) != v}
    runs = {k: v for k, v in plan.settled_runs.items() if plan.record["runs"].get(k) != v}
    if unrecorded or runs:
        plan.record["files"].update(unrecorded)
        plan.record["runs"].update(runs)
        _save(ws, plan)
    if plan.steps:
        plan.real.mkdir(parents=True, exist_ok=True)
    for n, step in enumerate(plan.steps, 1):
        _log(log, f"[{n}/{len(plan.steps)}] {step.what}: {'; '.join(describe(step))}")
        print(f"install [{n}/{len(plan.steps)}] {step.what}", flush=True)
        apply(step, plan, log)
        _save(ws, plan)
    for text in plan.notes:
        _log(log, f"note: {text}")

