"""Make the dom0 kernel ``.config``: base, fragments, forced symbols, verification.

The stage works in an out-of-tree build directory (``make O=<workspace>/out/kernel-build``) so
one source tree serves several configs. Symbols are forced through the kernel's *own*
interactive frontends (``make oldconfig`` or ``make menuconfig``) driven by pexpect rather than
by editing ``.config`` behind Kconfig's back: the frontend applies the dependency rules, and
what it refuses is reported with the kernel's own dependency text.

What lives where:

- ``dotconfig``: the .config/fragment model (Setting, parse_fragment, read_config, merge, drop);
- ``kbuild``: ``make O=...`` (Kbuild) and the kernel's help text (parse_help, probe, explain);
- ``frontend``: the pty session both frontends run in, FrontendResult, INTERACTIVE_TIMEOUT;
- ``oldconfig`` / ``menuconfig``: the two scripted frontends (menuconfig's Screen, SETTLE);
- ``stage``: the stage itself (configure, summary) and its doit inputs (fingerprint,
  tree_inputs, outputs_present, BUILD_DIR).

The names other packages use are re-exported here.
"""

from pipeline.kernel.dotconfig import (
    Setting,
    drop,
    merge,
    parse_fragment,
    parse_line,
    parse_symbols,
    read_config,
    satisfied,
)
from pipeline.kernel.frontend import FrontendResult
from pipeline.kernel.kbuild import Kbuild, SymbolInfo, explain, parse_help, probe, undefined
from pipeline.kernel.menuconfig import run_menuconfig
from pipeline.kernel.oldconfig import run_oldconfig
from pipeline.kernel.stage import (
    BUILD_DIR,
    FRONTENDS,
    configure,
    fingerprint,
    outputs_present,
    summary,
    tree_inputs,
)

__all__ = [
    "BUILD_DIR", "FRONTENDS", "FrontendResult", "Kbuild", "Setting", "SymbolInfo", "configure",
    "drop", "explain", "fingerprint", "merge", "outputs_present", "parse_fragment", "parse_help",
    "parse_line", "parse_symbols", "probe", "read_config", "run_menuconfig", "run_oldconfig",
    "satisfied", "summary", "tree_inputs", "undefined",
]
