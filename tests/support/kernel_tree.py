"""The real Linux 6.1 tree for slow tests: Debian's linux-source-6.1, unpacked once.

The unpacked tree is cached across sessions in ``$XENPIPE_TEST_CACHE`` (default
/tmp/xenpipe-test-cache), in a directory keyed by the tarball (tests/support/keys.py: GNU tar
makes it, no xenpipe code), and only ever used read-only (``make O=...``, patches applied to
copies), so it stays clean. Without
the tarball the tests skip, except under CI=true where that is a failure (CI installs it).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

from . import keys
from .realkernel import TARBALL, cache_dir


def unpack(tarball: Path, cache: Path) -> Path:
    """Unpack *tarball* under *cache* once (a lock and a done-marker make it safe to share)."""
    name = tarball.name.removesuffix(".tar.xz")
    cache = keys.keyed_dir(cache, "tree", keys.key({"tarball": keys.file_identity(tarball)}))
    tree = cache / name
    done = cache / f".{name}.unpacked"
    with open(cache / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists() and (tree / "Makefile").is_file():
            return tree
        tmp = cache / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tree, ignore_errors=True)
        tmp.mkdir()
        subprocess.run(["tar", "-xJf", str(tarball), "-C", str(tmp)], check=True)
        (tmp / name).rename(tree)
        tmp.rmdir()
        done.write_text(f"{tarball} {tarball.stat().st_mtime_ns}\n")
    return tree


def unpacked_tree() -> Path:
    """The shared linux-source-6.1 tree of the cache, unpacked on first use."""
    return unpack(TARBALL, cache_dir())
