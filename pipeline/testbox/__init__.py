"""A local test box for ``[target]``, for rehearsing before real hardware and for the tests
(``python -m pipeline.testbox`` starts one and prints its ``[target]`` table): a QEMU VM (TCG)
running a Debian root with the real OpenSSH ``sshd``, reached without any network: the VM's
second serial line is a unix socket (``-chardev socket``), the host's ssh reaches it through
``ProxyCommand`` (the ``serialpipe`` script here) and the VM runs ``sshd -i`` (inetd style) on
that line, one connection at a time. Nothing leaves this machine.

:func:`running_disk_box` boots from its own disk through a real GRUB 2: an MBR disk image (the
disk boot's machinery: ``grub-mkimage`` + boot.img, an ext4 root made by ``mke2fs -d``)
holding a Debian root with its own kernel (``linux-image-amd64``), GRUB's tools
(``update-grub``, ``grub-reboot`` run on the box) and a known-good default entry: that Debian
kernel without Xen, its root on the disk. :func:`running_box` boots a dom0 kernel directly
(``-kernel``) with the root as its initramfs. The roots are the dom0 userland of
``pipeline.boot.rootfs`` plus ``openssh-server`` (debootstrap'ed once).

A fresh host key per box, to pin in a ``known_hosts`` (``StrictHostKeyChecking`` stays at
ssh's default). The first serial line is the console (QEMU logs it to ``console.log``), and
QEMU's monitor socket takes ``system_reset`` (the power cycle). The stand-ins: the box's init
is a small script, not systemd, so a ``systemctl`` shim does ``systemctl reboot`` (the reboot
system call); and the disk box's ``mkinitrd`` (:data:`MKINITRD`) makes dom0's initramfs from
the box's own root, as the demo's dom0 kernel has no block layer to mount the disk.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect

from pipeline import proc
from pipeline.boot import qemu as bootqemu
from pipeline.boot import rootfs
from pipeline.boot.disk import grub2
from pipeline.boot.disk.image import Layout, drive_argv, make_image, overlay
from pipeline.errors import BootError
from pipeline.target import Ssh
from pipeline.workspace import Workspace

# ssh over a serial line, both ends (stdlib only: it also runs inside the box); a script, not
# a module of xenpipe (which starts no program but through pipeline.proc)
SERIALPIPE = Path(__file__).with_name("serialpipe")
PACKAGES = (*rootfs.PACKAGES, "openssh-server")
# the disk box's root: its own kernel (the known-good entry), udev for that kernel's initramfs
# (it finds the disk), GRUB's tools for update-grub and grub-reboot on the box
DISK_PACKAGES = (*PACKAGES, "linux-image-amd64", "udev", "grub2-common")
HOST = "testbox"  # the name ssh knows the box by (HostKeyAlias, known_hosts)
BOOT_TIMEOUT = 900.0  # a limit, not a measurement: TCG boots on a loaded machine are slow
UP = "xenpipe-testbox:"  # what the box's init says on the console once it is up
KNOWN_ID = "known-good"
KNOWN_TITLE = "Known good: Debian Linux without Xen"
DOM0_ROOT = "/boot/xenpipe-testbox/dom0-root.cpio.gz"  # the disk box's dom0 root (see MKINITRD)

# the init of both boxes: /init of a RAM root (the direct box, the disk box's dom0) and
# /sbin/xenpipe-init of the disk root (its own kernel); in dom0 it starts Debian's toolstack
# (xenstored, xenconsoled) before sshd, so ssh answering means xl works. The ssh line is
# ttyS1 and the control line ttyS3 (IRQ 3 both): under Xen, com1's IRQ 4 is Xen's.
INIT = """#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -o remount,rw / 2>/dev/null
mkdir -p /dev/pts /var/log
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run && mkdir -p /run/sshd /run/lock
hostname testbox
if [ -d /proc/xen ]; then
    mount -t xenfs xenfs /proc/xen
    /etc/init.d/xen start >/var/log/xen-start.log 2>&1
    echo "xenpipe-testbox: toolstack rc=$?"
