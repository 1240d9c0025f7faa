"""The nightly history as a page: ``reports/index.html`` from the runs kept under each
variant's ``reports/runs/<run>/report.json`` (as many as ``retention`` keeps).

One static file set that opens from disk or any web server, offline: the page is rendered
with Jinja2 from templates shipped in the package, and its plots are pygal SVG embedded in
the page with pygal's JavaScript (tooltips, fetched from the network) switched off. The page
shows a grid of variants x runs (status word and colour, links to each run's report and
logs), stage durations over time per variant, each variant's latest boot as a milestone
timeline with the miss marked, and per run the revisions that moved, patches found merged
upstream and the ccache hit rate.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pygal
from pygal.style import Style

from pipeline.files import atomic_write, read_json
from pipeline.nightly.report import FAILED, NOTRUN, PASSED, SKIPPED, UPTODATE

PAGE = "index.html"
# The stages plotted over time; "fetch" and "patch" add up every source's stage.
PLOTTED = ("fetch", "patch", "config", "build:xen", "build:kernel", "boot")
SYMBOL = {PASSED: "✓", UPTODATE: "✓", FAILED: "✗", NOTRUN: "–", SKIPPED: "–",
          "interrupted": "!"}
_LOOK = {"background": "white", "plot_background": "white", "foreground": "#222",
         "foreground_strong": "#000", "foreground_subtle": "#666", "font_family": "sans-serif",
         "label_font_size": 11, "major_label_font_size": 11}
STYLE = Style(**_LOOK, colors=("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
                               "#d62728"))
BOOT_STYLE = Style(**_LOOK, colors=("#2a7ab0", "#d62728"))  # reached: blue; missed: red


@dataclass
class Cell:
    """One variant's part of one run: its status and where its files are (page-relative)."""

    run: str
    variant: dict[str, Any]
    report: str
    logs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.variant.get("status") or "unknown")


@dataclass
class History:
    runs: list[str]                         # run ids, oldest first
    variants: list[str]                     # variant names, in the order given
    cells: dict[tuple[str, str], Cell]      # (variant, run) -> cell

    def of(self, variant: str) -> list[Cell]:
        return [self.cells[(variant, r)] for r in self.runs if (variant, r) in self.cells]


def collect(reports_dirs: Sequence[Path], page_dir: Path) -> History:
    """Every run kept under each ``reports/`` directory (one per variant's workspace); links
    are relative to *page_dir*, so the page works from disk and from a web server."""
    cells: dict[tuple[str, str], Cell] = {}
    names: list[str] = []
    for reports in reports_dirs:
        runs_dir = reports / "runs"
        if not runs_dir.is_dir():
            continue
        for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
            doc = read_json(run_dir / "report.json")
            if not isinstance(doc, dict):
                continue  # a run still going, or one a crash cut short
            for v in doc.get("variants") or []:
                if not usable(v):
                    continue
                logs = sorted((run_dir / "logs").glob("*.log")) if (run_dir / "logs").is_dir() \
                    else []
                cells[(v["name"], run_dir.name)] = Cell(
                    run_dir.name, v, rel(run_dir / "report.json", page_dir),
                    [(p.stem, rel(p, page_dir)) for p in logs])
                if v["name"] not in names:
                    names.append(v["name"])
    runs = sorted({r for _, r in cells})
    return History(runs, names, cells)


def usable(v: Any) -> bool:
    """Whether a report's variant has the shape nightly writes (a hand-edited or foreign
    report.json is left out of the page, not a traceback)."""
    def dicts(xs: Any, *keys: str) -> bool:
        return isinstance(xs, list) and all(
            isinstance(x, dict) and all(isinstance(x.get(k), str) for k in keys) for x in xs)

    boot = v.get("boot") if isinstance(v, dict) else None
    return (isinstance(v, dict) and isinstance(v.get("name"), str)
            and isinstance(v.get("status"), str) and dicts(v.get("stages"), "name", "status")
            and dicts(v.get("sources") or [], "name")
            and dicts(v.get("merged_upstream") or [], "patch", "source", "rev")
            and (boot is None or isinstance(boot, dict)
                 and dicts(boot.get("milestones") or [], "name", "status")))


def rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


# ------------------------------------------------------------------------------ plots
def _chart(cls: type[Any], **kw: Any) -> Any:
    """A pygal chart that embeds inline and offline: no XML declaration, no external JS."""
    opts = {"width": 760, "height": 340, "style": STYLE, **kw}
    return cls(js=[], disable_xml_declaration=True, explicit_size=True,
               legend_at_bottom=True, truncate_legend=-1, no_data_text="no data", **opts)


