"""The tests' test boxes: :mod:`pipeline.testbox` (what ``python -m pipeline.testbox`` starts)
with the Debian roots built once per shared test cache (keyed by the code that builds them)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pipeline import testbox
from pipeline.testbox import KNOWN_TITLE, Box
from pipeline.workspace import Workspace

from .realkernel import cache_dir, rootfs_dir

__all__ = ["KNOWN_TITLE", "Box", "box_root", "running_box", "running_disk_box"]


def box_root(disk: bool = False) -> Path:
    """The packed Debian root of a box, built once per cache (debootstrap)."""
    return testbox.root_archive(Workspace(rootfs_dir(cache_dir(), "diskbox" if disk else "box")),
                                disk)


@contextmanager
def running_box(d: Path, kernel: Path, memory: int = 1024) -> Iterator[Box]:
    """A box booting *kernel* directly, its root in RAM (see pipeline.testbox)."""
    with testbox.running_box(d, kernel, box_root(), memory) as box:
        yield box


@contextmanager
def running_disk_box(d: Path, xen: Path, devices: Sequence[str] = (),
                     memory: int = 2048) -> Iterator[Box]:
    """A box booting from its own disk through GRUB 2 (see pipeline.testbox)."""
    with testbox.running_disk_box(d, xen, box_root(disk=True), devices, memory) as box:
        yield box
