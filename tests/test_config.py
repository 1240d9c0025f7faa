"""Config validation: every problem is one line naming file, line, table and key; exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import ConfigError

from .conftest import REPO, run_doit, write_config

GOOD = """
[sources.linux]
vcs = "git"
url = "/nonexistent/linux"
rev = "v6.1"

[kernel]
source = "linux"
"""


def load(tmp_path: Path, body: str) -> config.Config:
    return config.load(write_config(tmp_path, body))


def error(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, body)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_shipped_configs_load() -> None:
    for path in sorted((REPO / "configs").glob("*.toml")):
        cfg = config.load(path)
        assert cfg.sources, path


def test_defaults_and_forced_symbol(tmp_path: Path) -> None:
    cfg = load(tmp_path, GOOD)
    assert cfg.kernel is not None
    assert "CONFIG_XEN_PCIDEV_BACKEND=y" in cfg.kernel.symbols
    assert cfg.kernel.frontend == "oldconfig"
    assert cfg.install.root == tmp_path / "ws" / "root"
    assert cfg.xen is None
    assert cfg.sources["linux"].rev == "v6.1"


def test_relative_paths_are_relative_to_repo(tmp_path: Path) -> None:
    cfg = load(tmp_path, GOOD.replace("/nonexistent/linux", "some/linux"))
    assert cfg.sources["linux"].url == str(REPO / "some" / "linux")
    assert load(tmp_path, GOOD.replace("/nonexistent/linux", "https://u:pw@h/l.git")).sources[
        "linux"].url == "https://u:pw@h/l.git"


def test_unsupported_vcs_names_file_line_table_key(tmp_path: Path) -> None:
    msg = error(tmp_path, GOOD.replace('vcs = "git"', 'vcs = "svn"'))
    assert msg == (f'{tmp_path / "site.toml"}:6: [sources.linux] vcs: expected "hg", "git" or '
                   f'"tarball", got "svn"')


def test_unknown_key_suggests(tmp_path: Path) -> None:
    msg = error(tmp_path, GOOD + 'fragmnets = ["x"]\n')
    assert '[kernel] fragmnets: unknown key (did you mean "fragments"?)' in msg
    assert ":12:" in msg


def test_unknown_table_suggests(tmp_path: Path) -> None:
    assert 'unknown table (did you mean "[kernel]"?)' in error(tmp_path, GOOD + "[kernal]\n")


def test_wrong_type(tmp_path: Path) -> None:
    msg = error(tmp_path, GOOD + "[build]\njobs = \"4\"\n")
    assert "[build] jobs: expected a number, got a string '4'" in msg
    assert "expected a boolean" in error(tmp_path, GOOD + "[build]\nccache = 1\n")
    assert "expected a list of strings" in error(tmp_path, GOOD + "[passthrough]\ndevices = [1]\n")


def test_missing_required_key(tmp_path: Path) -> None:
    msg = error(tmp_path, GOOD.replace('url = "/nonexistent/linux"\n', ""))
    assert '[sources.linux]: missing required key "url"' in msg


def test_kernel_source_must_exist(tmp_path: Path) -> None:
    msg = error(tmp_path, GOOD.replace('source = "linux"', 'source = "linx"'))
    assert '[kernel] source: no [sources.linx] table (did you mean "linux"?)' in msg


def test_patches_dir_must_exist(tmp_path: Path) -> None:
    msg = error(tmp_path, GOOD.replace('rev = "v6.1"', 'rev = "v6.1"\npatches = "nope/linux"'))
    assert "[sources.linux] patches: directory nope/linux does not exist" in msg


def test_bad_toml_has_line(tmp_path: Path) -> None:
    msg = error(tmp_path, GOOD + "[build\n")
    assert msg.startswith(f"{tmp_path / 'site.toml'}:12: not valid TOML")


def test_bad_symbol(tmp_path: Path) -> None:
    assert 'expected "CONFIG_NAME=value"' in error(tmp_path, GOOD + 'symbols = ["XEN=y"]\n')


def test_tarball_has_no_rev(tmp_path: Path) -> None:
    body = GOOD.replace('vcs = "git"', 'vcs = "tarball"')
    assert "a tarball has no revisions" in error(tmp_path, body)


@pytest.mark.parametrize("args", [("list",), ("fetch",)])
def test_doit_reports_config_error_in_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    cfg = write_config(tmp_path, GOOD.replace('vcs = "git"', 'vcs = "svn"'))
    res = run_doit(*args, config=cfg, cli=True)  # the command itself: one line, no traceback
    assert res.returncode == 1
    assert res.stderr.startswith("xenpipe: error: ")
    assert res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_config_chosen_by_env(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, GOOD.replace('vcs = "git"', 'vcs = "cvs"'))
    res = run_doit("list", env={"XENPIPE_CONFIG": str(cfg)}, cli=True)
    assert res.returncode == 1 and '"cvs"' in res.stderr
    # the command-line variable wins over the environment
    good = write_config(tmp_path, GOOD, name="good.toml")
    res = run_doit("list", config=good, env={"XENPIPE_CONFIG": str(cfg)}, cli=True)
    assert res.returncode == 0, res.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    res = run_doit("list", config=tmp_path / "nope.toml", cli=True)
    assert res.returncode == 1
    assert res.stderr == f"xenpipe: error: {tmp_path / 'nope.toml'}: config file not found\n"


def test_doit_list_shows_contract_tasks(tmp_path: Path) -> None:
    res = run_doit("list", config=write_config(tmp_path, GOOD), cli=True)
    assert res.returncode == 0, res.stderr
    names = {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
    assert {"fetch", "patch", "config", "build", "install", "devices", "boot", "nightly"} <= names
    for line in res.stdout.splitlines():
        assert len(line.split(None, 1)) == 2, f"task without a description: {line}"


def test_doit_devices_on_a_recorded_q35(tmp_path: Path) -> None:
    """A recorded sysfs tree stands in for real PCI hardware (XENPIPE_SYSFS/XENPIPE_PROC)."""
    from . import sysfs_trees

    tree = sysfs_trees.q35(tmp_path / "sys")
    proc = tmp_path / "proc"
    sysfs_trees.proc_tree(proc, [("8:1", "/", "ext4", "/dev/sda1")])
    cfg = write_config(tmp_path, '[passthrough]\n'
                                 'devices = ["PNP0A08:0-1c.0-0.0", "00:1f.6", "00:1f.2"]\n')
    res = run_doit("devices", config=cfg,
                   env={"XENPIPE_SYSFS": str(tree.sysfs), "XENPIPE_PROC": str(proc)})
    assert res.returncode == 0, res.stderr
    assert "PNP0A08:0-1c.0-00.0" in res.stdout
    assert "0000:01:00.0" in res.stdout
    assert "warning: passthrough.devices: 00:1f.6 is not present" in res.stdout
    assert "0000:00:1f.2 holds the root filesystem (/dev/sda1 on /)" in res.stdout
