"""``doit boot`` with ``[target]``: boot the box once into the new entry and come back by
itself when it does not work.

1. one-shot the new entry (``grub-reboot``, GRUB 2) and reboot the box over ssh
   (``systemctl reboot``), or by ``power_cycle`` when ssh does not answer;
2. follow the console (``[target] console``) through the boot milestones;
3. wait for ssh with a new boot id, then verify there: Xen runs (``/proc/xen``, ``xl info``)
   and pciback holds every passthrough device (``/sys/bus/pci/drivers/pciback/<BDF>``, ``xl
   pci-assignable-list``); then the go/no-go device checks on the booted box (its /sys over
   ssh, ``xl info``, ``xl dmesg``: boot/devicecheck.py) go into out/boot.json ``checks``;
4. on any failure: ``power_cycle``, so GRUB's one-shot falls back to the known-good entry,
   wait for ssh, confirm the box is back (``uname -r``, no ``/proc/xen``) and fail with one
   line naming what was missed and saying where the box is now.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pipeline import pci, proc
from pipeline.boot import devicecheck, milestone
from pipeline.boot.milestone import Milestone
from pipeline.config import Config, display
from pipeline.errors import TargetError, XenpipeError
from pipeline.files import write_json
from pipeline.install import stage
from pipeline.target import box
from pipeline.target.console import Console, box_milestones
from pipeline.target.examine import examined
from pipeline.target.ssh import Ssh, sh
from pipeline.workspace import Workspace

_REBOOT = "(sleep 2; systemctl reboot) </dev/null >/dev/null 2>&1 &"  # after ssh has left
_VERIFY = ('[ -d /proc/xen ] || { echo "no /proc/xen: the box is not running Xen"; exit 1; }; '
           'xl info >/dev/null 2>&1 || { echo "xl info failed"; exit 1; }; '
           'listed=$(xl pci-assignable-list 2>&1); '
           'for b in "$@"; do [ -e "/sys/bus/pci/drivers/pciback/$b" ] || '
           '{ echo "$b is not bound to pciback"; exit 1; }; '
           'case "$listed" in *"$b"*) ;; *) echo "$b is not in xl pci-assignable-list"; '
           'exit 1;; esac; done')
_WHERE = 'uname -r; if [ -d /proc/xen ]; then echo xen; else echo no-xen; fi'


def boot_id(ssh: Ssh) -> str | None:
    """The box's boot id (None: ssh does not answer)."""
    try:
        res = ssh.run(["cat", "/proc/sys/kernel/random/boot_id"], "read the boot id",
                      check=False, timeout=120)
    except TargetError:
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def wait_back(ssh: Ssh, old: str | None, deadline: float) -> str | None:
    """Wait until ssh answers with a boot id other than *old*; None at the deadline."""
    while time.monotonic() < deadline:
        new = boot_id(ssh)
        if new is not None and new != old:
            return new
        time.sleep(3)
    return None


def seized(cfg: Config) -> list[pci.Bdf]:
    """The passthrough devices given by BDF (a device path needs the box's topology)."""
    return [d for d in map(pci.parse_device, cfg.passthrough.devices) if isinstance(d, pci.Bdf)]


def power_cycle(cfg: Config, log: Any) -> None:
    assert cfg.target is not None
    if not cfg.target.power_cycle:
        raise TargetError(f"{cfg.target.ssh}: no [target] power_cycle to reset the box")
    proc.run(cfg.target.power_cycle, log=log, error=TargetError, what="[target] power_cycle",
             timeout=300)


def entry_milestone(cfg: Config) -> Milestone:
    """GRUB's ``Booting `TITLE'`` for xenpipe's entry (GRUB 2 prints the entry it boots)."""
    name = stage.entry_name(cfg)
    return Milestone(f"GRUB booted xenpipe-{name}",
                     rf"Booting [`']Xen [^'\r\n]*\(xenpipe {re.escape(name)}\)'",
                     f"GRUB did not boot xenpipe's entry xenpipe-{name}",
                     "did grub-reboot set next_entry? does GRUB's menu reach the console?")


def milestones(cfg: Config) -> milestone.Milestones:
    """The console's milestones: GRUB's entry (GRUB 2), then Xen, dom0, pciback."""
    steps = box_milestones(seized(cfg))
    return [[entry_milestone(cfg)], *steps] if cfg.install.bootloader == "grub2" else steps


def device_checks(cfg: Config, ws: Workspace) -> list[dict[str, Any]]:
    """The go/no-go per device on the booted box (its /sys over ssh, its ``xl info`` and
    ``xl dmesg``), as a QEMU boot records them; one that cannot be made is a warning."""
    try:
        with examined(cfg, ws) as seen:
            return devicecheck.verdicts(cfg, ws, seen)
    except (XenpipeError, OSError) as exc:
        print(f"boot: warning: the device checks on the box were not made: {exc}", flush=True)
        return []


