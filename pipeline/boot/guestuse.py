"""Whether a guest's devices work, not only show up (issue 20), read back from the console:
the modules the guest loaded, each device's driver and interrupt mode (MSI-X, MSI or legacy
INTx from ``/sys/bus/pci/devices/*/msi_irqs``), the ping from each of its NICs to dom0's NIC
over IPv6 link-local (QEMU's internal hub joins them), and, after the guests, each device on
its way back to dom0 (``xl pci-assignable-remove -r``, dom0's driver, the NIC's link).

Each failure is its own one-line verdict; INTx is a warning (the device works, the guest
kernel fell back from MSI)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_FIELDS = re.compile(r"(\w+)=(\S*)")
_STATS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


@dataclass
class DeviceUse:
    """One PCI function as the guest's /init reported it once its drivers were loaded."""

    bdf: str  # in the guest (pciback's virtual bus renumbers)
    driver: str | None  # None: no driver bound
    irq: str  # msix, msi or intx
    nic: str | None  # its network interface, if it is a NIC
    carrier: str  # 1: link up
    addr: str | None  # its IPv6 link-local address


@dataclass
class Ping:
    """``ping -6 -c 10`` from one guest NIC to dom0's NIC."""

    nic: str
    sent: int | None = None
    received: int | None = None
    skipped: str | None = None
    lines: list[str] = field(default_factory=list)


@dataclass
class Use:
    """What one guest run's /init says about its devices at work."""

    modules: dict[str, int] = field(default_factory=dict)  # name: modprobe's exit status
    devices: dict[str, DeviceUse] = field(default_factory=dict)  # by guest BDF
    pings: dict[str, Ping] = field(default_factory=dict)  # by NIC
    irqs: dict[str, int] = field(default_factory=dict)  # interrupts each NIC took

    def take(self, what: str) -> bool:
        """Read one guest line (after ``xenpipe-guest: NAME``); False: not one of ours."""
        words = what.split()
        fields = dict(_FIELDS.findall(what))
        if words[0] == "module" and len(words) >= 2:
            self.modules[words[1]] = _int(fields.get("rc"), -1)
        elif words[0] == "driver" and len(words) >= 2:
            self.devices[words[1]] = DeviceUse(
                words[1], _dash(fields.get("driver")), fields.get("irq", "intx"),
                _dash(fields.get("nic")), fields.get("carrier", "-"), _dash(fields.get("addr")))
        elif words[0] == "ping" and len(words) >= 2:
            ping = self.pings.setdefault(words[1], Ping(words[1]))
            rest = what.split(None, 2)[2] if len(words) > 2 else ""
            ping.lines.append(rest)
            if rest.startswith("skipped"):
                ping.skipped = rest.removeprefix("skipped").lstrip(": ")
            elif m := _STATS.search(rest):
                ping.sent, ping.received = int(m[1]), int(m[2])
        elif words[0] == "irqs" and len(words) == 3:
            self.irqs[words[1]] = _int(words[2], 0)
        else:
            return False
        return True

    def judge(self, label: str, guest_bdf: str, host: str) -> tuple[str | None, list[str]]:
        """(the one-line problem or None, warnings) for the device the guest calls
        *guest_bdf* (dom0's *host*, e.g. ``0000:00:03.0 [8086:100e]``)."""
        dev = self.devices.get(guest_bdf)
        what = f"{guest_bdf} (host {host})"
        if dev is None:
            return f"guest {label}: {what}: the guest did not report its driver", []
        if dev.driver is None:
            mods = ", ".join(f"{m} rc={rc}" for m, rc in self.modules.items()) or "none"
            return f"guest {label}: no driver bound {what} (modules loaded: {mods})", []
        warnings = []
        if dev.irq not in ("msi", "msix"):
            warnings.append(f"guest {label}: {what} runs with legacy INTx, no MSI/MSI-X "
                            f"(driver {dev.driver})")
        if dev.nic is None:
            return None, warnings
        ping = self.pings.get(dev.nic)
        if ping is not None and ping.skipped is not None:  # nothing to ping: not the NIC's fault
            warnings.append(f"guest {label}: no traffic check on {dev.nic}, {what}: "
                            f"{ping.skipped} (give [boot] devices a NIC with netdev=)")
            return None, warnings
        if ping is None:
            return (f"guest {label}: no traffic on {dev.nic}, {what}: the guest did not "
                    "ping"), warnings
        if not ping.received:
            said = "" if ping.sent is not None else f"; {(ping.lines or ['no output'])[-1]}"
            return (f"guest {label}: no traffic on {dev.nic}, {what}: {ping.sent or 0} sent, "
                    f"{ping.received or 0} received (carrier {dev.carrier}{said})"), warnings
        return None, warnings

    def view(self, guest_bdf: str | None) -> dict[str, Any]:
        """What boot.json records of one device at work (empty: the guest did not say)."""
        dev = self.devices.get(guest_bdf or "")
        if dev is None:
            return {}
        out: dict[str, Any] = {"driver": dev.driver, "irq": dev.irq, "nic": dev.nic}
        if dev.nic is not None:
            ping = self.pings.get(dev.nic)
            out["carrier"] = dev.carrier == "1"
            out["ping"] = ({"sent": ping.sent, "received": ping.received,
                            "skipped": ping.skipped} if ping else None)
            out["interrupts"] = self.irqs.get(dev.nic)
        return out


@dataclass
class Returned:
    """One device given back to dom0 after the guests (dom0's ``returned`` line)."""

    bdf: str
    rc: int
    driver: str | None
    nic: str | None
    carrier: str

    @classmethod
    def of(cls, words: list[str]) -> Returned:
        fields = dict(_FIELDS.findall(" ".join(words)))
        return cls(words[1], _int(fields.get("rc"), -1), _dash(fields.get("driver")),
                   _dash(fields.get("nic")), fields.get("carrier", "-"))

    def problem(self) -> str | None:
        """The one-line verdict on the way back, or None when dom0's driver has it."""
        if self.rc != 0:
            return f"dom0: xl pci-assignable-remove -r {self.bdf} failed (exit {self.rc})"
        if self.driver in (None, "pciback"):
            return (f"dom0: {self.bdf} left pciback but no dom0 driver bound it (driver "
                    f"{self.driver or 'none'})")
        if self.nic is not None and self.carrier != "1":
            return f"dom0: {self.bdf} is back with {self.driver} but {self.nic} got no link"
        return None

    def json(self) -> dict[str, Any]:
        return {**asdict(self), "carrier": self.carrier == "1"}

    def line(self) -> str:
        nic = f", {self.nic} link {'up' if self.carrier == '1' else 'down'}" if self.nic else ""
        return f"dom0: {self.bdf} back in dom0: driver {self.driver or 'none'}{nic}"


def device_line(label: str, dev: dict[str, Any]) -> str:
    """One device of boot.json's guest view as ``make demo`` prints it."""
    head = f"guest {label}: {dev.get('host')} as {dev.get('guest')}"
    if not dev.get("driver"):
        return f"{head}: no driver"
    irq = dev.get("irq")
    out = f"{head}: driver {dev['driver']}, {irq}{' (warning)' if irq == 'intx' else ''}"
    ping = dev.get("ping")
    if isinstance(ping, dict):
        out += (f", ping {dev.get('nic')} -> dom0: {ping.get('sent')} sent, "
                f"{ping.get('received')} received, {dev.get('interrupts')} interrupts")
    return out


def _dash(text: str | None) -> str | None:
    return None if text in (None, "", "-") else text


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
