"""xenpipe: build, install and boot Xen hosts that pass PCI devices through to guests."""

__version__ = "0.1.0"
