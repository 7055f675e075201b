"""The link to the broker as the box sees it: for boxes on 4G behind a carrier's NAT.

Such a box sees the broker come and go, and nobody at the bureau can see its modem. The
retained status therefore carries (as `components.uplink.link`):

- `reconnects_1h`: connections made in the last hour after a lost one (the first connection
  of the process is not a reconnect), and `failed_connects_1h`, attempts that got no
  connection;
- `rtt_ms`: the round trip of the last MQTT keepalive, PINGREQ to PINGRESP, with `rtt_at`
  (wall time) and `pings_unanswered` (connections that died with a PINGREQ unanswered: the
  usual sign of a NAT that dropped the mapping silently). paho sends a PINGREQ only after
  `keepalive_s` without traffic, so on a busy link the figure is as old as `rtt_at` says;
- `bytes_sent_today` / `bytes_received_today` (the site's local day, `day`): what paho wrote
  to and read from the connection, i.e. MQTT packets. The carrier bills more: TLS records
  (some 30 bytes each, a few kB per handshake), TCP/IP headers and retransmissions;
- `connected_s` (this connection's age, 0 while down) and `connected_1h_s` (seconds of the
  last hour the link was up).

Fed by the uplink thread; read by the status from any thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

HOUR_S = 3600.0


class LinkQuality:
    """Counters and timings of the broker link. Thread-safe."""

    def __init__(self, timezone: str = "UTC", *, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.tz = ZoneInfo(timezone)
        self.monotonic = monotonic
        self.wall = wall
        self._lock = threading.Lock()
        self._ever_connected = False
        self._reconnects: deque[float] = deque()
        self._failures: deque[float] = deque()
        self._up_since: float | None = None  # monotonic, while connected
        self._up_spans: deque[tuple[float, float]] = deque()  # closed (start, end) spans, monotonic
        self._ping_at: float | None = None  # monotonic, while a PINGREQ waits for its PINGRESP
        self.rtt_ms: float | None = None
        self.rtt_at: float | None = None  # wall time of the last PINGRESP
        self.pings_unanswered = 0
        self._day = ""
        self._day_end = 0.0  # wall time at which the local day ends
        self.bytes_sent_today = 0
        self.bytes_received_today = 0
        self._roll_day(self.wall())

    # --- events (the uplink thread) -----------------------------------------------------------

    def connected(self) -> None:
        mono = self.monotonic()
        with self._lock:
            if self._ever_connected:
                self._reconnects.append(mono)
            self._ever_connected = True
            self._up_since = mono
            self._ping_at = None

    def disconnected(self) -> None:
        """The connection is gone (idempotent: paho and the uplink may both say so)."""
        mono = self.monotonic()
        with self._lock:
            if self._up_since is None:
                return
            self._up_spans.append((self._up_since, mono))
            self._up_since = None
            if self._ping_at is not None:
                self.pings_unanswered += 1
                self._ping_at = None

    def connect_failed(self) -> None:
        with self._lock:
            self._failures.append(self.monotonic())

    def ping_sent(self) -> None:
        with self._lock:
            self._ping_at = self.monotonic()

    def pong_received(self) -> None:
        mono = self.monotonic()
        with self._lock:
            if self._ping_at is None:
                return
            self.rtt_ms = round((mono - self._ping_at) * 1000.0, 1)
            self.rtt_at = self.wall()
            self._ping_at = None

    def ping_pending(self) -> bool:
        return self._ping_at is not None

    def sent(self, count: int) -> None:
        if count > 0:
            with self._lock:
                self._roll_day(self.wall())
                self.bytes_sent_today += count

    def received(self, count: int) -> None:
        if count > 0:
            with self._lock:
                self._roll_day(self.wall())
                self.bytes_received_today += count

    # --- reading ---------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        mono = self.monotonic()
        with self._lock:
            self._roll_day(self.wall())
            self._trim(mono)
            up_1h = sum(end - max(start, mono - HOUR_S) for start, end in self._up_spans)
            if self._up_since is not None:
                up_1h += mono - max(self._up_since, mono - HOUR_S)
            return {
                "reconnects_1h": len(self._reconnects),
                "failed_connects_1h": len(self._failures),
                "rtt_ms": self.rtt_ms,
                "rtt_at": self.rtt_at,
                "pings_unanswered": self.pings_unanswered,
                "day": self._day,
                "bytes_sent_today": self.bytes_sent_today,
                "bytes_received_today": self.bytes_received_today,
                "connected_s": 0.0 if self._up_since is None else round(mono - self._up_since, 1),
                "connected_1h_s": round(min(up_1h, HOUR_S), 1),
            }

    def _trim(self, mono: float) -> None:
        horizon = mono - HOUR_S
        for times in (self._reconnects, self._failures):
            while times and times[0] < horizon:
                times.popleft()
        while self._up_spans and self._up_spans[0][1] < horizon:
            self._up_spans.popleft()

    def _roll_day(self, wall: float) -> None:
        if wall < self._day_end:
            return
        local = datetime.fromtimestamp(wall, self.tz)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), self.tz)
        self._day = local.date().isoformat()
        self._day_end = midnight.timestamp()
        self.bytes_sent_today = 0
        self.bytes_received_today = 0
