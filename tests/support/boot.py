"""What the boot tests share: the recorded consoles of tests/data/boot/ and private boot
workspaces that borrow the shared real kernel."""

from __future__ import annotations

from pathlib import Path

from pipeline import config
from pipeline.workspace import Workspace

from .realkernel import RealKernel, demo_with_workspace, dom0_only

DATA = Path(__file__).parent.parent / "data" / "boot"


def read(name: str) -> str:
    """A recorded transcript, byte for byte (its \r\r\n line ends kept)."""
    with open(DATA / name, newline="") as f:
        return f.read()


def private_boot(rk: RealKernel, tmp_path: Path, replace: dict[str, str]) -> config.Config:
    """configs/demo.toml with *replace* applied, on a workspace of its own that borrows the
    shared real kernel (read-only: symlinks) so a failing boot leaves the shared one alone.
    dom0 alone: the demo's guest is test_real_build_and_boot's."""
    ws = Workspace(tmp_path / "ws")
    text = dom0_only(demo_with_workspace(ws.dir))
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "boot.toml"
    path.write_text(text)
    ws.out.mkdir(parents=True)
    (ws.out / rk.vmlinuz.name).symlink_to(rk.vmlinuz)
    ws.src.mkdir()
    (ws.src / "linux").symlink_to(rk.ws.src / "linux")
    ws.save_state("build-kernel", rk.ws.state("build-kernel"))
    return config.load(path)
