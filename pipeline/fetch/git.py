"""Git's primitive steps, mostly through GitPython (imported on first use); the fetch
algorithm that uses them is in ``base``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pipeline import proc
from pipeline.errors import SourceError, XenpipeError
from pipeline.fetch.base import HEX40, Vcs

if TYPE_CHECKING:
    import git


def gitpython() -> ModuleType:
    """GitPython, imported on first use: the no-op path (`doit fetch` up to date) never pays
    for it."""
    import git

    return git


_GIT_NOISE = ("Cloning into", "Please make sure you have the correct access rights",
              "and the repository exists.")


def _git_error(exc: git.GitCommandError) -> str:
    """What git said went wrong, on one line: from its first ``fatal:``/``error:``/``ssh:``
    line on (GitPython quotes stderr: ``stderr: 'Cloning into ...``, a last line ``'``)."""
    lines = [ln.strip().removeprefix("stderr: ").strip("'").strip()
             for ln in str(exc.stderr or exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(_GIT_NOISE)]
    first = next((i for i, ln in enumerate(lines) if re.search(r"\b(fatal|error|ssh):", ln)),
                 max(len(lines) - 1, 0))
    return proc.redact("; ".join(lines[first:]) or str(exc))

class Git(Vcs):
    """Git through GitPython."""

    name = "git"
    marker = ".git"
    diff_command = "git diff"
    revert_command = "git checkout --"

    def clone(self, url: str, dest: Path, log: Path) -> None:
        try:
            gitpython().Repo.clone_from(url, dest, no_checkout=True, env=proc.BASE_ENV)
        except gitpython().GitCommandError as exc:
            raise SourceError(f"git clone {proc.redact(url)}: {_git_error(exc)}") from None

    def pull(self, dest: Path, url: str, log: Path) -> None:
        repo = gitpython().Repo(dest)
        try:
            repo.git.fetch("--tags", "--force", "--prune", url,
                           "+refs/heads/*:refs/remotes/origin/*", env=proc.BASE_ENV)
        except gitpython().GitCommandError as exc:
            raise SourceError(f"git fetch {proc.redact(url)}: {_git_error(exc)}") from None
        repo.git.remote("set-url", "origin", url)

    def related(self, dest: Path, url: str, log: Path) -> bool:
        """The new repository's branches and tags share a commit with the checked-out one (a
        fetch of an unrelated repository succeeds in git, and would mix two projects)."""
        self.pull(dest, url, log)
        repo = gitpython().Repo(dest)
        heads = repo.git.for_each_ref("--format=%(objectname)", "refs/remotes/origin").split()
        for head in heads:
            try:
                repo.git.merge_base("HEAD", head)
                return True
            except gitpython().GitCommandError:
                continue
        return False

    def identify(self, dest: Path, rev: str | None) -> tuple[str | None, bool]:
        repo = gitpython().Repo(dest)
        rev = rev or "HEAD"
        pinned = [f"refs/tags/{rev}"]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            pinned.insert(0, rev)
        floating = [f"refs/remotes/origin/{rev}", rev]
        if rev == "HEAD":
            floating.insert(0, "refs/remotes/origin/HEAD")
        for cand in pinned + floating:
            try:
                sha = repo.git.rev_parse("--verify", "--quiet", f"{cand}^{{commit}}")
            except gitpython().GitCommandError:
                continue
            return sha, cand in pinned
        return None, False

    def checkout(self, dest: Path, resolved: str, log: Path) -> None:
        gitpython().Repo(dest).git.checkout("--force", "--detach", resolved)

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
        tree = gitpython().Repo(dest).commit(resolved).tree
        result: dict[str, bytes | None] = {}
        for path in paths:
            try:
                blob = tree / path
            except KeyError:
                result[path] = None
                continue
            result[path] = blob.data_stream.read() if blob.type == "blob" and \
                blob.mode != 0o120000 else None
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
