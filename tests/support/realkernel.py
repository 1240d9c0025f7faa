"""The one real kernel build that the slow tests share.

``real_kernel`` (session scope) builds Debian's linux-source-6.1 the way ``make demo`` does:
configs/demo.toml's sources, [kernel] and [build] tables (tinyconfig + the shipped
configs/kernel/xen-dom0.config, ccache on), but with the workspace in a cache directory that
survives test sessions, so only the first session pays for the build:

- cache directory: ``$XENPIPE_TEST_CACHE``, default ``/tmp/xenpipe-test-cache``;
- ``<cache>/kernel-<key>/``: workspace ``ws/``, config file ``real.toml``, lock ``real.lock``;
  the key (tests/support/keys.py) covers the inputs (configs/demo.toml, the tarball's size
  and date) and the source of the stage modules that fetch, patch, configure and build it
  (``KERNEL_MODULES``, the task graph), so a warm cache never passes on what older code
  built: a change there is a new workspace, built afresh;
- ccache ``<cache>/ccache`` (``CCACHE_DIR``), shared by every key, so even a fresh workspace
  rebuilds from ccache in a few minutes;
- the build runs ``doit build config=<dir>/real.toml`` exactly as a user would, under an
  exclusive lock (``real.lock``): concurrent pytest sessions wait rather than build the
  same workspace twice. A later session finds it up to date (a no-op ``doit build``).
  A test that runs doit on this workspace itself should hold ``rk.lock()`` meanwhile.

``real.toml`` is configs/demo.toml with only the workspace changed, so it boots the demo's
guest too (``[boot] guest = true``). The Debian root of guest boots is ``real_rootfs``
(session scope): debootstrap'ed once per key of its own (``ROOTFS_MODULES``) into
``<cache>/rootfs-<key>/rootfs/``, linked as the kernel workspace's ``rootfs/``, where
``doit boot`` of real.toml finds it; guest tests on other workspaces link that directory as
their ``rootfs/``. Boot tests that start no guest set ``guest = false`` in their copy.

Without /usr/src/linux-source-6.1.tar.xz the fixture skips, except under CI=true (fail).
A failed build fails the test with the tail of doit's output (the full log is in the
workspace's ``logs/``). Tests must treat the workspace as read-only: copy what they
change (e.g. ``shutil.copytree(rk.ws.out / "kernel-build", ...)``), never edit it in place.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tomllib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Config, load
from pipeline.workspace import Workspace

from . import keys
from .doit import run_doit
from .tools import REPO

TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
DEMO = REPO / "configs" / "demo.toml"
BUILD_TIMEOUT = 4 * 3600.0
# What makes the kernel build: the stages doit runs for it (with all they import), the task
# graph that runs them and decides what is up to date, and the dodo.py doit loads.
KERNEL_MODULES = ("pipeline.config", "pipeline.fetch", "pipeline.patch", "pipeline.kernel",
                  "pipeline.build")
TASK_GRAPH = ("pipeline/tasks.py", "dodo.py")
# What makes the Debian root of guest boots (rootfs.key covers packages, mirror and suite).
ROOTFS_MODULES = ("pipeline.boot.rootfs",)


def kernel_key(tarball: Path = TARBALL, root: Path = REPO) -> str:
    """The key of the shared kernel build: its inputs and the code that builds it (in the
    repository at *root*)."""
    demo = root / DEMO.relative_to(REPO)
    return keys.key({"config": demo.read_text(), "tarball": keys.file_identity(tarball)},
                    KERNEL_MODULES, TASK_GRAPH, root)


def cache_dir() -> Path:
    return Path(os.environ.get("XENPIPE_TEST_CACHE", "/tmp/xenpipe-test-cache"))


@contextmanager
def build_lock(base: Path) -> Iterator[None]:
    """Exclusive use of the shared workspace in *base* (other pytest sessions wait)."""
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "real.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class RealKernel:
    """A built real dom0 kernel: its config file, workspace and release."""

    config: Path  # the TOML file; pass it to run_doit(config=...)
    ws: Workspace
    release: str
    env: dict[str, str]  # the environment the build ran with (CCACHE_DIR)

    @cached_property
    def cfg(self) -> Config:
        return load(self.config)

    @property
    def vmlinuz(self) -> Path:
        return self.ws.out / f"vmlinuz-{self.release}"

    @property
    def system_map(self) -> Path:
        return self.ws.out / f"System.map-{self.release}"

    @property
    def dotconfig(self) -> Path:
        return self.ws.out / f"config-{self.release}"

    @property
    def build_dir(self) -> Path:
        """The kbuild output directory (modules, vmlinux, Module.symvers)."""
        return self.ws.out / "kernel-build"

    def metadata(self) -> dict[str, Any]:
        return json.loads((self.ws.out / "metadata.json").read_text())

    def lock(self) -> AbstractContextManager[None]:
        """``with rk.lock():`` run doit on the shared workspace without a concurrent rebuild."""
        return build_lock(self.config.parent)


def set_key(text: str, table: str, key: str, value: str) -> str:
    """*text* (TOML) with ``key = value`` (value already in TOML syntax) in ``[table]``:
    replaced where the table sets it, else added (with the table, if need be)."""
    lines = text.splitlines()
    line = f"{key} = {value}"
    head = next((i for i, ln in enumerate(lines) if ln.strip() == f"[{table}]"), None)
    if head is None:
        lines[:0] = [f"[{table}]", line, ""]
    else:
        end = next((i for i in range(head + 1, len(lines)) if lines[i].lstrip().startswith("[")),
                   len(lines))
        pat = re.compile(rf"\s*{re.escape(key)}\s*=")
        at = next((i for i in range(head + 1, end) if pat.match(lines[i])), None)
        if at is None:
            lines.insert(head + 1, line)
        else:
            lines[at] = line
    return "\n".join(lines) + "\n"


def demo_with_workspace(workspace: Path, demo: Path = DEMO) -> str:
    """configs/demo.toml's text with its [workspace] dir pointing at *workspace*."""
    text = set_key(demo.read_text(), "workspace", "dir", json.dumps(str(workspace)))
    assert tomllib.loads(text)["workspace"]["dir"] == str(workspace)
    return text


