"""The HJ 212-2017 uplink: one TCP connection to the bureau's platform, on its own thread.

- Real-time data (CN 2011) from the latest readings, every RtdInterval, only while
  connected: a missed real-time value is worthless later, the minute data covers the gap.
- Minute/hour/day data (2051/2061/2031) go into a durable outbox first, encoded once with
  their QN and original DataTime, and leave it only when the platform has answered (9014),
  or, with `request_ack: false`, once written to the socket. Oldest first.
- Platform requests are answered as HJ 212-2017 wants: 9011 (request answer), the data,
  9012 (execution result); 9013 for notifications.
- Requests for past minute/hour/day data (2051/2061/2031 with BeginTime/EndTime, in the
  platform's time zone) are answered from the on-site archive (edge_agent/archive.py): one
  packet per archived block whose DataTime is in the range (split with PNUM/PNO if long),
  then 9012 ExeRtn=1, or ExeRtn=100 (no data) when the range holds none. Without an archive
  they are refused (QnRtn=2). Minute records are rebuilt from the minute telemetry rows
  (those holding the closed minute block, i.e. telemetry.interval_s 60, the default), hour
  and day records from the archive's `block` rows; values are as archived (3 decimals).
- Connection refused, a platform that never answers, garbage and half-packets: logged, the
  connection remade with exponential back-off and jitter; the backlog stays on disk.

One thread owns the socket, so no locks guard it; producers only touch the outbox and the
latest-readings map.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from drivers.types import Reading
from edge_agent.archive import BLOCK, TELEMETRY, Archive
from edge_agent.clock import utc_now
from edge_agent.config.hj212 import Hj212Config
from edge_agent.hj212.codec import (
    MAX_SEGMENT,
    CpItem,
    DecodeError,
    EncodeError,
    Packet,
    Reassembler,
    StreamDecoder,
    decode,
    encode_split,
    make_flag,
)
from edge_agent.hj212.mapping import QUANTITY_CODES, MappingOptions, period_cp, realtime_cp
from edge_agent.measures.figures import ClosedBlock
from edge_agent.outbox import Outbox, StorageFull
from edge_agent.types import Measure

log = logging.getLogger(__name__)

Now = Callable[[], datetime]  # the agent clock's wall time

# HJ 212-2017 answer codes.
QN_READY, QN_REFUSED, QN_BAD_PW, QN_BAD_MN, QN_BAD_CRC = "1", "2", "3", "4", "9"
EXE_OK, EXE_FAILED, EXE_BAD_REQUEST, EXE_NO_DATA = "1", "2", "3", "100"
RTD_INTERVAL_RANGE = (30, 3600)  # what a platform may set with CN 1062 (seconds); UNCONFIRMED
_POLL_S = 0.2  # longest sleep of the connection loop: new outbox rows leave within this


@dataclass(frozen=True)
class _InFlight:
    row_id: int
    qn: str
    payload: bytes
    sent_at: float
    tries: int


class _LinkLost(Exception):
    """The connection is unusable; says why, and whether it delivered anything before."""

    def __init__(self, reason: str, healthy: bool):
        super().__init__(reason)
        self.healthy = healthy


class Hj212Uplink:
    """HJ 212 client. Feed it `on_reading` and `on_period`; it does the rest on its thread."""

    name = "hj212"
    max_segment = MAX_SEGMENT  # longest data segment sent whole; longer ones are split (PNUM/PNO)

    def __init__(self, config: Hj212Config, data_dir: Path, clock: Now = utc_now, *, fsync: bool = True,
                 archive: Archive | None = None):
        self.cfg = config
        self._clock = clock
        self._archive = archive  # read only: past data for the platform's 2051/2061/2031 requests
        self._pw = config.password()
        self._opts = MappingOptions(
            dust_unit=config.dust_unit,
            send_flags=config.send_flags,
            noise_suffix=config.noise_suffix,
            codes=None if config.codes is None else frozenset(config.codes),
            timezone=config.timezone,
        )
        self._tz = ZoneInfo(config.timezone)
        self._outbox_args = (Path(data_dir) / config.outbox_file, config.outbox_max_mb * 1024 * 1024, fsync)
        self.outbox = self._open_outbox()
        self._outbox_open = True
        self._undeleted: set[int] = set()  # delivered, but a full disk kept them from being deleted
        self._lock = threading.Lock()
        self._latest: dict[str, Reading] = {}
        self._last_qn = 0
        self._rtd_on = config.realtime
        self._rtd_interval = float(config.rtd_interval_s)
        self._offset = timedelta(0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        # health
        self._connected = False
        self._connects = 0
        self._connect_failures = 0
        self._sent: dict[str, int] = {}
        self._acked = 0
        self._resent = 0
        self._decode_errors: dict[str, int] = {}
        self._last_error: str | None = None
        self._last_ack: datetime | None = None
        self._past_requests = 0
        self._past_records = 0

    # --- producers (any thread) -------------------------------------------------------------

    def on_reading(self, reading: Reading) -> None:
        """Keep the latest value of each quantity for the next real-time packet."""
        if reading.quantity not in QUANTITY_CODES:
            return
        with self._lock:
            old = self._latest.get(reading.quantity)
            if old is None or reading.time >= old.time:
                self._latest[reading.quantity] = reading

    def on_block(self, block: ClosedBlock) -> str | None:
        """A closed block from the core's figures: see on_period."""
        return self.on_period(block.period_s, block.end, block.measures)

    def on_period(self, period_s: int, end: datetime, measures: list[Measure]) -> str | None:
        """Store the record of one closed block durably; returns its QN, or None if nothing to send.

        60 s (or minute_interval_min) → 2051, 3600 → 2061, 86400 → 2031. Never raises.
        """
        try:
            cn = self._period_cn(period_s)
            if cn is None:
                return None
            cp = period_cp(measures, period_s, self._label(period_s, end), self._opts)
            if not cp:
                return None
            return self._store(cn, cp)
        except Exception:
            log.exception("hj212: could not store the %d s record ending %s", period_s, end)
            return None

    def _label(self, period_s: int, end: datetime) -> datetime:
        """DataTime of the block [end - period, end): its start or its end, as configured."""
        return end - timedelta(seconds=period_s) if self.cfg.data_time_label == "start" else end

    def _period_cn(self, period_s: int) -> str | None:
        if period_s == 3600:
            return "2061" if self.cfg.send_hourly else None
        if period_s == 86400:
            return "2031" if self.cfg.send_daily else None
        if period_s == self.cfg.minute_interval_min * 60:
            return "2051" if self.cfg.send_minute else None
        return None

    def _store(self, cn: str, cp: tuple[CpItem, ...]) -> str:
        qn = self._new_qn()
        packet = self._packet(cn, cp, qn=qn, ack=self.cfg.request_ack)
        payload = b"".join(encode_split(packet, self.max_segment))
        self.outbox.put(f"{cn}/{qn}", payload, kind="telemetry")
        return qn

    # --- lifecycle --------------------------------------------------------------------------

    def _delete(self, row_id: int) -> None:
        """A delivered record leaves the outbox; a full disk keeps it (not re-sent) until it can."""
        try:
            self.outbox.ack([row_id])
        except StorageFull as exc:
            if not self._undeleted:
                log.error("hj212: delivered records cannot be deleted from the outbox (disk full): %s", exc)
            self._undeleted.add(row_id)

    def _retry_deletes(self) -> None:
        if not self._undeleted:
            return
        try:
            self.outbox.ack(sorted(self._undeleted))
        except StorageFull:
            return
        log.info("hj212: %d delivered record(s) deleted now that the disk has room", len(self._undeleted))
        self._undeleted.clear()

    def _open_outbox(self) -> Outbox:
        path, cap, fsync = self._outbox_args
        return Outbox(path, cap, fsync=fsync)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        if not self._outbox_open:  # started again after a stop (the supervisor's restart)
            self.outbox = self._open_outbox()
            self._outbox_open = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hj212-uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.cfg.connect_timeout_s + 2)
            self._thread = None
        self.outbox.close()
        self._outbox_open = False

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        with self._lock:
            rtd_on, rtd_interval, offset = self._rtd_on, self._rtd_interval, self._offset
        return {
            "connected": self._connected,
            "platform": f"{self.cfg.host}:{self.cfg.port}",
            "mn": self.cfg.mn,
            "backlog": self.outbox.depth(),
            "backlog_bytes": self.outbox.bytes_used(),
            "dropped": self._dropped(),
            "sent": dict(self._sent),
            "acked": self._acked,
            "resent": self._resent,
            "connects": self._connects,
            "connect_failures": self._connect_failures,
            "decode_errors": dict(self._decode_errors),
            "last_error": self._last_error,
            "last_ack": self._last_ack.isoformat() if self._last_ack else None,
            "realtime": rtd_on,
            "rtd_interval_s": rtd_interval,
            "clock_offset_s": offset.total_seconds(),
            "past_data": {"requests": self._past_requests, "records_sent": self._past_records},
        }

    def _dropped(self) -> dict[str, int]:
        try:
            return {k: int(v["count"]) for k, v in self.outbox.dropped().items()}
        except sqlite3.Error:  # the outbox is closed after stop()
            return {}

    # --- the connection thread ------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.cfg.host, self.cfg.port), timeout=self.cfg.connect_timeout_s)
            except OSError as exc:
                self._connect_failures += 1
                self._note_error(f"connect to {self.cfg.host}:{self.cfg.port} failed: {exc}", attempt == 0)
                attempt += 1
                self._stop.wait(self._backoff(attempt))
                continue
            self._connects += 1
            self._connected = True
            log.info("hj212: connected to %s:%d", self.cfg.host, self.cfg.port)
            healthy = False
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.settimeout(self.cfg.connect_timeout_s)  # bounds a blocked send
                healthy = self._session(sock)
            except _LinkLost as exc:
                self._note_error(str(exc), True)
                healthy = exc.healthy
            except Exception:
                log.exception("hj212: bug in the connection loop; reconnecting")
            finally:
                self._connected = False
                try:
                    sock.close()
                except OSError:
                    pass
            attempt = 0 if healthy else attempt + 1
            if not self._stop.is_set():
                self._stop.wait(self._backoff(max(attempt, 1) if not healthy else 0))

    def _backoff(self, attempt: int) -> float:
        base = min(self.cfg.reconnect_max_s, self.cfg.reconnect_min_s * 2 ** min(attempt, 30))
        return base * self._rng.uniform(0.5, 1.0)

    def _note_error(self, text: str, loud: bool) -> None:
        self._last_error = text
        log.log(logging.WARNING if loud else logging.DEBUG, "hj212: %s", text)

    def _session(self, sock: socket.socket) -> bool:
        """Serve one connection until it fails or stop() is called. True if it delivered data."""
        decoder, parts = StreamDecoder(), Reassembler()
        inflight: _InFlight | None = None
        healthy = False
        next_rtd = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                rtd_on, rtd_interval = self._rtd_on, self._rtd_interval
            if rtd_on and now >= next_rtd:
                self._send_realtime(sock, healthy)
                next_rtd = now + rtd_interval
            if inflight is not None and now - inflight.sent_at >= self.cfg.ack_timeout_s:
                if inflight.tries > self.cfg.retries:
                    raise _LinkLost(f"no answer (9014) to QN {inflight.qn} after {inflight.tries} tries; "
                                    "reconnecting (set hj212.request_ack: false if this platform never "
                                    "answers data)", healthy)
                self._send(sock, inflight.payload, "resend", healthy)
                self._resent += 1
                inflight = replace(inflight, sent_at=now, tries=inflight.tries + 1)
            if inflight is None:
                self._retry_deletes()
                rows = [r for r in self.outbox.pending(1 + len(self._undeleted)) if r.row_id not in self._undeleted]
                if rows:
                    row = rows[0]
                    cn, _, qn = row.topic.partition("/")
                    self._send(sock, row.payload, cn, healthy)
                    if self.cfg.request_ack:
                        inflight = _InFlight(row.row_id, qn, row.payload, time.monotonic(), 1)
                    else:
                        self._delete(row.row_id)
                        self._acked += 1
                        healthy = True
                        continue
            wait = _POLL_S
            if rtd_on:
                wait = min(wait, max(0.0, next_rtd - now))
            readable, _, _ = select.select([sock], [], [], wait)
            if not readable:
                continue
            try:
                data = sock.recv(4096)
            except OSError as exc:
                raise _LinkLost(f"receive failed: {exc}", healthy) from None
            if not data:
                raise _LinkLost("platform closed the connection", healthy)
            for item in decoder.feed(data):
                if item.error is not None:
                    self._on_bad_frame(sock, item.raw, item.error, healthy)
                    continue
                assert item.packet is not None
                packet = parts.add(item.packet)
                if packet is None:
                    continue
                if packet.cn == "9014":
                    if inflight is not None and packet.qn == inflight.qn:
                        self._delete(inflight.row_id)
                        self._acked += 1
                        self._last_ack = self._clock()
                        inflight = None
                        healthy = True
                    else:
                        log.debug("hj212: data answer for unknown QN %s", packet.qn)
                    continue
                self._on_request(sock, packet, healthy)
        return healthy

    def _send(self, sock: socket.socket, data: bytes, what: str, healthy: bool) -> None:
        try:
            sock.sendall(data)
        except OSError as exc:
            raise _LinkLost(f"send failed ({what}): {exc}", healthy) from None
        self._sent[what] = self._sent.get(what, 0) + 1

    def _on_bad_frame(self, sock: socket.socket, raw: bytes, error: DecodeError, healthy: bool) -> None:
        n = self._decode_errors[error.kind] = self._decode_errors.get(error.kind, 0) + 1
        if n <= 5 or n % 100 == 0:
            log.warning("hj212: bad packet from platform (%s, #%d): %r", error, n, raw[:80])
        if error.kind != "bad_crc":
            return
        try:  # a request with a bad CRC is answered QnRtn=9 (HJ 212-2017), if we can read its QN
            packet = decode(raw, check_crc=False)
        except DecodeError:
            return
        if packet.qn and not packet.cn.startswith("9"):
            self._reply(sock, packet, "9011", (("QnRtn", QN_BAD_CRC),), healthy)

    # --- platform requests ------------------------------------------------------------------

    def _on_request(self, sock: socket.socket, req: Packet, healthy: bool) -> None:
        if req.cn.startswith("9"):
            log.debug("hj212: platform sent answer CN %s QN %s", req.cn, req.qn)
            return
        if req.qn is None:
            log.warning("hj212: platform command CN %s without QN ignored", req.cn)
            return
        if req.mn != self.cfg.mn:
            log.warning("hj212: platform command CN %s for MN %s, we are %s", req.cn, req.mn, self.cfg.mn)
            self._reply(sock, req, "9011", (("QnRtn", QN_BAD_MN),), healthy)
            return
        if req.pw != self._pw:
            log.warning("hj212: platform command CN %s with a wrong PW", req.cn)
            self._reply(sock, req, "9011", (("QnRtn", QN_BAD_PW),), healthy)
            return
        log.info("hj212: platform command CN %s QN %s %s", req.cn, req.qn, req.fields())
        handler = _HANDLERS.get(req.cn)
        if handler is None:
            self._reply(sock, req, "9011", (("QnRtn", QN_REFUSED),), healthy)
            return
        try:
            handler(self, sock, req, healthy)
        except EncodeError as exc:  # e.g. an echoed PolId we cannot put back on the wire
            log.warning("hj212: cannot answer CN %s QN %s: %s", req.cn, req.qn, exc)

    def _reply(self, sock: socket.socket, req: Packet, cn: str, item: CpItem, healthy: bool) -> None:
        self._answer(sock, req, cn, (item,), healthy)

    def _answer(self, sock: socket.socket, req: Packet, cn: str, cp: tuple[CpItem, ...], healthy: bool,
                *, st: str | None = None) -> None:
        packet = Packet(qn=req.qn, st=st or self.cfg.reply_st, cn=cn, pw=self._pw, mn=self.cfg.mn,
                        flag=make_flag(ack=False), cp=cp)
        for part in encode_split(packet, self.max_segment):
            self._send(sock, part, cn, healthy)

    def _get_time(self, sock: socket.socket, req: Packet, healthy: bool) -> None:
        self._answer(sock, req, "9011", ((("QnRtn", QN_READY),),), healthy)
        cp: list[CpItem] = []
        pol = req.get("PolId")
        if pol is not None:
            cp.append((("PolId", pol),))
        cp.append((("SystemTime", self._now().astimezone(self._tz).strftime("%Y%m%d%H%M%S")),))
        self._answer(sock, req, req.cn, tuple(cp), healthy, st=self.cfg.st)
        self._answer(sock, req, "9012", ((("ExeRtn", EXE_OK),),), healthy)

    def _set_time(self, sock: socket.socket, req: Packet, healthy: bool) -> None:
        if not self.cfg.allow_set_time:
            log.warning("hj212: platform asked to set the time; refused (hj212.allow_set_time is off)")
            self._answer(sock, req, "9011", ((("QnRtn", QN_REFUSED),),), healthy)
            return
        self._answer(sock, req, "9011", ((("QnRtn", QN_READY),),), healthy)
        try:
            wanted = datetime.strptime(req.get("SystemTime") or "", "%Y%m%d%H%M%S").replace(tzinfo=self._tz)
        except ValueError:
            self._answer(sock, req, "9012", ((("ExeRtn", EXE_BAD_REQUEST),),), healthy)
            return
        with self._lock:
            self._offset = wanted - self._clock()
        log.warning("hj212: platform set the uplink clock; offset now %.1f s", self._offset.total_seconds())
        self._answer(sock, req, "9012", ((("ExeRtn", EXE_OK),),), healthy)

    def _get_interval(self, sock: socket.socket, req: Packet, healthy: bool) -> None:
        self._answer(sock, req, "9011", ((("QnRtn", QN_READY),),), healthy)
        with self._lock:
            rtd = self._rtd_interval
        item = (("RtdInterval", f"{rtd:g}"),) if req.cn == "1061" else (
            ("MinInterval", str(self.cfg.minute_interval_min)),)
        self._answer(sock, req, req.cn, (item,), healthy, st=self.cfg.st)
        self._answer(sock, req, "9012", ((("ExeRtn", EXE_OK),),), healthy)

    def _set_interval(self, sock: socket.socket, req: Packet, healthy: bool) -> None:
        self._answer(sock, req, "9011", ((("QnRtn", QN_READY),),), healthy)
        key = "RtdInterval" if req.cn == "1062" else "MinInterval"
        try:
            value = int(req.get(key) or "")
        except ValueError:
            value = -1
        ok = False
        if req.cn == "1062" and RTD_INTERVAL_RANGE[0] <= value <= RTD_INTERVAL_RANGE[1]:
            with self._lock:
                self._rtd_interval = float(value)
            log.info("hj212: platform set RtdInterval to %d s", value)
            ok = True
        elif req.cn == "1064" and value == self.cfg.minute_interval_min:
            ok = True  # minute blocks come from the measures; only the configured length can be done
        else:
            log.warning("hj212: platform asked %s=%s; not possible here", key, req.get(key))
        self._answer(sock, req, "9012", ((("ExeRtn", EXE_OK if ok else EXE_BAD_REQUEST),),), healthy)

    def _start_realtime(self, sock: socket.socket, req: Packet, healthy: bool) -> None:
        self._answer(sock, req, "9011", ((("QnRtn", QN_READY),),), healthy)
        with self._lock:
            self._rtd_on = True

    def _stop_realtime(self, sock: socket.socket, req: Packet, healthy: bool) -> None:
        with self._lock:
            self._rtd_on = False
        if req.ack_wanted:
            self._answer(sock, req, "9013", (), healthy)

    def _past_data(self, sock: socket.socket, req: Packet, healthy: bool) -> None:
        """2051/2061/2031 with BeginTime/EndTime: 9011, one packet per archived record, 9012."""
        self._past_requests += 1
        if self._archive is None:
            log.warning("hj212: platform asked for past data (CN %s); no archive to answer from", req.cn)
            self._answer(sock, req, "9011", ((("QnRtn", QN_REFUSED),),), healthy)
            return
        self._answer(sock, req, "9011", ((("QnRtn", QN_READY),),), healthy)
        begin, end = self._platform_time(req.get("BeginTime")), self._platform_time(req.get("EndTime"))
        if begin is None or end is None or begin > end:
            log.warning("hj212: past-data request CN %s with BeginTime=%s EndTime=%s: not a time range",
                        req.cn, req.get("BeginTime"), req.get("EndTime"))
            self._answer(sock, req, "9012", ((("ExeRtn", EXE_BAD_REQUEST),),), healthy)
            return
        period_s = {"2051": self.cfg.minute_interval_min * 60, "2061": 3600, "2031": 86400}[req.cn]
        sent = 0
        try:
            for cp in self._archived_records(period_s, begin, end):
                self._answer(sock, req, req.cn, cp, healthy, st=self.cfg.st)
                sent += 1
        except sqlite3.Error as exc:
            log.error("hj212: cannot read the archive for past data CN %s: %s", req.cn, exc)
            self._past_records += sent
            self._answer(sock, req, "9012", ((("ExeRtn", EXE_FAILED),),), healthy)
            return
        self._past_records += sent
        log.info("hj212: past data CN %s %s..%s: %d record(s) sent", req.cn, req.get("BeginTime"),
                 req.get("EndTime"), sent)
        self._answer(sock, req, "9012", ((("ExeRtn", EXE_OK if sent else EXE_NO_DATA),),), healthy)

    def _platform_time(self, text: str | None) -> datetime | None:
        try:
            return datetime.strptime(text or "", "%Y%m%d%H%M%S").replace(tzinfo=self._tz)
        except ValueError:
            return None

    def _archived_records(self, period_s: int, begin: datetime, end: datetime) -> Iterator[tuple[CpItem, ...]]:
        """CP of each archived block whose DataTime is in [begin, end], oldest first. Read a
        day at a time, so that a long range does not sit in memory at once."""
        assert self._archive is not None
        shift = self._label(period_s, end) - end  # a block's DataTime minus its end: -period, or 0
        lo, hi = begin - shift, end - shift + timedelta(seconds=1)  # the ends of blocks labelled in range
        t = lo
        while t < hi:
            stop = min(t + timedelta(days=1), hi)
            for block_end, measures in self._archived_blocks(period_s, t, stop):
                label = self._label(period_s, block_end)
                if begin <= label <= end:
                    cp = period_cp(measures, period_s, label, self._opts)
                    if cp:
                        yield cp
            t = stop

    def _archived_blocks(self, period_s: int, start: datetime,
                         stop: datetime) -> Iterator[tuple[datetime, list[Measure]]]:
        """(end, figures) of the archived blocks of `period_s` ending in [start, stop): minute
        blocks from the minute telemetry, hour and day blocks from the `block` rows."""
        assert self._archive is not None
        if period_s < 3600:
            for when, body in self._archive.entries(TELEMETRY, start, stop):
                if body.get("figures") == "block":  # rolling figures are not the block's
                    yield when, _measures(body.get("measures"))
        else:
            for when, body in self._archive.entries(BLOCK, start, stop):
                if body.get("period_s") == period_s:
                    yield when, _measures(body.get("measures"))

    # --- packets ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        with self._lock:
            return self._clock() + self._offset

    def _new_qn(self) -> str:
        """QN: local time to the millisecond; bumped by 1 ms when two packets share one."""
        now = self._now().astimezone(self._tz)
        qn = int(now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}")
        with self._lock:
            qn = max(qn, self._last_qn + 1)
            self._last_qn = qn
        return f"{qn:017d}"

    def _packet(self, cn: str, cp: tuple[CpItem, ...], *, qn: str, ack: bool) -> Packet:
        return Packet(qn=qn, st=self.cfg.st, cn=cn, pw=self._pw, mn=self.cfg.mn, flag=make_flag(ack=ack), cp=cp)

    def _send_realtime(self, sock: socket.socket, healthy: bool) -> None:
        now = self._now()
        oldest = self._clock() - timedelta(seconds=self.cfg.rtd_max_age_s)  # readings carry true UTC
        with self._lock:
            fresh = [r for r in self._latest.values() if r.time >= oldest]
        cp = realtime_cp(fresh, now, self._opts)
        if not cp:
            return
        for part in encode_split(self._packet("2011", cp, qn=self._new_qn(), ack=False), self.max_segment):
            self._send(sock, part, "2011", healthy)