fi
echo "xenpipe-testbox: $(uname -r) up"
python3 /usr/local/sbin/xenpipe-serial-sshd /dev/ttyS1 /dev/ttyS3 >/var/log/serial-sshd.log 2>&1 &
while :; do sleep 3600; done
"""

# The disk box's "initramfs tool", a stand-in: the demo's dom0 kernel (tinyconfig) has no
# block layer, so dom0 cannot mount the box's disk; its initramfs is the box's own root
# instead, and it runs from RAM: what `doit install` wrote (/etc, the kernel's modules and
# image) as an uncompressed cpio, then the rest of the root as the image was built (no /etc:
# the two never overlap). `doit install` runs it on the box as it runs Red Hat's mkinitrd
# (`mkinitrd -f IMAGE RELEASE`). The uncompressed part comes first because GRUB's `module2`
# gunzips a module that starts gzip'd and sizes it by the LAST gzip member's length: two gzip
# members came out as 3.3 MB of the first (measured: dom0 found no /bin/sh).
MKINITRD = f"""#!/bin/sh
# xenpipe test box: dom0's initramfs is this box's root (see pipeline/testbox)
set -e
[ "$1" = -f ] && shift
image=$1 r=$2
cd /
find etc "usr/lib/modules/$r" "boot/vmlinuz-$r" -print 2>/dev/null \\
    | cpio -o -H newc -R 0:0 --quiet >"$image.tmp"
cat {DOM0_ROOT} >>"$image.tmp"
mv "$image.tmp" "$image"
"""

SSHD_CONF = """# the test box: its own host key, keys only, no PAM; a serial line is slow
# (a keepalive waits behind the data) and the proxy's "bye" ends a finished session
HostKey /etc/ssh/xenpipe_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
ClientAliveInterval 60
ClientAliveCountMax 5
"""


# the box's init is the small script above, not systemd: `systemctl reboot` (what xenpipe
# runs on a box) is the one thing it needs, done with the reboot system call
SYSTEMCTL = """#!/bin/sh
[ "$1" = reboot ] && exec busybox reboot -f
echo "systemctl: the test box has no systemd" >&2
exit 1
"""


@dataclass
class Box:
    """A running test box and what a ``[target]`` table needs to reach it."""

    dir: Path
    qemu: Any  # the pexpect child running QEMU
    ssh_config: Path
    known_release: str = ""  # the disk box's own kernel (its known-good entry)

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def monitor(self) -> Path:
        return self.dir / "monitor.sock"

    def target_toml(self) -> str:
        """The ``[target]`` table for a config."""
        reset = [sys.executable, str(SERIALPIPE), "--monitor", str(self.monitor),
                 "system_reset"]
        console = [sys.executable, str(SERIALPIPE), "--read",
                   str(self.dir / "console.sock")]
        return ("[target]\n"
                f'ssh = "root@{HOST}"\n'
                f"ssh_args = {_toml_list(self.ssh_args)}\n"
                f"console = {_toml_list(console)}\n"
                f"power_cycle = {_toml_list(reset)}\n"
                "boot_timeout = 900\n")

    def ssh(self) -> Ssh:
        return Ssh(f"root@{HOST}", tuple(self.ssh_args))

    @property
    def ssh_args(self) -> list[str]:
        """The test's ssh_config; a long ConnectTimeout: under TCG on a loaded machine sshd
        takes a while to answer (the banner exchange counts)."""
        return ["-F", str(self.ssh_config), "-o", "ConnectTimeout=300"]

    def run(self, *argv: str) -> str:
        """Run *argv* on the box; its output."""
        return self.ssh().run(list(argv), "test command").stdout

    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"'
                           for i in items) + "]"


def root_archive(ws: Workspace, disk: bool) -> Path:
    """The packed Debian root of a box (:data:`PACKAGES`, the disk box's
    :data:`DISK_PACKAGES`), built once in *ws* by debootstrap (minutes; root and the mirror),
    then found there."""
    return rootfs.build(ws, packages=DISK_PACKAGES if disk else PACKAGES).image


def _keys(d: Path) -> tuple[Path, Path]:
    """A fresh host key and a fresh client key for this box."""
    for name in ("host_key", "id_ed25519"):
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"testbox-{name}",
                  "-f", d / name], error=BootError, what="ssh-keygen")
    return d / "host_key", d / "id_ed25519"


def _write(tree: Path, files: dict[str, tuple[str, int]]) -> None:
    for rel, (text, mode) in files.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)


def _box_files(tree: Path, init: str, host_key: Path, client_key: Path) -> None:
    """What makes the root a test box: *init*, sshd's config and host key, root's authorized
    key, the serial line's sshd, the systemctl shim."""
    _write(tree, {
        init: (INIT, 0o755),
        "etc/ssh/sshd_config.d/xenpipe-testbox.conf": (SSHD_CONF, 0o644),
        "etc/ssh/xenpipe_host_ed25519_key": (host_key.read_text(), 0o600),
        "etc/ssh/xenpipe_host_ed25519_key.pub": (host_key.with_suffix(".pub").read_text(),
                                                  0o644),
        "root/.ssh/authorized_keys": (client_key.with_suffix(".pub").read_text(), 0o600),
        "usr/local/sbin/xenpipe-serial-sshd": (SERIALPIPE.read_text(), 0o755),
        "usr/local/sbin/systemctl": (SYSTEMCTL, 0o755),
    })
    (tree / "root").chmod(0o700)
    (tree / "root/.ssh").chmod(0o700)


