"""Where a config's work lives: ``src/<source>``, ``out/``, ``logs/``, ``state/``, ``reports/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import read_json, write_json


@dataclass(frozen=True)
class Workspace:
    dir: Path

    @property
    def src(self) -> Path:
        return self.dir / "src"

    @property
    def out(self) -> Path:
        return self.dir / "out"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def reports(self) -> Path:
        return self.dir / "reports"

    @property
    def dep_file(self) -> Path:
        return self.dir / ".doit.db"

    def source_dir(self, name: str) -> Path:
        return self.src / name

    def log(self, stage: str) -> Path:
        self.logs.mkdir(parents=True, exist_ok=True)
        return self.logs / f"{stage.replace(':', '-')}.log"

    def state(self, stage: str) -> dict[str, Any]:
        """The record a stage left last time it succeeded (empty when none)."""
        return read_json(self.state_dir / f"{stage.replace(':', '-')}.json", {}) or {}

    def save_state(self, stage: str, data: dict[str, Any]) -> None:
        write_json(self.state_dir / f"{stage.replace(':', '-')}.json", data)
