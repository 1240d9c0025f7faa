"""Guest configs: finding and rewriting the ``pci`` list of xm and xl configs without touching
any other line, and checking guest devices against passthrough.devices through pci.py
(recorded sysfs trees for device paths)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline import pci
from pipeline.config import GuestCfg
from pipeline.errors import ConfigError, InstallError
from pipeline.install import guestcfg

from .support import install as h
from .support import sysfs_trees as trees
from .support.doit import write_config

XM = GuestCfg("GUEST", "/etc/xen/GUEST.hvm", "xm", ("00:19.0", "01:01.0"))
XL = GuestCfg("web", "/etc/xen/web.cfg", "xl", ("00:19.0",))
NIC, IDE = pci.parse_bdf("00:19.0"), pci.parse_bdf("01:01.0")


def span_text(text: str) -> str | None:
    span = guestcfg.find_pci(text)
    return None if span is None else text[span[0]:span[1]]


@pytest.mark.parametrize(("text", "found"), [
    ("pci = [ '00:19.0','01:01.0' ]\n", "pci = [ '00:19.0','01:01.0' ]"),
    ("name = 'x'\n  pci=['00:19.0']  # the NIC, isn't it\nmemory = 1\n", "pci=['00:19.0']"),
    ("pci = [\n  '00:19.0',  # nic ]\n  '01:01.0',\n]\nvcpus = 2\n",
     "pci = [\n  '00:19.0',  # nic ]\n  '01:01.0',\n]"),
    ("pci = ['00:19.0']\npci = ['01:01.0']", "pci = ['01:01.0']"),  # the last one counts
    ("pci = \\\n  ['00:19.0']\n", "pci = \\\n  ['00:19.0']"),
    ("# pci = ['00:19.0']\nextra = 'pci = [1]'\n", None),
    ("disk = [ 'phy:/dev/x,hda,w',\npci = 'not an assignment' ]\n", None),
    ("pcidev = 1\nmypci = 2\n", None),
])
def test_find_pci(text: str, found: str | None) -> None:
    assert span_text(text) == found


def test_entries_as_written() -> None:
    text = "pci = [ '0000:00:19.0@4,permissive=1',\n  \"01:01.0\" ]  # two\n"
    assert guestcfg.entries(text) == ["0000:00:19.0@4,permissive=1", "01:01.0"]
    assert guestcfg.entries("pci = []\n") == []
    assert guestcfg.entries("memory = 1\n") is None


def test_update_replaces_only_the_pci_list() -> None:
    text = h.USER_XM_GUEST + "pci = [ '00:19.0' ]   # by hand\non_crash = 'restart'\n"
    new = guestcfg.update(text, XM, [NIC, IDE], "site.toml")
    assert new == text.replace("pci = [ '00:19.0' ]", "pci = ['00:19.0', '01:01.0']")


def test_update_keeps_the_users_spelling_and_options() -> None:
    same = "pci = [ '0000:00:19.0','01:01.0' ]\n"
    assert guestcfg.update(same, XM, [NIC, IDE], "s") == same  # same devices: untouched
    opts = "pci = ['00:19.0@3,permissive=1', 'bdf=0000:02:00.0,msitranslate=1']\n"
    assert guestcfg.update(opts, XM, [NIC, IDE], "s") == \
        "pci = ['00:19.0@3,permissive=1', '01:01.0']\n"
    assert guestcfg.entry_bdf("bdf=0000:02:00.0,msitranslate=1") == pci.parse_bdf("02:00.0")
    assert guestcfg.entry_bdf("rdm_policy=strict") is None


def test_update_appends_when_there_is_no_pci_list() -> None:
    text = "name = 'web'\nmemory = 256"  # no newline at the end
    new = guestcfg.update(text, XL, [NIC], "configs/site.toml")
    assert new.startswith(text + "\n# xenpipe: the PCI devices passed through to web")
    assert new.endswith("\npci = ['00:19.0']\n")
    assert guestcfg.update(new, XL, [NIC], "configs/site.toml") == new


def test_a_missing_config_is_created_with_what_xenpipe_knows() -> None:
    for g, tool in ((XM, "xm"), (XL, "xl")):
        text = guestcfg.update(None, g, [NIC], "configs/x.toml")
        lines = text.splitlines()
        assert all(ln.startswith("#") for ln in lines[:-2])
        assert f"`{tool} create {g.config}`" in text
        assert lines[-2:] == [f'name = "{g.name}"', "pci = ['00:19.0']"]
    other_domain = pci.parse_bdf("0001:00:02.0")
    assert guestcfg.render([other_domain]) == "pci = ['0001:00:02.0']"


def _cfg(tmp: Path, passthrough: str, guest_devices: str):
    from pipeline.config import load

    path = write_config(tmp, f"""
[passthrough]
devices = {passthrough}

