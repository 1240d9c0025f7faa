"""Helpers for test_patches: real patch authors (git format-patch, hg export, diff -u) working in
their own clones of the test upstreams, tree snapshots, and a small kbuild-like C project."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import git

from .upstreams import GitUpstream, HgUpstream, hg

Change = dict[str, "str | bytes | None"]  # path -> new content, None deletes


def _write(root: Path, changes: Change) -> None:
    for path, content in changes.items():
        f = root / path
        if content is None:
            f.unlink()
            continue
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content.encode() if isinstance(content, str) else content)


class GitAuthor:
    """Writes patches the way a kernel developer does: commit in a clone, `git format-patch`."""

    def __init__(self, up: GitUpstream, where: Path) -> None:
        self.path = where
        self.repo = git.Repo.clone_from(up.url, where)
        with self.repo.config_writer() as cw:
            cw.set_value("user", "name", "Dev")
            cw.set_value("user", "email", "dev@example.org")

    def patch(self, changes: Change, msg: str = "change", *extra: str) -> bytes:
        """Commit *changes* on top of the clone's HEAD; the commit as a format-patch mail."""
        _write(self.path, changes)
        self.repo.git.add("--all")
        self.repo.git.commit("-q", "-m", msg)
        return subprocess.run(["git", "format-patch", "-1", "--stdout", *extra], cwd=self.path,
                              check=True, capture_output=True).stdout

    def reset(self, rev: str) -> None:
        self.repo.git.reset("--hard", "-q", rev)


class HgAuthor:
    """Writes patches with `hg export` from a clone of the served hg upstream."""

    def __init__(self, up: HgUpstream, where: Path) -> None:
        self.path = where
        hg("clone", "-q", up.url, str(where))

    def patch(self, changes: Change, msg: str = "change", *extra: str) -> bytes:
        _write(self.path, changes)
        hg("commit", "--addremove", "-m", msg, cwd=self.path)
        env = {**os.environ, "HGPLAIN": "1", "LC_ALL": "C"}
        return subprocess.run(["hg", "export", "-r", ".", *extra], cwd=self.path, env=env,
                              check=True, capture_output=True).stdout


def plain_diff(root: Path, before: dict[str, str], after: dict[str, str]) -> bytes:
    """A unified diff made by `diff -u` between two directories (a/ and b/)."""
    for side, files in (("a", before), ("b", after)):
        _write(root / side, dict(files))
    res = subprocess.run(["diff", "-ruN", "a", "b"], cwd=root, capture_output=True)
    assert res.returncode == 1, res.stderr
    return res.stdout


def write_series(pdir: Path, patches: dict[str, bytes], lines: list[str] | None = None) -> None:
    """Put *patches* into *pdir* and list them (or *lines*) in its series file."""
    pdir.mkdir(parents=True, exist_ok=True)
    for name, data in patches.items():
        (pdir / name).write_bytes(data)
    text = "\n".join(lines if lines is not None else list(patches))
    (pdir / "series").write_text("# test series\n" + text + "\n")


def snapshot(tree: Path) -> dict[str, tuple[bytes | None, int, int]]:
    """Content, mtime (ns) and mode of every file and directory outside VCS metadata."""
    out: dict[str, tuple[bytes | None, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".hg")]
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(tree))] = (p.read_bytes() if p.is_file() else None,
                                             st.st_mtime_ns, st.st_mode)
    return out


# A kbuild-like project: one object per .c, header dependencies tracked with -MD, and a
# kbuild-style "  CC      x.o" line per compiled object so a test can count them.
KBUILD_MAKEFILE = """\
OBJS := main.o pciback.o guestdev.o reassign.o xenbus.o
CC ?= gcc

vmlinux: $(OBJS)
\t@echo "  LD      $@"; $(CC) -o $@ $(OBJS)

%.o: %.c
\t@echo "  CC      $@"; $(CC) -O0 -MD -c -o $@ $<

-include $(OBJS:.o=.d)
"""


def kbuild_sources() -> dict[str, str]:
    files = {"Makefile": KBUILD_MAKEFILE, "xen.h": "#define XEN 1\nint answer(int);\n",
             "main.c": '#include "xen.h"\nint main(void) { return answer(0) != 42; }\n'}
    for i, name in enumerate(("pciback", "guestdev", "reassign", "xenbus")):
        body = "".join(f"static int {name}_f{k}(int x) {{ return x + {k}; }}\n" for k in range(8))
        use = " + ".join(f"{name}_f{k}(0)" for k in range(8))
        files[f"{name}.c"] = f'#include "xen.h"\n{body}int {name}_sum(void) {{ return {use}; }}\n'
        if i == 0:
            files[f"{name}.c"] += "int answer(int x) { return 42 + x; }\n"
    return files
