"""The Xen and dom0 command lines for a config: one definition for ``doit install`` (the
bootloader entry) and ``doit boot`` (QEMU), so the boot check tests what gets installed.

``pci.py`` renders the passthrough options; this module puts them behind the user's own
``[install] xen_cmdline`` and ``dom0_cmdline``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from pipeline import pci
from pipeline.config import Config
from pipeline.errors import DeviceError
from pipeline.pci import dom0use, xenplatform
from pipeline.workspace import Workspace


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


def base(cfg: Config) -> str:
    """What a ``guestdev=`` dom0 kernel is built on (``pci.kernel_family`` of the fetched
    tree; ``mainline``, as patches/linux is, when there is no tree to look at)."""
    if cfg.kernel is None:
        return "mainline"
    return pci.kernel_family(Workspace(cfg.workspace).source_dir(cfg.kernel.source)) or "mainline"


# options whose last occurrence is the only one the kernel keeps, with their list syntax
_LISTS = {"guestdev": (re.compile(r"[^,]+"), ","),
          "xen-pciback.hide": (re.compile(r"\([^()]*\)"), ""),
          "pciback.hide": (re.compile(r"\([^()]*\)"), "")}
_ALIASES = {"xen-pciback.guestdev": "guestdev", "xen_pciback.guestdev": "guestdev",
            "xen_pciback.hide": "xen-pciback.hide"}


def _key(word: str) -> str | None:
    name, eq, _ = word.partition("=")
    return _ALIASES.get(name, name) if eq else None


def fold(user: Sequence[str], params: Sequence[str]) -> tuple[list[str], list[str]]:
    """*user*'s words without those that set a list option *params* sets too, and *params*
    with those values first: the kernel keeps only the last ``guestdev=`` (or hide=), so a
    second one would silently drop the user's entries."""
    ours = {_key(p) for p in params} & _LISTS.keys()
    theirs: dict[str | None, list[str]] = {k: [] for k in ours}
    kept = []
    for word in user:
        if _key(word) in ours:
            theirs[_key(word)].append(word.partition("=")[2])
        else:
            kept.append(word)
    merged = []
    for p in params:
        key = _key(p)
        if key in ours and theirs[key]:
            item, sep = _LISTS[key]
            values = [v for text in (*theirs[key], p.partition("=")[2]) for v in item.findall(text)]
            p = f"{key}={sep.join(dict.fromkeys(values))}"
        merged.append(p)
    return kept, merged


def hides(cfg: Config) -> bool:
    """Whether dom0 hands ``[passthrough] devices`` to pciback at boot (``mode = "hide"``);
    ``"assignable"``: dom0 keeps them until ``xl pci-assignable-add`` before a guest starts."""
    return cfg.passthrough.mode == "hide"


def dom0_cmdline(cfg: Config, flavour: str, topo: pci.Topology | None,
                 extra: Sequence[str] = (), passthrough: bool = True) -> str:
    """The dom0 kernel options: *extra*, ``[install] dom0_cmdline``, then (unless not
    *passthrough*) the options that hand ``[passthrough] devices`` to pciback (only their
    realignment in assignable mode: :func:`hides`), device paths
    resolved through *topo* (the machine's PCI topology) unless the kernel takes ``guestdev=``;
    a ``guestdev=`` or hide option in ``dom0_cmdline`` is merged into ours (see fold).
    Raises DeviceError when *topo* is needed and None. GRUB 2 needs the result quoted
    (``pci=resource_alignment=`` holds ';')."""
    params = (pci.dom0_params(flavour, cfg.passthrough.devices, cfg.passthrough.reassign, topo,
                              base(cfg) if flavour == "guestdev" else "mainline",
                              hide=hides(cfg))
              if passthrough else [])
    user, params = fold(cfg.install.dom0_cmdline.split(), params)
    return _join(extra, " ".join(user), params)


def guestdev_entries(cmdline: str) -> list[str]:
    """The entries of the (last) ``guestdev=`` on a dom0 command line, as the kernel sees
    them."""
    values = [w.partition("=")[2] for w in cmdline.split() if _key(w) == "guestdev"]
    return [e for e in values[-1].split(",") if e] if values else []


