"""kbuild: ``make O=<build>`` runs and what the kernel's own Kconfig says about symbols.

Kbuild runs make for the stage and for the later stages (build, install, guest checks);
probe asks the kernel for a symbol's help text (dependencies, selects) and explain turns it
into the one clause an error or warning shows.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import proc
from pipeline.errors import KconfigError
from pipeline.files import atomic_write
from pipeline.kernel.dotconfig import Setting, drop, read_text

MAKE_TIMEOUT = 1800.0  # one make call that is not interactive (base targets build scripts/kconfig)


@dataclass(frozen=True)
class Kbuild:
    """``make -C <src> O=<build> <make_args>`` with output in the stage log."""

    src: Path
    build: Path
    make_args: tuple[str, ...]
    log: Path

    @property
    def config(self) -> Path:
        return self.build / ".config"

    def argv(self, *targets: str, variables: Sequence[str] = ()) -> list[str]:
        # KCONFIG_CONFIG on the command line beats one left in the user's environment.
        return ["make", "-C", str(self.src), f"O={self.build}", "KCONFIG_CONFIG=.config",
                *self.make_args, *variables, *targets]

    def make(self, *targets: str, variables: Sequence[str] = (), check: bool = True
             ) -> proc.Result:
        """Run make; the output goes to the log and, for parsing, into the result."""
        what = f"make {' '.join(t for t in targets if not t.startswith('-'))}"
        res = proc.run(self.argv(*targets, variables=variables), log=self.log, capture=True,
                       check=False, timeout=MAKE_TIMEOUT, error=KconfigError, what=what)
        if check and res.returncode != 0:
            why = _make_reason(res.stdout)
            raise KconfigError(f"{what} failed with exit status {res.returncode}"
                               + (f": {why}" if why else "") + f" (log: {self.log})")
        return res

    def release(self) -> str:
        """The release this .config builds; syncconfig first, as kernelrelease reads
        CONFIG_LOCALVERSION from include/config/auto.conf, which only syncconfig refreshes."""
        self.make("syncconfig")
        out = self.make("-s", "kernelrelease").stdout
        lines = [ln.strip() for ln in out.splitlines() if ln.strip() and not ln.startswith("make")]
        if not lines or not re.fullmatch(r"[A-Za-z0-9._+~-]+", lines[-1]):
            raise KconfigError(f"make kernelrelease printed no release (log: {self.log})")
        return lines[-1]

    def top_kconfig(self) -> Path:
        """The top-level Kconfig file (``KBUILD_KCONFIG`` if the make args choose one)."""
        for arg in self.make_args:
            if arg.startswith("KBUILD_KCONFIG="):
                p = Path(arg.split("=", 1)[1])
                return p if p.is_absolute() else self.src / p
        return self.src / "Kconfig"


def _make_reason(output: str) -> str:
    """The line of a failed make that says why: kbuild's ``***`` message, else the last line
    that is not make's own ``Error N`` bookkeeping."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    noise = re.compile(r"^make(\[\d+\])?: (\*\*\* \[.*\] Error \d+|Leaving|Entering)")
    useful = [ln for ln in lines if not noise.match(ln)]
    stars = [ln.strip("* ").strip() for ln in useful if ln.startswith("***")]
    stars = [ln for ln in stars if ln]
    return stars[0] if stars else (useful[-1] if useful else "")


@dataclass
class SymbolInfo:
    """What the kernel's help text says about a symbol."""

    name: str  # without CONFIG_
    value: str = "n"
    type: str = ""
    depends: str | None = None
    selected_by: list[str] = field(default_factory=list)


