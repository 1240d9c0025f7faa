"""``doit boot`` as a stage: resolve the :class:`~pipeline.boot.plan.BootPlan` (after a
topology boot when the options need the machine's topology), run it, verify what the console
and the probe say, and publish the results to ``out/boot.json`` and metadata.json as it goes;
with the fingerprint that says when a boot is up to date and the last verdict in one line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from pipeline import metadata, passthrough, pci, proc
from pipeline.boot import devicecheck, guestcheck, probe
from pipeline.boot.checks import (
    guestdev_log,
    guestdev_problems,
    named,
    topology,
    verify,
    vm_mismatch,
    xen_identity,
)
from pipeline.boot.disk import boots
from pipeline.boot.guestverdict import summary_lines
from pipeline.boot.milestone import milestones
from pipeline.boot.plan import XEN_CONSOLE, BootPlan, Machine
from pipeline.boot.qemu import (
    TAIL_LINES,
    Session,
    boot_dir,
    file_identity,
    hypervisor,
    kernel_image,
    kvm_usable,
    run_qemu,
)
from pipeline.config import Config, display
from pipeline.errors import BootError, DeviceError
from pipeline.files import read_json, write_json
from pipeline.workspace import Workspace

FINGERPRINT_VERSION = 2  # bump when the same inputs would boot differently


def _fail_message(session: Session, dom0_cmd: str, what: str = "boot",
                  also: Sequence[str] = ()) -> str:
    w = session.watch
    assert w.missed is not None
    more = "".join(f"; {a}" for a in also)
    return (f"{what}: {w.missed.missed} ({w.reason}; {w.missed.why}; dom0 cmdline: {dom0_cmd})"
            f"{more}; console: {display(session.log)}")


def _show_tail(session: Session) -> None:
    sys.stderr.write(f"--- last {TAIL_LINES} console lines ({display(session.log)}) ---\n")
    sys.stderr.write("\n".join(session.tail()) + "\n---\n")
    sys.stderr.flush()


def _session_json(session: Session) -> dict[str, Any]:
    return {
        "qemu": proc.render(session.argv),
        "console": display(session.log),
        "seconds": round(session.seconds, 2),
        "milestones": session.watch.records(),
        "tail": [] if session.watch.ok else session.tail(),
    }


def _publish(ws: Workspace, results: dict[str, Any]) -> None:
    """The results in out/boot.json (what reports read) and metadata.json's boot stage."""
    write_json(ws.out / "boot.json", results)
    rec = metadata.current(ws, "boot")
    if rec is not None:
        runs = (results.get("topology_boot"), results)
        rec.set(**results, commands=[r["qemu"] for r in runs if r and "qemu" in r])
        rec.update()


def _failed(ws: Workspace, results: dict[str, Any], message: str,
            session: Session | None = None) -> BootError:
    """Record a failed boot, show the console's last lines, and make its one-line error."""
    results["verdict"] = "fail"
    _publish(ws, results)
    if session is not None:
        _show_tail(session)
    return BootError(message)


TOPOLOGY = "sysfs-topology"  # under boot_dir: the topology boot's tree


def topology_boot(machine: Machine, ws: Workspace) -> tuple[Session, str]:
    """Boot the machine once without passthrough options (the probe lists its PCI topology):
    the session and the plain dom0 command line it booted. Also what the device checks use to
    learn the machine a via="disk" install.root is for (target.examine)."""
    plain, argv = machine.topology_run()
    return run_qemu(argv, ws.log("boot-topology"), milestones(()), machine.cfg.boot.timeout), plain


def _topology_boot(machine: Machine, ws: Workspace, results: dict[str, Any]) -> pci.Topology:
    """Boot without passthrough options and read the VM's PCI topology from the probe."""
    cfg = machine.cfg
    first, plain = topology_boot(machine, ws)
    results["topology_boot"] = _session_json(first)
    if not first.watch.ok:
        raise _failed(ws, results, _fail_message(first, plain, "boot (topology run)"), first)
    topo = topology(first.report, boot_dir(ws) / TOPOLOGY)
    problem = vm_mismatch(cfg, topo)
    if problem:
        results["reason"] = problem
        raise _failed(ws, results, f"boot: {problem}; console: {display(first.log)}")
    return topo


