"""The xenpipe config file (TOML), validated into frozen dataclasses before any task runs.

- ``schema``: the declared keys per table (type, default, checks)
- ``model``: the frozen dataclasses, held to the schema at import (``schema_drift``)
- ``load``: finding the file, indexing its lines, and the generic checking
"""

from pipeline.config.load import (
    DEFAULT_CONFIG,
    ROOT,
    choose_path,
    display,
    load,
    parse,
    resolve_path,
)
from pipeline.config.model import (
    BootCfg,
    BuildCfg,
    Config,
    GuestCfg,
    InstallCfg,
    KernelCfg,
    PassthroughCfg,
    SourceCfg,
    TargetCfg,
    XenCfg,
    schema_drift,
)
from pipeline.config.schema import FORCED_SYMBOLS, SCHEMA, TOP_LEVEL, Key

__all__ = [
    "DEFAULT_CONFIG", "FORCED_SYMBOLS", "ROOT", "SCHEMA", "TOP_LEVEL", "BootCfg", "BuildCfg",
    "Config", "GuestCfg", "InstallCfg", "Key", "KernelCfg", "PassthroughCfg", "SourceCfg",
    "TargetCfg", "XenCfg", "choose_path", "display", "load", "parse", "resolve_path",
    "schema_drift",
]
