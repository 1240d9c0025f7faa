"""The validated config as frozen dataclasses, one per table of the schema.

``schema_drift`` holds them to the schema: a key without a field (or a field without a key)
fails at import, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from pipeline.config.schema import SCHEMA, TOP_LEVEL, Key


@dataclass(frozen=True)
class SourceCfg:
    name: str
    vcs: str
    url: str  # a URL, or an absolute path for local sources
    rev: str | None
    patches: Path | None


@dataclass(frozen=True)
class XenCfg:
    source: str
    targets: tuple[str, ...] | None  # None: pick by what the tree's Makefile offers
    make_args: tuple[str, ...]


@dataclass(frozen=True)
class KernelCfg:
    source: str
    base: str  # a make target, or an absolute path to a config file
    fragments: tuple[Path, ...]
    symbols: tuple[str, ...]  # always includes schema.FORCED_SYMBOLS
    frontend: str
    make_args: tuple[str, ...]
    flavour: str
    strict: bool = False  # every fragment line that does not survive is an error


@dataclass(frozen=True)
class BuildCfg:
    jobs: int
    ccache: bool


@dataclass(frozen=True)
class InstallCfg:
    root: Path
    bootloader: str
    initramfs: str
    xen_cmdline: str
    dom0_cmdline: str
    once: bool
    allow_system_devices: bool


@dataclass(frozen=True)
class PassthroughCfg:
    devices: tuple[str, ...]
    reassign: bool
    mode: str = "hide"  # "assignable": dom0 keeps the devices until a guest needs them


@dataclass(frozen=True)
class GuestCfg:
    name: str
    config: str  # absolute path inside install.root
    toolstack: str
    devices: tuple[str, ...]
    type: str = "pv"  # "hvm": builder hvm, QEMU as device model (install.guestcfg renders it)


@dataclass(frozen=True)
class BootCfg:
    xen: Path | None
    qemu: str
    machine: str
    devices: tuple[str, ...]
    timeout: int
    memory: int
    guest: bool | None  # None: not set (doit nightly then boots [[guests]] if any)
    via: str = "direct"  # "disk": boot a disk image through the installed bootloader
    cpus: int = 1  # QEMU -smp
    tcg: str = "multi"  # "single": one host thread for all vCPUs under TCG


@dataclass(frozen=True)
class TargetCfg:
    ssh: str  # the ssh destination ("root@box", a Host of ~/.ssh/config)
    ssh_args: tuple[str, ...]  # more ssh options, before the destination
    console: tuple[str, ...]  # argv whose output is the box's serial console (may be empty)
    power_cycle: tuple[str, ...]  # argv that resets the box (may be empty)
    boot_timeout: int  # seconds for the box to come back


@dataclass(frozen=True)
class Config:
    path: Path
    workspace: Path  # [workspace] dir
    mirror: Path | None
    retention: int  # runs doit nightly keeps (0: all)
    sources: dict[str, SourceCfg]
    xen: XenCfg | None
    kernel: KernelCfg | None
    build: BuildCfg
    install: InstallCfg
    passthrough: PassthroughCfg
    guests: tuple[GuestCfg, ...]
    boot: BootCfg
    target: TargetCfg | None = None  # [target]: install and boot a box over ssh

    def source(self, name: str) -> SourceCfg:
        return self.sources[name]


# Each schema table, the dataclass that carries it, the fields named other than their key,
# and the fields that come from elsewhere. [workspace] has no class: its keys are Config's.
_CARRIERS: dict[str, tuple[type, dict[str, str], frozenset[str]]] = {
    "workspace": (Config, {"dir": "workspace"},
                  frozenset({"path", *(t for t in TOP_LEVEL if t != "workspace")})),
    "sources.*": (SourceCfg, {}, frozenset({"name"})),
    "xen": (XenCfg, {}, frozenset()),
    "kernel": (KernelCfg, {}, frozenset()),
    "build": (BuildCfg, {}, frozenset()),
    "install": (InstallCfg, {}, frozenset()),
    "passthrough": (PassthroughCfg, {}, frozenset()),
    "guests[]": (GuestCfg, {}, frozenset()),
    "boot": (BootCfg, {}, frozenset()),
    "target": (TargetCfg, {}, frozenset()),
}


def schema_drift(schema: dict[str, dict[str, Key]] = SCHEMA,
                 top_level: tuple[str, ...] = TOP_LEVEL) -> list[str]:
    """Every mismatch between *schema* and the dataclasses (none: they agree)."""
    problems = []
    tables = {t.removesuffix(".*").removesuffix("[]") for t in schema}
    if tables != set(top_level):
        problems.append(f"schema tables {sorted(tables)} != TOP_LEVEL {sorted(top_level)}")
    for table in sorted(set(schema) | set(_CARRIERS)):
        if table not in schema or table not in _CARRIERS:
            problems.append(f"[{table}]: no {'schema' if table not in schema else 'dataclass'}")
            continue
        cls, renames, elsewhere = _CARRIERS[table]
        want = {renames.get(k, k) for k in schema[table]} | elsewhere
        have = {f.name for f in fields(cls)}
        problems += [f"[{table}]: {cls.__name__} has no field {n} for its key"
                     for n in sorted(want - have)]
        problems += [f"[{table}]: {cls.__name__}.{n} has no schema key"
                     for n in sorted(have - want)]
    return problems


if _drift := schema_drift():
    raise ImportError("pipeline.config: schema and dataclasses disagree: " + "; ".join(_drift))
