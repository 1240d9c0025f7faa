"""PCI devices: BDFs, ACPI device paths, the sysfs topology, and the passthrough boot options.

A BDF (``0000:00:19.0``) can change between boots when a card is added; a device path
(``PNP0A08:0-1c.1-00.0``, the 2008 ``guestdev=`` format) names the slot through the ACPI root
bridge and the chain of PCI-PCI bridges, so it stays put.

- ``address``: parsing BDFs and device paths (no machine needed; the config loader uses it)
- ``sysfs``: the topology under ``/sys``, converting between the two, the device table
- ``safety``: devices dom0 cannot give away (the disk holding ``/``), a missing IOMMU
- ``checks``: a go/no-go per passthrough device (reset, MSI, functions, bridges, dom0)
- ``dom0use``: the NIC with the default route or the ssh session, the console
- ``xenplatform``: a running Xen's ``xl info`` and ``xl dmesg`` (IOMMU, virt_caps, RMRR)
- ``box``: the box examined (its trees, a runner for its commands), a copy of its /sys
- ``bootargs``: the dom0 and Xen command-line options for the kernel flavour being built
- ``cli``: ``python -m pipeline.pci``

This package knows nothing of the config: callers pass the values they read from it.
"""

from pipeline.errors import DeviceError
from pipeline.pci.address import (
    BDF_FORMS,
    PATH_FORM,
    Bdf,
    DevicePath,
    GuestDevice,
    Hop,
    parse_bdf,
    parse_device,
    parse_entry,
    parse_path,
)
from pipeline.pci.bootargs import (
    FLAVOURS,
    RESOURCE_ALIGN_ORDER,
    detect_flavour,
    dom0_params,
    iommu_disabled,
    kernel_family,
    xen_cmdline,
)
from pipeline.pci.box import Box, Runner, local_runner
from pipeline.pci.checks import (
    INFO,
    NOGO,
    WARN,
    Finding,
    Verdict,
    check_kernel,
    nogo_error,
    render,
    verdicts,
)
from pipeline.pci.cli import USAGE, main
from pipeline.pci.safety import (
    check_passthrough,
    iommu_warning,
    proc_root,
    report,
    system_devices,
)
from pipeline.pci.sysfs import (
    Device,
    RootBus,
    Topology,
    class_name,
    resolve_devices,
    scan,
    sysfs_root,
    table,
)

__all__ = [
    "BDF_FORMS", "Box", "FLAVOURS", "PATH_FORM", "RESOURCE_ALIGN_ORDER", "Runner", "USAGE",
    "Bdf", "Device", "local_runner",
    "DeviceError", "DevicePath", "Finding", "GuestDevice", "Hop", "INFO", "NOGO", "Verdict", "WARN",
    "check_kernel", "nogo_error", "render", "verdicts", "RootBus", "Topology", "check_passthrough",
    "class_name", "detect_flavour", "dom0_params", "iommu_disabled", "iommu_warning",
    "kernel_family", "main", "parse_bdf", "parse_device", "parse_entry", "parse_path",
    "proc_root", "report",
    "resolve_devices", "scan", "sysfs_root", "system_devices", "table", "xen_cmdline",
]