def _overlay(d: Path, host_key: Path, client_key: Path) -> Path:
    """The direct box's per-box archive (appended to the root's)."""
    tree = d / "overlay"
    _box_files(tree, "init", host_key, client_key)
    out = d / "overlay.cpio.gz"
    rootfs.pack(tree, out, d / "pack.log")
    return out


def _ssh_config(d: Path, host_key: Path, client_key: Path) -> Path:
    """An ssh_config for the box: the pinned host key, the test's key, the serial proxy."""
    known = d / "known_hosts"
    known.write_text(f"{HOST} {host_key.with_suffix('.pub').read_text().split(' ', 2)[0]} "
                     f"{host_key.with_suffix('.pub').read_text().split(' ', 2)[1]}\n")
    proxy = shlex.join([sys.executable, str(SERIALPIPE), "--connect",
                        str(d / "ssh.sock"), str(d / "control.sock")])
    conf = d / "ssh_config"
    conf.write_text(f"Host {HOST}\n"
                    f"  HostKeyAlias {HOST}\n"
                    f"  UserKnownHostsFile {known}\n"
                    "  GlobalKnownHostsFile /dev/null\n"
                    f"  IdentityFile {client_key}\n"
                    "  IdentitiesOnly yes\n"
                    f"  ProxyCommand {proxy}\n"
                    "  Compression yes\n"  # the serial line moves ~15 KB/s under TCG
                    "  ServerAliveInterval 60\n"
                    "  ServerAliveCountMax 5\n")
    return conf


def _serial_argv(d: Path) -> list[str]:
    """The console (ttyS0, logged), the ssh line (ttyS1), an unused ttyS2 (IRQ 4, com1's:
    Xen's under Xen), the control line (ttyS3) and the monitor (power cycle)."""
    return ["-chardev", f"socket,id=con,path={d / 'console.sock'},server=on,wait=off,"
                        f"logfile={d / 'console.log'}",
            "-serial", "chardev:con",
            "-chardev", f"socket,id=sshline,path={d / 'ssh.sock'},server=on,wait=off",
            "-serial", "chardev:sshline",
            "-serial", "null",
            "-chardev", f"socket,id=control,path={d / 'control.sock'},server=on,wait=off",
            "-serial", "chardev:control",
            "-monitor", f"unix:{d / 'monitor.sock'},server=on,wait=off"]


