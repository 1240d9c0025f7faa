"""The Xen and dom0 command lines for a config: one definition for ``doit install`` (the
bootloader entry) and ``doit boot`` (QEMU), so the boot check tests what gets installed.

``pci.py`` renders the passthrough options; this module puts them behind the user's own
``[install] xen_cmdline`` and ``dom0_cmdline``.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import pci
from .config import Config
from .errors import DeviceError
from .workspace import Workspace


def flavour(cfg: Config, ws: Workspace) -> str:
    """The dom0 kernel's flavour (``[kernel] flavour``, else detected from the fetched tree)."""
    if cfg.kernel is None:
        raise DeviceError("no [kernel] configured: the dom0 command line needs its flavour")
    return pci.detect_flavour(ws.source_dir(cfg.kernel.source), cfg.kernel.flavour)


def _join(first: Sequence[str], then: str, last: Sequence[str] = ()) -> str:
    """*first* words, then *then*'s words, then *last*; a word already present is not repeated."""
    words: list[str] = []
    for w in [*first, *then.split(), *last]:
        if w not in words:
            words.append(w)
    return " ".join(words)


def xen_cmdline(cfg: Config, extra: Sequence[str] = ()) -> str:
    """The hypervisor options: *extra* (e.g. the boot check's serial console), then
    ``[install] xen_cmdline`` with ``iommu=1`` unless an iommu setting is there."""
    return _join(extra, pci.xen_cmdline(cfg.install.xen_cmdline))


def dom0_cmdline(cfg: Config, flavour: str, topo: pci.Topology | None,
                 extra: Sequence[str] = (), passthrough: bool = True) -> str:
    """The dom0 kernel options: *extra*, ``[install] dom0_cmdline``, then (unless not
    *passthrough*) the options that hand ``[passthrough] devices`` to pciback, device paths
    resolved through *topo* (the machine's PCI topology) unless the kernel takes ``guestdev=``.
    Raises DeviceError when *topo* is needed and None. GRUB 2 needs the result quoted
    (``pci=resource_alignment=`` holds ';')."""
    params = (pci.dom0_params(flavour, cfg.passthrough.devices, cfg.passthrough.reassign, topo)
              if passthrough else [])
    return _join(extra, cfg.install.dom0_cmdline, params)
