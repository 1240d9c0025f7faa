"""Telling which Xen booted: the GNU build-id of an ELF (what Xen prints at boot), the
banner and build-id read from a console, and the build stamp that makes ``make install-xen``
install the very hypervisor ``doit build`` made."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline import build
from pipeline.boot.checks import xen_identity
from pipeline.build.buildid import gnu_build_id

from .support.tools import need


def test_build_id_of_a_real_elf_as_the_linker_wrote_it(tmp_path: Path) -> None:
    need("gcc")
    src = tmp_path / "m.c"
    src.write_text("int main(void) { return 0; }\n")
    for flags, want in ((["-m64"], "00112233445566778899aabbccddeeff01234567"),
                        (["-m64", "-c"], None)):  # an object file has no build-id
        out = tmp_path / "m"
        subprocess.run(["gcc", *flags, f"-Wl,--build-id=0x{want or '00'}", "-o", str(out),
                        str(src)], check=True)
        assert gnu_build_id(out) == want


def test_no_build_id_in_what_is_not_elf(tmp_path: Path) -> None:
    (tmp_path / "gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 100)
    assert gnu_build_id(tmp_path / "gz") is None
    assert gnu_build_id(tmp_path / "missing") is None


def test_the_console_says_which_xen_booted() -> None:
    console = ("Booting from ROM..(XEN) Xen version 4.17.7 (root@) (gcc (Debian 12.2.0-14) "
               "12.2.0) debug=n Tue Dec  1 20:42:45 UTC 2026\r\r\n(XEN) Latest ChangeSet: \r\r\n"
               "(XEN) build-id: c49965c99c3b8913281113b8a53ab830ee4a1a7b\r\r\n")
    assert xen_identity(console) == {
        "banner": "Xen version 4.17.7 (root@) (gcc (Debian 12.2.0-14) 12.2.0) debug=n "
                  "Tue Dec  1 20:42:45 UTC 2026",
        "build_id": "c49965c99c3b8913281113b8a53ab830ee4a1a7b"}
    assert xen_identity("(XEN) Xen version 4.17.7 (Debian 4.17.7+13)\n")["build_id"] is None


def test_the_xen_build_stamp_is_fixed_once_and_yields_to_the_users(tmp_path: Path) -> None:
    """Xen relinks itself whenever XEN_BUILD_DATE changes (it is in compile.h's command): the
    build fixes it, install reuses it; a user's own value wins; trees without it get none."""
    (tmp_path / "xen").mkdir()
    assert build.xen_stamp(tmp_path, []) == []  # no xen/Makefile
    (tmp_path / "xen" / "Makefile").write_text(
        "ifeq ($(origin XEN_BUILD_DATE), undefined)\nexport XEN_BUILD_DATE := $(shell date)\n")
    date, clock = build.xen_stamp(tmp_path, [])
    assert date.startswith("XEN_BUILD_DATE=") and " UTC " in date and "/" not in date
    assert clock.startswith("XEN_BUILD_TIME=") and clock[-6] == ":"
    assert build.xen_stamp(tmp_path, ["XEN_BUILD_DATE=yesterday"]) == []
