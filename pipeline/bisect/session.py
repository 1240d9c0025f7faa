"""``doit bisect``: the arguments, the defaults from the nightly history, the state that makes
it resumable, and the loop of steps.

The state is ``state/bisect.json``: what is bisected (its candidates and the pins of the
other sources) and every step done so far, saved after each step; Ctrl-C loses only the
step it stopped, and ``doit bisect`` again (with the same arguments, or none) continues.
Arguments that name another bisection start it afresh; ``reset=1`` too.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from pipeline import fetch, patch, proc
from pipeline.bisect import report, step
from pipeline.bisect.search import BAD, SKIP, Search
from pipeline.config import Config, SourceCfg
from pipeline.errors import BisectError
from pipeline.files import read_json
from pipeline.nightly.run import boot_unavailable
from pipeline.nightly.triage import last_good_run
from pipeline.workspace import Key, Workspace

VARS = ("source", "patches", "good", "bad", "build", "patch", "reset")


def bisect(cfg: Config, ws: Workspace, args: Mapping[str, str | None]) -> None:
    """Start, continue or show the bisection *args* name (see the module doc)."""
    state = ws.state(Key.BISECT)
    if args.get("reset") in ("1", "yes", "true", "on"):
        if state and not (args.get("source") or args.get("patches")):
            ws.save_state(Key.BISECT, {})
            print(f"bisect: forgot {state.get('label')}", flush=True)
            return
        state = {}
    if args.get("source") or args.get("patches"):
        spec = make_spec(cfg, ws, args)
        if {k: state.get(k) for k in spec} != spec:
            if state:
                print(f"bisect: starting afresh ({state.get('label')} "
                      f"{'finished' if state.get('result') else 'left unfinished'} before)",
                      flush=True)
            state = {**spec, "steps": []}
    elif not state:
        raise BisectError("bisect: give source=NAME (which changeset broke it) or "
                          "patches=NAME (which patch of its series); see README, doit bisect")
    if state.get("result") is None:
        if state["steps"]:
            print(f"{state['label']}: continuing ({len(state['steps'])} steps done)",
                  flush=True)
        if state.get("moved"):
            print(moved_notice(state), flush=True)
        run(cfg, ws, state)
    path = report.write(ws, state)
    if state["result"]["status"] == report.NOT_REPRODUCED:
        raise BisectError(report.line(state, path))
    print(report.line(state, path), flush=True)


def run(cfg: Config, ws: Workspace, state: dict[str, Any]) -> None:
    """Steps until the search is over, the state saved after each one; then the result.
    When other sources moved and the very first candidate is bad, the good end is tried too
    with them at their bad revision: bad there as well, the failure came with them."""
    cands = tuple(state["candidates"])
    describe = describer(cfg, ws, state)
    while (cand := Search(cands, verdicts(state)).next()) is not None:
        left = Search(cands, verdicts(state)).steps_left()
        one_step(cfg, ws, state, cand, describe(cand), f"at most {left} left")
    out = Search(cands, verdicts(state)).outcome()
    good = str(state["good"])
    if out.first_bad == cands[0] and state["moved"] and good not in verdicts(state):
        one_step(cfg, ws, state, good, describe(good),
                 f"the good end, {', '.join(state['moved'])} at the bad revision")
    if verdicts(state).get(good) == BAD:
        state["result"] = {"status": report.NOT_REPRODUCED, "first_bad": None, "suspects": [],
                           "why": f"{state['good_label']} fails too with "
                                  f"{', '.join(state['moved'])} at the bad revision: the "
                                  f"failure came with {' or '.join(state['moved'])}: bisect "
                                  "them"}
    elif out.first_bad is not None:
        state["result"] = {"status": report.FOUND, "first_bad": describe(out.first_bad),
                           "suspects": list(out.suspects)}
    elif out.reproduced:
        state["result"] = {"status": report.SUSPECTS, "first_bad": None,
                           "suspects": list(out.suspects)}
    else:
        end = state["steps"][-1]
        why = (f"{state['bad_label']} passes here" if end["verdict"] != SKIP else
               f"{state['bad_label']} could not be judged ({end['error']})")
        if state.get("moved"):
            why += f"; {', '.join(state['moved'])} moved too: bisect them"
        state["result"] = {"status": report.NOT_REPRODUCED, "first_bad": None,
                           "suspects": list(out.suspects), "why": why}
    ws.save_state(Key.BISECT, state)


def one_step(cfg: Config, ws: Workspace, state: dict[str, Any], cand: str,
             what: dict[str, Any], note: str) -> None:
    """Try *cand*, record the step in the state and save it (Ctrl-C loses only this step)."""
    n = len(state["steps"]) + 1
    print(f"{state['label']}: step {n} ({note}): {report.shown(what)}", flush=True)
    pins = dict(state["pins"])
    cut = None
    if state["mode"] == "patches":
        cut = (state["source"], int(cand))
    else:
        pins[state["source"]] = cand
    done = step.run_step(cfg, ws, n, pins, cut, state["options"]["build"],
                         state["options"]["patch"])
    state["steps"].append({"step": n, "candidate": cand, "what": what, **done})
    ws.save_state(Key.BISECT, state)
    why = f": {done['error']}" if done["error"] else ""
    print(f"{state['label']}: step {n}: {done['verdict']} ({done['seconds']:.0f} s){why}",
          flush=True)


def verdicts(state: dict[str, Any]) -> dict[str, str]:
    return {s["candidate"]: s["verdict"] for s in state["steps"]}


def describer(cfg: Config, ws: Workspace, state: dict[str, Any]
              ) -> Callable[[str], dict[str, Any]]:
    """What a candidate is, for the progress lines and the report."""
    src = cfg.sources[state["source"]]
    if state["mode"] == "patches":
        entries = patch.read_series(src)

        def one_patch(cand: str) -> dict[str, Any]:
            if int(cand) == 0:
                return {"patch": None, "number": 0, "summary": "no patches"}
            e = entries[int(cand) - 1]
            return {"patch": e.name, "number": int(cand),
                    "summary": report.subject(e.path.read_bytes())}
        return one_patch
    vcs = fetch.vcs_for(src.vcs)
    return lambda cand: vcs.describe(ws.source_dir(src.name), cand)


def moved_notice(state: dict[str, Any]) -> str:
    moved = state["moved"]
    kept = ", ".join(f"{n} at {state['pins'][n][:12]}" for n in moved)
    return (f"{state['label']}: {', '.join(moved)} also moved since the last good run; kept at "
            f"the bad revision ({kept}) while {state['source']} is bisected. If every step "
            f"passes, bisect them next: doit bisect source={moved[0]} (README, multi-source)")


# ------------------------------------------------------------------ arguments, defaults
def make_spec(cfg: Config, ws: Workspace, args: Mapping[str, str | None]) -> dict[str, Any]:
    """What to bisect, from *args* and the nightly history; every bad argument one line."""
    if args.get("source") and args.get("patches"):
        raise BisectError("bisect: give source=NAME or patches=NAME, not both")
    mode = "patches" if args.get("patches") else "source"
    name = str(args.get("patches") or args.get("source"))
    options = {k: args.get(k) or SKIP for k in ("build", "patch")}
    for key, value in options.items():
        if value not in (BAD, SKIP):
            raise BisectError(f"bisect: {key}={value}: expected {key}=bad or {key}=skip (what a "
                              f"failing {key} stage means; default skip)")
    if boot_unavailable(cfg) and options["build"] == SKIP and options["patch"] == SKIP:
        raise BisectError(f"bisect: {cfg.path.name} has no [kernel]: nothing boots, so no step "
                          "can be bad; give build=bad to call a failing build bad")
    src = source(cfg, name)
    vcs = fetch.vcs_for(src.vcs)
    good_run, bad_run = nightly_history(ws)
    dest = ws.source_dir(name)
    if mode == "source" and not vcs.history:
        raise BisectError(f"bisect: [sources.{name}] is a {src.vcs}: one revision, nothing to "
                          f"bisect (its patches: doit bisect patches={name})")
    if mode == "patches" and src.patches is None:
        raise BisectError(f"bisect: [sources.{name}] has no patches to bisect; give "
                          f"source={name} to bisect its revisions")
    if not (dest / vcs.marker).is_dir():
        fetch.fetch(src, ws, cfg.mirror)
    pins = {n: rev for n, s in cfg.sources.items() if fetch.vcs_for(s.vcs).history
            and (rev := bad_run.get(n) or fetch.resolved(cfg, ws, n))}
    spec: dict[str, Any] = {"mode": mode, "source": name, "options": options}
    if mode == "patches":
        count = len(patch.read_series(src))
        good = number(args.get("good"), "good", 0, count)
        bad = number(args.get("bad"), "bad", count, count)
        if good >= bad:
            raise BisectError(f"bisect: good={good} bad={bad}: the good patch count must be "
                              "below the bad one")
        spec |= {"label": f"bisect patches of {name}", "good": good, "bad": bad,
                 "bad_label": f"{name} with its first {bad} patches",
                 "good_label": f"{name} with its first {good} patches" if good else
                 f"{name} without its patches",
                 "candidates": [str(i) for i in range(good + 1, bad + 1)]}
    else:
        good = revision(cfg, ws, src, "good", args.get("good") or good_run.get(name))
        bad = revision(cfg, ws, src, "bad", args.get("bad") or bad_run.get(name))
        pins.pop(name, None)
        cands = vcs.revisions_between(dest, good, bad)
        if not cands:
            raise BisectError(f"bisect {name}: good={good[:12]} and bad={bad[:12]} are the same "
                              "revision: nothing to bisect")
        spec |= {"label": f"bisect {name}", "good": good, "bad": bad,
                 "bad_label": f"{name} at {bad[:12]}", "good_label": f"{name} at {good[:12]}",
                 "candidates": cands}
    moved = [n for n, rev in pins.items() if n != name and good_run.get(n)
             and good_run[n] != rev]
    return spec | {"pins": pins, "moved": moved}


def source(cfg: Config, name: str) -> SourceCfg:
    if name not in cfg.sources:
        hint = difflib.get_close_matches(name, list(cfg.sources), n=1)
        sugg = f' (did you mean "{hint[0]}"?)' if hint else ""
        raise BisectError(f"bisect: no [sources.{name}] in {cfg.path.name}{sugg}; sources: "
                          f"{', '.join(cfg.sources) or 'none defined'}")
    return cfg.sources[name]


def nightly_history(ws: Workspace) -> tuple[dict[str, str], dict[str, str]]:
    """The revisions of the last good nightly, and those of the latest nightly if it
    failed (empty when there is none)."""
    good = last_good_run(ws).get("revisions") or {}  # a corrupt record is rebuilt
    latest = read_json(ws.reports / "report.json") or {}
    variant = (latest.get("variants") or [{}])[0] if isinstance(latest, dict) else {}
    bad = {} if variant.get("status") != "failed" else {
        s["name"]: s["new"] for s in variant.get("sources", []) if s.get("new")}
    return good, bad


def revision(cfg: Config, ws: Workspace, src: SourceCfg, which: str, rev: str | None) -> str:
    """The full revision *rev* names in src/<name> (good= or bad=, else the nightly's),
    pulled from upstream first when the workspace's tree does not have it yet."""
    name, vcs, dest = src.name, fetch.vcs_for(src.vcs), ws.source_dir(src.name)
    if not rev:
        where = {"good": "no nightly has passed in this workspace",
                 "bad": "the latest nightly did not fail"}[which]
        raise BisectError(f"bisect {name}: {which}= not given and {where}; give "
                          f"{which}=REV (a revision, tag or branch of src/{name})")
    found, pinned = vcs.identify(dest, rev)
    if found is None or not pinned:  # unknown here, or a branch that may have moved
        fetch.pull(src, ws, cfg.mirror)
        found, _ = vcs.identify(dest, rev)
    if found is None:
        raise BisectError(f"bisect {name}: {which}={rev}: not a revision, tag or branch of "
                          f"{proc.redact(src.url)}")
    return found


def number(value: str | None, which: str, default: int, count: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) > count:
        raise BisectError(f"bisect: {which}={value}: expected a number of patches, 0 to {count}")
    return int(value)