@contextmanager
def _run(d: Path, argv: list[str], conf: Path) -> Iterator[Box]:
    """QEMU with *argv*, until ssh answers; stopped afterwards."""
    qemu = pexpect.spawn(argv[0], argv[1:], timeout=None, logfile=open(d / "qemu.log", "wb"),  # noqa: SIM115
                         preexec_fn=proc.die_with_parent())
    box = Box(d, qemu, conf)
    try:
        _wait_up(box)
        yield box
    finally:
        proc.stop_group(qemu.pid, qemu.isalive, grace=30)
        qemu.close(force=True)
        qemu.logfile.close()


def _qemu() -> str:
    return shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"


@contextmanager
def running_box(d: Path, kernel: Path, root: Path, memory: int = 1024) -> Iterator[Box]:
    """Start a test box in *d* (QEMU TCG, *kernel* booted directly, the Debian root archive
    *root* with sshd as its initramfs), wait until ssh answers, and stop it afterwards."""
    d.mkdir(parents=True, exist_ok=True)
    host_key, client_key = _keys(d)
    initrd = d / "initrd.cpio.gz"
    with open(initrd, "wb") as out:
        for part in (root, _overlay(d, host_key, client_key)):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    conf = _ssh_config(d, host_key, client_key)
    argv = [_qemu(), "-accel", "tcg", "-machine", "q35", "-m", str(memory), "-display", "none",
            "-no-user-config", "-nodefaults", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 rdinit=/init panic=5", *_serial_argv(d)]
    with _run(d, argv, conf) as box:
        yield box


# ------------------------------------------------------------------- the disk-booted box
GRUB_DEFAULTS = f"""# xenpipe test box: the known-good entry by default, GRUB on the serial console
GRUB_DEFAULT={KNOWN_ID}
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX=""
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""
# grub-mkconfig's own Linux and Xen entries (every kernel in /boot) stay out: the box's menu
# is the known-good entry and what `doit install` adds
GRUB_OFF = ("10_linux", "20_linux_xen", "30_os-prober", "30_uefi-firmware")


def known_entry(release: str) -> str:
    """The known-good menu entry: the box's own Debian kernel, its root on the disk."""
    return (f"menuentry '{KNOWN_TITLE}' --id {KNOWN_ID} {{\n"
            f"\tlinux /boot/vmlinuz-{release} root=/dev/sda1 rw console=ttyS0,115200 "
            "init=/sbin/xenpipe-init panic=5\n"
            f"\tinitrd /boot/initrd.img-{release}\n}}\n")


def _unpack(archive: Path, tree: Path) -> None:
    tree.mkdir(parents=True)
    proc.run(["sh", "-c", 'gzip -dc "$1" | cpio -idm --quiet --no-absolute-filenames', "sh",
              archive], cwd=tree, error=BootError, what=f"unpacking {archive}")


def _dom0_root(tree: Path, dest: Path, release: str, log: Path) -> None:
    """The root dom0 runs from (MKINITRD): *tree* without /boot, /etc (the box's own, at
    mkinitrd time) and the Debian kernel's modules, packed by the guest boots' own packer."""
    aside = dest.with_name("aside")
    aside.mkdir()
    moved: list[Path] = []
    try:
        for p in (tree / "boot", tree / "etc", tree / "usr/lib/modules" / release):
            p.rename(aside / str(len(moved)))
            moved.append(p)
        rootfs.pack(tree, dest, log)
    finally:
        for n, p in enumerate(moved):
            (aside / str(n)).rename(p)
        aside.rmdir()


def disk_image(d: Path, root: Path, host_key: Path, client_key: Path,
               xen: Path) -> tuple[Path, str]:
    """The box's disk (raw, MBR, one ext4 partition): the Debian root with its own kernel,
    GRUB 2 i386-pc in the MBR (the disk boot's grub-mkimage + boot.img), a grub.cfg with the
    known-good entry as default and grub-mkconfig's /etc/grub.d for the box's update-grub,
    Debian's Xen (*xen*) in /boot as the distribution puts it there. Returns the image and
    the known-good kernel's release. *root*: the disk box's root archive."""
    log = d / "disk.log"
    tree = d / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    _unpack(root, tree)
    try:
        kernels = sorted((tree / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise RuntimeError("the disk box's root has no kernel (linux-image-amd64)")
        release = kernels[-1].name.removeprefix("vmlinuz-")
        _box_files(tree, "sbin/xenpipe-init", host_key, client_key)
        (tree / "init").symlink_to("sbin/xenpipe-init")  # dom0's, from RAM (MKINITRD)
        _write(tree, {"etc/default/grub": (GRUB_DEFAULTS, 0o644),
                      "etc/grub.d/05_xenpipe_testbox": (
                          f"#!/bin/sh\ncat <<'EOF'\n{known_entry(release)}EOF\n", 0o755),
                      "usr/local/sbin/mkinitrd": (MKINITRD, 0o755)})
        for name in GRUB_OFF:
            if (tree / "etc/grub.d" / name).exists():
                (tree / "etc/grub.d" / name).chmod(0o644)
        _dom0_root(tree, d / "dom0-root.cpio.gz", release, log)
        (tree / DOM0_ROOT.lstrip("/")).parent.mkdir(parents=True)
        (d / "dom0-root.cpio.gz").rename(tree / DOM0_ROOT.lstrip("/"))
        shutil.copy2(xen, tree / "boot" / xen.name)
        grub2.install_files(tree)
        (tree / "boot/grub/grub.cfg").write_text(grub2.header(tree) + known_entry(release))
        env = tree / "boot/grub/grubenv"
        for args in (["create"], ["set", f"saved_entry={KNOWN_ID}"]):
            proc.run(["grub-editenv", env, *args], error=BootError, what="grub-editenv")
        image = d / "disk.img"
        make_image(tree, image, Layout(size_mb=DISK_MB, fstype="ext4"), log,
                   grub2.boot_sectors(d, log))
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return image, release


DISK_MB = 2048


@contextmanager
def running_disk_box(d: Path, xen: Path, root: Path, devices: Sequence[str] = (),
                     memory: int = 2048) -> Iterator[Box]:
    """Start a test box in *d* that boots from its own disk through GRUB 2 (its known-good
    entry first), with the [boot] *devices* of a config (NICs on QEMU's internal hub, the
    IOMMU); wait until ssh answers; stop it afterwards. ``box.image`` is the disk as built,
    ``box.disk`` the qcow2 overlay the box writes."""
    d.mkdir(parents=True, exist_ok=True)
    host_key, client_key = _keys(d)
    image, release = disk_image(d, root, host_key, client_key, xen)
    disk = overlay(image, d / "disk.qcow2", d / "disk.log")
    conf = _ssh_config(d, host_key, client_key)
    argv = [_qemu(), "-accel", "tcg", "-machine", "q35", "-cpu", bootqemu.CPU, "-m", str(memory),
            "-display", "none", "-no-user-config", "-nodefaults", *drive_argv(disk),
            *_serial_argv(d), *bootqemu.hubports(devices)]
    for dev in devices:
        argv += ["-device", dev]
    with _run(d, argv, conf) as box:
        box.known_release = release
        yield box


def _wait_up(box: Box) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while UP not in box.console():
        if not box.qemu.isalive():
            raise RuntimeError(f"QEMU exited ({box.qemu.exitstatus}): see {box.dir}/qemu.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test box did not boot: see {box.console_log}")
        time.sleep(1)
    ssh = box.ssh()
    while not ssh.reachable(timeout=120):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test box's sshd did not answer: see {box.console_log}")
        time.sleep(2)