def _measures(items: object) -> list[Measure]:
    """Measures back from their archived JSON (`Measure.to_json`); what cannot be read is skipped."""
    out: list[Measure] = []
    for d in items if isinstance(items, list) else []:
        try:
            value = d["value"]
            out.append(Measure(
                sensor_id=str(d["sensor"]), quantity=str(d["quantity"]), window_s=int(d["window_s"]),
                figure=str(d["figure"]), value=None if value is None else float(value), unit=str(d["unit"]),
                end=datetime.fromisoformat(d["end"]), samples=int(d["samples"]),
                invalid=int(d.get("invalid", 0)), valid=bool(d.get("valid", True))))
        except (KeyError, TypeError, ValueError):
            log.warning("hj212: archived figure not readable, skipped: %.200r", d)
    return out


_HANDLERS: dict[str, Callable[[Hj212Uplink, socket.socket, Packet, bool], None]] = {
    "1011": Hj212Uplink._get_time,
    "1012": Hj212Uplink._set_time,
    "1061": Hj212Uplink._get_interval,
    "1063": Hj212Uplink._get_interval,
    "1062": Hj212Uplink._set_interval,
    "1064": Hj212Uplink._set_interval,
    "2011": Hj212Uplink._start_realtime,
    "2012": Hj212Uplink._stop_realtime,
    "2051": Hj212Uplink._past_data,
    "2061": Hj212Uplink._past_data,
    "2031": Hj212Uplink._past_data,
}
