"""The one real Xen build that the slow tests share: Xen's real stable-4.17 history, fetched
over hg and built by ``doit build``.

- The history: an hg repository or bundle named by ``$XENPIPE_XEN_HG`` (a path or URL), else
  ``../shared/upstreams/xen-4.17.hg`` beside the repository (RELEASE-4.17.6 .. RELEASE-4.17.7,
  63 changesets). Missing: the test fails under CI=true, else it skips and says where to put one.
- ``xen_upstream`` (session): that history cloned into a scratch repository and served by the
  session's real ``hg serve`` on 127.0.0.1 (conftest's ``hg_server``).
- ``real_xen`` (session): ``doit build`` of a config with ``[sources.xen] vcs = "hg"``, ``rev
  = "RELEASE-4.17.7"`` and ``[xen] source = "xen"`` (ccache on, in the real kernel's ccache),
  on a workspace in the test cache keyed by the inputs of the build (the changeset the tag
  names, the make args and targets) and the code that fetches and builds it
  (tests/support/keys.py), so only the first session pays for the cold build; later
  sessions refetch from their own server (the tag is there: no network) and find the build up
  to date. No kernel: the boot tests borrow the shared ``real_kernel``.
Tests treat the workspace as read-only (they link its artifacts into workspaces of their own).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.build.buildid import gnu_build_id
from pipeline.workspace import Workspace

from . import keys
from .doit import run_doit
from .realkernel import (
    BUILD_TIMEOUT,
    TASK_GRAPH,
    RealKernel,
    build_lock,
    cache_dir,
    demo_with_workspace,
    set_key,
)
from .tools import IN_CI, REPO
from .upstreams import hg

BUNDLE = REPO.parent / "shared" / "upstreams" / "xen-4.17.hg"
NEW, OLD = "RELEASE-4.17.7", "RELEASE-4.17.6"
MAKE_ARGS: list[str] = []  # Debian 12's gcc builds 4.17 with the defaults (defconfig)
XEN_MODULES = ("pipeline.config", "pipeline.fetch", "pipeline.build")  # fetch (hg) and build


def bundle() -> str:
    """Where the Xen history is: ``$XENPIPE_XEN_HG``, else the shared bundle; fail (CI) or
    skip when neither is there."""
    env = os.environ.get("XENPIPE_XEN_HG")
    if env:
        return env
    if BUNDLE.exists():
        return str(BUNDLE)
    where = (f"no Xen hg history: set XENPIPE_XEN_HG to an hg repository or bundle of Xen's "
             f"stable-4.17 line (RELEASE-4.17.6..RELEASE-4.17.7), or put one at {BUNDLE}")
    if IN_CI:
        pytest.fail(where)
    pytest.skip(where)


@dataclass(frozen=True)
class XenUpstream:
    """The scratch clone of the history and the URL ``hg serve`` serves it at."""

    path: Path
    url: str

    def node(self, rev: str) -> str:
        return hg("log", "-r", rev, "--template", "{node}", cwd=self.path)


def clone_history(source: str, dest: Path, rev: str | None = None) -> Path:
    """``hg clone -U`` of *source* (a bundle is cloned directly), up to *rev* if given."""
    hg("clone", "-U", *(["-r", rev] if rev else []), "--", source, str(dest))
    return dest


def xen_tables(url: str, rev: str = NEW) -> str:
    """The TOML that makes a config build Xen from *url* at *rev*."""
    return (f'[sources.xen]\nvcs = "hg"\nurl = {json.dumps(url)}\nrev = {json.dumps(rev)}\n\n'
            f'[xen]\nsource = "xen"\nmake_args = {json.dumps(MAKE_ARGS)}\n\n')


@dataclass(frozen=True)
class RealXen:
    """A Xen that ``doit build`` made from the served history."""

    config: Path
    ws: Workspace
    node: str  # the changeset built
    url: str  # where this session's doit build fetched it
    build_id: str  # of out/xen-syms
    seconds: float  # this session's doit build (cold, or a no-op)
    env: dict[str, str]  # the environment it ran with (CCACHE_DIR)
    stdout: str

    @property
    def xen_gz(self) -> Path:
        return self.ws.out / "xen.gz"

    @property
    def xen_syms(self) -> Path:
        return self.ws.out / "xen-syms"

    def metadata(self) -> dict:
        return json.loads((self.ws.out / "metadata.json").read_text())


def build_real_xen(up: XenUpstream, rev: str = NEW) -> RealXen:
    """``doit build`` of Xen at *rev* from *up* on the cached workspace of its inputs."""
    cache = cache_dir()
    node = up.node(rev)
    # stamp: built with the XEN_BUILD_DATE/TIME that make install-xen reuses
    key = keys.key({"node": node, "make_args": MAKE_ARGS, "targets": None, "stamp": True},
                   XEN_MODULES, TASK_GRAPH)
    base = keys.keyed_dir(cache, "xen", key)
    ws = Workspace(base / "ws")
    config = base / "xen.toml"
    base.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[workspace]\ndir = {json.dumps(str(ws.dir))}\n\n' + xen_tables(up.url, rev)
                      + "[build]\njobs = 0\nccache = true\n")
    env = {"CCACHE_DIR": str(cache / "ccache")}
    with build_lock(base):
        start = time.monotonic()
        res = run_doit("build", config=config, env=env, timeout=BUILD_TIMEOUT)
        seconds = time.monotonic() - start
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        pytest.fail(f"doit build of Xen {rev} failed (logs: {ws.logs}):\n{tail}")
    build_id = gnu_build_id(ws.out / "xen-syms")
    if not build_id:
        pytest.fail(f"{ws.out / 'xen-syms'} has no .note.gnu.build-id")
    return RealXen(config, ws, node, up.url, build_id, seconds, env, res.stdout)


# The built Xen says its build-id at boot only from loglvl=info up (XENLOG_INFO).
XEN_CMDLINE = "iommu=1 dom0_mem=1024M loglvl=info"


def host_workspace(rx: RealXen | None, rk: RealKernel, dest: Path, rootfs: Path | None = None,
                   url: str | None = None, rev: str = NEW) -> tuple[Path, Workspace]:
    """A config and workspace under *dest* for the whole demo host with a built Xen:
    configs/demo.toml plus ``[sources.xen]``/``[xen]`` (no ``[boot] xen``), its install root
    in *dest*. The shared kernel build (artifacts, trees, build records) and, given *rx*, the
    shared Xen build are linked in, read-only, so tasks run with ``doit -s`` build nothing;
    *rootfs*, the Debian root of guest boots, likewise. Without *rx* the Xen source is *url*
    at *rev*, for the workspace to fetch and build itself."""
    ws = Workspace(dest / "ws")
    text = demo_with_workspace(ws.dir).replace('xen = "/boot/xen-4.17-amd64.gz"\n', "")
    text = set_key(text, "install", "xen_cmdline", json.dumps(XEN_CMDLINE))
    text = set_key(text, "install", "root", json.dumps(str(dest / "root")))
    text += "\n" + xen_tables(rx.url if rx else str(url), rev)
    config = dest / "host.toml"
    config.write_text(text)
    ws.out.mkdir(parents=True)
    for p in (rk.vmlinuz, rk.system_map, rk.dotconfig, rk.build_dir,
              *((rx.xen_gz, rx.xen_syms) if rx else ())):
        (ws.out / p.name).symlink_to(p)
    ws.src.mkdir()
    (ws.src / "linux").symlink_to(rk.ws.source_dir("linux"))
    if rx:
        (ws.src / "xen").symlink_to(rx.ws.source_dir("xen"))
    ws.state_dir.mkdir()
    for src in (rk.ws, *((rx.ws,) if rx else ())):
        for rec in src.state_dir.glob("*.json"):
            if rec.name.startswith(("build-", "fetch-", "patch-", "config")):
                shutil.copy(rec, ws.state_dir)
    if rootfs is not None:
        (ws.dir / "rootfs").symlink_to(rootfs)
    return config, ws


def adopt_kernel_tasks(rk: RealKernel, ws: Workspace) -> None:
    """Give *ws* the shared kernel workspace's doit records, so that a ``doit build`` or
    ``doit nightly`` of the whole graph on *ws* finds the linked kernel's tasks up to date
    (their fingerprints hold no workspace path) and never runs make in the shared tree.
    Hold ``rk.lock()`` meanwhile."""
    shutil.copy(rk.ws.dep_file, ws.dep_file)
