"""pipeline.kernel: fast tests on a fake kbuild tree, slow ones on the real Linux 6.1."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pipeline import kernel as kconfig
from pipeline.config import ROOT, Config
from pipeline.errors import KconfigError
from pipeline.kernel import frontend, menuconfig
from pipeline.workspace import Workspace

from .support.fake_kernel import RELEASE, load_config, make_tree
from .support.tools import sha256_of

DOM0 = ROOT / "configs" / "kernel" / "xen-dom0.config"
XEN_ON = "CONFIG_XEN=y\nCONFIG_PCI=y\nCONFIG_XEN_BACKEND=y\n"


def need_pyte() -> None:
    """menuconfig needs pyte: skip without it, except under CI=true (a missing dependency)."""
    try:
        import pyte  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("pyte is not installed; it is a dependency of the menuconfig frontend")
        pytest.skip("pyte is not installed")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path)


@pytest.fixture
def fast_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake menuconfig draws each screen in one write: no need to wait long for quiet."""
    need_pyte()
    monkeypatch.setattr(menuconfig, "SETTLE", 0.03)


def fragment(tmp_path: Path, text: str, name: str = "frag.config") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def run(cfg: Config, tree: Path) -> tuple[dict, dict[str, str], str]:
    """configure(); the record, the final .config and the stage log."""
    ws = Workspace(cfg.workspace)
    try:
        rec = kconfig.configure(cfg, ws, tree)
    finally:
        log = ws.log("config").read_text() if ws.log("config").exists() else ""
    final = kconfig.read_config(ws.out / "kernel-build" / ".config")
    return rec, final, log


# ------------------------------------------------------------------------- pure helpers
def test_fragment_parsing_and_merge_last_word_wins(tmp_path: Path) -> None:
    f = fragment(tmp_path, "# comment\nCONFIG_A=y\n\n# CONFIG_B is not set\nCONFIG_S=\"x y\"\n"
                 "CONFIG_H=0x1F\nCONFIG_A=m\n")
    got = kconfig.parse_fragment(f)
    assert [str(s) for s in got] == ["CONFIG_A=y", "CONFIG_B=n", 'CONFIG_S="x y"', "CONFIG_H=0x1F",
                                     "CONFIG_A=m"]
    assert got[1].origin.endswith("frag.config:4")
    merged = kconfig.merge("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_H=0x2\n", got)
    assert merged.splitlines() == ["CONFIG_C=y", "# CONFIG_B is not set", 'CONFIG_S="x y"',
                                   "CONFIG_H=0x1F", "CONFIG_A=m"]
    assert kconfig.satisfied("0x1F", "0x001f") and kconfig.satisfied("n", None)
    assert not kconfig.satisfied("y", "m")


def test_fragment_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    f = fragment(tmp_path, "CONFIG_A=y\nCONFIG_B = y\n")
    with pytest.raises(KconfigError, match=r"frag\.config:2: expected CONFIG_NAME=value"):
        kconfig.parse_fragment(f)
    f = fragment(tmp_path, "CONFIG_A=yes\n")
    with pytest.raises(KconfigError, match=r"frag\.config:1: CONFIG_A: value 'yes'"):
        kconfig.parse_fragment(f)


def test_fragment_bytes_that_are_not_utf8(tmp_path: Path, tree: Path) -> None:
    """A Latin-1 comment (2009-era files have them) is no reason to fail; a broken line is
    still named by file and line."""
    f = tmp_path / "latin1.config"
    f.write_bytes(b"# J\xfcrgen's dom0 bits\n" + (XEN_ON + "CONFIG_MODULES=y\n").encode())
    _, final, _ = run(load_config(tmp_path, tree, fragments=[f]), tree)
    assert final["CONFIG_XEN_PCIDEV_BACKEND"] == "y"
    f.write_bytes(b"CONFIG_A=y\n\xff\xfeCONFIG_B=y\n")
    with pytest.raises(KconfigError, match=r"latin1\.config:2: expected CONFIG_NAME=value or "
                                           r"'# CONFIG_NAME is not set', got '\ufffd\ufffdCONFIG"):
        kconfig.parse_fragment(f)