[[guests]]
name = "g1"
config = "/etc/xen/g1.cfg"
devices = {guest_devices}
""")
    return load(path)


def test_guest_devices_compare_as_bdfs(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, '["0000:00:19.0", "01:01.0"]', '["00:19.0", "0000:01:01.0"]')
    assert guestcfg.check(cfg, None) == {"g1": {NIC: "", IDE: ""}}
    cfg = _cfg(tmp_path, '["0000:00:19.0"]', '["00:19.0", "00:1f.2"]')
    with pytest.raises(InstallError) as exc:
        guestcfg.check(cfg, None)
    assert str(exc.value) == ("[[guests]] g1: 00:1f.2 not in passthrough.devices "
                              "(0000:00:19.0); dom0 hides only those at boot, so only those "
                              "can be given to a guest")


def test_a_stray_guest_device_in_assignable_mode_names_xl_pci_assignable_add(
        tmp_path: Path) -> None:
    """mode = "assignable": dom0 hides nothing at boot; the error says what it does instead."""
    cfg = _cfg(tmp_path, '["0000:00:19.0"]', '["00:19.0", "00:1f.2"]')
    cfg = dataclasses.replace(cfg, passthrough=dataclasses.replace(cfg.passthrough,
                                                                   mode="assignable"))
    with pytest.raises(InstallError) as exc:
        guestcfg.check(cfg, None)
    assert str(exc.value).endswith("; dom0 makes only those assignable (xl pci-assignable-add),"
                                   " so only those can be given to a guest")


def test_guest_devices_behind_a_device_path(tmp_path: Path) -> None:
    """A bridge's device path in passthrough.devices covers what is behind it (pci.py)."""
    topo = pci.scan(trees.q35(tmp_path / "sysfs").sysfs)
    cfg = _cfg(tmp_path, '["PNP0A08:0-1c.1"]', '["04:00.0"]')
    assert guestcfg.check(cfg, topo) == {"g1": {pci.parse_bdf("04:00.0"): ""}}
    cfg = _cfg(tmp_path, '["00:01.0"]', '["PNP0A08:0-1c.0-0.0"]')
    with pytest.raises(InstallError, match=r"^\[\[guests\]\] g1: PNP0A08:0-1c.0-0.0 not in"):
        guestcfg.check(cfg, topo)
    with pytest.raises(ConfigError, match=r"site.toml:11: \[\[guests\]\] devices: bad PCI "
                       r'address "00:1.0"'):  # a typo is refused when the config is loaded
        _cfg(tmp_path, '["00:01.0"]', '["00:1.0"]')


# ------------------------------------------------ per-device options (xl-pci-configuration(5))
@pytest.mark.parametrize(("entry", "spec"), [
    ("00:03.0", "00:03.0"),
    ("00:03.0,permissive=1", "00:03.0,permissive=1"),
    ("00:03.0, msitranslate=0", "00:03.0,msitranslate=0"),
    ("00:03.0,seize=1,power_mgmt=0", "00:03.0,seize=1,power_mgmt=0"),
    ("00:03.0,rdm_policy=relaxed", "00:03.0,rdm_policy=relaxed"),
    ("00:03.0@5", "00:03.0@5"),
    ("00:03.0,vslot=1f", "00:03.0@1f"),
    ("00:03.0,name=nic_0", "00:03.0,name=nic_0"),
])
def test_entry_options_parse_and_render(entry: str, spec: str) -> None:
    parsed = pci.parse_entry(entry)
    assert parsed.spec(pci.parse_bdf("00:03.0")) == spec


@pytest.mark.parametrize(("entry", "why"), [
    ("00:03.0,permissive=2", "permissive=2: expected 0 or 1"),
    ("00:03.0,rdm_policy=lax", "rdm_policy=lax: expected strict or relaxed"),
    ("00:03.0,bogus=1", 'unknown option "bogus"'),
    ("00:03.0,permissive=1,permissive=0", 'option "permissive" is given twice'),
    ("00:03.0@5,vslot=6", 'option "vslot" is given twice'),
    ("00:03.0@20", 'vslot "20" is not a hex slot 0..1f'),
    ("00:03.0,name=1nic", 'name "1nic" is not an identifier'),
    ("00:03.0,seize", 'option "seize" is not KEY=VALUE'),
])
def test_bad_options_are_config_errors_with_the_line(tmp_path: Path, entry: str,
                                                     why: str) -> None:
    """Each bad option is refused at load, naming file:line, the table and the entry."""
    with pytest.raises(ConfigError) as exc:
        _cfg(tmp_path, '["00:03.0"]', f'[\n  "00:03.0",\n  "{entry}",\n]')
    assert f'site.toml:13: [[guests]] devices: bad guest device "{entry}": {why}' in \
        str(exc.value)


def test_options_rendered_for_a_bdf_and_a_resolved_device_path(tmp_path: Path) -> None:
    """The options stay with a device path resolved through a recorded sysfs tree (q35)."""
    topo = pci.scan(trees.q35(tmp_path / "sysfs").sysfs)
    cfg = _cfg(tmp_path, '["00:01.0", "PNP0A08:0-1c.1"]',
               '["00:01.0,permissive=1", "PNP0A08:0-1c.1-0.0@5,rdm_policy=strict", '
               '"00:01.0"]')
    specs = guestcfg.check(cfg, topo)["g1"]
    assert guestcfg.render(specs) == \
        "pci = ['00:01.0,permissive=1', '04:00.0@5,rdm_policy=strict']"
    # the config's options replace the user's entry; a device without options keeps it
    text = "pci = ['00:01.0,msitranslate=1', '04:00.0,seize=1']\n"
    plain = _cfg(tmp_path, '["00:01.0", "04:00.0"]', '["00:01.0", "04:00.0,power_mgmt=1"]')
    new = guestcfg.update(text, XL, guestcfg.check(plain, topo)["g1"], "s")
    assert new == "pci = ['00:01.0,msitranslate=1', '04:00.0,power_mgmt=1']\n"
    assert guestcfg.update(new, XL, guestcfg.check(plain, topo)["g1"], "s") == new
