"""Mercurial's primitive steps, through the real ``hg`` CLI (HGPLAIN=1 comes from
proc.BASE_ENV); the fetch algorithm that uses them is in ``base``."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pipeline import proc
from pipeline.errors import SourceError, XenpipeError
from pipeline.fetch.base import HEX40, Vcs, transfer_failed


class Hg(Vcs):
    """Mercurial through the real ``hg`` CLI (HGPLAIN=1 comes from proc.BASE_ENV)."""

    name = "hg"
    marker = ".hg"
    diff_command = "hg diff"
    revert_command = "hg revert --no-backup"

    def _hg(self, dest: Path | None, *args: str, log: Path | None = None, what: str | None = None,
            check: bool = True, error: type[XenpipeError] = SourceError) -> proc.Result:
        argv = ["hg", *(["-R", str(dest)] if dest else []), *args]
        return proc.run(argv, capture=True, log=log, check=check, error=error, what=what)

    def clone(self, url: str, dest: Path, log: Path) -> None:
        try:
            self._hg(None, "clone", "--noupdate", "--", url, str(dest), log=log,
                     what=f"hg clone {proc.redact(url)}")
        except SourceError as exc:
            raise transfer_failed(exc, url) from None

    def recover(self, dest: Path, log: Path) -> None:
        """Roll back a transaction a killed hg left (its journal): every later pull refuses
        the repository until ``hg recover`` ran (crash suite, fetch-update SIGKILL, seed
        4080810188). The rollback only drops what the killed pull had half-added."""
        if (dest / ".hg" / "store" / "journal").exists():
            self._hg(dest, "recover", log=log, what=f"hg recover in {dest}")

    def pull(self, dest: Path, url: str, log: Path) -> None:
        self.recover(dest, log)
        try:
            self._hg(dest, "pull", "--", url, log=log, what=f"hg pull {proc.redact(url)}")
        except SourceError as exc:
            raise transfer_failed(exc, url) from None

    def identify(self, dest: Path, rev: str | None) -> tuple[str | None, bool]:
        rev = rev or "tip"
        res = self._hg(dest, "log", "-r", rev, "--template", "{node}\n{join(tags, '\n')}\n",
                       check=False)
        node, *tags = res.stdout.splitlines() or [""]
        if res.returncode != 0 or not HEX40.fullmatch(node):
            return None, False
        return node, bool(HEX40.fullmatch(rev)) or (rev in tags and rev != "tip")

    def floating(self, rev: str | None) -> bool:
        return rev in (None, "tip")  # identify never calls tip pinned

    def checkout(self, dest: Path, resolved: str, log: Path) -> None:
        self._hg(dest, "update", "--clean", "--rev", resolved, log=log)

    def current(self, dest: Path) -> str | None:
        try:
            with open(dest / ".hg" / "dirstate", "rb") as f:
                node = f.read(20).hex()
        except OSError:
            return None
        return None if node == "0" * 40 else node

    def related(self, dest: Path, url: str, log: Path) -> bool:
        """Same first changeset (hg refuses to pull from a repository without it)."""
        local = self._hg(dest, "log", "-r", "0", "--template", "{node}", check=False).stdout
        remote = self._hg(None, "identify", "--debug", "--id", "-r", "0", "--", url, log=log,
                          what=f"hg identify {proc.redact(url)}").stdout.split()
        return bool(local) and remote[:1] == [local]

    def changes(self, dest: Path, error: type[XenpipeError] = SourceError) -> list[str]:
        res = self._hg(dest, "status", "--modified", "--added", "--removed", "--deleted",
                       "--no-status", error=error)
        return res.stdout.splitlines()

    def log_between(self, dest: Path, old: str, new: str, limit: int) -> list[str]:
        res = self._hg(dest, "log", "-r", f"reverse(only({new}, {old}))", "--limit", str(limit),
                       "--template", "{node|short} {desc|firstline}\\n", check=False)
        return res.stdout.splitlines() if res.returncode == 0 else []

    def cat(self, dest: Path, resolved: str, paths: Iterable[str]) -> dict[str, bytes | None]:
        """One ``hg cat -o`` per 200 files, through files so that bytes stay bytes (each hg
        call costs a Python start-up)."""
        paths = sorted(set(paths))
        out = Path(tempfile.mkdtemp(prefix=".cat-", dir=dest.parent))
        try:
            for i in range(0, len(paths), 200):
                self._hg(dest, "cat", "-r", resolved, "-o", f"{out}/%p", "--",
                         *(f"path:{p}" for p in paths[i:i + 200]), check=False)
            return {p: (out / p).read_bytes() if (out / p).is_file() and
                    not (out / p).is_symlink() else None for p in paths}
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def revisions_between(self, dest: Path, good: str, bad: str) -> list[str]:
        if not self._hg(dest, "log", "-r", f"{good} and ancestors({bad})", "--template",
                        "{node}\\n").stdout.strip():
            raise SourceError(f"{good[:12]} is not an ancestor of {bad[:12]} in {dest}: "
                              "give a good revision older than the bad one")
        return self._hg(dest, "log", "-r", f"sort(only({bad}, {good}), rev)", "--template",
                        "{node}\\n").stdout.split()

    def describe(self, dest: Path, rev: str) -> dict[str, str]:
        out = self._hg(dest, "log", "-r", rev, "--template",
                       "{node}\\n{author}\\n{date|rfc3339date}\\n{desc|firstline}\\n").stdout
        node, author, date, summary = [*out.splitlines(), "", "", "", ""][:4]
        return {"rev": node, "author": author, "date": date, "summary": summary}
