"""The declared config keys: per table, each key's type, default and checks.

The schema is data; the checking in ``load`` is generic. ``model`` checks at import that
every key here has a dataclass field to carry it and every field a key (no drift).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError
from pipeline.pci.address import parse_device, parse_entry

FORCED_SYMBOLS = ("CONFIG_XEN_PCIDEV_BACKEND=y",)


def ssh_destination(value: str) -> None:
    """An ssh destination is one word that ssh cannot take for an option."""
    if value.startswith("-") or any(c.isspace() for c in value):
        raise ConfigError(f'expected an ssh destination such as "root@box", got "{value}"')


def at_least_one(value: int) -> None:
    """A count of things QEMU gives the machine (CPUs) is 1 or more."""
    if value < 1:
        raise ConfigError(f"expected 1 or more, got {value}")


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] = ()
    items: type | None = None  # element type for lists
    empty: bool = False  # a str may be "" (else an empty string is refused)
    check: Callable[[Any], Any] | None = None  # raises XenpipeError for a bad value (or item)


SCHEMA: dict[str, dict[str, Key]] = {
    "workspace": {"dir": Key(str, "build"), "mirror": Key(str), "retention": Key(int, 10)},
    "sources.*": {
        "vcs": Key(str, required=True, choices=("hg", "git", "tarball")),
        "url": Key(str, required=True),
        "rev": Key(str),
        "patches": Key(str),
    },
    "xen": {
        "source": Key(str, required=True),
        "targets": Key(list, items=str),
        "make_args": Key(list, [], items=str),
    },
    "kernel": {
        "source": Key(str, required=True),
        "base": Key(str, "x86_64_defconfig"),
        "fragments": Key(list, [], items=str),
        "symbols": Key(list, [], items=str),
        "frontend": Key(str, "oldconfig", choices=("oldconfig", "menuconfig")),
        "make_args": Key(list, [], items=str),
        "flavour": Key(str, "auto", choices=("auto", "xenlinux", "mainline", "guestdev")),
        "strict": Key(bool, False),  # every fragment line a requirement, not a warning
    },
    "build": {"jobs": Key(int, 0), "ccache": Key(bool, False)},
    "install": {
        "root": Key(str),
        "bootloader": Key(str, "grub2", choices=("grub2", "grub-legacy", "none")),
        "initramfs": Key(
            str, "auto", choices=("auto", "mkinitrd", "dracut", "update-initramfs", "none")
        ),
        "xen_cmdline": Key(str, "iommu=1", empty=True),
        "dom0_cmdline": Key(str, "ro root=LABEL=/", empty=True),
        "once": Key(bool, True),
        "allow_system_devices": Key(bool, False),
    },
    "passthrough": {
        "devices": Key(list, [], items=str, check=parse_device),
        "reassign": Key(bool, False),
        # hide: pciback takes the devices at boot (xen-pciback.hide=); assignable: dom0 keeps
        # them until xl pci-assignable-add before a guest starts (pipeline/passthrough.py)
        "mode": Key(str, "hide", choices=("hide", "assignable")),
    },
    "guests[]": {
        "name": Key(str, required=True),
        "config": Key(str, required=True),
        "toolstack": Key(str, "xl", choices=("xl", "xm")),
        "type": Key(str, "pv", choices=("pv", "hvm")),
        "devices": Key(list, [], items=str, check=parse_entry),  # with xl's per-device options
    },
    "boot": {
        "xen": Key(str),
        "qemu": Key(str, "qemu-system-x86_64"),
        "machine": Key(str, "q35"),
        "devices": Key(list, [], items=str),
        "timeout": Key(int, 600),
        "memory": Key(int, 2048),
        "guest": Key(bool),  # None: unset, see boot.guestcheck.enabled
        "via": Key(str, "direct", choices=("direct", "disk")),  # disk: pipeline/boot/disk
        "cpus": Key(int, 1, check=at_least_one),  # QEMU -smp (bench/boot.py measures it)
        "tcg": Key(str, "multi", choices=("multi", "single")),  # TCG's threads with cpus > 1
    },
    "target": {  # a test box reached with the OpenSSH client (issue 18)
        "ssh": Key(str, required=True, check=ssh_destination),
        "ssh_args": Key(list, [], items=str),
        "console": Key(list, [], items=str),
        "power_cycle": Key(list, [], items=str),
        "boot_timeout": Key(int, 600),
    },
}
TOP_LEVEL = (
    "workspace", "sources", "xen", "kernel", "build", "install", "passthrough", "guests", "boot",
    "target",
)
