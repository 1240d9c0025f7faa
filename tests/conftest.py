"""The fixtures tests share (real upstreams, the real kernel, tree and Debian root of the slow
tests) and the hooks the helpers need; the helpers themselves live in tests/support/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import git
import pytest

from pipeline.workspace import Workspace

from .support import doit
from .support.kernel_tree import unpacked_tree
from .support.realkernel import (
    TARBALL,
    RealKernel,
    build_real_kernel,
    cache_dir,
    link_into,
    rootfs_dir,
)
from .support.realxen import RealXen, XenUpstream, build_real_xen, bundle, clone_history
from .support.tools import IN_CI, free_port, need
from .support.upstreams import GitUpstream, HgServer, HgUpstream, hg


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    doit.set_slow_test(item.get_closest_marker("slow") is not None)


@pytest.fixture(scope="session")
def hg_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The history every ``hg_upstream`` starts from, made once (each hg call costs a
    Python start-up)."""
    need("hg")
    path = tmp_path_factory.mktemp("hg-template") / "upstream.hg"
    hg("init", str(path))
    up = HgUpstream(path, "")
    up.commit("README", "xen-unstable\n", "initial")
    up.commit("xen/Makefile", "all:\n\ttrue\n", "add Makefile")
    up.tag("3.4.0-rc1")
    return path



@pytest.fixture(scope="session")
def hg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HgServer]:
    """One ``hg serve`` for every ``hg_upstream`` of the session (each start costs a Python
    start-up and a wait for its port). hgweb lists *root* again at each request
    (``refreshinterval = 0``), so a repository is served as soon as it is linked there."""
    need("hg")
    base = tmp_path_factory.mktemp("hg-served")
    root = base / "root"
    root.mkdir()
    conf = base / "web.conf"
    conf.write_text(f"[paths]\n/ = {root}/*\n\n[web]\nrefreshinterval = 0\n")
    port = free_port()
    with open(base / "serve.log", "wb") as log:
        server = subprocess.Popen(
            ["hg", "serve", "--web-conf", str(conf), "-a", "127.0.0.1", "-p", str(port)],
            env={**os.environ, "HGPLAIN": "1"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"hg serve did not start (see {base / 'serve.log'})") \
                    from None
            time.sleep(0.05)
    try:
        yield HgServer(root, f"http://127.0.0.1:{port}/", server)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def hg_upstream(tmp_path: Path, hg_template: Path, hg_server: HgServer
                ) -> Iterator[HgUpstream]:
    """An hg repository with two commits and a tag (in *tmp_path*), served over HTTP by a real
    ``hg serve`` (the session's) for the duration of the test."""
    if hg_server.process.poll() is not None:
        raise RuntimeError(f"the session's hg serve exited ({hg_server.process.returncode})")
    path = tmp_path / "upstream.hg"
    shutil.copytree(hg_template, path, symlinks=True)
    link = hg_server.root / tmp_path.name  # unique in the session
    link.symlink_to(path)
    try:
        yield HgUpstream(path, f"{hg_server.url}{link.name}/")
    finally:
        link.unlink()


@pytest.fixture
def git_upstream(tmp_path: Path) -> GitUpstream:
    """A git repository with two commits on ``main`` and a tag ``v1.0``."""
    path = tmp_path / "upstream.git"
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.org")
    up = GitUpstream(path, repo)
    up.commit("Makefile", "all:\n\ttrue\n", "initial")
    up.commit("README", "linux\n", "readme")
    repo.create_tag("v1.0")
    return up


@pytest.fixture(scope="session")
def kernel_tree() -> Iterator[Path]:
    """The path of an unpacked linux-source-6.1 tree (use it with O=<build dir> only)."""
    if not TARBALL.is_file():
        if IN_CI:
            pytest.fail(f"{TARBALL} is missing; CI must install linux-source-6.1")
        pytest.skip(f"{TARBALL} is not installed (apt-get install linux-source-6.1)")
    yield unpacked_tree()


@pytest.fixture(scope="session")
def real_kernel() -> RealKernel:
    """The real dom0 kernel built through ``doit build`` (see tests/support/realkernel.py)."""
    if not TARBALL.is_file():
        if IN_CI:
            pytest.fail(f"{TARBALL} is missing; .ci/run must install linux-source-6.1")
        pytest.skip(f"{TARBALL} is missing (apt-get install linux-source-6.1)")
    for tool in ("make", "gcc", "ccache", "flex", "bison", "bc", "xz"):
        need(tool)
    return build_real_kernel()


@pytest.fixture(scope="session")
def real_rootfs(real_kernel: RealKernel) -> Path:
    """The Debian dom0 root of guest boots, built once per key (debootstrap: root and the
    Debian mirror; minutes) in ``<cache>/rootfs-<key>/rootfs/`` and linked as the shared
    kernel workspace's ``rootfs/``; returns that directory."""
    from pipeline.boot import rootfs

    need("debootstrap")
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("debootstrap needs root: .ci/run must run the slow tests as root")
        pytest.skip("building the Debian root (debootstrap) needs root")
    ws = Workspace(rootfs_dir(cache_dir()))
    rootfs.build(ws)  # rootfs.build locks its directory: concurrent sessions wait, then find it
    built = rootfs.cache_dir(ws)
    with real_kernel.lock():
        link_into(real_kernel.ws.dir / "rootfs", built)
    return built


@pytest.fixture(scope="session")
def xen_upstream(tmp_path_factory: pytest.TempPathFactory, hg_server: HgServer
                 ) -> Iterator[XenUpstream]:
    """Xen's real stable-4.17 history (tests/support/realxen.py) cloned into a scratch
    repository, served by the session's ``hg serve`` on 127.0.0.1."""
    source = bundle()
    path = clone_history(source, tmp_path_factory.mktemp("xen-upstream") / "xen.hg")
    link = hg_server.root / "xen-4.17.hg"
    link.symlink_to(path)
    try:
        yield XenUpstream(path, f"{hg_server.url}{link.name}/")
    finally:
        link.unlink()


@pytest.fixture(scope="session")
def real_xen(xen_upstream: XenUpstream) -> RealXen:
    """Xen RELEASE-4.17.7 fetched over hg and built by ``doit build`` (cached by its inputs)."""
    for tool in ("make", "gcc", "ccache", "python3"):
        need(tool)
    return build_real_xen(xen_upstream)
