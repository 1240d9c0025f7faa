"""PCI addresses as written in configs and on command lines: BDFs and 2008-style device paths.

Pure parsing with errors that name exactly what is wrong; nothing here reads the machine, so
the config loader can check ``[passthrough] devices`` entries with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pipeline.errors import DeviceError

BDF_FORMS = "expected BB:DD.F or DDDD:BB:DD.F (hex, device <= 1f, function <= 7), e.g. 00:19.0"
PATH_FORM = (
    "expected HID[:UID]-DD.F[-DD.F...] (hex hops, device <= 1f, function <= 7), "
    "e.g. PNP0A08:0-1c.1-00.0"
)
_HID = re.compile(r"[A-Z]{3}[0-9A-F]{4}|[A-Z0-9]{4}[0-9A-F]{4}")
_UID = re.compile(r"[A-Za-z0-9_.]{1,8}")
_HOP = re.compile(r"([0-9a-fA-F]{1,2})\.([0-9a-fA-F])")


@dataclass(frozen=True, order=True)
class Bdf:
    """A PCI address. ``str()`` is the full form Linux and Xen options want."""

    domain: int
    bus: int
    dev: int
    func: int

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.short}"

    @property
    def short(self) -> str:
        return f"{self.bus:02x}:{self.dev:02x}.{self.func:x}"


def _hex(text: str, width: int) -> int | None:
    """*text* as a hex number of exactly *width* digits, else None."""
    if len(text) != width or not re.fullmatch(r"[0-9a-fA-F]+", text):
        return None
    return int(text, 16)


def _entry(kind: str, form: str, text: str) -> tuple[str, Callable[[str], DeviceError]]:
    """*text* stripped, and the error for what is wrong with it (``bad <kind> "<text>": <why>;
    <form>``); an empty entry is refused here."""

    def bad(why: str) -> DeviceError:
        return DeviceError(f'bad {kind} "{text}": {why}; {form}')

    value = text.strip()
    if not value:
        raise bad("it is empty")
    return value, bad


def _slot(bad: Callable[[str], DeviceError], dev_s: str, func_s: str,
          where: str = "") -> tuple[int, int]:
    """The device and function numbers of hex *dev_s* and *func_s*, within PCI's limits."""
    dev, func = int(dev_s, 16), int(func_s, 16)
    if dev > 0x1F:
        raise bad(f"{where}device {dev_s} is above 1f")
    if func > 7:
        raise bad(f"{where}function {func_s} is above 7")
    return dev, func


def parse_bdf(text: str) -> Bdf:
    """Parse ``BB:DD.F`` or ``DDDD:BB:DD.F``; the error names exactly what is wrong."""
    value, bad = _entry("PCI address", BDF_FORMS, text)
    head, dot, func_s = value.rpartition(".")
    if not dot:
        raise bad("no '.' before the function number")
    fields = head.split(":")
    if len(fields) not in (2, 3):
        raise bad(f"{len(fields) - 1} ':' where 1 or 2 belong")
    domain_s = fields[0] if len(fields) == 3 else "0000"
    bus_s, dev_s = fields[-2], fields[-1]
    numbers = []
    for name, s, width in (("domain", domain_s, 4), ("bus", bus_s, 2), ("device", dev_s, 2),
                           ("function", func_s, 1)):
        n = _hex(s, width)
        if n is None:
            raise bad(f'{name} "{s}" is not {width} hex digit{"s" if width > 1 else ""}')
        numbers.append(n)
    return Bdf(numbers[0], numbers[1], *_slot(bad, dev_s, func_s))


@dataclass(frozen=True)
class Hop:
    """One ``dev.func`` step of a device path."""

    dev: int
    func: int

    def __str__(self) -> str:
        return f"{self.dev:02x}.{self.func:x}"


@dataclass(frozen=True)
class DevicePath:
    """``<hid>[:<uid>]-<dev>.<func>[-<dev>.<func>...]``; ``str()`` pads like device_path.py."""

    hid: str
    uid: str | None
    hops: tuple[Hop, ...]

    @property
    def root(self) -> str:
        return self.hid if self.uid is None else f"{self.hid}:{self.uid}"

    def __str__(self) -> str:
        return "-".join([self.root, *(str(h) for h in self.hops)])


