"""Fixtures that build real upstreams on the fly: an hg repository behind a real
``hg serve`` on 127.0.0.1, git repositories, tarballs; and a way to run doit as users do."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import git
import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"


def need(tool: str) -> str:
    """Path of *tool*; skip when missing, except under CI=true where that is a failure."""
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is not installed; .ci/run must install it")
        pytest.skip(f"{tool} is not installed")
    return path


def hg(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "HGPLAIN": "1", "HGUSER": "Test <test@example.org>", "LC_ALL": "C"}
    return subprocess.run(["hg", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HgUpstream:
    path: Path
    url: str

    def commit(self, name: str, text: str, msg: str | None = None) -> str:
        f = self.path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        hg("addremove", "-q", cwd=self.path)
        hg("commit", "-m", msg or f"edit {name}", cwd=self.path)
        return self.node()

    def node(self, rev: str = "tip") -> str:
        return hg("log", "-r", rev, "--template", "{node}", cwd=self.path)

    def tag(self, name: str) -> None:
        hg("tag", name, cwd=self.path)


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


@pytest.fixture
def hg_upstream(tmp_path: Path, hg_template: Path) -> Iterator[HgUpstream]:
    """An hg repository with two commits and a tag, served by a real ``hg serve``."""
    path = tmp_path / "upstream.hg"
    shutil.copytree(hg_template, path, symlinks=True)
    up = HgUpstream(path, "")
    port = free_port()
    server = subprocess.Popen(
        ["hg", "serve", "-R", str(path), "-a", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "HGPLAIN": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("hg serve did not start") from None
            time.sleep(0.05)
    up.url = f"http://127.0.0.1:{port}/"
    try:
        yield up
    finally:
        server.terminate()
        server.wait(timeout=10)


@dataclass
class GitUpstream:
    path: Path
    repo: git.Repo

    @property
    def url(self) -> str:
        return str(self.path)

    def commit(self, name: str, text: str, msg: str | None = None) -> str:
        f = self.path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        self.repo.index.add([name])
        return self.repo.index.commit(msg or f"edit {name}").hexsha


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


def make_tarball(path: Path, files: dict[str, str], top: str | None = "pkg-1.0",
                 mode: str = "w:gz") -> Path:
    """A tarball holding *files* (under one top-level folder unless *top* is None)."""
    with tarfile.open(path, mode) as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def write_config(tmp_path: Path, body: str, name: str = "site.toml") -> Path:
    """A config whose workspace is under *tmp_path* unless *body* sets one."""
    if "[workspace]" not in body:
        body = f'[workspace]\ndir = "{tmp_path / "ws"}"\n\n' + body
    path = tmp_path / name
    path.write_text(body)
    return path


def run_doit(*args: str, config: Path | None = None, env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run doit exactly as a user does, from the repository root."""
    argv = [sys.executable, "-m", "doit", *args]
    if config is not None:
        argv.append(f"config={config}")
    full_env = {**os.environ, **(env or {})}
    full_env.pop("XENPIPE_CONFIG", None) if env is None or "XENPIPE_CONFIG" not in env else None
    return subprocess.run(argv, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


from .realkernel import real_kernel  # noqa: E402, F401 - the shared real kernel build (slow tests)
