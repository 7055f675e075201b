"""Is the system clock synchronised? Evidence needs a trusted time, so every message says.

The kernel knows: adjtimex() reports TIME_ERROR (or the STA_UNSYNC flag) while no NTP/PTP
daemon disciplines the clock. This works with chrony, ntpd and systemd-timesyncd alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from datetime import datetime, timezone

_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def clock_synchronized() -> bool | None:
    """True/False from the kernel; None where it cannot be asked (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
