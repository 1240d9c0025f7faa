"""``doit install``: Xen, the dom0 kernel and its modules, the initramfs, the bootloader entry
and the guest configs, into ``[install] root``.

:mod:`.plan` holds the steps and the one code path that prints (``--dry-run``) or executes
them; :mod:`.stage` builds the plan from the workspace and the root; :mod:`.bootloader`,
:mod:`.initramfs` and :mod:`.guestcfg` add their own steps to it.
"""

from pipeline.install.plan import (
    MAKE_TIMEOUT,
    STAGE,
    Copy,
    Link,
    Plan,
    Run,
    Step,
    Write,
    apply,
    describe,
    execute,
    file_digest,
)
from pipeline.install.stage import (
    Kernel,
    check_root,
    devices,
    dry_run,
    entry_name,
    find_kernel,
    install,
    make_plan,
    plan_initramfs,
    plan_kernel,
    plan_xen,
    xen_version,
)

__all__ = [
    "MAKE_TIMEOUT", "STAGE", "Copy", "Kernel", "Link", "Plan", "Run", "Step", "Write", "apply",
    "check_root", "describe", "devices", "dry_run", "entry_name", "execute", "file_digest",
    "find_kernel", "install", "make_plan", "plan_initramfs", "plan_kernel", "plan_xen",
    "xen_version",
]
