"""Git's primitive steps, through the real ``git`` CLI started by proc.run (its own session,
gone when xenpipe dies); the fetch algorithm that uses them is in ``base``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pipeline import proc
from pipeline.errors import SourceError, XenpipeError, advice
from pipeline.fetch.base import HEX40, Vcs, transfer_failed

_GIT_NOISE = ("Cloning into", "Please make sure you have the correct access rights",
              "and the repository exists.")


def _git_error(text: str) -> str:
    """What git said went wrong, on one line: from its first ``fatal:``/``error:``/``ssh:``
    line on."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(_GIT_NOISE)]
    first = next((i for i, ln in enumerate(lines) if re.search(r"\b(fatal|error|ssh):", ln)),
                 max(len(lines) - 1, 0))
    return proc.redact("; ".join(lines[first:]) or "failed")


def git(dest: Path | None, *args: str, log: Path | None = None, what: str | None = None,
        check: bool = True, env: dict[str, str] | None = None) -> proc.Result:
    """``git -C DEST ARGS`` through proc.run; a failure with *check* is one SourceError line
    that starts with *what* (default: the command) and says what git said."""
    argv = ["git", *(["-C", str(dest)] if dest else []), *args]
    res = proc.run(argv, capture=True, log=log, check=False, env=env, error=SourceError)
    if check and res.returncode != 0:
        hint = advice(res.stdout)
        raise SourceError(f"{what or proc.render(argv)}: {_git_error(res.stdout)}"
                          + (f"; {hint}" if hint else ""))
    return res


class Git(Vcs):
    """Git through the real ``git`` CLI."""

    name = "git"
    marker = ".git"
    diff_command = "git diff"
    revert_command = "git checkout --"

    def clone(self, url: str, dest: Path, log: Path) -> None:
        try:
            git(None, "clone", "--no-checkout", "--", url, str(dest), log=log,
                what=f"git clone {proc.redact(url)}")
        except SourceError as exc:
            raise transfer_failed(exc, url) from None

    def pull(self, dest: Path, url: str, log: Path) -> None:
        try:
            git(dest, "fetch", "--tags", "--force", "--prune", "--", url,
                "+refs/heads/*:refs/remotes/origin/*", log=log,
                what=f"git fetch {proc.redact(url)}")
        except SourceError as exc:
            raise transfer_failed(exc, url) from None
        git(dest, "remote", "set-url", "origin", url, log=log)

    def related(self, dest: Path, url: str, log: Path) -> bool:
        """The new repository's branches and tags share a commit with the checked-out one (a
        fetch of an unrelated repository succeeds in git, and would mix two projects)."""
        self.pull(dest, url, log)
        heads = git(dest, "for-each-ref", "--format=%(objectname)",
                    "refs/remotes/origin").stdout.split()
        return any(git(dest, "merge-base", "HEAD", head, check=False).returncode == 0
                   for head in heads)

    def identify(self, dest: Path, rev: str | None) -> tuple[str | None, bool]:
        rev = rev or "HEAD"
        pinned = [f"refs/tags/{rev}"]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            pinned.insert(0, rev)
        floating = [f"refs/remotes/origin/{rev}", rev]
        if rev == "HEAD":
            floating.insert(0, "refs/remotes/origin/HEAD")
        for cand in pinned + floating:
            res = git(dest, "rev-parse", "--verify", "--quiet", f"{cand}^{{commit}}",
                      check=False)
            sha = res.stdout.strip()
            if res.returncode == 0 and HEX40.fullmatch(sha):
                return sha, cand in pinned
        return None, False

    def checkout(self, dest: Path, resolved: str, log: Path) -> None:
        git(dest, "checkout", "--force", "--detach", resolved, log=log)

    def current(self, dest: Path) -> str | None:
        try:
            head = (dest / ".git" / "HEAD").read_text().strip()
        except OSError:
            return None
        return head if HEX40.fullmatch(head) else None

    def changes(self, dest: Path, error: type[XenpipeError] = SourceError) -> list[str]:
        """Plain ``git status``: importing GitPython would cost more than the rest of a no-op
        ``doit build``, which asks this of every tree."""
        out = proc.run(["git", "-C", str(dest), "status", "--porcelain", "-z",
                        "--untracked-files=no", "--no-renames"], capture=True,
                       error=error).stdout
        return [entry[3:] for entry in out.split("\0") if len(entry) > 3]

    def log_between(self, dest: Path, old: str, new: str, limit: int) -> list[str]:
        res = proc.run(["git", "-C", str(dest), "log", f"--max-count={limit}", "--format=%h %s",
                        f"{old}..{new}"], capture=True, check=False)
        return res.stdout.splitlines() if res.returncode == 0 else []

    def cat(self, dest: Path, resolved: str, paths: Iterable[str]) -> dict[str, bytes | None]:
        """One ``git ls-tree`` for the entries, one ``git cat-file --batch`` for their bytes
        (symlinks, trees and submodules are not files: None)."""
        paths = sorted(set(paths))
        result: dict[str, bytes | None] = dict.fromkeys(paths)
        blobs: dict[str, str] = {}
        for i in range(0, len(paths), 200):
            listed = git(dest, "ls-tree", "-z", "--full-tree", resolved, "--",
                         *paths[i:i + 200]).stdout
            for entry in listed.split("\0"):
                meta, _, path = entry.partition("\t")
                if meta and path in result:
                    mode, kind, sha = meta.split()
                    if kind == "blob" and mode != "120000":
                        blobs[path] = sha
        if not blobs:
            return result
        code, out, err = proc.output(["git", "-C", str(dest), "cat-file", "--batch"],
                                     input="".join(f"{sha}\n" for sha in blobs.values()),
                                     error=SourceError)
        if code != 0:
            raise SourceError(f"git cat-file in {dest}: {_git_error(err.decode(errors='replace'))}")
        at = 0
        for path in blobs:
            nl = out.index(b"\n", at)
            size = int(out[at:nl].split()[2])
            result[path] = out[nl + 1:nl + 1 + size]
            at = nl + 1 + size + 1
        return result

    def revisions_between(self, dest: Path, good: str, bad: str) -> list[str]:
        git = ["git", "-C", str(dest)]
        if proc.run([*git, "merge-base", "--is-ancestor", good, bad], capture=True,
                    check=False).returncode != 0:
            raise SourceError(f"{good[:12]} is not an ancestor of {bad[:12]} in {dest}: "
                              "give a good revision older than the bad one")
        return proc.run([*git, "rev-list", "--reverse", "--topo-order", bad, f"^{good}"],
                        capture=True, error=SourceError).stdout.split()

    def describe(self, dest: Path, rev: str) -> dict[str, str]:
        out = proc.run(["git", "-C", str(dest), "show", "-s", "--format=%H%n%an <%ae>%n%aI%n%s",
                        rev], capture=True, error=SourceError).stdout
        node, author, date, summary = [*out.splitlines(), "", "", "", ""][:4]
        return {"rev": node, "author": author, "date": date, "summary": summary}