def rootfs_key(root: Path = REPO) -> str:
    """The key of a shared Debian root: the code that builds it (``rootfs.key`` names each
    archive after its packages, mirror and suite inside that directory)."""
    return keys.key({}, ROOTFS_MODULES, root=root)


def rootfs_dir(cache: Path, kind: str = "rootfs") -> Path:
    """The workspace directory of a shared Debian root (*kind*: the guest boots' ``rootfs``,
    the test box's ``box``), keyed by the code that builds it."""
    return keys.keyed_dir(cache, kind, rootfs_key())


def link_into(link: Path, target: Path) -> None:
    """*link* (a symlink) points at *target*, replaced atomically if it pointed elsewhere."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.with_name(f".{link.name}.new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def build_real_kernel(cache: Path | None = None) -> RealKernel:
    """Build (or find up to date) the shared real kernel; pytest.fail on a failed build."""
    cache = cache or cache_dir()
    base = keys.keyed_dir(cache, "kernel", kernel_key())
    ws = Workspace(base / "ws")
    config = base / "real.toml"
    text = demo_with_workspace(ws.dir)
    if not config.is_file() or config.read_text() != text:
        config.write_text(text)
    env = {"CCACHE_DIR": str(cache / "ccache")}
    with build_lock(base):
        res = run_doit("build", config=config, env=env, timeout=BUILD_TIMEOUT)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        pytest.fail(f"doit build of the real kernel failed (logs: {ws.logs}):\n{tail}")
    release = ws.state("build-kernel").get("release")
    if not release:
        pytest.fail(f"doit build succeeded but recorded no kernel release in {ws.state_dir}")
    return RealKernel(config, ws, release, env)


def dom0_only(text: str) -> str:
    """A copy of the demo config (TOML *text*) that boots dom0 alone: no guest, no Debian root."""
    return set_key(text, "boot", "guest", "false")
