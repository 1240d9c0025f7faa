"""The two commands that put a built kernel's modules into a root: ``make modules_install``
and ``depmod``. ``doit install`` plans them for the install root and the boot stage runs them
for the dom0 initramfs; both take the argv from here so the two cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import kernel
from pipeline.build import make_vars
from pipeline.config import Config


def modules_install_argv(cfg: Config, src: Path, build_dir: Path,
                         dest: str | os.PathLike[str]) -> list[str]:
    """``make modules_install`` of the kernel built in *build_dir* into *dest*
    (``INSTALL_MOD_PATH``), with the make variables of the build (``CC=ccache gcc``...):
    kbuild must not see a new compiler and rebuild. (Nothing runs here: no log.)"""
    assert cfg.kernel is not None
    kb = kernel.Kbuild(src, build_dir, tuple(cfg.kernel.make_args), log=Path(os.devnull))
    variables = [*make_vars(cfg, cfg.kernel.make_args), f"INSTALL_MOD_PATH={os.fspath(dest)}"]
    return kb.argv("modules_install", variables=variables)


def depmod_argv(base: str | os.PathLike[str], system_map: str | os.PathLike[str],
                release: str) -> list[str]:
    """``depmod`` for *release* under *base* (``/lib/modules/<release>`` in it), with the
    kernel's System.map for the symbol versions."""
    return ["depmod", "-b", os.fspath(base), "-F", os.fspath(system_map), release]
