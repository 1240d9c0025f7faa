"""Which box ``doit devices`` and ``doit install`` examine, as a :class:`pci.Box`.

In order: a recorded tree (``XENPIPE_SYSFS``, with ``XENPIPE_PROC``); the ``[target]``'s
``/sys`` and ``/proc``, copied over one ssh command (``pci.box.SNAPSHOT``) into a temporary
directory; this machine when ``install.root`` is ``/``; for ``[boot] via = "disk"`` (the root is
what ``doit boot`` boots in QEMU) the QEMU machine's topology the last ``doit boot`` recorded,
or, when none has yet, the one a topology boot of that machine records now (a dry run boots
nothing: it says so); else this build host's ``/sys``, with a warning that it is not the box's
and how to give it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pipeline import boot, pci
from pipeline.boot import boot_dir
from pipeline.config import Config
from pipeline.errors import BootError, TargetError, XenpipeError
from pipeline.pci import box as pcibox
from pipeline.target.ssh import Ssh
from pipeline.workspace import Workspace

SNAPSHOT_WHAT = "read the box's /sys and /proc (for the device checks)"


def _ssh_runner(ssh: Ssh) -> pcibox.Runner:
    def run(argv: Sequence[str], what: str) -> str | None:
        res = ssh.run(argv, what, check=False, timeout=300)
        return res.stdout if res.returncode == 0 else None

    return run


TOPOLOGY = boot.TOPOLOGY  # under boot_dir: a topology boot's tree (doit boot's too)
DISK_WAYS = ("run doit build first (a real install then boots the QEMU machine once to read "
             "it), name the devices by BDF, or XENPIPE_SYSFS=<a copy of its /sys>")


def recorded_qemu(ws: Workspace) -> tuple[Path, Path | None] | None:
    """The QEMU machine's sysfs (and procfs) the last ``doit boot`` recorded: dom0's own
    listing (boot/devicecheck.py), else the probe's topology dump."""
    trees = boot_dir(ws) / "dom0-trees"
    if (trees / "sys" / "bus" / "pci" / "devices").is_dir():
        return trees / "sys", trees / "proc"
    for name in ("sysfs", TOPOLOGY):
        tree = boot_dir(ws) / name
        if (tree / "bus" / "pci" / "devices").is_dir():
            return tree, None
    return None


def qemu_topology(cfg: Config, ws: Workspace) -> Path:
    """Boot the QEMU machine of ``[boot]`` once as ``doit boot``'s topology run does (the built
    Xen and dom0 with the probe, no passthrough options) and record its sysfs where
    :func:`recorded_qemu` finds it: with ``via = "disk"`` the install's device paths name
    devices of that machine, which no ``doit boot`` has recorded before the first install.
    BootError (before QEMU starts) when nothing is built to boot."""
    machine = boot.Machine.of(cfg, ws)
    print('[boot] via = "disk": booting the QEMU machine once to read its PCI topology (no '
          "doit boot has recorded it yet)", flush=True)
    session, _ = boot.topology_boot(machine, ws)
    w = session.watch
    if not w.ok:
        missed = w.missed.missed if w.missed is not None else "no listing"
        raise TargetError(f'[boot] via = "disk": the topology boot of the QEMU machine (for '
                          f"the devices of install.root's box) failed: {missed} ({w.reason}); "
                          f"console: {session.log}")
    return boot.topology(session.report, boot_dir(ws) / TOPOLOGY).sysfs


@contextmanager
def examined(cfg: Config, ws: Workspace, *, remote: bool = True) -> Iterator[pci.Box]:
    """The box the checks read (see the module); *remote* False: no ssh (a dry run), so a
    ``[target]`` box is this machine's stand-in with a hint. The ssh copy lives while the
    context does."""
    recorded = os.environ.get("XENPIPE_SYSFS")
    if recorded:
        yield pci.Box(Path(recorded), pci.proc_root(), f"the recorded tree XENPIPE_SYSFS="
                      f"{recorded}", is_target=True)
        return
    if cfg.target is not None and remote:
        ssh = Ssh.of(cfg.target, ws.log("devices"))
        listing = ssh.run(pcibox.snapshot_argv(), SNAPSHOT_WHAT, timeout=300).stdout
        with tempfile.TemporaryDirectory(prefix="xenpipe-box-") as tmp:
            try:
                snap = pcibox.unpack(listing, Path(tmp))
            except XenpipeError as exc:
                raise TargetError(f"{cfg.target.ssh}: {SNAPSHOT_WHAT}: {exc}") from None
            yield pci.Box(snap.sysfs, snap.proc, f"{cfg.target.ssh}'s /sys (over ssh)",
                          is_target=True, run=_ssh_runner(ssh),
                          ssh_connection=snap.ssh_connection, shown=f"{cfg.target.ssh}:/sys")
        return
    if cfg.target is None and cfg.install.root == Path("/"):
        yield pci.Box(pci.sysfs_root(), pci.proc_root(), "this machine's /sys (install.root "
                      "is /)", is_target=True, run=pcibox.local_runner,
                      ssh_connection=os.environ.get("SSH_CONNECTION"))
        return
    if cfg.boot.via == "disk" and cfg.target is None:
        yield _qemu_box(cfg, ws, remote)
        return
    if cfg.target is not None:
        where = (f"/sys is this machine's: a dry run makes no ssh connection, a real install "
                 f"reads {cfg.target.ssh}'s")
    else:
        where = (f"/sys is this build host's, not the box's that install.root "
                 f"{cfg.install.root} is for")
    yield pci.Box(pci.sysfs_root(), pci.proc_root(), "this build host's /sys",
                  is_target=False, hint=f"{where}; give the box's own: {pcibox.OTHER_WAYS}")


def _qemu_box(cfg: Config, ws: Workspace, remote: bool) -> pci.Box:
    """For ``[boot] via = "disk"``: the QEMU machine that boots install.root, as the last
    ``doit boot`` recorded it, else as a topology boot records it now (not in a dry run,
    *remote* False, nor without devices to find), else this build host's /sys with why."""
    via = '[boot] via = "disk" boots install.root there'
    qemu = recorded_qemu(ws)
    if qemu is not None:
        return pci.Box(qemu[0], qemu[1], f"the QEMU machine's topology the last doit boot "
                       f"recorded ({qemu[0]}; {via})", is_target=True)
    why = ("a dry run boots nothing" if not remote else
           "no [passthrough] devices to look for" if not cfg.passthrough.devices else "")
    if not why:
        try:
            sysfs = qemu_topology(cfg, ws)
        except BootError as exc:  # nothing built to boot yet
            why = str(exc)
        else:
            return pci.Box(sysfs, None, f"the QEMU machine's topology, read by a topology boot "
                           f"just now ({sysfs}; {via})", is_target=True)
    where = (f"/sys is this build host's, not the QEMU machine's that [boot] via = \"disk\" "
             f"boots install.root {cfg.install.root} in: no doit boot has recorded it ({why})")
    return pci.Box(pci.sysfs_root(), pci.proc_root(), "this build host's /sys",
                   is_target=False, hint=f"{where}; give that machine's: {DISK_WAYS}")
