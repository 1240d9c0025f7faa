"""Where a config's work lives: ``src/<source>``, ``out/``, ``logs/``, ``state/``, ``reports/``."""

from __future__ import annotations

import json
import sqlite3
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.files import write_json


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


def set_aside(path: Path, why: str, then: str) -> None:
    """Move a corrupt record out of the way (kept for a bug report) and say so on one line."""
    aside = path.with_name(f"{path.name}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    path.replace(aside)
    where = f"{path.parent.name}/{path.name}" if path.parent.name == "state" else str(path)
    sys.stderr.write(f"xenpipe: warning: {where} is corrupt ({' '.join(why.split())}): "
                     f"moved to {aside.name}; {then}\n")
    sys.stderr.flush()


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
        records a patch found merged upstream there): empty when none. A record that does
        not parse is never trusted: it is said on one warning line and moved aside, and the
        stage that writes it runs again (its task checks has_state)."""
        path = self.state_dir / f"{stage.replace(':', '-')}.json"
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as exc:
            set_aside(path, f"{exc}", "the stage that writes it runs again")
            return {}
        return data if isinstance(data, dict) else {}

    def has_state(self, stage: str) -> bool:
        """Whether the stage's record is there and parses (see state)."""
        return bool(self.state(stage))

    def check_dep_file(self) -> None:
        """doit's sqlite3 dependency database, checked before doit opens it: one that does not
        open, fails sqlite's integrity check or holds a record that does not parse is moved
        aside (said on one warning line), and doit starts a new one: every task then checks
        its outputs again instead of trusting a damaged record (doit itself would stop with
        a traceback, or believe what is left)."""
        db = self.dep_file
        if not db.exists():
            return
        if not db.is_file():
            raise SystemExit(f"xenpipe: error: {db} is not a file (doit's dependency "
                             "database belongs there): move it away and run doit again")
        try:
            # read-write: a doit killed inside a transaction leaves a hot journal, which sqlite
            # rolls back on open (its crash safety); a read-only connection cannot, and said
            # "attempt to write a readonly database" (crash suite, config SIGKILL at 0.903 s,
            # seed 350096607: every record set aside as corrupt)
            con = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
            try:
                if con.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                    raise sqlite3.DatabaseError("integrity check failed")
                for (data,) in con.execute("SELECT task_data FROM doit"):
                    json.loads(data)
            finally:
                con.close()
        except (sqlite3.Error, ValueError) as exc:
            set_aside(db, str(exc), "doit starts a new one and every stage checks its outputs "
                      "again")

    def save_state(self, stage: str, data: dict[str, Any]) -> None:
        write_json(self.state_dir / f"{stage.replace(':', '-')}.json", data)
