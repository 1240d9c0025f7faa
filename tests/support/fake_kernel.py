"""A tiny kbuild look-alike: a real Makefile (``make -C tree O=dir target``) whose config
targets run tests/support/fake_kconfig.py, and a Kconfig shaped like the parts of Linux the
pipeline touches (MODULES, a choice, string/int symbols, the Xen backend menu)."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import tomllib
from pathlib import Path

from pipeline import config

HERE = Path(__file__).resolve().parent
RELEASE = "6.1.0-fake"

MAKEFILE = """\
# kbuild look-alike for tests: make -C <tree> O=<dir> <target>
PYTHON ?= python3
O ?= $(CURDIR)
KCONFIG_CONFIG ?= .config
KBUILD_KCONFIG ?= Kconfig
srctree := $(CURDIR)
export srctree KCONFIG_CONFIG
CONF = cd $(O) && $(PYTHON) $(srctree)/scripts/kconfig/fake_kconfig.py

oldconfig olddefconfig helpnewconfig listnewconfig:
\t$(CONF) --$@ $(KBUILD_KCONFIG)
menuconfig:
ifdef FAKE_HANG
\tsleep 30
else
\t$(CONF) --$@ $(KBUILD_KCONFIG)
endif
defconfig:
\t$(CONF) --alldefconfig $(KBUILD_KCONFIG)
tinyconfig:
\t$(CONF) --allnoconfig $(KBUILD_KCONFIG)
syncconfig:
\t$(CONF) --olddefconfig $(KBUILD_KCONFIG)
kernelrelease:
\t@echo {release}$(shell sed -n 's/^CONFIG_LOCALVERSION="\\(.*\\)"/\\1/p' $(O)/.config)
.PHONY: oldconfig olddefconfig helpnewconfig listnewconfig menuconfig defconfig tinyconfig
.PHONY: syncconfig kernelrelease
"""

KCONFIG = """\
mainmenu "Linux/x86 6.1.0-fake Kernel Configuration"

config MODULES
\tbool "Enable loadable module support"
\tdefault y

menu "General setup"

config LOCALVERSION
\tstring "Local version - append to kernel release"
\tdefault ""

config LOG_BUF_SHIFT
\tint "Kernel log buffer size (16 => 64KB, 17 => 128KB)"
\tdefault 17

choice
\tprompt "Timer frequency"
\tdefault HZ_250

config HZ_100
\tbool "100 HZ"

config HZ_250
\tbool "250 HZ"

config HZ_1000
\tbool "1000 HZ"

endchoice

endmenu

menu "Bus options (PCI etc.)"

config PCI
\tbool "PCI support"
\tdefault y

config ACPI
\tbool "ACPI (Advanced Configuration and Power Interface) Support"
\tdefault y

endmenu

source "drivers/xen/Kconfig"
"""

XEN_KCONFIG = """\
config XEN
\tbool "Xen guest support"

config XEN_DOM0
\tbool "Xen PV Dom0 support"
\tdepends on XEN && ACPI && PCI
\tdefault y

menu "Xen driver support"

config XEN_BACKEND
\tbool "Backend driver support"
\tdepends on XEN

config XEN_BLKDEV_BACKEND
\ttristate "Xen block-device backend driver"
\tdepends on XEN_BACKEND
\tdefault m

choice
\tprompt "Xen console"
\tdepends on XEN_BACKEND

config XEN_CONSOLE_HVC
\tbool "hvc"

config XEN_CONSOLE_SERIAL
\tbool "serial"

endchoice

config XEN_PCIDEV_BACKEND
\ttristate "Xen PCI-device backend driver"
\tdepends on PCI && XEN
\tdepends on XEN_BACKEND
\tdefault m
\thelp
\t  The PCI device backend driver allows the kernel to export arbitrary
\t  PCI devices to other guests.

config XEN_PCIDEV_FRONTEND
\ttristate "Xen PCI Frontend"
\tdepends on PCI && XEN
\tdefault m

endmenu
"""


def make_tree(root: Path) -> Path:
    """Write the fake kernel tree under *root*; return its path."""
    tree = root / "linux"
    (tree / "scripts" / "kconfig").mkdir(parents=True)
    (tree / "drivers" / "xen").mkdir(parents=True)
    (tree / "Makefile").write_text(MAKEFILE.format(release=RELEASE))
    (tree / "Kconfig").write_text(KCONFIG)
    (tree / "drivers" / "xen" / "Kconfig").write_text(XEN_KCONFIG)
    shutil.copy(HERE / "fake_kconfig.py", tree / "scripts" / "kconfig" / "fake_kconfig.py")
    return tree


def load_config(tmp: Path, tree: Path, *, base: str = "tinyconfig",
                fragments: list[Path] | None = None, symbols: list[str] | None = None,
                frontend: str = "oldconfig", make_args: list[str] | None = None,
                extra: str = "") -> config.Config:
    """A validated xenpipe Config for *tree*, built from TOML as a user would write it."""
    args = [f"PYTHON={sys.executable}", *(make_args or [])]
    q = json.dumps  # a JSON string or list of strings is valid TOML
    text = textwrap.dedent(f"""\
        [workspace]
        dir = {q(str(tmp / "ws"))}

        [sources.linux]
        vcs = "git"
        url = {q(str(tree))}

        [kernel]
        source = "linux"
        base = {q(base)}
        fragments = {q([str(f) for f in fragments or []])}
        symbols = {q(list(symbols or []))}
        frontend = {q(frontend)}
        make_args = {q(args)}
        """) + extra
    path = tmp / "site.toml"
    path.write_text(text)
    return config.parse(path, text, tomllib.loads(text))
