"""``python -m pipeline.testbox [CONFIG]``: start the local test box from its disk image and
print the ``[target]`` table to paste into a config; the box runs until Ctrl-C.

The box gets the config's ``[boot] xen`` (Debian's hypervisor, in its /boot as the
distribution puts it there) and ``[boot] devices`` (the NICs to pass through, on QEMU's
internal hub); it lives in ``<workspace>/testbox/`` and its Debian root is built there once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pexpect

from pipeline.config import load
from pipeline.errors import XenpipeError
from pipeline.testbox import root_archive, running_disk_box
from pipeline.workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.testbox",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="xenpipe.toml",
                        help="the config whose [boot] xen and devices the box gets")
    args = parser.parse_args(argv)
    try:
        cfg = load(Path(args.config))
        if cfg.boot.xen is None or not Path(cfg.boot.xen).is_file():
            raise XenpipeError(f"[boot] xen = {cfg.boot.xen}: the box's Xen, not a file "
                               "(apt-get install xen-hypervisor-4.17-amd64)")
        base = Workspace(cfg.workspace).dir / "testbox"
        root = root_archive(Workspace(base / "root"), disk=True)
        box_dir = base / "box"
        shutil.rmtree(box_dir, ignore_errors=True)
        print(f"testbox: starting in {box_dir} (TCG: a few minutes)", flush=True)
        with running_disk_box(box_dir, Path(cfg.boot.xen), root, cfg.boot.devices) as box:
            print(f"testbox: up ({box.known_release}, its known-good entry); paste into your "
                  f"config:\n\n{box.target_toml()}", flush=True)
            print("testbox: Ctrl-C stops it", flush=True)
            box.qemu.expect(pexpect.EOF)
    except XenpipeError as exc:
        print(f"xenpipe: error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"xenpipe: error: testbox: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("testbox: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
