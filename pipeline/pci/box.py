"""The box whose devices are checked, and a copy of its ``/sys`` and ``/proc`` as a listing.

The checks read a sysfs tree; which box's it is matters (a staging root is usually for
another machine). :class:`Box` says where its trees are, what they are (for every message)
and how to run a command there (``xl info``, ``xl dmesg``); the caller chooses it.

:data:`SNAPSHOT` is a fixed POSIX sh script (busybox is enough; never config text) that
prints the part of a sysfs and procfs tree the checks read, one line per entry: ``D path``
(a directory), ``L path target`` (a symlink), ``T path text`` (a one-line file), ``F path hex``
(a file's bytes; ``P`` for procfs). Run on the box
over ssh it is one command; :func:`unpack` rebuilds the trees locally, in the layout
``pci.scan`` reads. A listing rather than tar: sysfs files claim 4096 bytes and are shorter,
which tar pads with zeros.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import proc
from pipeline.errors import XenpipeError

# runs an argv on the box: its output, or None when it failed (absent, not root, no Xen)
Runner = Callable[[Sequence[str], str], str | None]

OTHER_WAYS = ('[target] ssh = "root@box" (its /sys over ssh), install.root = '
              '"/" on the box itself, or XENPIPE_SYSFS=<a copy of its /sys> (XENPIPE_PROC '
              "for its /proc)")


@dataclass(frozen=True)
class Box:
    """The box examined: its sysfs and procfs trees (local paths), what they are, whether it
    is the box the install is for (an absent device is then a no-go), and a runner for
    commands on it (None: commands cannot run there)."""

    sysfs: Path
    proc: Path | None
    origin: str  # "this machine's /sys", "root@box's /sys (over ssh, copied to ...)", ...
    is_target: bool
    run: Runner | None = None
    ssh_connection: str | None = None  # $SSH_CONNECTION on the box: the address ssh came in on
    hint: str | None = None  # when not is_target: how to give the box's sysfs instead
    shown: str | None = None  # how messages name *sysfs* (a local copy: "root@box:/sys")

    def show(self, text: str) -> str:
        """*text* naming the box's sysfs as the user knows it, not as a local copy."""
        return text.replace(str(self.sysfs), self.shown) if self.shown else text

    @property
    def whence(self) -> str:
        """What an error about a device adds: which sysfs it read, and the other ways."""
        if not self.is_target and self.hint:
            return f"read {self.origin}: {self.hint}"
        return f"read {self.origin}; other ways to give the box's: {OTHER_WAYS}"


def local_runner(argv: Sequence[str], what: str) -> str | None:
    """Run *argv* on this machine (proc.run): its output, or None when it failed."""
    try:
        res = proc.run(list(argv), capture=True, check=False, timeout=120, what=what)
    except XenpipeError:
        return None
    return res.stdout if res.returncode == 0 else None


# per PCI device: these one-line files, read with the shell's own `read` (no process per
# file: each fork costs in a TCG dom0), and the first 256 bytes of config (the capability
# list) as hex; reset: existence only (reading it is an error)
_DEV_FILES = "class vendor device reset_method boot_vga"
SNAPSHOT = r"""exec 2>/dev/null
cd -P "$1" || exit 1; s=$PWD; p=$2
dir() { [ -d "$1" ] && echo "D ${1#"$s"/}"; }
lnk() { [ -L "$1" ] && echo "L ${1#"$s"/} $(readlink "$1")"; }
txt() { [ -f "$1" ] && [ -r "$1" ] || return 1; v=; IFS= read -r v < "$1"; echo "T ${1#"$s"/} $v"; }
roots=" "
for d in "$s"/bus/pci/devices/*; do
  lnk "$d" && cd -P "$d" || continue
  r=$PWD; dir "$r"
  for f in FILES; do txt "$r/$f"; done
  [ -r "$r/config" ] && echo "F ${r#"$s"/}/config" $(od -An -v -tx1 -N 256 "$r/config")
  [ -e "$r/reset" ] && echo "T ${r#"$s"/}/reset "
  lnk "$r/driver"
  root=${r#"$s"/devices/}; root=$s/devices/${root%%/*}
  case "$roots" in *" $root "*) continue;; esac
  roots="$roots$root "; dir "$root"; lnk "$root/firmware_node" &&
    cd -P "$root/firmware_node" && dir "$PWD" && txt "$PWD/hid" && txt "$PWD/uid"
done
for t in "$s"/firmware/acpi/tables/*; do [ -e "$t" ] && echo "T ${t#"$s"/} "; done
for b in "$s"/dev/block/* "$s"/class/block/*; do
  lnk "$b" && cd -P "$b" || continue
  dir "$PWD"; txt "$PWD/dm/name"
  for x in "$PWD"/slaves/*; do lnk "$x"; done
done
for n in "$s"/class/net/* "$s"/class/tty/ttyS* "$s"/class/tty/ttyUSB*; do lnk "$n"; done
for f in self/mountinfo mounts swaps net/route cmdline; do
  [ -r "$p/$f" ] && echo "P $f" $(od -An -v -tx1 "$p/$f")
done
echo "E SSH_CONNECTION ${SSH_CONNECTION:-}"
echo "xenpipe-snapshot-end"
""".replace("FILES", _DEV_FILES)


def snapshot_argv(sysfs: str = "/sys", procfs: str = "/proc") -> list[str]:
    """The argv that prints the listing of *sysfs* and *procfs* (on the box: /sys, /proc)."""
    return ["sh", "-c", SNAPSHOT, "xenpipe-snapshot", sysfs, procfs]


@dataclass(frozen=True)
class Snapshot:
    sysfs: Path
    proc: Path
    ssh_connection: str | None


def _inside(dest: Path, rel: str) -> Path | None:
    """*dest*/*rel* when *rel* is a plain relative path that stays below *dest*."""
    if not rel or rel.startswith("/") or ".." in rel.split("/"):
        return None
    return dest / rel


def unpack(listing: str, dest: Path) -> Snapshot:
    """Rebuild the trees a :data:`SNAPSHOT` listing describes under *dest* (replacing it):
    ``dest/sys`` and ``dest/proc``. Raises XenpipeError when the listing is cut short."""
    if "xenpipe-snapshot-end" not in listing:
        raise XenpipeError("the box's sysfs listing ended early (no end marker)")
    if dest.exists():
        shutil.rmtree(dest)
    sysfs, procfs = dest / "sys", dest / "proc"
    (sysfs / "bus" / "pci" / "devices").mkdir(parents=True)
    procfs.mkdir()
    ssh_connection = None
    links: list[tuple[Path, str]] = []
    for line in listing.splitlines():
        kind, _, rest = line.partition(" ")
        name, _, value = rest.partition(" ")
        root = procfs if kind == "P" else sysfs
        path = _inside(root, name)
        if kind == "E" and name == "SSH_CONNECTION":
            ssh_connection = value.strip() or None
        elif path is None:
            continue
        elif kind == "D":
            path.mkdir(parents=True, exist_ok=True)
        elif kind in ("F", "P", "T"):
            try:  # F, P: hex bytes (od's, spaced); T: one line of text
                data = (value + "\n").encode() if kind == "T" else bytes.fromhex(
                    "".join(value.split()))
            except ValueError:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        elif kind == "L" and value and not value.startswith("/"):
            links.append((path, value.strip()))
    for path, target in links:  # after the directories, so none is taken for a link's place
        resolved = os.path.normpath(os.path.join(path.parent, target))
        if not resolved.startswith(str(sysfs) + os.sep) or path.is_symlink():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.symlink_to(target)
    return Snapshot(sysfs, procfs, ssh_connection)