def test_parse_help_skips_probe_definition() -> None:
    text = """-----
There is no help available for this option.
Symbol: XEN_PCIDEV_BACKEND [=n]
Type  : tristate
Defined at drivers/xen/Kconfig:207
  Prompt: Xen PCI-device backend driver
  Depends on: PCI [=n] && X86 [=y] && XEN [=n] && XEN_BACKEND [=n]
  Location:
    -> Device Drivers
Defined at /b/xenpipe-probe.Kconfig:34
  Prompt: xenpipe probe
Selected by [y]:
  - FOO [=y] && BAR [=y]
-----
"""
    info = kconfig.parse_help(text, skip_file="/b/xenpipe-probe.Kconfig")["XEN_PCIDEV_BACKEND"]
    assert info.type == "tristate"
    assert info.depends == "PCI [=n] && X86 [=y] && XEN [=n] && XEN_BACKEND [=n]"
    assert info.selected_by == ["FOO [=y] && BAR [=y]"]


def test_fingerprint_tracks_inputs(tmp_path: Path, tree: Path) -> None:
    frag = fragment(tmp_path, XEN_ON)
    base = fragment(tmp_path, "CONFIG_MODULES=y\n", "base.config")
    cfg = load_config(tmp_path, tree, base=str(base), fragments=[frag])
    fp = kconfig.fingerprint(cfg)
    assert fp["base"]["sha256"] == sha256_of(base)
    assert fp["symbols"] == ["CONFIG_XEN_PCIDEV_BACKEND=y"]
    assert fp["frontend"] == "oldconfig" and fp["make_args"][0].startswith("PYTHON=")
    json.dumps(fp)
    frag.write_text(XEN_ON + "CONFIG_MODULES=y\n")
    assert kconfig.fingerprint(cfg) != fp
    assert kconfig.fingerprint(load_config(tmp_path, tree))["base"] == {"target": "tinyconfig"}


# ----------------------------------------------------------------------------- oldconfig
def test_oldconfig_forces_backend_and_writes_outputs(tmp_path: Path, tree: Path) -> None:
    cfg = load_config(tmp_path, tree, fragments=[fragment(tmp_path, XEN_ON + "CONFIG_MODULES=y\n")])
    rec, final, log = run(cfg, tree)
    assert final["CONFIG_XEN_PCIDEV_BACKEND"] == "y"
    # the real prompt shape was answered; already-answered lines around it were left alone
    assert "Xen PCI-device backend driver (XEN_PCIDEV_BACKEND) [M/n/y/?] (NEW) y" in log
    assert "Backend driver support (XEN_BACKEND) [Y/n/?] y" in log
    assert final["CONFIG_XEN_BLKDEV_BACKEND"] == "m"
    ws = Workspace(cfg.workspace)
    out = ws.out / f"config-{RELEASE}"
    assert rec["release"] == RELEASE and out.read_text() == (ws.out / "kernel-build/.config"
                                                              ).read_text()
    assert rec["config"]["sha256"] == sha256_of(out)
    assert rec["symbols"] == [{"symbol": "CONFIG_XEN_PCIDEV_BACKEND", "requested": "y",
                               "final": "y", "forced": True}]
    assert rec["base"] == {"target": "tinyconfig"} and rec["fragments"][0]["sha256"]
    assert rec["frontend"] == "oldconfig" and rec["warnings"] == []
    json.dumps(rec)
    summary = (ws.out / "kconfig-summary.txt").read_text()
    assert "CONFIG_XEN_PCIDEV_BACKEND=y -> y (forced)" in summary and RELEASE in summary


def test_oldconfig_asks_dependencies_and_defaults_the_rest(tmp_path: Path, tree: Path) -> None:
    """XEN_BACKEND is requested too: both become new, both are asked, in order; the symbols
    that appear because of them (a tristate and a choice) get their defaults."""
    frag = fragment(tmp_path, "CONFIG_XEN=y\nCONFIG_PCI=y\n")
    cfg = load_config(tmp_path, tree, fragments=[frag], symbols=["CONFIG_XEN_BACKEND=y"])
    rec, final, log = run(cfg, tree)
    assert final["CONFIG_XEN_BACKEND"] == "y" and final["CONFIG_XEN_PCIDEV_BACKEND"] == "y"
    assert "Backend driver support (XEN_BACKEND) [N/y/?] (NEW) y" in log
    assert "(XEN_BLKDEV_BACKEND) [Y/n/?] (NEW) \n" in log  # default (no modules: y)
    assert "choice[1-2?]: \n" in log
    assert final["CONFIG_XEN_BLKDEV_BACKEND"] == "y" and final["CONFIG_XEN_CONSOLE_HVC"] == "y"
    assert {s["symbol"]: s["final"] for s in rec["symbols"]} == {
        "CONFIG_XEN_BACKEND": "y", "CONFIG_XEN_PCIDEV_BACKEND": "y"}