def parse_path(text: str) -> DevicePath:
    """Parse a 2008-style device path with the kernel's limits (hid and uid <= 8 characters)."""
    value, bad = _entry("device path", PATH_FORM, text)
    root, _, rest = value.partition("-")
    hid, colon, uid = root.partition(":")
    if not hid:
        raise bad("no ACPI _HID before the first ':' or '-'")
    if len(hid) > 8:
        raise bad(f'_HID "{hid}" is longer than 8 characters')
    if not _HID.fullmatch(hid):
        raise bad(f'"{hid}" is not an ACPI _HID such as PNP0A08 or PNP0A03 (upper case)')
    if colon and not uid:
        raise bad("empty _UID after ':' (leave out ':' when the root bridge has no _UID)")
    if colon and len(uid) > 8:
        raise bad(f'_UID "{uid}" is longer than 8 characters')
    if colon and not _UID.fullmatch(uid):
        raise bad(f'_UID "{uid}" may hold only letters, digits, "_" and "."')
    if not rest:
        raise bad(f"no -DD.F hop after the root bridge {root}")
    hops = []
    for n, part in enumerate(rest.split("-"), 1):
        m = _HOP.fullmatch(part)
        if not part:
            raise bad(f"hop {n} is empty (doubled or trailing '-')")
        if m is None:
            raise bad(f'hop {n} "{part}" is not DD.F (hex device, hex function)')
        hops.append(Hop(*_slot(bad, m[1], m[2], f'hop {n} "{part}": ')))
    return DevicePath(hid, uid if colon else None, tuple(hops))


def parse_device(text: str) -> Bdf | DevicePath:
    """A ``[passthrough] devices`` entry: a device path when it has a '-' or starts with a _HID."""
    hexish = re.fullmatch(r"\s*[0-9a-fA-F:.]+\s*", text)
    if "-" in text or (re.match(r"\s*[A-Za-z]{3}", text) and not hexish):
        return parse_path(text)
    return parse_bdf(text)


# xl-pci-configuration(5): each option's allowed values (None: an identifier, see _NAME).
OPTIONS: dict[str, tuple[str, ...] | None] = {
    "permissive": ("0", "1"), "msitranslate": ("0", "1"), "seize": ("0", "1"),
    "power_mgmt": ("0", "1"), "rdm_policy": ("strict", "relaxed"), "name": None,
}
ENTRY_FORM = ("expected DEVICE[@VSLOT][,KEY=VALUE...] with KEY one of vslot, "
              + ", ".join(OPTIONS) + " (xl-pci-configuration(5)), e.g. 00:03.0,permissive=1")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class GuestDevice:
    """A ``[[guests]] devices`` entry: the device, its virtual slot and its xl options."""

    device: Bdf | DevicePath
    vslot: int | None = None
    options: tuple[tuple[str, str], ...] = ()  # as written, in order

    def spec(self, bdf: Bdf) -> str:
        """The ``pci = [...]`` entry for *bdf* (the device, or one BDF its path stands for)."""
        head = bdf.short if bdf.domain == 0 else str(bdf)
        slot = "" if self.vslot is None else f"@{self.vslot:x}"
        return head + slot + "".join(f",{k}={v}" for k, v in self.options)


def _vslot(bad: Callable[[str], DeviceError], text: str) -> int:
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{1,2}", text) or int(text, 16) > 0x1F:
        raise bad(f'vslot "{text}" is not a hex slot 0..1f')
    return int(text, 16)


def parse_entry(text: str) -> GuestDevice:
    """Parse ``DEVICE[@VSLOT][,KEY=VALUE...]``: an unknown key, a bad value or a key given twice
    is an error naming it."""
    value, bad = _entry("guest device", ENTRY_FORM, text)
    head, *fields = value.split(",")
    dev_text, at, slot_text = head.partition("@")
    device = parse_device(dev_text)
    vslot = _vslot(bad, slot_text.strip()) if at else None
    seen = {"vslot"} if at else set()
    options = []
    for field in fields:
        key, eq, val = (x.strip() for x in field.partition("="))
        if not eq or not key:
            raise bad(f'option "{field.strip()}" is not KEY=VALUE')
        if key not in OPTIONS and key != "vslot":
            raise bad(f'unknown option "{key}"')
        if key in seen:
            raise bad(f'option "{key}" is given twice' + (" (@ is vslot)" if at else ""))
        seen.add(key)
        if key == "vslot":
            vslot = _vslot(bad, val)
            continue
        allowed = OPTIONS[key]
        if allowed is None and not _NAME.fullmatch(val):
            raise bad(f'{key} "{val}" is not an identifier (letters, digits, "_")')
        if allowed is not None and val not in allowed:
            raise bad(f'{key}={val}: expected ' + " or ".join(allowed))
        options.append((key, val))
    return GuestDevice(device, vslot, tuple(options))


def unique_bdfs(items: Iterable[Bdf]) -> list[Bdf]:
    """*items* without repeats, in first-seen order."""
    return list(dict.fromkeys(items))