def _publish(ws: Workspace, results: dict[str, Any]) -> None:
    ws.out.mkdir(parents=True, exist_ok=True)
    write_json(ws.out / "boot.json", results)


def boot(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """The round trip; returns the verdict with each phase's seconds (and records it in
    out/boot.json), or raises the one-line failure after the fallback."""
    t = cfg.target
    assert t is not None
    log = ws.log("target")
    ssh = Ssh.of(t, log)
    times: dict[str, float] = {}
    results: dict[str, Any] = {"target": t.ssh, "verdict": "running", "seconds": times,
                               "console": display(ws.log("target-console"))}
    _publish(ws, results)
    start = time.monotonic()
    old = boot_id(ssh)
    if cfg.install.bootloader == "grub2" and old is not None:
        ident = box.once_id(stage.entry_name(cfg))
        ssh.run(["grub-reboot", ident], f"boot {ident} once (grub-reboot)")
    con = Console(t.console, ws.log("target-console")).start() if t.console else None
    problem = None
    try:
        if old is not None:
            print(f"boot: {t.ssh}: rebooting over ssh", flush=True)
            ssh.run(sh(_REBOOT), "reboot (systemctl reboot)")
        else:
            print(f"boot: {t.ssh}: ssh does not answer; power-cycling", flush=True)
            power_cycle(cfg, log)
        deadline = start + t.boot_timeout
        if con is not None:
            watch = con.watch(milestones(cfg), t.boot_timeout)
            results["milestones"] = {h.name: round(h.seconds, 1) for h in watch.hits}
            for hit in watch.hits:
                print(f"boot: {t.ssh}: {hit.name} after {hit.seconds:.0f} s", flush=True)
            if not watch.ok and watch.missed is not None:
                problem = f"{watch.missed.missed} ({watch.reason})"
        if problem is None:
            if con is not None:
                con.follow()
            back = wait_back(ssh, old, deadline)
            failed = con.failure if con is not None else None
            if failed is not None:
                last = list(results.get("milestones") or ["the reboot"])[-1]
                problem = f"dom0 did not come up: {failed} (after {last})"
            elif back is None:
                problem = f"ssh did not answer within boot_timeout = {t.boot_timeout} s"
            else:
                times["reboot"] = time.monotonic() - start
                mark = time.monotonic()
                res = ssh.run(sh(_VERIFY, *map(str, seized(cfg))), "verify", check=False)
                times["verify"] = time.monotonic() - mark
                if res.returncode != 0:
                    problem = proc.last_line(res.stdout) or "verification failed"
    finally:
        if con is not None:
            con.stop()
    if problem is None:
        mark = time.monotonic()
        results["checks"] = device_checks(cfg, ws)
        times["checks"] = time.monotonic() - mark
        results["verdict"] = "pass"
        results["seconds"] = _round(times)
        _publish(ws, results)
        print(f"boot: {t.ssh}: Xen runs and pciback holds every device; phases (s): "
              f"{_round(times)}", flush=True)
        return {"target": t.ssh, "ok": True, "seconds": _round(times)}
    results.update(verdict="fail", reason=problem)
    try:
        fallback(cfg, ssh, problem, times)
    except TargetError as exc:
        results.update(seconds=_round(times), fallback=str(exc))
        _publish(ws, results)
        raise
    raise AssertionError("unreachable")


def fallback(cfg: Config, ssh: Ssh, problem: str, times: dict[str, float]) -> None:
    """Power-cycle back to the known-good entry, confirm it, raise the verdict."""
    t = cfg.target
    assert t is not None
    print(f"boot: {t.ssh}: {problem}; power-cycling back to the known-good entry", flush=True)
    start = time.monotonic()
    try:
        before = boot_id(ssh)
        power_cycle(cfg, ssh.log)
        back = wait_back(ssh, before, time.monotonic() + t.boot_timeout)
        where = ssh.run(sh(_WHERE), "check the known-good entry").stdout.split() if back else []
    except XenpipeError as exc:
        raise TargetError(f"{t.ssh}: {problem}; the fallback failed too: {exc}") from None
    times["fallback"] = time.monotonic() - start
    print(f"boot: {t.ssh}: phases (s): {_round(times)}", flush=True)
    if not back or where[-1:] != ["no-xen"]:
        state = "did not come back" if not back else f"came back still under Xen ({where[0]})"
        raise TargetError(f"{t.ssh}: {problem}; after the power cycle the box {state}")
    raise TargetError(f"{t.ssh}: {problem}; power-cycled: the box is back on its known-good "
                      f"entry ({where[0]}, no /proc/xen)")


def _round(times: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in times.items()}
