"""The ``doit config`` stage: base, fragments, forced symbols, verification, record.

Also what doit needs to decide whether the stage must run again (fingerprint, tree_inputs,
outputs_present) without running kbuild.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline import digest
from pipeline.config import FORCED_SYMBOLS, Config, KernelCfg, display
from pipeline.errors import KconfigError
from pipeline.files import atomic_write
from pipeline.kernel import frontend
from pipeline.kernel.dotconfig import (
    Setting,
    drop,
    merge,
    parse_fragment,
    parse_symbols,
    read_config,
    read_text,
    satisfied,
)
from pipeline.kernel.frontend import FrontendResult
from pipeline.kernel.kbuild import Kbuild, SymbolInfo, explain, probe, undefined
from pipeline.kernel.menuconfig import run_menuconfig
from pipeline.kernel.oldconfig import run_oldconfig
from pipeline.workspace import Key, Workspace

FINGERPRINT_VERSION = 1  # bump when this stage's output for the same inputs changes
BUILD_DIR = "kernel-build"

# What a dom0 for PCI passthrough cannot run without: a fragment line for one of these that
# does not survive is an error, not a warning (and [passthrough] devices require them unasked).
DOM0_REQUIRED = ("CONFIG_XEN_DOM0", "CONFIG_XEN_BACKEND", "CONFIG_XEN_PCIDEV_BACKEND")
# What the guest check needs of the same kernel booted as the PV guest.
GUEST_REQUIRED = ("CONFIG_XEN_PCIDEV_FRONTEND",)

FRONTENDS: dict[str, Callable[[Kbuild, Sequence[Setting], float], FrontendResult]] = {
    "oldconfig": run_oldconfig,
    "menuconfig": run_menuconfig,
}


# ---------------------------------------------------------------------------------- stage
def _base(kb: Kbuild, base: str) -> dict[str, str]:
    """Start the .config from a make target or a config file; describe the base."""
    kb.build.mkdir(parents=True, exist_ok=True)
    if Path(base).is_absolute():
        p = Path(base)
        try:
            atomic_write(kb.config, p.read_bytes())
        except OSError as exc:
            raise KconfigError(f"[kernel] base {display(p)}: cannot read: {exc.strerror}") from None
        return {"file": display(p), "sha256": digest.of_file(p)}
    if not re.fullmatch(r"[A-Za-z0-9_.-]*config", base):
        raise KconfigError(f"[kernel] base {base!r} is neither a *config make target nor a file")
    kb.make(base)
    if not kb.config.is_file():
        raise KconfigError(f"make {base} wrote no .config in {kb.build} (log: {kb.log})")
    return {"target": base}


def _force(kb: Kbuild, kcfg: KernelCfg, requested: list[Setting], deadline: float
           ) -> tuple[FrontendResult, dict[str, str]]:
    """Run the frontend; retry once with whole choices made new when a member was asked for."""
    before = read_text(kb.config)
    extra: set[str] = set()
    while True:
        if kcfg.frontend == "oldconfig":
            atomic_write(kb.config, drop(before, [s.name for s in requested] + sorted(extra)))
        res = FRONTENDS[kcfg.frontend](kb, requested, deadline)
        final = read_config(kb.config)
        missed = [s.name for s in requested if not satisfied(s.value, final.get(s.name))]
        more = {m for g in res.choices if any(n in g for n in missed) for m in g}
        if kcfg.frontend != "oldconfig" or not more - extra:
            return res, final
        extra |= more


def _guest_check(cfg: Config) -> bool | None:
    """True: [boot] guest = true; None: it may run (unset, with [[guests]], in nightly)."""
    if cfg.boot.guest is not None:
        return cfg.boot.guest or False
    return None if cfg.guests else False


def requirements(cfg: Config, fragments: Sequence[Setting]) -> list[Setting]:
    """The settings that must survive besides [kernel] symbols (the last word of each
    fragment symbol): the fragment lines for what a passthrough dom0 needs (DOM0_REQUIRED,
    and GUEST_REQUIRED when the guest check may run), every line under [kernel] strict, and
    what [passthrough] devices or [boot] guest = true imply when no fragment sets it. A
    fragment line that turns one of those off is refused here, before any make runs."""
    assert cfg.kernel is not None
    last: dict[str, Setting] = {}
    for s in fragments:
        last.pop(s.name, None)
        last[s.name] = s
    guest = _guest_check(cfg)
    names = {*DOM0_REQUIRED, *(GUEST_REQUIRED if guest is not False else ())}
    implied = {n: "[passthrough] devices" for n in DOM0_REQUIRED if cfg.passthrough.devices}
    implied |= {n: "[boot] guest = true" for n in GUEST_REQUIRED if guest}
    asked = {s.partition("=")[0] for s in cfg.kernel.symbols}
    for n, why in implied.items():
        if n in last and last[n].value == "n" and n not in asked:
            raise KconfigError(f"{last[n].origin}: {n}=n conflicts with {why}, which "
                               f"{_needs(n)}: drop the line or change {why}")
    out = [s for s in last.values() if cfg.kernel.strict or s.name in names]
    out += [Setting(n, "y", why) for n, why in implied.items() if n not in last]
    return [s for s in out if s.name not in asked]


def _needs(name: str) -> str:
    """Why *name* is required, for messages."""
    if name in DOM0_REQUIRED:
        return "a dom0 for PCI passthrough needs"
    return "the guest check (this kernel booted as the PV guest) needs"


def _check(kb: Kbuild, fragments: list[Setting], requested: list[Setting], final: dict[str, str],
           res: FrontendResult, required: Sequence[Setting] = ()) -> tuple[list[str], list[str]]:
    """(errors for requested symbols and required settings, warnings for the other fragment
    lines) against the final config."""
    last: dict[str, Setting] = {}
    for s in fragments:
        last[s.name] = s
    req = {s.name for s in requested} | {s.name for s in required}
    bad_frag = [s for s in last.values() if s.name not in req
                and (s.name not in final or not satisfied(s.value, final.get(s.name)))]
    bad_req = [s for s in requested if not satisfied(s.value, final.get(s.name))
               or s.name not in final and s.value == "n"]
    bad_need = [s for s in required
                if s.name not in final or not satisfied(s.value, final.get(s.name))]
    need = [s.name for s in bad_frag + bad_req + bad_need
            if s.bare not in res.helps or s.name not in final]
    probed = probe(kb, need) if need else {}
    if probed is None:
        probed = {}
        unknown = f"dependency information unavailable (log: {kb.log})"
    else:
        unknown = ""

    def info(s: Setting) -> SymbolInfo | None:
        got = probed.get(s.name) or res.helps.get(s.bare)
        return got if got or not unknown else SymbolInfo(s.bare, depends=unknown)

    warnings = []
    for s in bad_frag:
        i = info(s)
        if i is None:
            warnings.append(f"{s.origin}: {undefined(s.name, final, ' (typo?)')}")
        elif not satisfied(s.value, final.get(s.name)):
            warnings.append(f"{s.origin}: {explain(s, final.get(s.name), i, final)}")
    errors = []
    for s in bad_req:
        i = info(s)
        if i is None or not satisfied(s.value, final.get(s.name)):
            errors.append(explain(s, final.get(s.name), i, final))
    for s in bad_need:
        i = info(s)
        if i is not None and satisfied(s.value, final.get(s.name)):
            continue  # "n" for a symbol whose dependencies hide it: it is n
        why = f"{_needs(s.name)} it" if s.name in (*DOM0_REQUIRED, *GUEST_REQUIRED) \
            else "[kernel] strict = true"
        errors.append(f"{s.origin}: {explain(s, final.get(s.name), i, final)} ({why})")
    return errors, warnings


def configure(cfg: Config, ws: Workspace, src: Path) -> dict[str, Any]:
    """The whole config stage for the kernel; returns the record for metadata.json."""
    kcfg = cfg.kernel
    if kcfg is None:
        raise KconfigError("no [kernel] table in the config: nothing to configure")
    if kcfg.frontend not in FRONTENDS:
        known = ", ".join(FRONTENDS)
        raise KconfigError(f"[kernel] frontend {kcfg.frontend!r}: expected one of {known}")
    start = time.monotonic()
    if not (src / "Makefile").is_file():
        raise KconfigError(f"kernel tree {src} has no Makefile: run doit fetch first")
    kb = Kbuild(src.resolve(), (ws.out / BUILD_DIR).resolve(), tuple(kcfg.make_args),
                ws.log("config"))
    with open(kb.log, "a") as f:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        f.write(f"# xenpipe config {stamp}: frontend {kcfg.frontend}\n")

    fragments = [s for path in kcfg.fragments for s in parse_fragment(path)]
    requested = parse_symbols(kcfg.symbols)
    required = requirements(cfg, fragments)
    steps: dict[str, float] = {}
    mark = start

    def step(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        steps[name] = round(now - mark, 2)
        mark = now

    base = _base(kb, kcfg.base)
    step("base")
    if fragments:
        atomic_write(kb.config, merge(read_text(kb.config), fragments))
    kb.make("olddefconfig")
    step("fragments")
    res, final = _force(kb, kcfg, requested, time.monotonic() + frontend.INTERACTIVE_TIMEOUT)
    step("frontend")
    errors, warnings = _check(kb, fragments, requested, final, res, required)
    step("verify")
    with open(kb.log, "a") as f:
        for name, note in res.notes.items():
            f.write(f"xenpipe: note: {name}: {note}\n")
        for w in warnings:
            f.write(f"xenpipe: warning: {w}\n")
        for e in errors:
            f.write(f"xenpipe: error: {e}\n")
    if errors:
        raise KconfigError("; ".join(errors))

    release = kb.release()
    step("release")
    out = ws.out / f"config-{release}"
    atomic_write(out, kb.config.read_bytes())
    forced = set(FORCED_SYMBOLS)
    record: dict[str, Any] = {
        "release": release,
        "base": base,
        "fragments": [{"path": display(p), "sha256": digest.of_file(p)} for p in kcfg.fragments],
        "symbols": [{"symbol": s.name, "requested": s.value, "final": final.get(s.name, "n"),
                     "forced": str(s) in forced} for s in requested],
        "config": {"path": str(out), "sha256": digest.of_file(out)},
        "build_dir": str(kb.build),
        "warnings": warnings,
        "frontend": kcfg.frontend,
        "frontend_answers": res.answers,
        "frontend_seconds": steps["frontend"],
        "steps": steps,
        "duration": round(time.monotonic() - start, 2),
    }
    atomic_write(ws.out / "kconfig-summary.txt", summary(record))
    return record


def summary(record: dict[str, Any]) -> str:
    """The short human-readable account written next to config-<release>."""
    base = record["base"].get("target") or record["base"].get("file")
    lines = [
        f"kernel release: {record['release']}",
        f"base:           {base}",
        *[f"fragment:       {f['path']} (sha256 {f['sha256'][:12]})" for f in record["fragments"]],
        f"frontend:       {record['frontend']} ({record['frontend_seconds']} s, "
        f"{record['frontend_answers']} answers)",
        *[f"symbol:         {s['symbol']}={s['requested']} -> {s['final']}"
          + (" (forced)" if s["forced"] else "") for s in record["symbols"]],
        f"config:         {record['config']['path']} (sha256 {record['config']['sha256'][:12]})",
        *[f"warning:        {w}" for w in record["warnings"]],
        f"duration:       {record['duration']} s",
    ]
    return "\n".join(lines) + "\n"


# What `make <base>`, olddefconfig/oldconfig and kernelrelease read from a source tree: every
# Kconfig file, the kconfig tool and the scripts Kconfig calls, the top and arch Makefiles
# (version, SRCARCH, KBUILD_DEFCONFIG), defconfigs and config fragments, localversion files.
KCONFIG_INPUT = re.compile(
    r"(?:^|/)Kconfig(?:\.[^/]*)?$|^scripts/|^Makefile$|^arch/[^/]+/Makefile$"
    r"|(?:^|/)configs/[^/]+$|^localversion[^/]*$")


def tree_inputs(patched: dict[str, str | None] | None) -> dict[str, str | None]:
    """The files a patch series wrote (path -> sha256, None if deleted) that kconfig reads:
    a patch to a .c file must not rerun ``doit config``, one to a Kconfig file must."""
    return {path: sha for path, sha in sorted((patched or {}).items())
            if KCONFIG_INPUT.search(path)}


def outputs_present(cfg: Config, ws: Workspace) -> bool:
    """Is the .config doit config last made still in the build directory, as it made it?
    (A removed build directory, or a .config edited by hand, reruns doit config instead of
    failing the build with "run doit config first" while config says it is up to date.)"""
    want = (ws.state(Key.CONFIG).get("config") or {}).get("sha256")
    dotconfig = ws.out / BUILD_DIR / ".config"
    return bool(want) and dotconfig.is_file() and digest.of_file(dotconfig) == want


def fingerprint(cfg: Config) -> dict[str, Any]:
    """The cheap inputs that decide whether ``config`` must run again."""
    kcfg = cfg.kernel
    if kcfg is None:
        return {}
    if Path(kcfg.base).is_absolute():
        p = Path(kcfg.base)
        base: dict[str, str] = {"file": display(p),
                                "sha256": digest.of_file(p) if p.is_file() else "missing"}
    else:
        base = {"target": kcfg.base}
    return {
        "version": FINGERPRINT_VERSION,
        "base": base,
        "fragments": [{"path": display(p),
                       "sha256": digest.of_file(p) if p.is_file() else "missing"}
                      for p in kcfg.fragments],
        "symbols": list(kcfg.symbols),
        "frontend": kcfg.frontend,
        "make_args": list(kcfg.make_args),
        # what requirements() reads besides the fragments
        "strict": kcfg.strict,
        "passthrough": bool(cfg.passthrough.devices),
        "guest": _guest_check(cfg),
    }
