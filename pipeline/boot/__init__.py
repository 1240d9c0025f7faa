"""``doit boot``: boot the built Xen and dom0 kernel in QEMU and watch the serial console.

Xen is QEMU's ``-kernel`` (multiboot; a gzipped image is decompressed once into the
workspace), the dom0 kernel its first module with the same command line ``doit install``
writes (hide/reassign options included), and the probe initramfs (``probe.py``) the second
module. pexpect follows the console through ordered milestones, each with its time: the Xen
banner, what Xen says about the IOMMU, dom0 construction, the Linux banner, pciback seizing
each passthrough device, the probe's ``/init`` starting and listing each device under pciback,
and the power-off. A panic, a crash, QEMU exiting early, a later milestone coming first or
the ``[boot] timeout`` ends the run at once with the last console lines and one error line
saying which milestone was missed and why.

When the options need the machine's topology (device paths on a kernel without ``guestdev=``,
BDFs for a XenLinux ``guestdev=`` kernel, device paths to realign on a mainline one), a first
boot without passthrough options records the virtual machine's PCI topology from the probe's
dump; the entries are resolved against it exactly as ``doit install`` resolves them against
``/sys`` on a real box, and the second boot uses the resolved options. After the boot, the
seized devices are checked against what the entries name in that boot's own topology, and
xen-pciback's own ``guestdev:`` lines (an entry's device, a path that matches nothing, a
malformed entry) go into the verdict and ``boot.json``.

Modules: ``plan`` (what a boot boots, resolved once), ``qemu`` (images, argv, one run),
``milestone`` (the console milestones and the watch), ``checks`` (the verdict's checks),
``stage`` (the stage and its records), ``cli`` (``python -m pipeline.boot``), ``probe``
(the busybox initramfs), ``rootfs`` and ``guestcheck``/``guestverdict``/``guestuse``/
``guestboot`` (``[boot] guest = true``; ``guestuse``: the devices at work in the guest and on
their way back to dom0).
"""

from pipeline.boot.checks import (
    GuestdevLog,
    expected_bdfs,
    guestdev_log,
    guestdev_problems,
    named,
    seized_in,
    topology,
    verify,
    vm_mismatch,
)
from pipeline.boot.cli import main
from pipeline.boot.milestone import (
    FAILURES,
    Hit,
    Milestone,
    Watch,
    listed_milestone,
    milestones,
    seize_milestone,
    watch,
)
from pipeline.boot.plan import DOM0_CONSOLE, XEN_CONSOLE, BootPlan, Machine
from pipeline.boot.qemu import (
    CPU,
    EXIT_GRACE,
    TAIL_LINES,
    Images,
    Session,
    boot_dir,
    hypervisor,
    images,
    kernel_image,
    kvm_usable,
    loadable,
    qemu_argv,
    qemu_option,
    run_qemu,
)
from pipeline.boot.stage import (
    FINGERPRINT_VERSION,
    TOPOLOGY,
    boot,
    fingerprint,
    summary,
    topology_boot,
)

__all__ = [
    "CPU", "DOM0_CONSOLE", "EXIT_GRACE", "FAILURES", "FINGERPRINT_VERSION", "TAIL_LINES",
    "XEN_CONSOLE", "BootPlan", "GuestdevLog", "Hit", "Images", "Machine", "Milestone", "Session",
    "Watch", "boot", "boot_dir", "expected_bdfs", "fingerprint", "guestdev_log",
    "guestdev_problems", "hypervisor", "images", "kernel_image", "kvm_usable", "listed_milestone",
    "loadable", "main", "milestones", "named", "qemu_argv", "qemu_option", "run_qemu",
    "seize_milestone", "seized_in", "summary", "topology", "topology_boot", "TOPOLOGY", "verify",
    "vm_mismatch", "watch",
]
