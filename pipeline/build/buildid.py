"""The GNU build-id of an ELF file (``.note.gnu.build-id``), read without binutils: what Xen
prints at boot as ``(XEN) build-id: <hex>``, so a boot log can be matched to the ``xen-syms``
it came from (and told apart from a distribution's hypervisor)."""

from __future__ import annotations

import struct
from pathlib import Path

NT_GNU_BUILD_ID = 3


def _notes(data: bytes, little: bool) -> dict[tuple[bytes, int], bytes]:
    """The notes of one SHT_NOTE section: (name, type) -> desc."""
    end = "<" if little else ">"
    out: dict[tuple[bytes, int], bytes] = {}
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(f"{end}III", data, pos)
        pos += 12
        name = data[pos:pos + namesz].rstrip(b"\0")
        pos += (namesz + 3) & ~3
        out[(name, ntype)] = data[pos:pos + descsz]
        pos += (descsz + 3) & ~3
    return out


def gnu_build_id(path: Path) -> str | None:
    """The build-id of ELF *path* as hex, None when it has none or is not ELF."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return None
    is64, little = data[4] == 2, data[5] == 1
    end = "<" if little else ">"
    if is64:
        shoff, = struct.unpack_from(f"{end}Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(f"{end}HH", data, 0x3A)
    else:
        shoff, = struct.unpack_from(f"{end}I", data, 0x20)
        shentsize, shnum = struct.unpack_from(f"{end}HH", data, 0x2E)
    for i in range(shnum):
        at = shoff + i * shentsize
        if at + shentsize > len(data):
            break
        if is64:
            _, stype, _, _, off, size = struct.unpack_from(f"{end}IIQQQQ", data, at)
        else:
            _, stype, _, _, off, size = struct.unpack_from(f"{end}IIIIII", data, at)
        if stype != 7:  # SHT_NOTE
            continue
        desc = _notes(data[off:off + size], little).get((b"GNU", NT_GNU_BUILD_ID))
        if desc:
            return desc.hex()
    return None