def test_oldconfig_choice_string_and_int(tmp_path: Path, tree: Path) -> None:
    """A member of an old choice: the first pass shows it answered, the retry makes the whole
    choice new and picks the member; strings and ints are typed in."""
    cfg = load_config(tmp_path, tree, base="defconfig",
                      fragments=[fragment(tmp_path, XEN_ON)],
                      symbols=["CONFIG_HZ_1000=y", 'CONFIG_LOCALVERSION="-xen"',
                               "CONFIG_LOG_BUF_SHIFT=18", "CONFIG_XEN_CONSOLE_HVC=n"])
    rec, final, log = run(cfg, tree)
    assert final["CONFIG_HZ_1000"] == "y" and final["CONFIG_HZ_250"] == "n"
    assert "choice[1-3?]: 3" in log
    assert final["CONFIG_LOCALVERSION"] == '"-xen"' and final["CONFIG_LOG_BUF_SHIFT"] == "18"
    assert final["CONFIG_XEN_CONSOLE_SERIAL"] == "y"
    assert all(s["final"] == s["requested"] for s in rec["symbols"])


def test_unsatisfiable_symbol_fails_with_dependency(tmp_path: Path, tree: Path) -> None:
    cfg = load_config(tmp_path, tree)
    with pytest.raises(KconfigError) as exc:
        run(cfg, tree)
    assert str(exc.value) == ("CONFIG_XEN_PCIDEV_BACKEND=y did not survive: depends on "
                              "PCI [=n] && XEN [=n] && XEN_BACKEND [=n]")
    ws = Workspace(cfg.workspace)
    assert not list(ws.out.glob("config-*"))
    assert "xenpipe: error: CONFIG_XEN_PCIDEV_BACKEND=y" in ws.log("config").read_text()


def test_value_not_offered_uses_help_and_fails(tmp_path: Path, tree: Path) -> None:
    """m without module support: the prompt offers only [Y/n]; the driver asks ``?`` (the
    kernel's explanation lands in the log), keeps the default and verification fails."""
    cfg = load_config(tmp_path, tree, fragments=[fragment(tmp_path, XEN_ON)],
                      symbols=["CONFIG_XEN_BLKDEV_BACKEND=m"])
    with pytest.raises(KconfigError, match=r"^CONFIG_XEN_BLKDEV_BACKEND=m did not survive "
                       r"\(it is y\): needs CONFIG_MODULES=y$"):
        run(cfg, tree)
    log = Workspace(cfg.workspace).log("config").read_text()
    assert "(XEN_BLKDEV_BACKEND) [Y/n/?] (NEW) ?" in log
    assert "Depends on: XEN_BACKEND [=y]" in log


def test_fragment_typo_and_dropped_symbol_are_warnings(tmp_path: Path, tree: Path) -> None:
    frag = fragment(tmp_path, XEN_ON + "CONFIG_XEN_BAKCEND=y\n# CONFIG_NO_SUCH is not set\n"
                    "CONFIG_MODULES=y\n")
    other = fragment(tmp_path, "CONFIG_PCI=n\nCONFIG_XEN_PCIDEV_BACKEND=y\n", "second.config")
    cfg = load_config(tmp_path, tree, fragments=[frag, other],
                      symbols=["CONFIG_PCI=y"])
    rec, final, _ = run(cfg, tree)
    assert final["CONFIG_PCI"] == "y" and final["CONFIG_XEN_PCIDEV_BACKEND"] == "y"
    assert rec["warnings"] == [
        f"{frag}:4: CONFIG_XEN_BAKCEND is not defined by this kernel (did you mean "
        "CONFIG_XEN_BACKEND?)",
        f"{frag}:5: CONFIG_NO_SUCH is not defined by this kernel (typo?)",
    ]
    cfg = load_config(tmp_path, tree, fragments=[frag, fragment(tmp_path, "CONFIG_XEN=n\n", "x")],
                      symbols=["CONFIG_XEN=n"])
    with pytest.raises(KconfigError, match="CONFIG_XEN_PCIDEV_BACKEND=y did not survive"):
        run(cfg, tree)


