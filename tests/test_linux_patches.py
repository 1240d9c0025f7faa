"""Our own Linux patches (``patches/linux/series``, quilt format, applied with ``-p1``).

The fast test checks the series is well formed.  The slow one checks what the kernel community
would: each patch applies to Debian's ``linux-source-6.1`` in order, and the kernel's own
``scripts/checkpatch.pl --strict`` finds nothing in any of them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.kernel_tree import unpacked_tree

REPO = Path(__file__).resolve().parent.parent
PATCH_DIR = REPO / "patches" / "linux"
SERIES = PATCH_DIR / "series"
TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
TREE_NAME = "linux-source-6.1"  # the tarball's top-level directory
# A string only a tree carrying our guestdev= patch contains (the pipeline greps for it too).
GUESTDEV_MARKER = '__setup("guestdev=", pcistub_guestdev_setup);'
GUESTDEV_FILE = "drivers/xen/xen-pciback/pci_stub.c"


def series_patches() -> list[Path]:
    """The patch files listed in the series, in order (quilt: one a line, ``#`` comments)."""
    patches: list[Path] = []
    if not SERIES.is_file():
        return patches
    for line in SERIES.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            patches.append(PATCH_DIR / line.split()[0])
    return patches


def test_series_lists_existing_signed_off_patches() -> None:
    assert SERIES.is_file(), f"{SERIES} is missing"
    patches = series_patches()
    assert patches, f"{SERIES} lists no patch"
    for patch in patches:
        assert patch.is_file(), f"{SERIES} lists {patch.name}, which does not exist"
        text = patch.read_text()
        assert re.search(r"^Signed-off-by: .+ <.+>$", text, re.M), f"{patch.name}: no Signed-off-by"
        assert re.search(r"^diff --git a/", text, re.M), f"{patch.name}: no git diff in it"
    assert len({p.name for p in patches}) == len(patches), "a patch is listed twice"


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"})


@pytest.fixture(scope="session")
def pristine_linux() -> Iterator[Path]:
    """Debian's 6.1 source, unpacked once into the cache and reused while the tarball is the
    same; never modified (the patches are applied to copies of the files they touch)."""
    if not TARBALL.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{TARBALL} is missing; .ci/run must install linux-source-6.1")
        pytest.skip(f"{TARBALL} is missing (apt-get install linux-source-6.1)")
    for tool in ("tar", "xz", "patch", "perl"):
        if shutil.which(tool) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{tool} is not installed")
            pytest.skip(f"{tool} is not installed")
    tree = unpacked_tree()  # the slow tests' one unpacked copy (kernel_tree.py)
    yield tree


def _touched_files(patch: Path) -> set[str]:
    """Paths (relative to the tree) that a -p1 patch reads or writes."""
    names = set()
    for line in patch.read_text().splitlines():
        match = re.match(r"^(?:---|\+\+\+) [ab]/(\S+)", line)
        if match:
            names.add(match.group(1))
    return names


@pytest.fixture
def scratch_linux(pristine_linux: Path, tmp_path: Path) -> Path:
    """A copy of the files of the pristine tree that the series touches, to patch for real."""
    scratch = tmp_path / TREE_NAME
    for patch in series_patches():
        for name in _touched_files(patch):
            source = pristine_linux / name
            if source.is_file() and not (scratch / name).exists():
                (scratch / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, scratch / name)
    scratch.mkdir(exist_ok=True)
    return scratch


@pytest.mark.slow
def test_series_applies_to_linux_6_1(scratch_linux: Path, pristine_linux: Path) -> None:
    for patch in series_patches():
        for extra in (["--dry-run"], []):
            result = _run(["patch", "-p1", "--batch", "--forward", *extra, "-i", str(patch)],
                          scratch_linux)
            assert result.returncode == 0, (
                f"patch -p1 {' '.join(extra)} {patch.name} failed:\n{result.stdout}{result.stderr}")
            assert "offset" not in result.stdout and "fuzz" not in result.stdout, (
                f"{patch.name} does not apply cleanly:\n{result.stdout}")
    assert GUESTDEV_MARKER in (scratch_linux / GUESTDEV_FILE).read_text()
    # The cached tree must stay pristine for the next run.
    assert GUESTDEV_MARKER not in (pristine_linux / GUESTDEV_FILE).read_text()


@pytest.mark.slow
@pytest.mark.parametrize("patch", series_patches(), ids=lambda p: p.name)
def test_patch_is_checkpatch_strict_clean(pristine_linux: Path, patch: Path) -> None:
    argv = ["perl", "scripts/checkpatch.pl", "--strict", "--color=never", str(patch)]
    result = _run(argv, pristine_linux)
    report = result.stdout + result.stderr
    assert re.search(r"^total: 0 errors, 0 warnings, 0 checks, \d+ lines checked$", report,
                     re.M), f"checkpatch --strict on {patch.name}:\n{report}"
    assert result.returncode == 0, f"checkpatch --strict on {patch.name}:\n{report}"