def devices_report(cfg: Config, ws: Workspace, box: pci.Box) -> str:
    """``doit devices``: pci.report's table and warnings for *box*, then the dom0 command line
    the bootloader entry would get there (unless there is no [kernel]), and a note for each
    bridge a guestdev= path hands to pciback with the devices behind it."""
    text = pci.report(cfg.passthrough.devices, xen_cmdline=cfg.install.xen_cmdline,
                      allow_system_devices=cfg.install.allow_system_devices,
                      sysfs=box.sysfs, proc=box.proc)
    text = box.show(f"devices of {box.origin}:\n{text}")
    if cfg.kernel is None:
        return text
    topo = pci.scan(box.sysfs, box.whence)
    try:
        kind = flavour(cfg, ws)
        lines = [f"dom0 command line ({kind} kernel): {dom0_cmdline(cfg, kind, topo)}"]
    except DeviceError as exc:
        return f"{text}\ndom0 command line: not known: {box.show(str(exc))}"
    for entry in cfg.passthrough.devices:
        path = pci.parse_device(entry)
        if kind != "guestdev" or isinstance(path, pci.Bdf):
            continue
        try:
            dev = topo.lookup(path)
        except DeviceError:
            continue  # pci.report has warned
        if dev.is_bridge:
            lines.append(f"note: guestdev path {entry.strip()} names bridge {dev.bdf}: "
                         "xen-pciback seizes the bridge too, so dom0's PCIe port services "
                         "(AER, hotplug, PME) stop for it")
    return "\n".join([text, *lines])


_HVM = re.compile(r"^\s*(?:type|builder)\s*=\s*[\"']hvm[\"']", re.M)


def hvm_devices(cfg: Config, topo: pci.Topology) -> dict[pci.Bdf, bool] | None:
    """Per device a [[guests]] entry gives away: whether that guest is HVM (its ``type``, or
    ``type``/``builder = "hvm"`` in its config file under install.root); None without guests."""
    if not cfg.guests:
        return None
    out: dict[pci.Bdf, bool] = {}
    for g in cfg.guests:
        try:
            text = (cfg.install.root / g.config.lstrip("/")).read_text(errors="replace")
        except OSError:
            text = ""
        for entry in g.devices:
            try:
                device = str(pci.parse_entry(entry).device)
                bdfs = pci.resolve_devices([device], topo)[device]
            except DeviceError:
                continue
            for b in bdfs:
                out[b] = out.get(b, False) or g.type == "hvm" or bool(_HVM.search(text))
    return out


def device_verdicts(cfg: Config, ws: Workspace, dotconfig: Path | None,
                    box: pci.Box) -> list[pci.Verdict]:
    """The go/no-go of each ``[passthrough] devices`` entry on *box* (checks.py): its sysfs,
    dom0's use of each device, a running Xen's word (``xl info``, ``xl dmesg`` through
    *box*'s runner); *dotconfig*: the built kernel's ``.config`` (absent: no kernel check)."""
    topo = pci.scan(box.sysfs, box.whence)
    platform = []
    iommu = pci.iommu_warning(topo.sysfs)
    if iommu:
        platform.append(pci.Finding(pci.WARN, "iommu", iommu))
    if pci.iommu_disabled(cfg.install.xen_cmdline):
        platform.append(pci.Finding(pci.WARN, "iommu", "install.xen_cmdline turns the IOMMU off"))
    text = None
    if dotconfig is not None and dotconfig.is_file():
        text = dotconfig.read_text(errors="replace")
    try:
        hide: bool | None = flavour(cfg, ws) != "guestdev"
    except DeviceError:
        hide = None
    kernel = pci.check_kernel(text, str(dotconfig), hide)
    if kernel:
        platform.append(kernel)
    info = box.run(["xl", "info"], "xl info") if box.run is not None else None
    dmesg = box.run(["xl", "dmesg"], "xl dmesg") if box.run is not None else None
    if box.run is not None and info is None:
        platform.append(pci.Finding(pci.INFO, "xen", "no xl info (no running Xen there, or "
                                    "not root): the running Xen's checks wait for one"))
    xen_line = xenplatform.info_fields(info or "").get("xen_commandline", "")
    uses = dom0use.uses(box.sysfs, box.proc, box.ssh_connection, xen_line)
    hvm = hvm_devices(cfg, topo)

    def more(dev: pci.Device) -> list[pci.Finding]:
        guest_hvm = None if hvm is None else hvm.get(dev.bdf)
        return [*dom0use.findings(uses.get(dev.bdf, []), cfg.install.allow_system_devices),
                *xenplatform.check_xen(info, dmesg, dev.bdf, guest_hvm)]

    needs = pci.system_devices(topo, box.proc) if box.proc is not None else {}
    found = pci.verdicts(cfg.passthrough.devices, topo, needs,
                         allow_system_devices=cfg.install.allow_system_devices,
                         absent_hint=None if box.is_target else box.hint,
                         platform=platform, more=more)
    return [dataclasses.replace(v, findings=tuple(
        dataclasses.replace(f, text=box.show(f.text)) for f in v.findings)) for v in found]
