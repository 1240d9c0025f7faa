"""The keys of the slow tests' shared artifacts (tests/support/keys.py): a change to the code
that makes an artifact, or to its inputs, names another directory, so a warm test cache never
passes on what an older pipeline built; code that does not make it leaves the key alone."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from .support import keys
from .support.realkernel import KERNEL_MODULES, kernel_key, rootfs_key
from .support.realxen import XEN_MODULES
from .support.tools import REPO


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the code and configs the keys read, to edit."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "pipeline", root / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copy(REPO / "dodo.py", root)
    return root


def edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# changed\n")


@pytest.mark.parametrize(("changed", "kernel", "rootfs"), [
    ("pipeline/kernel/kbuild.py", True, False),  # a stage module
    ("pipeline/build/progress.py", True, False),
    ("pipeline/fetch/tarball.py", True, False),  # the import of linux-source
    ("pipeline/patch/applier.py", True, False),
    ("pipeline/files.py", True, True),  # imported by both, two hops away
    ("pipeline/tasks.py", True, False),  # the task graph
    ("dodo.py", True, False),
    ("configs/demo.toml", True, False),  # an input
    ("pipeline/boot/rootfs.py", False, True),
    ("pipeline/install/initramfs.py", False, True),  # rootfs finds its tools there
    ("pipeline/boot/qemu.py", False, False),  # makes neither
    ("pipeline/nightly/report.py", False, False),
])
def test_a_change_to_what_makes_an_artifact_changes_its_key(
        repo: Path, tmp_path: Path, changed: str, kernel: bool, rootfs: bool) -> None:
    tarball = tmp_path / "linux.tar.xz"
    tarball.write_bytes(b"x")
    before = kernel_key(tarball, repo), rootfs_key(repo)
    assert before == (kernel_key(tarball, repo), rootfs_key(repo))  # a key is stable
    edit(repo / changed)
    after = kernel_key(tarball, repo), rootfs_key(repo)
    assert (before[0] != after[0], before[1] != after[1]) == (kernel, rootfs)


def test_a_new_tarball_is_a_new_kernel_key(repo: Path, tmp_path: Path) -> None:
    tarball = tmp_path / "linux.tar.xz"
    tarball.write_bytes(b"x")
    before = kernel_key(tarball, repo)
    os.utime(tarball, ns=(1, 1))
    assert kernel_key(tarball, repo) != before


def test_sources_follow_imports_not_package_exports() -> None:
    """A stage's closure: what it imports, transitively (``from pkg import module`` and
    lazy imports too), and the ``__init__`` of each package on the way as a file."""
    rel = {str(p.relative_to(REPO)) for p in keys.sources(("pipeline.boot.rootfs",))}
    assert {"pipeline/boot/rootfs.py", "pipeline/install/initramfs.py", "pipeline/proc.py",
            "pipeline/boot/__init__.py", "pipeline/__init__.py"} <= rel
    assert "pipeline/boot/qemu.py" not in rel  # pipeline.boot exports it; rootfs never runs it
    kernel = {str(p.relative_to(REPO)) for p in keys.sources(KERNEL_MODULES)}
    assert {"pipeline/kernel/oldconfig.py", "pipeline/fetch/hg.py", "pipeline/files.py"} <= kernel
    xen = {str(p.relative_to(REPO)) for p in keys.sources(XEN_MODULES)}
    assert "pipeline/build/__init__.py" in xen and "pipeline/boot/rootfs.py" not in xen
    with pytest.raises(ValueError, match="pipeline.nope: no such module"):
        keys.sources(("pipeline.nope",))


def test_keyed_dir_removes_only_long_unused_ones_of_its_kind(tmp_path: Path) -> None:
    old = keys.keyed_dir(tmp_path, "kernel", "0" * 16)
    recent = keys.keyed_dir(tmp_path, "kernel", "1" * 16)
    other_kind = keys.keyed_dir(tmp_path, "xen", "2" * 16)
    long_ago = time.time() - (keys.STALE_DAYS + 1) * 86400
    for d in (old, other_kind):
        os.utime(d / keys.USED, (long_ago, long_ago))
    new = keys.keyed_dir(tmp_path, "kernel", "3" * 16)
    assert new.is_dir() and recent.is_dir() and other_kind.is_dir()
    assert not old.exists()
