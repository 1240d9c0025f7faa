"""What every test helper needs: the repository root, whether this is CI, and a tool on PATH
(a missing tool skips a test locally but fails it under CI=true, where .ci/run installs it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"


def need(tool: str) -> str:
    """Path of *tool*; skip when missing, except under CI=true where that is a failure."""
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is not installed; .ci/run must install it")
        pytest.skip(f"{tool} is not installed")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_of(path: Path) -> str:
    """The sha256 a user gets from sha256sum: independent of pipeline.digest, which the
    code under test uses."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
