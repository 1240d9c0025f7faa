"""The nightly history page (``doit report``, pipeline/nightly/html.py) rendered from
recorded runs (tests/support/history.py writes them with nightly's own writers), read back
with the standard library's HTML parser; a slow test opens it in a real Chromium."""

from __future__ import annotations

import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.nightly import html
from tests.support.doit import run_doit, write_config
from tests.support.history import RUNS, record
from tests.support.tools import need
from tests.support.upstreams import GitUpstream


class Page(HTMLParser):
    """The elements of the page the tests look at: every tag with its attributes, the
    links, and the text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str, **want: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(
            re.search(v, a.get(k.rstrip("_").replace("_", "-"), "")) for k, v in want.items())]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def links_resolve(page: Path, hrefs: list[str]) -> list[str]:
    """The hrefs that do not name an existing file relative to *page*."""
    return [h for h in hrefs if not (page.parent / h).is_file()]


def test_page_shows_grid_plots_boot_and_per_run_facts(tmp_path: Path) -> None:
    dirs = record(tmp_path)
    path = html.write(dirs[0], dirs)
    assert path == dirs[0] / "index.html"
    text = path.read_text()
    page = Page(text)

    cells = page.all("td", class_="cell")
    assert len(cells) == 2 * len(RUNS)
    status = {(c["data-variant"], c["data-run"]): c["class"].split("status-")[1] for c in cells}
    assert status[("tip", RUNS[1])] == "failed" and status[("tip", RUNS[0])] == "passed"
    assert {status[("stable", r)] for r in RUNS} == {"passed"}
    # colour is not the only signal: the status word and a symbol are in the cell's text
    assert "✗ failed" in page.words and "✓ passed" in page.words

    hrefs = [a["href"] for a in page.all("a")]
    assert hrefs and not links_resolve(path, hrefs)
    assert f"runs/{RUNS[1]}/logs/build-xen.log" in hrefs  # the failed cell links its stage log
    assert "../../stable/reports/runs/20260101T020000Z/report.json" in hrefs

    # plots: inline SVG with axis titles and units, no script or stylesheet from elsewhere
    assert len(page.all("svg")) == 4  # durations of 2 variants, the latest boot of each
    for title in ("duration (seconds)", "run (UTC start time)",
                  "time since QEMU started (seconds)"):
        assert title in page.words
    assert not page.all("script", src=".") and not page.all("link", href=".")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    for stage in ("fetch", "build:xen", "build:kernel", "boot"):
        assert stage in page.words

    # tip's latest boot stopped at the pciback milestone: marked, later ones not reached
    assert "pciback seized 0000:00:04.0 ✗ MISSED: boot stopped here 36.0" in page.words
    assert "guest started – not reached" in page.words
    assert "MISSED (boot stopped here)" in page.words  # the plot's legend

    # per run: moved revisions, merged patch, ccache hit rate
    arts = page.all("article", class_="run")
    assert [(a["data-run"], a["data-variant"]) for a in arts][:2] == [(RUNS[2], "tip"),
                                                                      (RUNS[2], "stable")]
    assert "xen 02eeeeeeeeee → 03eeeeeeeeee" in page.words
    assert "patches/xen/0001-fix.patch is in xen@cccccccccccc: drop it from the series" \
        in page.words
    assert "90% (90 hits, 10 misses)" in page.words


def test_empty_history_says_no_runs_yet(tmp_path: Path) -> None:
    page = Page(html.write(tmp_path / "reports", [tmp_path / "reports"]).read_text())
    assert page.all("p", id="no-runs") and "No runs yet" in page.words
    assert not page.all("svg") and not page.all("table")


def test_an_unreadable_run_is_left_out(tmp_path: Path) -> None:
    """A run whose report.json is missing or cut short (still going, or a crash) is not in
    the page; the others are."""
    dirs = record(tmp_path)
    (dirs[0] / "runs" / RUNS[2] / "report.json").write_text('{"format": 1, "vari')
    (dirs[0] / "runs" / "20260104T020000Z").mkdir()
    odd = dirs[0] / "runs" / "20260105T020000Z"
    odd.mkdir()
    (odd / "report.json").write_text('{"variants": [{"name": "tip", "stages": [1]}, 7]}')
    page = Page(html.write(dirs[0], dirs).read_text())
    runs = {c["data-run"] for c in page.all("td", class_="cell", data_variant="tip")
            if "status-none" not in c["class"]}
    assert runs == set(RUNS[:2])


def test_doit_report_writes_the_page_of_every_variant(tmp_path: Path) -> None:
    dirs = record(tmp_path)
    cfgs = [write_config(tmp_path, f'[workspace]\ndir = "{d.parent}"\n', f"{d.parent.name}.toml")
            for d in dirs]
    res = run_doit("report", f"config={cfgs[0]},{cfgs[1]}")
    assert res.returncode == 0, res.stderr
    assert f"report page: {dirs[0] / 'index.html'}" in res.stdout
    page = Page((dirs[0] / "index.html").read_text())
    assert {c["data-variant"] for c in page.all("td", class_="cell")} == {"tip", "stable"}




def test_every_nightly_rewrites_the_page(tmp_path: Path, git_upstream: GitUpstream) -> None:
    """`doit nightly` (a real one, of a git source only) ends by writing the page, which
    then holds each run: the second run's revision moved."""
    cfg = write_config(tmp_path, f'[workspace]\ndir = "{tmp_path / "site"}"\n\n[sources.xen]\n'
                                 f'vcs = "git"\nurl = "{git_upstream.url}"\nrev = "main"\n')
    index = tmp_path / "site" / "reports" / "index.html"
    for n in range(2):
        if n:
            git_upstream.commit("NEWS", "moved\n", "news")
        res = run_doit("nightly", config=cfg)
        assert res.returncode == 0, res.stderr
        assert f"page:   {index}" in res.stdout
    page = Page(index.read_text())
    runs = [c["data-run"] for c in page.all("td", class_="cell", data_variant="site")]
    assert len(runs) == 2 and all("status-passed" in c["class"]
                                  for c in page.all("td", class_="cell"))
    assert re.search(r"revisions moved xen [0-9a-f]{12} → [0-9a-f]{12}", page.words)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's chromium, headless, with a profile of its own (no sandbox: we are root)."""
    exe = need("chromium")
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
                           *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HOME": str(tmp_path)})


@pytest.mark.slow
def test_page_in_chromium(tmp_path: Path) -> None:
    """The page as a real browser loads it from disk: Chromium's DOM after loading has the
    grid's cells, the four plots drawn as SVG with their axes, and only links that name
    existing files; its screenshot (screenshot.png under the test's tmp dir) is not blank."""
    dirs = record(tmp_path / "history")
    path = html.write(dirs[0], dirs)
    url = path.resolve().as_uri()
    res = chromium(tmp_path, "--dump-dom", url)
    assert res.returncode == 0, res.stderr
    dom = Page(res.stdout)
    cells = dom.all("td", class_="cell")
    assert len(cells) == 2 * len(RUNS)
    assert sum("status-failed" in c["class"] for c in cells) == 2  # tip's 2nd and 3rd runs
    svgs = dom.all("svg")
    assert len(svgs) == 4 and len(dom.all("g", class_="axis")) >= 8  # x and y of each plot
    assert len(dom.all("figure", class_="plot")) == 4
    hrefs = [a["href"] for a in dom.all("a")]
    assert len(hrefs) > 2 * len(RUNS) and not links_resolve(path, hrefs)

    shot = tmp_path / "screenshot.png"
    res = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1900", url)
    assert res.returncode == 0, res.stderr
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a blank page is ~5 kB
