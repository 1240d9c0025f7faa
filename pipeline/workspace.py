"""Where a config's work lives: ``src/<source>``, ``out/``, ``logs/``, ``state/``, ``reports/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.files import read_json, write_json


class Key:
    """The names of the records in ``state/``, spelled once: stages read each other's."""

    CONFIG = "config"
    INSTALL = "install"
    NIGHTLY_LAST_GOOD = "nightly-last-good"
    BISECT = "bisect"  # the bisection under way or last finished (pipeline.bisect)

    @staticmethod
    def fetch(source: str) -> str:
        return f"fetch-{source}"

    @staticmethod
    def patch(source: str) -> str:
        return f"patch-{source}"

    @staticmethod
    def build(tree: str) -> str:
        """``xen`` or ``kernel``."""
        return f"build-{tree}"


def _sub(name: str, doc: str) -> property:
    return property(lambda self: self.dir / name, doc=doc)


@dataclass(frozen=True)
class Workspace:
    dir: Path

    src = _sub("src", "fetched source trees, one folder per [sources.*] name")
    out = _sub("out", "artifacts, build directories and metadata.json")
    logs = _sub("logs", "one log per stage, complete command output")
    state_dir = _sub("state", "the record each stage left at its last success")
    reports = _sub("reports", "nightly reports")
    dep_file = _sub(".doit.db", "doit's sqlite3 dependency database")

    def source_dir(self, name: str) -> Path:
        return self.src / name

    def log(self, stage: str) -> Path:
        self.logs.mkdir(parents=True, exist_ok=True)
        return self.logs / f"{stage.replace(':', '-')}.log"

    def state(self, stage: str) -> dict[str, Any]:
        """The record a stage left at its last run (its last success; the patch stage also
        records a patch found merged upstream there): empty when none."""
        return read_json(self.state_dir / f"{stage.replace(':', '-')}.json", {}) or {}

    def save_state(self, stage: str, data: dict[str, Any]) -> None:
        write_json(self.state_dir / f"{stage.replace(':', '-')}.json", data)
