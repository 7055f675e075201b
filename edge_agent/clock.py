"""Time for the whole agent: one injectable clock, and whether the system clock is trusted.

Every part that stamps, schedules or waits takes a `Clock` from the agent instead of asking
the system, so tests (and the soak bench) can move time forward without waiting it out:
wall time (`now`) labels readings, messages and evidence; `monotonic` measures durations,
which must not jump when NTP steps the wall clock; `wait` sleeps on this clock's terms and
is cut short by a stop event.

Is the system clock synchronised? Evidence needs a trusted time, so every message says. The
kernel knows: adjtimex() reports TIME_ERROR (or the STA_UNSYNC flag) while no NTP/PTP
daemon disciplines the clock. This works with chrony, ntpd and systemd-timesyncd alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    """What the agent's parts ask of time."""

    def now(self) -> datetime:
        """Wall-clock time, UTC and timezone-aware: for labels, schedules and figures."""
        ...

    def monotonic(self) -> float:
        """Seconds that never jump: for durations, cooldowns and tickers."""
        ...

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Sleep `seconds` of this clock or until `stop` is set; True when stopped."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(max(0.0, seconds))


class SkippingClock:
    """Real time that can be moved forward on purpose (tests, benches).

    `skip(s)` moves both wall and monotonic time on by `s` seconds at once and wakes every
    `wait`, so a test can pass a 60-s window without spending 60 s. `step_wall(s)` moves only
    the wall clock, as NTP does when it corrects a box with no battery clock.
    """

    _POLL_S = 0.05

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._offset = 0.0  # added to both clocks
        self._wall_offset = 0.0  # added to the wall clock only

    def now(self) -> datetime:
        with self._lock:
            extra = self._offset + self._wall_offset
        return datetime.now(timezone.utc) + timedelta(seconds=extra)

    def monotonic(self) -> float:
        with self._lock:
            return time.monotonic() + self._offset

    def skip(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds
            self._lock.notify_all()

    def step_wall(self, seconds: float) -> None:
        with self._lock:
            self._wall_offset += seconds
            self._lock.notify_all()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        deadline = self.monotonic() + max(0.0, seconds)
        while not stop.is_set():
            left = deadline - self.monotonic()
            if left <= 0:
                return False
            with self._lock:  # a skip wakes us; the stop event is polled
                self._lock.wait(min(left, self._POLL_S))
        return True


SYSTEM_CLOCK = SystemClock()

STEP_THRESHOLD_S = 2.0  # wall time that moved this much more or less than monotonic time was stepped


@dataclass(frozen=True)
class ClockStep:
    """The wall clock jumped by `seconds` (positive: forward) between `before` and `after`."""

    seconds: float
    before: datetime
    after: datetime

    def to_json(self) -> dict[str, object]:
        return {"seconds": round(self.seconds, 3), "before": self.before.isoformat(), "after": self.after.isoformat()}


class ClockSteps:
    """Wall-clock steps seen by the core (NTP correcting a box with no battery clock).

    Kept for the status (count and the last one) and for evidence: each bundle's manifest
    carries the steps seen since the previous bundle, so a time on it can be judged.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self._last: ClockStep | None = None
        self._unreported: list[ClockStep] = []

    def record(self, step: ClockStep) -> None:
        with self._lock:
            self.count += 1
            self._last = step
            self._unreported = [*self._unreported[-99:], step]

    def take_unreported(self) -> list[dict[str, object]]:
        """The steps not yet put in a bundle (and forget them)."""
        with self._lock:
            out, self._unreported = [s.to_json() for s in self._unreported], []
        return out

    def status(self) -> dict[str, object]:
        with self._lock:
            return {"steps": self.count, "last_step": self._last.to_json() if self._last else None}


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
    """The system's wall-clock time, UTC; parts of the agent ask their `Clock` instead."""
    return datetime.now(timezone.utc)
