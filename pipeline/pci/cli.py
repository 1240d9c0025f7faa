"""``python -m pipeline.pci``: the device path of a BDF (what the 2008 ``device_path.py`` did),
the current BDF(s) of a device path, or with no argument the device table."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipeline.errors import XenpipeError, format_error
from pipeline.pci.address import Bdf, parse_device
from pipeline.pci.safety import system_devices
from pipeline.pci.sysfs import scan, table

USAGE = "usage: python -m pipeline.pci [BDF|DEVICE-PATH ...]"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the device path of each BDF (or the BDFs of each device path); no argument:
    the device table. Reads ``$XENPIPE_SYSFS`` (default /sys)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        parsed = [parse_device(a) for a in args]  # reject typos before touching sysfs
        topo = scan()
        if not args:
            print(table(topo, notes=system_devices(topo)))
        for item in parsed:
            if isinstance(item, Bdf):
                print(topo.path_of(item))
            else:
                print(" ".join(str(b) for b in topo.covered(item)))
    except XenpipeError as exc:
        print(format_error(exc), file=sys.stderr)
        return 1
    return 0

