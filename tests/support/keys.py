"""The one way a slow-test artifact shared through the test cache is keyed: by its inputs and
by the source of the xenpipe modules that make it.

A warm cache must never pass on what an older pipeline built: the kernel build's workspace,
the Debian roots, the Xen build and the unpacked tree each live in a directory named after
``key(inputs, modules)``, where *modules* are the stage modules that produce the artifact
and the hash covers their source and that of every ``pipeline`` module they import
(transitively, their packages' ``__init__`` included), plus any further *files* (the task
graph, dodo.py). A change to any of them is a new directory, built afresh; directories no
session used for ``STALE_DAYS`` are removed when a new one of their kind is made.
"""

from __future__ import annotations

import ast
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

from pipeline import digest

from .tools import REPO

STALE_DAYS = 3.0
USED = ".last-used"  # touched by each session that uses a keyed directory


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The source file of the dotted ``pipeline`` module or package *name* in the tree at
    *root*, if it exists."""
    base = root.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@cache
def _imports(path: Path, name: str, text: str) -> frozenset[str]:
    """The ``pipeline`` modules that the module *name* (source *path*, *text*) imports,
    anywhere in it (a function's lazy import counts too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    root = path.parents[name.count(".") + (path.name == "__init__.py")]
    found: set[str] = set()
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return frozenset(m for m in found if m.split(".")[0] == "pipeline" and module_file(m, root))


def sources(modules: Iterable[str], root: Path = REPO) -> list[Path]:
    """The source files of *modules* and of every ``pipeline`` module they import,
    transitively, in the tree at *root*; sorted. The ``__init__`` of a package on the way is
    included as a file (importing a module runs it) but what it imports is not followed:
    ``pipeline.boot.rootfs`` is not made by everything ``pipeline.boot`` exports."""
    todo = list(modules)
    seen: dict[str, Path] = {}
    packages: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name, root)
        if path is None:
            raise ValueError(f"{name}: no such module under {root}")
        seen[name] = path
        todo.extend(_imports(path, name, path.read_text()))
        for i in range(1, name.count(".") + 1):
            init = module_file(".".join(name.split(".")[:i]), root)
            if init is not None:
                packages.add(init)
    return sorted({*seen.values(), *packages})


def key(inputs: Mapping[str, object], modules: Sequence[str] = (),
        files: Sequence[str] = (), root: Path = REPO) -> str:
    """A short digest of *inputs* (JSON-able), of the source of *modules* with what they
    import (``sources``) and of *files* (paths relative to *root*, the repository): the name
    of an artifact that these make."""
    paths = {*sources(modules, root), *(root / f for f in files)}
    code = {str(p.relative_to(root)): digest.of_file(p) for p in sorted(paths)}
    return digest.of_json({"inputs": dict(inputs), "code": code})[:16]


def file_identity(path: Path) -> dict[str, object]:
    """An input file too big to hash each session (a tarball): its path, size and date."""
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def keyed_dir(cache: Path, kind: str, k: str) -> Path:
    """``<cache>/<kind>-<k>``, created and marked as used now; other ``<kind>-*`` directories
    unused for ``STALE_DAYS`` are removed (they hold what older code or inputs made)."""
    path = cache / f"{kind}-{k}"
    path.mkdir(parents=True, exist_ok=True)
    (path / USED).touch()
    old = time.time() - STALE_DAYS * 86400
    for other in cache.glob(f"{kind}-" + "[0-9a-f]" * len(k)):
        used = other / USED
        if other != path and other.is_dir() and used.is_file() and used.stat().st_mtime < old:
            shutil.rmtree(other, ignore_errors=True)
    return path
