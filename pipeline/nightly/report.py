"""Nightly reports: ``report.json`` for people and tools, ``junit.xml`` for CI engines.

Both are rendered from the same plain dict that :mod:`pipeline.nightly` collects, so they
cannot disagree. The JUnit file follows the common (Jenkins/Ant) XSD shape that GitLab,
GitHub Actions reporters and Jenkins all read: ``<testsuites>`` holding one ``<testsuite>``
per variant, one ``<testcase>`` per stage and per boot milestone.
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write, write_json

FORMAT = 1

# Stage statuses. "up-to-date" passed without running; "not-run" was never reached because an
# earlier stage failed; "skipped" cannot run here (e.g. no kernel to boot).
PASSED, UPTODATE, FAILED, NOTRUN, SKIPPED = "passed", "up-to-date", "failed", "not-run", "skipped"
OK = (PASSED, UPTODATE)

# XML 1.0 forbids most control characters; build logs are full of them (colour escapes).
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def xml_text(text: str) -> str:
    """*text* without terminal escapes and characters XML 1.0 cannot hold."""
    return _NOT_XML.sub("", _ANSI.sub("", text))


def write(directory: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``junit.xml`` into *directory*, each atomically."""
    json_path, junit_path = directory / "report.json", directory / "junit.xml"
    write_json(json_path, report)
    atomic_write(junit_path, junit(report))
    return json_path, junit_path


def testcases(variant: dict[str, Any]) -> list[dict[str, Any]]:
    """The JUnit test cases of one variant: its stages, then its boot milestones."""
    cases: list[dict[str, Any]] = []
    boot = variant.get("boot") or {}
    for st in variant["stages"]:
        if st["name"] == "boot" and not boot.get("available", False):
            continue  # one "boot: not available" case below says why
        cases.append({"classname": "stage", "name": st["name"], "status": st["status"],
                      "time": st.get("duration") or 0.0, "message": st.get("error") or
                      st.get("reason") or "", "log": st.get("log"),
                      "tail": st.get("log_tail") or ""})
    if not boot.get("available", False):
        cases.append({"classname": "boot", "name": "boot: not available", "status": SKIPPED,
                      "time": 0.0, "message": boot.get("reason", "boot is not available"),
                      "log": None, "tail": ""})
    for m in boot.get("milestones", []):
        cases.append({"classname": "boot", "name": f"boot: {m['name']}", "status": m["status"],
                      "time": m.get("time") or 0.0, "message": m.get("detail") or "",
                      "log": boot.get("log"), "tail": m.get("log_tail") or ""})
    for c in boot.get("checks") or []:  # the booted Xen's go/no-go per device (devicecheck)
        why = "; ".join(f"{f['level']}: {f['check']}: {f['text']}" for f in c["findings"]
                        if f["level"] != "info")
        cases.append({"classname": "boot.devices", "name": f"device {c['bdf'] or c['entry']}: "
                      f"{c['verdict']}", "status": FAILED if c["verdict"] == "no-go" else PASSED,
                      "time": 0.0, "message": why, "log": boot.get("log"), "tail": ""})
    return cases


def _fmt_time(seconds: float) -> str:
    return f"{float(seconds):.3f}"


def junit(report: dict[str, Any]) -> str:
    """The report as a JUnit XML document (one testsuite per variant)."""
    root = ET.Element("testsuites", name="xenpipe nightly")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    host = socket.gethostname()
    for variant in report["variants"]:
        cases = testcases(variant)
        counts = {
            "tests": len(cases),
            "failures": sum(c["status"] == FAILED for c in cases),
            "errors": 0,
            "skipped": sum(c["status"] in (SKIPPED, NOTRUN) for c in cases),
            "time": sum(float(c["time"]) for c in cases),
        }
        suite = ET.SubElement(
            root, "testsuite", name=variant["name"], timestamp=report["started"][:19],
            hostname=host, **{k: (_fmt_time(v) if k == "time" else str(v))
                              for k, v in counts.items()},
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="config", value=variant["config"])
        for src in variant["sources"]:
            ET.SubElement(props, "property", name=f"source.{src['name']}",
                          value=f"{src.get('old') or 'none'}..{src.get('new') or 'none'}")
        for case in cases:
            tc = ET.SubElement(suite, "testcase", name=case["name"],
                               classname=f"xenpipe.{variant['name']}.{case['classname']}",
                               time=_fmt_time(case["time"]))
            if case["status"] == FAILED:
                body = case["message"]
                if case["log"]:
                    body += f"\n\nlog: {case['log']}"
                if case["tail"]:
                    body += f"\n--- last lines ---\n{case['tail']}"
                fail = ET.SubElement(tc, "failure", message=xml_text(case["message"]),
                                     type="xenpipe")
                fail.text = xml_text(body)
            elif case["status"] in (SKIPPED, NOTRUN):
                ET.SubElement(tc, "skipped", message=xml_text(case["message"]))
            elif case["status"] == UPTODATE:
                ET.SubElement(tc, "system-out").text = "up to date"
        out = ET.SubElement(suite, "system-out")
        out.text = xml_text("\n".join([variant["summary"], *variant.get("triage", [])]))
        for k in totals:
            totals[k] += counts[k]
    for k, v in totals.items():
        root.set(k, _fmt_time(v) if k == "time" else str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"