@metadata.recorded("boot", BootError)
def boot(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """Boot the built Xen + dom0 in QEMU; pass only when dom0 came up, pciback seized every
    passthrough device and dom0 powered off. Returns (and records) the results.

    ``verdict`` is ``running`` in boot.json and the metadata stage from the start (a killed
    boot leaves no stale verdict); however the boot ends it records its verdict: a failure
    before QEMU starts (no QEMU, an unreadable hypervisor, a probe that cannot be built) as
    ``fail`` with its one-line ``reason``, Ctrl-C or SIGTERM as ``interrupted``."""
    results: dict[str, Any] = {"verdict": "running"}
    _publish(ws, results)
    try:
        return _boot(cfg, ws, results)
    except BaseException as exc:
        if results.get("verdict") == "running":  # nothing recorded a verdict yet
            verdict, reason = metadata.outcome(exc)
            results.update(verdict=verdict, reason=reason.removeprefix("boot: "))
            with contextlib.suppress(OSError):  # out/ refuses writes: exc says more
                _publish(ws, results)
        raise


def _plan(cfg: Config, ws: Workspace, results: dict[str, Any]) -> BootPlan:
    """The boot plan, recorded into *results* as it is resolved (a topology boot first when
    the options need the machine's topology)."""
    machine = Machine.of(cfg, ws)
    imgs = machine.images
    results.update({"accel": machine.accel, "flavour": machine.flavour, "xen": str(imgs.xen),
                    "kernel": str(imgs.kernel), "xen_cmdline": machine.xen_cmdline})
    _publish(ws, results)
    plan = (BootPlan.resolve(machine, ws, None)
            or BootPlan.resolve(machine, ws, _topology_boot(machine, ws, results)))
    assert plan is not None  # resolve raises, given the topology
    results["dom0_cmdline"] = plan.dom0_cmdline
    results["expected"] = {k: [str(b) for b in v] for k, v in plan.expected.items()}
    return plan.with_guest_dom0(boot_dir(ws) / "dom0-guests.cpio.gz")


def _boot(cfg: Config, ws: Workspace, results: dict[str, Any]) -> dict[str, Any]:
    """:func:`boot`'s work; *results* is what boot.json records (published as it goes)."""
    plan = _plan(cfg, ws, results)
    guests, dom0_cmd = plan.guests, plan.dom0_cmdline
    disk_problems: list[str] = []
    if cfg.boot.via == "disk":  # through the bootloader doit install set up: pipeline/boot/disk
        session, disk_problems = boots.run(cfg, ws, plan, results)
    else:
        session = run_qemu(plan.argv, ws.log("boot"), plan.steps, plan.timeout)
    results.update(_session_json(session))
    results["pciback"] = list(session.report.pciback)
    results["xen_build"] = xen_identity(session.console)
    results["checks"] = devicecheck.record(cfg, ws, session.console, session.report,
                                           boot_dir(ws) / "dom0-trees")
    gd = guestdev_log(session.console)
    gd_problems, gd_warnings = guestdev_problems(cfg, gd)
    if gd.lines:
        results["guestdev"] = gd.json()
    if gd_warnings:
        results["warnings"] = gd_warnings
    guest_problem = guests.judge(session, results) if guests is not None else None
    if not session.watch.ok:
        message = _fail_message(session, dom0_cmd, also=[*gd_problems, *disk_problems])
        if guest_problem and guests is not None and guests.owns(session.watch.missed):
            message = f"boot: {guest_problem}; console: {display(session.log)}"
        raise _failed(ws, results, message, session)
    seen = topology(session.report, boot_dir(ws) / "sysfs")
    results["devices"] = {str(d.bdf): {"path": str(d.path) if d.path else None,
                                       "driver": d.driver} for d in seen.devices}
    # what each entry named in this boot (device paths too, when guestdev= took them)
    results["expected"] = named(cfg, seen)
    problems = [*gd_problems, verify(cfg, session, seen, plan.expected), guest_problem,
                *disk_problems]
    problem = "; ".join(p for p in problems if p)
    if problem:
        results["reason"] = problem
        raise _failed(ws, results, f"boot: {problem} (dom0 cmdline: {dom0_cmd}); "
                                   f"console: {display(session.log)}")
    iommu = next(h.line for h in session.watch.hits if h.name == "Xen IOMMU")
    results["iommu"] = "enabled" if iommu.endswith("enabled") else "disabled"
    results["verdict"] = "pass"
    _publish(ws, results)
    times = ", ".join(f"{h.name} {h.seconds:.1f}s" for h in session.watch.hits)
    print(f"boot: PASS in {session.seconds:.0f} s ({results['accel']}): {times}")
    if results["iommu"] == "disabled" and cfg.passthrough.devices:
        print("boot: warning: Xen reports I/O virtualisation disabled: pciback holds the "
              "devices, but no HVM guest could use them (q35 needs -device intel-iommu in "
              "[boot] devices)")
    for text in gd_warnings:
        print(f"boot: warning: {text}")
    for i, b in enumerate(results.get("boots", ()), 1):
        print(f"boot: disk boot {i}: `{b['entry']}' {b['verdict']} in {b['seconds']:.0f} s")
    for line in summary_lines(results):
        print(f"boot: {line}")
    print(f"boot: console log {display(session.log)}")
    return results


def fingerprint(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """What decides a boot's outcome, cheaply: the artifacts' identity, the command lines'
    inputs, the QEMU machine and devices, and the probe."""
    try:
        kernel = file_identity(kernel_image(ws))
    except BootError:
        kernel = None
    try:
        xen = file_identity(hypervisor(cfg, ws))
    except BootError:
        xen = None
    try:
        flavour = passthrough.flavour(cfg, ws)
    except DeviceError:
        flavour = None
    return {
        "version": FINGERPRINT_VERSION,
        "kernel": kernel, "xen": xen, "probe": probe.identity(), "flavour": flavour,
        "guest": guestcheck.identity(cfg),
        "xen_cmdline": passthrough.xen_cmdline(cfg, XEN_CONSOLE),
        "dom0_cmdline": cfg.install.dom0_cmdline,
        "passthrough": [list(cfg.passthrough.devices), cfg.passthrough.reassign,
                        cfg.passthrough.mode],
        "qemu": [cfg.boot.qemu, cfg.boot.machine, list(cfg.boot.devices), cfg.boot.memory,
                 kvm_usable(), cfg.boot.cpus, cfg.boot.tcg],
        **({"disk": boots.identity(cfg)} if cfg.boot.via == "disk" else {}),
    }



def summary(ws: Workspace) -> str:
    """The last boot's verdict in one line (what ``make demo`` ends with)."""
    res = read_json(ws.out / "boot.json")
    if not isinstance(res, dict):
        return f"boot: no result in {display(ws.out / 'boot.json')}: run `doit boot`"
    console = f"; console: {res['console']}" if res.get("console") else ""
    verdict = res.get("verdict")
    if verdict == "running":
        return ("boot: no verdict: a `doit boot` is running, or was killed before it finished "
                f"(run it again){console}")
    if verdict != "pass":
        missed = [m for m in res.get("milestones", []) if m.get("status") == "missed"]
        why = (f"{missed[0]['name']} missed ({missed[0].get('detail')})" if missed
               else res.get("reason") or "see the log")
        if verdict == "interrupted":
            why += "; run `doit boot` again"
        return f"boot: FAIL: {why}{boots.summary(res)}{console}"
    seized = ", ".join(f"{entry} = {' '.join(bdfs)}" for entry, bdfs in
                       res.get("expected", {}).items()) or "no passthrough devices"
    took = f" in {res['seconds']:.0f} s" if isinstance(res.get("seconds"), int | float) else ""
    return (f"boot: PASS{took} ({res.get('accel')}): pciback seized {seized}"
            f"{boots.summary(res)}{console}")