def parse_help(text: str, skip_file: str | None = None) -> dict[str, SymbolInfo]:
    """Parse Kconfig help blocks (``?`` in oldconfig, ``helpnewconfig``, menuconfig search).

    Definitions made in *skip_file* (the probe overlay) are ignored.
    """
    infos: dict[str, SymbolInfo] = {}
    cur: SymbolInfo | None = None
    skipping = False
    in_selected = False
    for raw in text.replace("\r", "").splitlines():
        line = raw.rstrip()
        if m := re.match(r"^\s*Symbol: (\w+) \[=(.*)\]$", line):
            cur = infos.setdefault(m[1], SymbolInfo(m[1], m[2]))
            skipping = in_selected = False
            continue
        if cur is None:
            continue
        if m := re.match(r"^\s*Type\s*: (\w+)", line):
            cur.type = m[1]
        elif m := re.match(r"^\s*Defined at (.+):\d+$", line):
            skipping = skip_file is not None and m[1] == skip_file
            in_selected = False
        elif (m := re.match(r"^\s*Depends on: (.+)$", line)) and not skipping:
            cur.depends = cur.depends or m[1].strip()
        elif re.match(r"^\s*Selected by \[[ym]\]:", line):
            in_selected = True
        elif in_selected and (m := re.match(r"^\s*- (.+)$", line)):
            cur.selected_by.append(m[1].strip())
        elif in_selected and not line.startswith(" "):
            in_selected = False
    return infos


def probe(kb: Kbuild, names: Iterable[str]) -> dict[str, SymbolInfo] | None:
    """The kernel's own help text for *names*, even for symbols that are not visible.

    ``make helpnewconfig`` only describes visible new symbols, so a throw-away top-level
    Kconfig adds a dependency-free, type-less prompt for each name; Kconfig then shows the
    symbol with every definition, the real one's ``Depends on:`` included. A name missing from
    the answer is not defined by this kernel. None when the probe itself failed.
    """
    bare = sorted({n.removeprefix("CONFIG_") for n in names})
    if not bare:
        return {}
    overlay = kb.build / "xenpipe-probe.Kconfig"
    probe_cfg = kb.build / "xenpipe-probe.config"
    try:
        top = read_text(kb.top_kconfig())
    except OSError:
        return None
    entries = "".join(f'\nconfig {b}\n\tprompt "xenpipe probe"\n' for b in bare)
    atomic_write(overlay, top.rstrip("\n") + "\n" + entries)
    atomic_write(probe_cfg, drop(read_text(kb.config), [f"CONFIG_{b}" for b in bare]))
    res = kb.make("-s", "helpnewconfig",
                  variables=[f"KBUILD_KCONFIG={overlay}", f"KCONFIG_CONFIG={probe_cfg}"],
                  check=False)
    for p in (overlay, probe_cfg):
        p.unlink(missing_ok=True)
    if res.returncode != 0:
        return None
    infos = parse_help(res.stdout, skip_file=str(overlay))
    return {f"CONFIG_{b}": infos[b] for b in bare if b in infos and infos[b].type}


def undefined(name: str, final: dict[str, str], unsure: str = "") -> str:
    """*name* is no symbol of this kernel: say so, with the symbol of *final* it was probably
    meant to be (else *unsure*)."""
    hint = difflib.get_close_matches(name, list(final), n=1, cutoff=0.85)
    return f"{name} is not defined by this kernel" + (f" (did you mean {hint[0]}?)" if hint
                                                      else unsure)


def explain(s: Setting, got: str | None, info: SymbolInfo | None, final: dict[str, str]) -> str:
    """One clause: why *s* is not in the final config, in the kernel's words where possible."""
    if info is None:
        return undefined(s.name, final)
    now = "" if got is None or got == "n" else f" (it is {got})"
    head = f"{s} did not survive{now}"
    if s.value == "n" and info.selected_by:
        return f"{head}: selected by {' || '.join(info.selected_by)}"
    if s.value == "m" and final.get("CONFIG_MODULES") != "y":
        return f"{head}: needs CONFIG_MODULES=y"
    if info.depends and info.depends.startswith("<choice>"):
        rest = info.depends.removeprefix("<choice>").removeprefix(" && ")
        return f"{head}: its choice kept another member" + (f"; depends on {rest}" if rest else "")
    if info.depends:
        return f"{head}: depends on {info.depends}"
    return f"{head}: Kconfig gives no dependency (a select, range or choice decides it)"