def test_dom0_symbols_of_a_fragment_are_requirements(tmp_path: Path, tree: Path) -> None:
    """A fragment that turns ACPI off leaves CONFIG_XEN_DOM0=y unsatisfied: a kernel that
    cannot be dom0 fails doit config in one line naming the unmet dependency (it was a
    warning), while a typo in the same fragment stays a warning."""
    frag = fragment(tmp_path, XEN_ON + "CONFIG_XEN_DOM0=y\n# CONFIG_ACPI is not set\n"
                    "CONFIG_NO_SUCH=y\n")
    cfg = load_config(tmp_path, tree, fragments=[frag])
    with pytest.raises(KconfigError) as exc:
        run(cfg, tree)
    assert str(exc.value) == (f"{frag}:4: CONFIG_XEN_DOM0=y did not survive: depends on "
                              "XEN [=y] && ACPI [=n] && PCI [=y] (a dom0 for PCI passthrough "
                              "needs it)")
    assert not list(Workspace(cfg.workspace).out.glob("config-*"))
    frag.write_text(XEN_ON + "CONFIG_XEN_DOM0=y\nCONFIG_ACPI=y\nCONFIG_NO_SUCH=y\n")
    rec, final, _ = run(load_config(tmp_path, tree, fragments=[frag]), tree)
    assert final["CONFIG_XEN_DOM0"] == "y"
    assert rec["warnings"] == [f"{frag}:6: CONFIG_NO_SUCH is not defined by this kernel (typo?)"]


def test_strict_makes_every_fragment_line_a_requirement(tmp_path: Path, tree: Path) -> None:
    frag = fragment(tmp_path, XEN_ON + "CONFIG_NO_SUCH=y\n")
    cfg = load_config(tmp_path, tree, fragments=[frag], extra="strict = true\n")
    assert cfg.kernel is not None and cfg.kernel.strict
    assert kconfig.fingerprint(cfg) != kconfig.fingerprint(load_config(tmp_path, tree,
                                                                       fragments=[frag]))
    with pytest.raises(KconfigError, match=rf"^{frag}:4: CONFIG_NO_SUCH is not defined by this "
                       r"kernel \(\[kernel\] strict = true\)$"):
        run(cfg, tree)


def test_passthrough_and_the_guest_check_imply_requirements(tmp_path: Path, tree: Path) -> None:
    """[passthrough] devices need a dom0 (XEN_DOM0, unasked), [boot] guest = true a PCI
    frontend in the same kernel: a fragment line turning it off is refused before any make."""
    frag = fragment(tmp_path, XEN_ON + "# CONFIG_XEN_PCIDEV_FRONTEND is not set\n")
    boot = "\n[boot]\nguest = true\n"
    cfg = load_config(tmp_path, tree, fragments=[frag], extra=boot)
    with pytest.raises(KconfigError) as exc:
        run(cfg, tree)
    assert str(exc.value) == (f"{frag}:4: CONFIG_XEN_PCIDEV_FRONTEND=n conflicts with [boot] "
                              "guest = true, which the guest check (this kernel booted as the PV "
                              "guest) needs: drop the line or change [boot] guest = true")
    frag.write_text(XEN_ON + "CONFIG_XEN_PCIDEV_FRONTEND=y\n")
    _, final, _ = run(load_config(tmp_path, tree, fragments=[frag], extra=boot), tree)
    assert final["CONFIG_XEN_PCIDEV_FRONTEND"] == "y"
    frag.write_text(XEN_ON + "# CONFIG_ACPI is not set\n")
    devices = '\n[passthrough]\ndevices = ["0000:00:19.0"]\n'
    with pytest.raises(KconfigError, match=r"^\[passthrough\] devices: CONFIG_XEN_DOM0=y did not "
                       r"survive: depends on .*ACPI \[=n\]"):
        run(load_config(tmp_path, tree, fragments=[frag], extra=devices), tree)


def test_unknown_requested_symbol(tmp_path: Path, tree: Path) -> None:
    cfg = load_config(tmp_path, tree, fragments=[fragment(tmp_path, XEN_ON)],
                      symbols=["CONFIG_XEN_PCIDEV_BAKCEND=y"])
    with pytest.raises(KconfigError, match=r"^CONFIG_XEN_PCIDEV_BAKCEND is not defined by this "
                       r"kernel \(did you mean CONFIG_XEN_PCIDEV_BACKEND\?\)$"):
        run(cfg, tree)


def test_base_file_and_broken_base(tmp_path: Path, tree: Path) -> None:
    base = fragment(tmp_path, "CONFIG_MODULES=y\n" + XEN_ON, "base.config")
    cfg = load_config(tmp_path, tree, base=str(base))
    rec, final, _ = run(cfg, tree)
    assert rec["base"] == {"file": str(base), "sha256": sha256_of(base)}
    assert final["CONFIG_XEN_PCIDEV_BACKEND"] == "y"
    cfg = load_config(tmp_path, tree, base="nosuchconfig")
    with pytest.raises(KconfigError, match=r"^make nosuchconfig failed with exit status 2: "
                       r"make: \*\*\* No rule to make target .nosuchconfig."):
        run(cfg, tree)


