"""systemd's notify protocol (READY=1, WATCHDOG=1, STATUS=...): one datagram to $NOTIFY_SOCKET.

No-op when not started by systemd, so the same code runs on a laptop.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError:
        return False


def watchdog_interval_s() -> float | None:
    """Half of WatchdogSec, the interval at which WATCHDOG=1 must be sent; None if unset."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
