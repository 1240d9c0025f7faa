"""Real upstreams made on the fly: hg repositories (served by a real ``hg serve``), git
repositories, tarballs, and the Xen-like tree the nightly tests and bench/nightly.py commit."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import git


def hg(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "HGPLAIN": "1", "HGUSER": "Test <test@example.org>", "LC_ALL": "C"}
    return subprocess.run(["hg", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout


@dataclass
class HgUpstream:
    path: Path
    url: str

    def commit(self, name: str, text: str, msg: str | None = None) -> str:
        """Write *name*, commit every change in the tree (added and removed files too) and
        return the new changeset's full hash: one hg start (``commit -A --debug`` says it)."""
        f = self.path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        out = hg("commit", "--addremove", "--debug", "-m", msg or f"edit {name}", cwd=self.path)
        return re.findall(r"^committed changeset \d+:([0-9a-f]{40})$", out, re.M)[-1]

    def node(self, rev: str = "tip") -> str:
        return hg("log", "-r", rev, "--template", "{node}", cwd=self.path)

    def tag(self, name: str) -> None:
        hg("tag", name, cwd=self.path)



@dataclass
class HgServer:
    """A real ``hg serve`` of a collection: each repository linked into *root* as NAME is
    served at ``{url}NAME/``."""

    root: Path
    url: str
    process: subprocess.Popen[bytes]



@dataclass
class GitUpstream:
    path: Path
    repo: git.Repo

    @property
    def url(self) -> str:
        return str(self.path)

    def commit(self, name: str, text: str, msg: str | None = None) -> str:
        f = self.path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        self.repo.index.add([name])
        return self.repo.index.commit(msg or f"edit {name}").hexsha



def make_tarball(path: Path, files: dict[str, str], top: str | None = "pkg-1.0",
                 mode: str = "w:gz") -> Path:
    """A tarball holding *files* (under one top-level folder unless *top* is None)."""
    with tarfile.open(path, mode) as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


# A Xen-like tree as build.py expects one: `make build-xen` leaves xen/xen.gz and xen/xen-syms.
XEN_TREE = {
    "Makefile": "build-xen:\n\t$(MAKE) -C xen\n",
    "xen/Makefile": ("xen.gz: xen-syms\n\tgzip -9nc xen-syms > xen.gz\n"
                     "xen-syms: main.o\n\t$(CC) -o xen-syms main.o\n"
                     "main.o: main.c\n\t$(CC) -c -o main.o main.c\n"),
    "xen/main.c": "int main(void) { return 0; }\n",
}