# ---------------------------------------------------------------------------- menuconfig
def test_menuconfig_sets_and_confirms(tmp_path: Path, tree: Path, fast_screen: None) -> None:
    cfg = load_config(tmp_path, tree, frontend="menuconfig",
                      fragments=[fragment(tmp_path, XEN_ON + "CONFIG_MODULES=y\n")],
                      symbols=["CONFIG_XEN_BLKDEV_BACKEND=y", 'CONFIG_LOCALVERSION="-dom0"',
                               "CONFIG_HZ_100=y"])
    rec, final, log = run(cfg, tree)
    assert final["CONFIG_XEN_PCIDEV_BACKEND"] == "y"
    assert final["CONFIG_XEN_BLKDEV_BACKEND"] == "y"
    assert final["CONFIG_LOCALVERSION"] == '"-dom0"' and final["CONFIG_HZ_100"] == "y"
    assert rec["frontend"] == "menuconfig"
    assert rec["release"] == f"{RELEASE}-dom0"  # CONFIG_LOCALVERSION is part of the release
    assert (Workspace(cfg.workspace).out / f"config-{RELEASE}-dom0").is_file()
    assert "--- menuconfig screen: XEN_PCIDEV_BACKEND set ---" in log
    assert "<*> Xen PCI-device backend driver" in log


def test_menuconfig_invisible_symbol_is_not_touched(tmp_path: Path, tree: Path,
                                                    fast_screen: None) -> None:
    """The jump lands on the enclosing menu, not the symbol: nothing is pressed there and the
    failure carries the same dependency text as with oldconfig."""
    cfg = load_config(tmp_path, tree, frontend="menuconfig")
    with pytest.raises(KconfigError, match=r"^CONFIG_XEN_PCIDEV_BACKEND=y did not survive: "
                       r"depends on PCI \[=n\] && XEN \[=n\] && XEN_BACKEND \[=n\]$"):
        run(cfg, tree)
    log = Workspace(cfg.workspace).log("config").read_text()
    assert "jump for XEN_PCIDEV_BACKEND landed elsewhere" in log


def test_menuconfig_that_never_draws_fails_cleanly(tmp_path: Path, tree: Path, fast_screen: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frontend, "INTERACTIVE_TIMEOUT", 2.0)
    cfg = load_config(tmp_path, tree, frontend="menuconfig",
                      fragments=[fragment(tmp_path, XEN_ON)], make_args=["FAKE_HANG=1"])
    start = time.monotonic()
    with pytest.raises(KconfigError, match=r"^menuconfig: timed out waiting for the main menu"):
        run(cfg, tree)
    assert time.monotonic() - start < 20


# ------------------------------------------------------------------------- real kernel
@pytest.mark.slow
@pytest.mark.parametrize("frontend", ["oldconfig", "menuconfig"])
def test_real_kernel_dom0_fragment(tmp_path: Path, kernel_tree: Path, frontend: str  # noqa: F811
                                   ) -> None:
    """The dom0 fragment on the real 6.1. menuconfig is asked for a symbol the fragment does
    not set and 6.1 makes m there (the oldconfig run, asked nothing, shows the m), so the
    frontend must press keys for the y: a frontend that did nothing would fail."""
    if frontend == "menuconfig":
        need_pyte()
    pick = "CONFIG_X86_PKG_TEMP_THERMAL"
    assert pick not in DOM0.read_text()
    symbols = [f"{pick}=y"] if frontend == "menuconfig" else []
    cfg = load_config(tmp_path, kernel_tree, fragments=[DOM0], frontend=frontend,
                      symbols=symbols, make_args=["ARCH=x86_64"])
    rec, final, _ = run(cfg, kernel_tree)
    assert final["CONFIG_XEN_PCIDEV_BACKEND"] == "y"
    assert final["CONFIG_XEN_DOM0"] == "y"
    assert final["CONFIG_64BIT"] == "y" and final["CONFIG_ACPI"] == "y"
    assert rec["release"].startswith("6.1") and rec["warnings"] == []
    if symbols:
        assert final[pick] == "y" and rec["frontend_answers"] > 0
    else:
        assert final[pick] == "m"


@pytest.mark.slow
def test_real_kernel_unsatisfiable(tmp_path: Path, kernel_tree: Path) -> None:  # noqa: F811
    cfg = load_config(tmp_path, kernel_tree, make_args=["ARCH=x86_64"])
    with pytest.raises(KconfigError, match=r"^CONFIG_XEN_PCIDEV_BACKEND=y did not survive: "
                       r"depends on PCI \[=n\] && X86 \[=y\] && XEN \[=n\] && XEN_BACKEND \[=n\]$"):
        run(cfg, kernel_tree)
