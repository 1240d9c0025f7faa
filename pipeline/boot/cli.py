"""``python -m pipeline.boot [CONFIG]``: the last ``doit boot`` verdict of a config, with what
each guest's lspci printed (what ``make demo`` ends with)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipeline.boot.guestverdict import summary_lines
from pipeline.boot.stage import summary
from pipeline.config import choose_path, load
from pipeline.errors import XenpipeError, format_error
from pipeline.files import read_json
from pipeline.workspace import Workspace


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.boot [CONFIG]``: print the last boot's verdict for CONFIG."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print("usage: python -m pipeline.boot [CONFIG]: the last `doit boot` verdict of CONFIG "
              "(default: $XENPIPE_CONFIG, else configs/default.toml)")
        return 0
    try:
        if len(args) > 1:
            raise XenpipeError(f"python -m pipeline.boot takes one CONFIG, got {len(args)}: "
                               f"{' '.join(args)}")
        cfg = load(choose_path(args[0] if args else None))
    except XenpipeError as exc:
        print(format_error(exc), file=sys.stderr)
        return 1
    ws = Workspace(cfg.workspace)
    line = summary(ws)
    print(line)
    for extra in summary_lines(read_json(ws.out / "boot.json")):
        print(f"boot: {extra}")
    return 0 if line.startswith("boot: PASS") else 1
