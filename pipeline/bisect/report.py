"""What a bisection says: one line for the terminal and ``reports/bisect.json`` (every step
with its verdict, stages and seconds, the result with the first bad revision's author, date
and summary, or the first bad patch)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.files import write_json
from pipeline.workspace import Workspace

FORMAT = 1
FOUND, SUSPECTS, NOT_REPRODUCED = "found", "suspects", "not-reproduced"


def subject(patch_text: bytes) -> str:
    """A patch's summary: its mail Subject without ``[PATCH n/m]``, else its first line."""
    head = patch_text.decode(errors="replace").split("\n\n", 1)[0]
    m = re.search(r"(?im)^subject:[ \t]*(?:\[[^\]]*\][ \t]*)?(.*)$", head)
    first = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")
    return (m[1].strip() if m else first)[:200]


def builds(steps: list[dict[str, Any]]) -> int:
    """Steps that ran make (a build stage passed or failed, not up to date)."""
    return sum(any(k.startswith("build:") and v["status"] in ("passed", "failed")
                   for k, v in s["stages"].items()) for s in steps)


def shown(what: dict[str, Any]) -> str:
    """A candidate as one line: ``<rev12> (<author>, <date>): <summary>`` or ``patch N
    <name>: <summary>``."""
    if "patch" in what:
        return f"patch {what['number']} {what['patch']}: {what['summary']}" if what["patch"] \
            else "no patches"
    return f"{what['rev'][:12]} ({what['author']}, {what['date']}): {what['summary']}"


def line(state: dict[str, Any], path: Path) -> str:
    """The one line a finished bisection prints."""
    res, steps = state["result"], state["steps"]
    cost = (f"{len(steps)} steps, {builds(steps)} builds, "
            f"{round(sum(s['seconds'] for s in steps))} s; report: {path}")
    label = state["label"]
    if res["status"] == FOUND:
        noun = "patch" if state["mode"] == "patches" else "revision"
        return f"{label}: first bad {noun} {shown(res['first_bad'])} ({cost})"
    if res["status"] == SUSPECTS:
        short = [s if state["mode"] == "patches" else s[:12] for s in res["suspects"]]
        return (f"{label}: the first bad one is among {len(short)} that could not be "
                f"judged (skipped): {', '.join(short)} ({cost})")
    return f"{label}: not reproduced: {res['why']} ({cost})"


def write(ws: Workspace, state: dict[str, Any]) -> Path:
    """``reports/bisect.json``, written atomically; its path."""
    path = ws.reports / "bisect.json"
    write_json(path, {"format": FORMAT, **{k: state[k] for k in (
        "label", "mode", "source", "good", "bad", "candidates", "pins", "moved", "options",
        "steps", "result")}, "builds": builds(state["steps"]),
        "seconds": round(sum(s["seconds"] for s in state["steps"]), 1)})
    return path
