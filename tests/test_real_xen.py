"""The first step of the manual procedure, for real: Xen cloned over hg from its real history
(RELEASE-4.17.6..RELEASE-4.17.7, served by a real ``hg serve`` on 127.0.0.1), built by ``doit
build``, and that Xen booted with the demo's guest. The build is shared (``real_xen``: one
cold build per test cache, keyed by its inputs), the dom0 kernel is the shared ``real_kernel``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.build.buildid import gnu_build_id

from .support.doit import run_doit
from .support.realxen import NEW, RealXen

GUEST_DATA = Path(__file__).parent / "data" / "guest"  # a recorded boot of the demo VM


@pytest.mark.slow
def test_doit_build_fetches_xen_over_hg_and_builds_the_hypervisor(real_xen: RealXen) -> None:
    """The tree is the served history at RELEASE-4.17.7 (fetched with hg over HTTP), the
    hypervisor is in out/ with its build-id, and a second doit build does nothing."""
    md = real_xen.metadata()
    src = md["sources"]["xen"]
    assert src["vcs"] == "hg" and src["rev"] == NEW and src["resolved"] == real_xen.node
    assert src["url"] == real_xen.url and real_xen.url.startswith("http://127.0.0.1:")
    assert md["stages"]["xen"]["status"] == "pass"
    assert any("build-xen" in c for c in md["stages"]["xen"]["commands"])
    assert real_xen.xen_gz.read_bytes()[:2] == b"\x1f\x8b"
    assert gnu_build_id(real_xen.xen_syms) == real_xen.build_id
    tree = real_xen.ws.source_dir("xen")
    assert (tree / ".hg").is_dir()
    assert "XEN_EXTRAVERSION ?= .7" in (tree / "xen" / "Makefile").read_text()
    print(f"doit build of Xen {NEW}: {real_xen.seconds:.0f} s, build-id {real_xen.build_id}")

    again = run_doit("build", config=real_xen.config, env=real_xen.env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "-- build:xen" in again.stdout, again.stdout

