"""Guest domain configs: ``pci = ['00:19.0', '01:01.0']`` in each ``[[guests]]`` config file.

xm configs are Python and xl configs their own format (xl.cfg(5)), but a ``pci`` list is
written the same way in both: a list of quoted BDFs, each optionally followed by ``@vslot`` and
``,key=value`` options (xl-pci-configuration(5)). Only the ``pci`` assignment is touched: an
existing one is replaced in place (keeping the user's own entry text, options included, for
devices that stay), everything else in the file stays byte-for-byte as it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pipeline import pci
from pipeline.config import Config, GuestCfg
from pipeline.errors import InstallError, XenpipeError

if TYPE_CHECKING:
    from pipeline.install.plan import Plan

_ASSIGN = re.compile(r"[ \t]*pci[ \t]*=")
_STRING = re.compile(r"'([^'\n]*)'|\"([^\"\n]*)\"")


def check(cfg: Config, topo: pci.Topology | None) -> dict[str, dict[pci.Bdf, str]]:
    """Each guest's devices as BDFs, each with the ``pci`` entry its ``[[guests]] devices``
    options make ("" for none: the entry is then the user's own, or the plain BDF). Refuses a
    device that is not in passthrough.devices (compared as BDFs, so ``00:19.0`` matches
    ``0000:00:19.0`` and a device path) and a vslot for a path that covers several devices."""
    if not cfg.guests:
        return {}
    hidden = {b for bdfs in pci.resolve_devices(cfg.passthrough.devices, topo).values()
              for b in bdfs}
    out: dict[str, dict[pci.Bdf, str]] = {}
    for g in cfg.guests:
        parsed = {entry: pci.parse_entry(entry) for entry in g.devices}
        try:
            resolved = {entry: pci.resolve_devices([str(p.device)], topo)[str(p.device)]
                        for entry, p in parsed.items()}
        except XenpipeError as exc:
            raise InstallError(f"[[guests]] {g.name}: {exc}") from None
        stray = [entry for entry, bdfs in resolved.items() if not set(bdfs) <= hidden]
        if stray:
            how = ("dom0 makes only those assignable (xl pci-assignable-add)"
                   if cfg.passthrough.mode == "assignable" else "dom0 hides only those at boot")
            raise InstallError(
                f"[[guests]] {g.name}: {', '.join(stray)} not in passthrough.devices "
                f"({', '.join(cfg.passthrough.devices) or 'empty'}); {how}, so only those "
                "can be given to a guest")
        specs: dict[pci.Bdf, str] = {}
        for entry, bdfs in resolved.items():
            p = parsed[entry]
            if p.vslot is not None and len(bdfs) > 1:
                raise InstallError(
                    f"[[guests]] {g.name}: {entry} stands for {len(bdfs)} devices "
                    f"({', '.join(b.short for b in bdfs)}); one virtual slot cannot hold them")
            for b in bdfs:
                specs.setdefault(b, p.spec(b) if p.vslot is not None or p.options else "")
        out[g.name] = specs
    return out


def find_pci(text: str) -> tuple[int, int] | None:
    """The span of the last top-level ``pci = ...`` assignment (from ``pci`` to the end of its
    value, which may run over several lines; a trailing comment is not part of it), or None.
    Quotes, comments, brackets and backslash continuations are followed, so a ``pci =`` inside
    another value or a comment is not one."""
    found = None
    depth, i, n = 0, 0, len(text)
    line_start = True
    start = last = -1  # the assignment being read: its start, the end of its value so far
    while i < n:
        c = text[i]
        if line_start and depth == 0 and start < 0 and (m := _ASSIGN.match(text, i)):
            start = i + len(m[0]) - len(m[0].lstrip())
            i = last = m.end()
            line_start = False
            continue
        line_start = False
        if c in "'\"":
            end = text.find(c, i + 1)
            i = n if end < 0 else end + 1
            last = i
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == "\\" and text.startswith("\n", i + 1):
            i += 2
            continue
        if c in "[(":
            depth += 1
        elif c in "])":
            depth = max(depth - 1, 0)
        if c == "\n":
            if depth == 0 and start >= 0:
                found, start = (start, last), -1
            line_start = True
        elif not c.isspace():
            last = i + 1
        i += 1
    return (start, last) if start >= 0 else found


def entries(text: str) -> list[str] | None:
    """The entries of *text*'s ``pci`` list as written (None: no ``pci =`` assignment)."""
    span = find_pci(text)
    if span is None:
        return None
    return [a or b for a, b in _STRING.findall(text[span[0]:span[1]])]


def entry_bdf(entry: str) -> pci.Bdf | None:
    """The BDF of one ``pci`` list entry (``00:19.0@3,permissive=1``, ``bdf=...``)."""
    fields = entry.split(",")
    spec = next((f.split("=", 1)[1] for f in fields if f.strip().startswith("bdf=")),
                fields[0])
    try:
        return pci.parse_bdf(spec.split("@", 1)[0])
    except XenpipeError:
        return None


def _items(bdfs: Sequence[pci.Bdf] | Mapping[pci.Bdf, str], keep: Sequence[str]) -> list[str]:
    """The ``pci`` entries for *bdfs*: the config's own entry (a mapping's non-empty value),
    else the entry in *keep* for the same device as the user wrote it, else the BDF."""
    specs = bdfs if isinstance(bdfs, Mapping) else {}
    items = []
    for b in bdfs:
        mine = specs.get(b) or next((k for k in keep if entry_bdf(k) == b), None)
        items.append(mine if mine is not None else (b.short if b.domain == 0 else str(b)))
    return items


def render(bdfs: Sequence[pci.Bdf] | Mapping[pci.Bdf, str], keep: Sequence[str] = ()) -> str:
    """``pci = ['00:19.0', ...]``: short BDFs (the 2009 form) unless the domain is not 0; with
    options where ``[[guests]] devices`` gives them (*bdfs* a mapping from ``check``); else an
    entry in *keep* for the same device is kept as the user wrote it."""
    items = [f'"{t}"' if "'" in t else f"'{t}'" for t in _items(bdfs, keep)]
    return f"pci = [{', '.join(items)}]"


def builder(guest: GuestCfg) -> str:
    """The line that makes *guest* an HVM domain (``[[guests]] type = "hvm"``) in its
    toolstack's spelling: xl's ``type = "hvm"``, xm's ``builder = 'hvm'``; "" for PV (both
    toolstacks' default)."""
    if guest.type != "hvm":
        return ""
    return 'type = "hvm"\n' if guest.toolstack == "xl" else "builder = 'hvm'\n"


def update(text: str | None, guest: GuestCfg,
           bdfs: Sequence[pci.Bdf] | Mapping[pci.Bdf, str], origin: str) -> str:
    """*text* (None: no file yet) with its ``pci`` list holding exactly *bdfs*."""
    tool = guest.toolstack
    if text is None:
        return (f'# Xen domain config for "{guest.name}", created by xenpipe (`doit install`) '
                f"from [[guests]] in\n# {origin}. It holds only what xenpipe knows: the domain "
                "name and the PCI devices\n# passed through to it (dom0 hides them at boot). "
                "Add memory, disks, the builder and\n# the rest, then start it with "
                f"`{tool} create {guest.config}`.\n"
                f'name = "{guest.name}"\n{builder(guest)}{render(bdfs)}\n')
    span = find_pci(text)
    if span is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        return (f"{text}{sep}# xenpipe: the PCI devices passed through to {guest.name} "
                f"([[guests]] in {origin})\n{render(bdfs)}\n")
    current = entries(text) or []
    if _items(bdfs, current) == current:
        return text  # already right, in the user's own spelling
    return text[: span[0]] + render(bdfs, current) + text[span[1]:]


def plan(install_plan: Plan, guest: GuestCfg, bdfs: Sequence[pci.Bdf] | Mapping[pci.Bdf, str],
         origin: str) -> None:
    """Add the write of *guest*'s config (if it changes) to the plan."""
    if not bdfs:
        install_plan.note(f"[[guests]] {guest.name} has no devices: {guest.config} left alone")
        return
    old = install_plan.read(guest.config)
    text = None if old is None else old.decode(errors="surrogateescape")
    new = update(text, guest, bdfs, origin)
    install_plan.write(guest.config, new,
                       f"guest {guest.name}: pci = [...] in {guest.config} ({guest.toolstack})",
                       owned=False)

