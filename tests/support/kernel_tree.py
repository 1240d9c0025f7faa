"""The real Linux 6.1 tree for slow tests: Debian's linux-source-6.1, unpacked once.

The unpacked tree is cached across sessions in ``$XENPIPE_TEST_CACHE`` (default
/tmp/xenpipe-test-cache) and only ever used with ``make O=...``, so it stays clean. Without
the tarball the tests skip, except under CI=true where that is a failure (CI installs it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")


def cache_dir() -> Path:
    return Path(os.environ.get("XENPIPE_TEST_CACHE") or "/tmp/xenpipe-test-cache")


def unpack(tarball: Path, cache: Path) -> Path:
    """Unpack *tarball* under *cache* once (a lock and a done-marker make it safe to share)."""
    name = tarball.name.removesuffix(".tar.xz")
    tree = cache / name
    done = cache / f".{name}.unpacked"
    cache.mkdir(parents=True, exist_ok=True)
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
