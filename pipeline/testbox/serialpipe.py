"""ssh over a serial line, both ends (stdlib only: it also runs inside the test box).

In the box: ``serialpipe.py /dev/ttyS1 /dev/ttyS3`` sets the line raw and, while idle, says
READY on it every half second. The host's ssh runs ``serialpipe.py --connect <QEMU's unix
socket> <control socket>`` as its ProxyCommand: it waits for READY, sends HELLO, waits for
GO, then pumps bytes both ways. On HELLO the box starts ``sshd -i`` on the line and says GO
with a session number; when ssh is done the proxy says ``bye <n>`` on the control line (the
third serial port: a serial line has no EOF), the box ends that sshd and is idle again.
The handshake keeps sessions apart: QEMU drops what the box writes while no one is
connected, and a session's stray bytes are skipped while the box looks for HELLO.

``serialpipe.py --read <socket>``: the console (QEMU's first serial line) to stdout;
``serialpipe.py --monitor <socket> <command>``: one command to QEMU's monitor (power cycle).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty

HELLO = b"\nxenpipe-serial-hello-4f1c9e\n"
READY = b"\nxenpipe-serial-ready-4f1c9e\n"
GO = b"\nxenpipe-serial-go-4f1c9e\n"
SSHD = ("/usr/sbin/sshd", "-i", "-e")


def _raw(line: str) -> int:
    fd = os.open(line, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fd


def _byes(line: str, current: list[tuple[int, subprocess.Popen[bytes] | None]]) -> None:
    """The control line: ``bye <n>`` ends session n's sshd (a serial line has no EOF, so sshd
    cannot see that the client left)."""
    fd, buf = _raw(line), b""
    while True:
        buf += os.read(fd, 64)
        *lines, buf = buf.split(b"\n")
        for ln in lines:
            n, child = current[0]
            if ln.strip() == f"bye {n}".encode() and child is not None:
                child.terminate()


def box(line: str, control: str) -> None:
    """The box's end: one ``sshd -i`` per HELLO, forever."""
    fd = _raw(line)
    current: list[tuple[int, subprocess.Popen[bytes] | None]] = [(0, None)]
    threading.Thread(target=_byes, args=(control, current), daemon=True).start()
    session = 0
    while True:
        seen = b""
        while not seen.endswith(HELLO):
            os.write(fd, READY)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and not seen.endswith(HELLO):
                if select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    seen = (seen + os.read(fd, 1))[-len(HELLO):]
        session += 1
        child = subprocess.Popen(SSHD, stdin=fd, stdout=fd)
        current[0] = (session, child)
        os.write(fd, GO + f"{session}\n".encode())
        child.wait()
        current[0] = (session, None)
        print(f"sshd session {session} ended at {time.time():.0f}", flush=True)


def connect(path: str, control: str, timeout: float = 330.0) -> None:
    """The host's end (ssh's ProxyCommand): handshake, pump, then ``bye`` on the control
    line. ssh sends its ProxyCommand SIGHUP when it is done: the bye must still go out."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    session = _connect(path, timeout)
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(control)
        c.sendall(f"bye {session}\n".encode())
        time.sleep(0.2)


def _connect(path: str, timeout: float) -> int:
    """Handshake, then stdin/stdout <-> the socket until either side is done; the session
    number the box gave."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    deadline = time.monotonic() + timeout
    buf = b""
    for marker, then in ((READY, HELLO), (GO, b"")):
        while marker not in buf:
            if time.monotonic() > deadline:
                sys.exit(f"serialpipe: no {marker.strip().decode()} from the box on {path}")
            if select.select([s], [], [], 1.0)[0]:
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit(f"serialpipe: {path} closed")
                buf += chunk
        buf = buf[buf.index(marker) + len(marker):]
        if then:
            s.sendall(then)
    while b"\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"serialpipe: {path} closed")
        buf += chunk
    number, _, buf = buf.partition(b"\n")
    session = int(number)
    out, inp = sys.stdout.fileno(), sys.stdin.fileno()
    try:
        if buf:
            os.write(out, buf)
        while True:
            ready = select.select([s, inp], [], [])[0]
            if s in ready:
                chunk = s.recv(65536)
                if not chunk:
                    return session
                os.write(out, chunk)
            if inp in ready:
                data = os.read(inp, 65536)
                if not data:
                    return session  # ssh is done with the connection
                s.sendall(data)
    except OSError:  # ssh went away (a closed pipe): the session is over all the same
        return session


def read(path: str) -> None:
    """The console: what QEMU's serial socket says, to stdout, until it closes."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        while chunk := s.recv(65536):
            os.write(sys.stdout.fileno(), chunk)


def monitor(path: str, command: str) -> None:
    """One command to QEMU's human monitor."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        time.sleep(0.5)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--connect"]:
        connect(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["--read"]:
        read(sys.argv[2])
    elif sys.argv[1:2] == ["--monitor"]:
        monitor(sys.argv[2], " ".join(sys.argv[3:]))
    else:
        box(sys.argv[1], sys.argv[2])
