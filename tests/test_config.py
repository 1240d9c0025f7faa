"""Config validation: every problem is one line naming file, line, table and key; exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import ConfigError

from .support.doit import run_doit, write_config
from .support.tools import REPO
from .support.upstreams import GitUpstream

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


@pytest.mark.parametrize("body, at, says", [
    # a typo in a dotted table name: the header's line, and the table it meant
    (GOOD + "[sourcs.xen]\nvcs = 'git'\n", "[sourcs.xen]",
     '[sourcs]: unknown table (did you mean "[sources]"?)'),
    # top-level keys, before any table (write_config's [workspace] would hold them)
    ('debug = true\n[workspace]\ndir = "/tmp"\n', "debug", "debug: unknown key; known tables"),
    ('sources = "xen"\n[workspace]\ndir = "/tmp"\n', "sources =",
     "[sources]: expected tables [sources.<name>]"),
    ("[sources]\nxen = 1\n", "xen = 1", "[sources.xen]: expected a table, got a number"),
    (GOOD + '[[guests]]\nname = "a"\nconfig = "/etc/xen/a"\n[[guests]]\nname = "b"\n'
     'config = "/etc/xen/b"\ndevcies = []\n', "devcies",
     '[[guests]] devcies: unknown key (did you mean "devices"?)'),
    (GOOD + '[[guests]]\nname = "a"\nconfig = "/etc/xen/a"\n[[guests]]\nname = "b"\n'
     'config = "etc/xen/b"\n', 'config = "etc', "[[guests]] config: expected an absolute path"),
    ('[passthrough]\ndevices = [\n  "00:19.0",\n  "00:1f.8",\n]\n', '"00:1f.8"',
     '[passthrough] devices: bad PCI address "00:1f.8": function 8 is above 7'),
    ('[passthrough]\ndevices = ["0000:00:1f"]\n', "devices",
     "[passthrough] devices: bad PCI address \"0000:00:1f\": no '.' before the function number"),
    ('[passthrough]\ndevices = ["gg:00.0", "10000:00:1f.0"]\n', "devices",
     '[passthrough] devices: bad PCI address "gg:00.0": bus "gg" is not 2 hex digits'),
    ('[passthrough]\ndevices = ["PNP0A08:0-1c.0-zz.0"]\n', "devices",
     '[passthrough] devices: bad device path "PNP0A08:0-1c.0-zz.0": hop 2 "zz.0" is not DD.F'),
    ('[passthrough]\ndevices = ["00:19.0"]\n[[guests]]\nname = "g"\nconfig = "/etc/xen/g"\n'
     'devices = ["00:19"]\n', 'devices = ["00:19"]', '[[guests]] devices: bad PCI address'),
    (GOOD + 'symbols = ["CONFIG_XEN_PCIDEV_BACKEND=m"]\n', "symbols",
     '[kernel] symbols: "CONFIG_XEN_PCIDEV_BACKEND=m" conflicts with '
     '"CONFIG_XEN_PCIDEV_BACKEND=y" (xenpipe always'),
    (GOOD + 'fragments = [\n  "configs/kernel/xen-dom0.config",\n  "nope.config",\n]\n',
     '"nope.config"', "[kernel] fragments: fragment nope.config does not exist"),
    ('[install]\nroot = ""\n', 'root = ""', "[install] root: expected a non-empty string"),
    ('[install]\nroot = "/srv/\\u0000root"\n', 'root = "/srv',  # (the tmp path says root)
     "[install] root: '/srv/\\x00root' holds a NUL character"),
    (GOOD + 'make_args = ["CC=gcc", "X=\\u0000"]\n', "make_args",
     "[kernel] make_args: 'X=\\x00' holds a NUL character"),
    (GOOD + 'fragments = ["configs/kernel"]\n', "fragments",
     "[kernel] fragments: configs/kernel is a directory, not a file"),
    (GOOD.replace('rev = "v6.1"', 'patches = "README.md"'), "patches",
     "[sources.linux] patches: README.md is not a directory"),
    ('[passthrough]\ndevices = ["00:19.0"]\nmode = "hidden"\n', "mode",
     '[passthrough] mode: expected "hide" or "assignable", got "hidden"'),
    (GOOD + '[[guests]]\nname = "a"\nconfig = "/etc/xen/a"\ntype = "pvh"\n', "type",
     '[[guests]] type: expected "pv" or "hvm", got "pvh"'),
    ('[boot]\ntimeout = 60\ncpus = 0\n', "cpus", "[boot] cpus: expected 1 or more, got 0"),
    ('[boot]\ntcg = "many"\n', "tcg", '[boot] tcg: expected "multi" or "single", got "many"'),
])
def test_error_names_the_line_it_is_about(tmp_path: Path, body: str, at: str, says: str) -> None:
    path = write_config(tmp_path, body)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if at in text)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert str(exc.value).startswith(f"{path}:{line}: {says}"), str(exc.value)
    assert "\n" not in str(exc.value)


def test_workspace_must_be_a_directory_xenpipe_can_make(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    for where, says in ((tmp_path / "afile", "is a file, not a directory"),
                        (tmp_path / "afile" / "ws", f"{tmp_path / 'afile'} is a file"),
                        ("", "expected a non-empty string")):  # "" would be the repository
        body = f'[workspace]\ndir = "{where}"\n'
        msg = error(tmp_path, body)
        assert "site.toml:2: [workspace] dir: " in msg and says in msg


def test_workspace_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    """/proc takes no new directory, though it looks writable to root: doit stops at once."""
    cfg = write_config(tmp_path, '[workspace]\ndir = "/proc/xenpipe-test/ws"\n')
    res = run_doit("list", config=cfg)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith("xenpipe: error: ") and res.stderr.count("\n") == 1
    assert "/proc/xenpipe-test" in res.stderr


def test_boot_xen_is_relative_to_the_repository(tmp_path: Path) -> None:
    assert load(tmp_path, '[boot]\nxen = "boot/xen.gz"\n').boot.xen == REPO / "boot" / "xen.gz"


def test_a_config_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(b'[workspace]\ndir = "ws"\n\xff\xfe\x00\n')
    res = run_doit("list", config=path, cli=True)
    assert (res.returncode, res.stderr) == (
        1, f"xenpipe: error: {path}:3: not UTF-8 text (byte 0xff); a TOML file is UTF-8\n")
    res = subprocess.run([sys.executable, "-m", "pipeline.boot", str(path)], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr


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


@pytest.mark.parametrize("args, env", [
    (("config=",), None),  # an unset shell variable: config=$SITE
    (("config=,",), None),
    ((), {"XENPIPE_CONFIG": " , "}),
])
def test_config_naming_no_file_is_refused(args: tuple[str, ...], env: dict | None) -> None:
    """Not configs/default.toml instead: that would clone Xen and Linux from the network."""
    res = run_doit("list", *args, env=env)
    assert res.returncode == 1
    assert res.stderr.startswith("xenpipe: error: ") and "names no config file" in res.stderr
    assert res.stderr.count("\n") == 1 and res.stdout == ""


def test_a_file_operation_the_system_refuses_is_one_line(tmp_path: Path,
                                                         git_upstream: GitUpstream) -> None:
    """An OSError (here a file where the workspace's src/ belongs; also a read-only or full
    file system, an install root that cannot be created) fails the task with one line."""
    cfg = write_config(tmp_path, f'[sources.linux]\nvcs = "git"\nurl = "{git_upstream.url}"\n')
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "src").write_text("not a directory\n")
    res = run_doit("fetch", config=cfg)
    assert (res.returncode, res.stderr) == (1, f"xenpipe: error: {tmp_path / 'ws' / 'src'}: "
                                               "File exists\n")
    assert (tmp_path / "ws" / "src").read_text() == "not a directory\n"


def test_missing_config_file(tmp_path: Path) -> None:
    res = run_doit("list", config=tmp_path / "nope.toml", cli=True)
    assert res.returncode == 1
    assert res.stderr == f"xenpipe: error: {tmp_path / 'nope.toml'}: config file not found\n"
    res = run_doit("list", "config=configs/nope.toml")  # relative: to the repository root
    assert res.stderr == f"xenpipe: error: {REPO / 'configs/nope.toml'}: config file not found\n"


def test_doit_list_shows_contract_tasks(tmp_path: Path) -> None:
    res = run_doit("list", config=write_config(tmp_path, GOOD), cli=True)
    assert res.returncode == 0, res.stderr
    names = {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
    assert {"fetch", "patch", "config", "build", "install", "devices", "boot", "nightly"} <= names
    for line in res.stdout.splitlines():
        assert len(line.split(None, 1)) == 2, f"task without a description: {line}"


def test_doit_devices_on_a_recorded_q35(tmp_path: Path) -> None:
    """A recorded sysfs tree stands in for real PCI hardware (XENPIPE_SYSFS/XENPIPE_PROC)."""
    from .support import sysfs_trees

    tree = sysfs_trees.q35(tmp_path / "sys")
    proc = tmp_path / "proc"
    sysfs_trees.proc_tree(proc, [("8:1", "/", "ext4", "/dev/sda1")])
    cfg = write_config(tmp_path, '[passthrough]\n'
                                 'devices = ["PNP0A08:0-1c.0-0.0", "00:1f.6", "00:1f.2"]\n')
    res = run_doit("devices", config=cfg,
                   env={"XENPIPE_SYSFS": str(tree.sysfs), "XENPIPE_PROC": str(proc)})
    assert res.returncode == 1, res.stderr  # 00:1f.6 absent, 00:1f.2 holds /: two no-gos
    assert "no-go for 2 device(s)" in res.stderr
    assert "PNP0A08:0-1c.0-00.0" in res.stdout
    assert "0000:01:00.0" in res.stdout
    assert "warning: passthrough.devices: 00:1f.6 is not present" in res.stdout
    assert "0000:00:1f.2 holds the root filesystem (/dev/sda1 on /)" in res.stdout


def test_schema_and_dataclasses_cannot_drift() -> None:
    """Every declared key has a dataclass field and every field a key (checked at import too)."""
    assert config.schema_drift() == []
    extra = {**config.SCHEMA, "boot": {**config.SCHEMA["boot"], "serial": config.Key(str)}}
    assert config.schema_drift(extra) == ["[boot]: BootCfg has no field serial for its key"]
    fewer = {**config.SCHEMA, "build": {"jobs": config.SCHEMA["build"]["jobs"]}}
    assert config.schema_drift(fewer) == ["[build]: BuildCfg.ccache has no schema key"]


def test_unset_keys_are_fields_not_raw_toml(tmp_path: Path) -> None:
    """[boot] guest unset is None (doit nightly decides), not false; retention is a field."""
    cfg = load(tmp_path, GOOD)
    assert (cfg.boot.guest, cfg.retention) == (None, 10)
    cfg = load(tmp_path, GOOD + "[boot]\nguest = false\n[workspace]\nretention = 3\n")
    assert (cfg.boot.guest, cfg.retention) == (False, 3)
    assert not hasattr(cfg, "raw")
