"""What one ``doit boot`` boots, decided once before QEMU runs: the images, the kernel
flavour, KVM or TCG, the Xen and dom0 command lines, the devices each passthrough entry
resolves to, the guests and the milestones. Running, verifying and publishing read the
:class:`BootPlan` instead of deriving each from the config again."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pipeline import passthrough, pci
from pipeline.boot.checks import expected_bdfs
from pipeline.boot.guestboot import GuestBoot
from pipeline.boot.milestone import Milestones, milestones
from pipeline.boot.qemu import Images, images, kvm_usable, qemu_argv
from pipeline.config import Config
from pipeline.errors import BootError, DeviceError
from pipeline.workspace import Workspace

XEN_CONSOLE = ("console=com1", "com1=115200")
DOM0_CONSOLE = ("console=hvc0", "earlyprintk=xen")


@dataclass(frozen=True)
class Machine:
    """What every boot of the stage shares, known before any device is resolved."""

    cfg: Config
    images: Images
    flavour: str  # the dom0 kernel's flavour (passthrough.flavour)
    kvm: bool
    xen_cmdline: str

    @classmethod
    def of(cls, cfg: Config, ws: Workspace) -> Machine:
        """The images, flavour, accelerator and Xen line; BootError when there is no dom0
        kernel to boot, DeviceError for a typo in ``[passthrough] devices``."""
        if cfg.kernel is None:
            raise BootError("doit boot needs a dom0 kernel: configure [kernel]")
        for entry in cfg.passthrough.devices:
            pci.parse_device(entry)  # a typo is reported before anything boots
        imgs = images(cfg, ws)
        flavour = passthrough.flavour(cfg, ws)
        return cls(cfg, imgs, flavour, kvm_usable(), passthrough.xen_cmdline(cfg, XEN_CONSOLE))

    @property
    def accel(self) -> str:
        return "kvm" if self.kvm else "tcg"

    def argv(self, qemu: Config, imgs: Images, dom0_cmdline: str) -> list[str]:
        return qemu_argv(qemu, imgs, self.xen_cmdline, dom0_cmdline, self.kvm)

    def topology_run(self) -> tuple[str, list[str]]:
        """(dom0 line, QEMU argv) of the topology boot: no passthrough options."""
        plain = passthrough.dom0_cmdline(self.cfg, self.flavour, None, DOM0_CONSOLE,
                                         passthrough=False)
        return plain, self.argv(self.cfg, self.images, plain)


@dataclass(frozen=True)
class BootPlan:
    """The boot that decides the verdict: its command lines, expected devices and steps."""

    machine: Machine
    dom0_cmdline: str
    topology: pci.Topology | None  # the topology boot's, when the options needed it
    expected: dict[str, tuple[pci.Bdf, ...]]  # what each passthrough entry stands for
    guests: GuestBoot | None  # [boot] guest: start [[guests]] under dom0 too
    qemu: Config  # the config QEMU's machine is rendered from (guests need more memory)
    images: Images
    steps: Milestones

    @classmethod
    def resolve(cls, machine: Machine, ws: Workspace,
                topo: pci.Topology | None) -> BootPlan | None:
        """The plan; None when an option needs the machine's topology (*topo* is None: a
        path for hide= or to realign, a BDF for XenLinux guestdev=, a guest's device path)."""
        cfg = machine.cfg
        guests = GuestBoot.of(cfg, ws)
        try:
            dom0_cmd = passthrough.dom0_cmdline(cfg, machine.flavour, topo, DOM0_CONSOLE)
            if guests is not None:
                guests = guests.planned(topo)
        except DeviceError:
            if topo is not None:
                raise
            return None
        expected = expected_bdfs(cfg, topo)
        seize = (list(dict.fromkeys(b for group in expected.values() for b in group))
                 if passthrough.hides(cfg) else [])  # assignable: dom0 keeps them at boot
        return cls(machine, dom0_cmd, topo, expected, guests, cfg, machine.images,
                   milestones(seize))

    def with_guest_dom0(self, dest: Path) -> BootPlan:
        """For a guest boot: the Debian dom0 (its initramfs built at *dest*) instead of the
        probe, the guest milestones and the memory they need; else the plan as it is."""
        if self.guests is None:
            return self
        return replace(self, images=self.guests.images(self.images, dest),
                       steps=self.guests.steps(self.steps),
                       qemu=self.guests.machine(self.qemu))

    @property
    def argv(self) -> list[str]:
        return self.machine.argv(self.qemu, self.images, self.dom0_cmdline)

    @property
    def timeout(self) -> float:
        return self.machine.cfg.boot.timeout
