"""A real test box for ``[target]``: a QEMU VM (TCG) running a Debian root with the real
OpenSSH ``sshd``, reached without any network: the VM's second serial line is a unix socket
(``-chardev socket``), the host's ssh reaches it through ``ProxyCommand`` (:mod:`.serialpipe`)
and the VM runs ``sshd -i`` (inetd style) on that line, one connection at a time.

The root is the dom0 userland of ``pipeline.boot.rootfs`` plus ``openssh-server``, built once
by debootstrap into ``<cache>/box-ws``; a small second archive adds /init, a fresh host key
and the test's authorized key. The host key is pinned in the test's ``known_hosts``
(``StrictHostKeyChecking`` stays at ssh's default). The kernel is the real dom0 build of
``real_kernel``; the first serial line is the console (QEMU logs it to ``console.log``), and
QEMU's monitor socket takes ``system_reset``. The one stand-in: the box's init is a small
script, not systemd, so a ``systemctl`` shim does ``systemctl reboot`` (the reboot system
call).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.boot import rootfs
from pipeline.target import Ssh
from pipeline.workspace import Workspace

from . import serialpipe
from .realkernel import cache_dir, rootfs_dir

PACKAGES = (*rootfs.PACKAGES, "openssh-server")
HOST = "testbox"  # the name ssh knows the box by (HostKeyAlias, known_hosts)
BOOT_TIMEOUT = 900.0  # a limit, not a measurement: TCG boots on a loaded machine are slow

INIT = """#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /run/sshd /var/log
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run && mkdir -p /run/sshd
hostname testbox
echo "xenpipe-testbox: $(uname -r) up"
python3 /usr/local/sbin/xenpipe-serial-sshd /dev/ttyS1 /dev/ttyS2 >/var/log/serial-sshd.log 2>&1 &
while :; do sleep 3600; done
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
    qemu: subprocess.Popen[bytes]
    ssh_config: Path

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def monitor(self) -> Path:
        return self.dir / "monitor.sock"

    def target_toml(self) -> str:
        """The ``[target]`` table for a config."""
        reset = [sys.executable, str(Path(serialpipe.__file__)), "--monitor", str(self.monitor),
                 "system_reset"]
        console = [sys.executable, str(Path(serialpipe.__file__)), "--read",
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


def box_root() -> Path:
    """The packed Debian root with openssh-server (built once per cache: debootstrap)."""
    ws = Workspace(rootfs_dir(cache_dir(), "box"))
    return rootfs.build(ws, packages=PACKAGES).image


def _keys(d: Path) -> tuple[Path, Path]:
    """A fresh host key and a fresh client key for this box."""
    for name in ("host_key", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"testbox-{name}",
                        "-f", str(d / name)], check=True)
    return d / "host_key", d / "id_ed25519"


def _overlay(d: Path, host_key: Path, client_key: Path) -> Path:
    """The per-box archive: /init, sshd's config and host key, root's authorized key."""
    tree = d / "overlay"
    files = {
        "init": (INIT, 0o755),
        "etc/ssh/sshd_config.d/xenpipe-testbox.conf": (SSHD_CONF, 0o644),
        "etc/ssh/xenpipe_host_ed25519_key": (host_key.read_text(), 0o600),
        "etc/ssh/xenpipe_host_ed25519_key.pub": (host_key.with_suffix(".pub").read_text(),
                                                  0o644),
        "root/.ssh/authorized_keys": (client_key.with_suffix(".pub").read_text(), 0o600),
        "usr/local/sbin/xenpipe-serial-sshd": (Path(serialpipe.__file__).read_text(), 0o755),
        "usr/local/sbin/systemctl": (SYSTEMCTL, 0o755),
    }
    for rel, (text, mode) in files.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)
    (tree / "root").chmod(0o700)
    (tree / "root/.ssh").chmod(0o700)
    out = d / "overlay.cpio.gz"
    rootfs.pack(tree, out, d / "pack.log")
    return out


def _ssh_config(d: Path, host_key: Path, client_key: Path) -> Path:
    """An ssh_config for the box: the pinned host key, the test's key, the serial proxy."""
    known = d / "known_hosts"
    known.write_text(f"{HOST} {host_key.with_suffix('.pub').read_text().split(' ', 2)[0]} "
                     f"{host_key.with_suffix('.pub').read_text().split(' ', 2)[1]}\n")
    proxy = shlex.join([sys.executable, str(Path(serialpipe.__file__)), "--connect",
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


@contextmanager
def running_box(d: Path, kernel: Path, memory: int = 1024) -> Iterator[Box]:
    """Start a test box in *d* (QEMU TCG, the real kernel, the Debian root with sshd), wait
    until ssh answers, and stop it afterwards."""
    d.mkdir(parents=True, exist_ok=True)
    host_key, client_key = _keys(d)
    initrd = d / "initrd.cpio.gz"
    with open(initrd, "wb") as out:
        for part in (box_root(), _overlay(d, host_key, client_key)):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    conf = _ssh_config(d, host_key, client_key)
    argv = [shutil.which("qemu-system-x86_64") or "qemu-system-x86_64", "-accel", "tcg",
            "-machine", "q35", "-m", str(memory), "-display", "none", "-no-user-config",
            "-nodefaults", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 rdinit=/init panic=5",
            "-chardev", f"socket,id=con,path={d / 'console.sock'},server=on,wait=off,"
                        f"logfile={d / 'console.log'}",
            "-serial", "chardev:con",
            "-chardev", f"socket,id=sshline,path={d / 'ssh.sock'},server=on,wait=off",
            "-serial", "chardev:sshline",
            "-chardev", f"socket,id=control,path={d / 'control.sock'},server=on,wait=off",
            "-serial", "chardev:control",
            "-monitor", f"unix:{d / 'monitor.sock'},server=on,wait=off",
            "-net", "none"]
    with open(d / "qemu.log", "wb") as log:
        qemu = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    box = Box(d, qemu, conf)
    try:
        _wait_up(box)
        yield box
    finally:
        qemu.terminate()
        try:
            qemu.wait(timeout=30)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()


def _wait_up(box: Box) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while "xenpipe-testbox:" not in box.console():
        if box.qemu.poll() is not None:
            raise RuntimeError(f"QEMU exited ({box.qemu.returncode}): see {box.dir}/qemu.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test box did not boot: see {box.console_log}")
        time.sleep(1)
    ssh = box.ssh()
    while not ssh.reachable(timeout=120):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test box's sshd did not answer: see {box.console_log}")
        time.sleep(2)
