"""What the disk boot tests share: a private workspace on the shared real kernel whose config
boots from a disk image (``[boot] via = "disk"``) what ``doit install`` wrote into its own
``install.root``, with the consoles the entries need. The image's Debian root
(:mod:`pipeline.boot.disk.root`: debootstrap from apt's mirror, minutes) is built once in
``<cache>/disk-<key>/rootfs/`` and linked as each private workspace's ``rootfs/``."""

from __future__ import annotations

from pathlib import Path

from pipeline import config
from pipeline.boot.disk import root as disk_root
from pipeline.boot.rootfs import cache_dir as rootfs_cache
from pipeline.install.stage import install
from pipeline.workspace import Workspace

from .boot import private_boot
from .realkernel import RealKernel, cache_dir, rootfs_dir

DATA = Path(__file__).parent.parent / "data" / "disk"


def read(name: str) -> str:
    """A recorded disk-boot console, byte for byte."""
    with open(DATA / name, newline="") as f:
        return f.read()


def installed_disk_boot(rk: RealKernel, tmp_path: Path, replace: dict[str, str] | None = None,
                        menu: str | None = None) -> config.Config:
    """configs/demo.toml, dom0 alone, booted from a disk: the entry carries the serial
    consoles (the install's own command lines: no -append adds them), update-initramfs is
    named (a staging root runs no tool, so the probe stands in for the image it names), the
    devices by BDF (the install of a staging root checks paths against this host's sysfs);
    then ``doit install`` into ``<tmp>/root``, which holds *menu* as the box's own
    ``/boot/grub/grub.conf`` first (GRUB Legacy's menu is the user's file), else the box's
    ``/etc/default/grub`` (GRUB 2: the serial console, the known-good entry of Debian's
    kernel as GRUB_DEFAULT, which doit install keeps as saved_entry). Returns the config."""
    root = tmp_path / "root"
    ws = Workspace(tmp_path / "ws")
    shared = rootfs_cache(Workspace(rootfs_dir(cache_dir(), "disk")))
    shared.mkdir(parents=True, exist_ok=True)
    ws.dir.mkdir(parents=True)
    (ws.dir / "rootfs").symlink_to(shared)
    if menu is not None:
        (root / "boot/grub").mkdir(parents=True)
        (root / "boot/grub/grub.conf").write_text(menu)
    else:
        (root / "etc/default").mkdir(parents=True)
        (root / "etc/default/grub").write_text(disk_root.box_defaults(ws))
    cfg = private_boot(rk, tmp_path, {
        'initramfs = "none"': 'initramfs = "update-initramfs"',
        'xen_cmdline = "iommu=1 dom0_mem=1024M"':
            'xen_cmdline = "iommu=1 dom0_mem=1024M console=com1 com1=115200"',
        "[install]\n": f'[install]\nroot = "{root}"\n',
        'dom0_cmdline = "console=hvc0"': 'dom0_cmdline = "console=hvc0 earlyprintk=xen"',
        'devices = ["00:03.0", "PNP0A08:0-1c.0-0.0"]': 'devices = ["00:03.0", "01:00.0"]',
        'timeout = 600': 'timeout = 1200\nvia = "disk"',
        **(replace or {}),
    })
    for name in (f"System.map-{rk.release}", f"config-{rk.release}", "kernel-build"):
        (ws.out / name).symlink_to(rk.ws.out / name)
    install(cfg, ws)
    return cfg