def stage_seconds(variant: dict[str, Any]) -> dict[str, float | None]:
    """Seconds each plotted stage ran in one run; None when it did not run (up to date, not
    run, skipped): a gap in the line, not a zero."""
    out: dict[str, float | None] = {}
    for st in variant.get("stages") or []:
        group = st["name"].split(":")[0]
        group = group if group in ("fetch", "patch") else st["name"]
        if group not in PLOTTED:
            continue
        out.setdefault(group, None)
        if st.get("status") in (PASSED, FAILED):
            out[group] = (out[group] or 0.0) + float(st.get("duration") or 0.0)
    return out


def durations_svg(variant: str, cells: list[Cell]) -> str:
    """Stage durations over the kept runs of *variant* (a line per stage, seconds)."""
    chart = _chart(pygal.Line, title=f"{variant}: stage durations per run",
                   x_title="run (UTC start time)", y_title="duration (seconds)",
                   x_label_rotation=30, show_minor_x_labels=True, dots_size=4,
                   allow_interruptions=True, show_minor_y_labels=False,
                   y_labels_major_count=6, value_formatter=lambda s: f"{s:.1f} s")
    chart.x_labels = [c.run for c in cells]
    per_run = [stage_seconds(c.variant) for c in cells]
    for stage in PLOTTED:
        values = [s.get(stage) for s in per_run]
        if any(v is not None for v in values):
            chart.add(stage, values)
    return chart.render(is_unicode=True)


def boot_svg(variant: str, cell: Cell) -> str:
    """The boot's milestones against time since QEMU started; a missed one marked."""
    ms = [m for m in (cell.variant.get("boot") or {}).get("milestones") or []
          if m.get("status") in (PASSED, FAILED)]
    chart = _chart(pygal.XY, title=f"{variant}: boot of run {cell.run}", stroke=False,
                   x_title="time since QEMU started (seconds)", style=BOOT_STYLE,
                   dots_size=6, height=max(240, 60 + 34 * len(ms)),
                   value_formatter=lambda v: f"{v:.1f}",
                   x_value_formatter=lambda s: f"{s:.0f} s")
    chart.y_labels = [{"label": m["name"], "value": i} for i, m in enumerate(ms)]
    passed = [(float(m.get("at") or 0.0), i) for i, m in enumerate(ms) if m["status"] == PASSED]
    missed = [(float(m.get("at") or 0.0), i) for i, m in enumerate(ms) if m["status"] == FAILED]
    chart.add("reached", passed, dots_size=6)
    chart.add("MISSED (boot stopped here)", missed, dots_size=12)
    return chart.render(is_unicode=True)


# ------------------------------------------------------------------------------ page
def details(cell: Cell) -> dict[str, Any]:
    """What the page says of one run of one variant below the grid."""
    v = cell.variant
    cc = v.get("ccache") if isinstance(v.get("ccache"), dict) else None
    hits, misses = (int(cc.get(k) or 0) for k in ("hits", "misses")) if cc else (0, 0)
    rate = 100.0 * hits / (hits + misses) if hits + misses else None
    moved = [s for s in v.get("sources") or [] if s.get("changed")]
    return {"cell": cell, "moved": moved, "merged": v.get("merged_upstream") or [],
            "ccache": cc, "rate": rate, "hits": hits,
            "misses": misses, "summary": v.get("summary") or ""}


def render(reports_dirs: Sequence[Path], page_dir: Path) -> str:
    """The page's HTML for the runs kept under *reports_dirs*, links relative to *page_dir*."""
    hist = collect(reports_dirs, page_dir)
    env = jinja2.Environment(loader=jinja2.PackageLoader("pipeline.nightly", "templates"),
                             autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    latest = {}
    for name in hist.variants:
        booted = [c for c in hist.of(name) if (c.variant.get("boot") or {}).get("milestones")]
        if booted:
            latest[name] = booted[-1]
    return env.get_template("index.html.j2").render(
        hist=hist, symbol=SYMBOL,
        durations={n: durations_svg(n, hist.of(n)) for n in hist.variants},
        boots={n: (c, boot_svg(n, c)) for n, c in latest.items()},
        details=[details(hist.cells[(n, r)]) for r in reversed(hist.runs)
                 for n in hist.variants if (n, r) in hist.cells],
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


def write(page_dir: Path, reports_dirs: Sequence[Path]) -> Path:
    """Write ``index.html`` into *page_dir* (atomically) and return its path."""
    page_dir.mkdir(parents=True, exist_ok=True)
    path = page_dir / PAGE
    atomic_write(path, render(reports_dirs, page_dir))
    return path
