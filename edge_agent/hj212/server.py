"""A reference HJ 212-2017 platform: receives, checks CRC and length, answers, records.

It is what the tests talk to, and what a technician runs on a laptop to bench-check a box
(`edge-agent hj212-server`). It answers data that asks for an answer (Flag A bit) with
9014, reassembles split packets, and can send commands to the connected boxes (among them
requests for past minute/hour/day data, `request_past_data`).

Like a platform in the field it is tolerant by default: every packet whose framing, length
and CRC are right is taken, and its deviations from HJ 212-2017 (a millisecond-epoch QN, a
3-digit ST, no CP, ...) are logged and counted per kind (`warning_counts`), so a technician
sees which vendor quirks arrive. `strict=True` refuses them instead (as `malformed`).
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from edge_agent.hj212.codec import (
    CpItem,
    DecodeError,
    DecodeWarning,
    EncodeError,
    Packet,
    Reassembler,
    StreamDecoder,
    encode,
    encode_split,
    make_flag,
)

log = logging.getLogger(__name__)

DATA_CNS = frozenset({"2011", "2051", "2061", "2031", "1011", "1061", "1063"})
PAST_DATA_CNS = frozenset({"2051", "2061", "2031"})  # minute, hour, day data
_LOUD_WARNINGS = 10  # each kind of warning is logged this many times, then every 100th


@dataclass(frozen=True)
class Received:
    """One frame as the platform saw it: the packet, or why it was rejected."""

    time: datetime
    peer: str
    raw: bytes
    packet: Packet | None  # one part, if the sender split the packet
    error: DecodeError | None
    whole: Packet | None = None  # the reassembled packet, on the frame that completed it

    @property
    def verdict(self) -> str:
        return "ok" if self.error is None else self.error.kind

    @property
    def warnings(self) -> tuple[DecodeWarning, ...]:
        return () if self.packet is None else self.packet.warnings


class Hj212Server:
    """In-process platform on a real TCP socket. `port=0` picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, answer_data: bool = True,
                 st: str = "91", tz: str = "Asia/Shanghai", strict: bool = False,
                 on_frame: Callable[[Received], None] | None = None):
        self.host, self.port = host, port
        self.answer_data = answer_data
        self.st = st
        self.strict = strict
        self.tz_name = tz
        self._tz = ZoneInfo(tz)
        self._warnings: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._on_frame = on_frame
        self._lock = threading.Condition()
        self._received: list[Received] = []
        self._clients: dict[str, socket.socket] = {}
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None
        self._qn = 0

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                host, port = self.client_address[:2]
                owner._serve(self.request, f"{host}:{port}")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((self.host, self.port), Handler)
        bound = self._server.server_address
        self.host, self.port = str(bound[0]), int(bound[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="hj212-server", daemon=True)
        self._thread.start()
        log.info("hj212-server: listening on %s:%d", self.host, self.port)
        return self.host, self.port

    def stop(self) -> None:
        """Stop listening and drop every connection (the boxes see the platform go down)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Hj212Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what arrived -----------------------------------------------------------------------

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def packets(self, cn: str | None = None) -> list[Packet]:
        """Whole valid packets (split ones reassembled), in arrival order."""
        return [r.whole for r in self.received() if r.whole is not None and (cn is None or r.whole.cn == cn)]

    def wait_for(self, predicate: Callable[[Hj212Server], bool], timeout: float) -> bool:
        """Wait until `predicate(self)` holds (re-checked on each frame); False on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._lock:
                self._lock.wait(min(left, 0.1))
        return True

    def clients(self) -> list[str]:
        with self._lock:
            return list(self._clients)

    def warning_counts(self) -> dict[str, int]:
        """Frames accepted with each kind of deviation (once per kind and frame; each part of a
        split packet is a frame)."""
        with self._lock:
            return dict(self._warnings)

    def error_counts(self) -> dict[str, int]:
        """Frames refused, by reason (bad_crc, bad_length, malformed, garbage, ...)."""
        with self._lock:
            return dict(self._errors)

    # --- commands to the boxes ------------------------------------------------------------

    def command(self, cn: str, cp: Iterable[CpItem] = (), *, mn: str, pw: str, st: str = "39",
                flag: int | None = None, peer: str | None = None) -> str:
        """Send a command to every connected box (or only to `peer`); returns its QN."""
        qn = self._new_qn()
        packet = Packet(qn=qn, st=st, cn=cn, pw=pw, mn=mn,
                        flag=make_flag(ack=True) if flag is None else flag, cp=tuple(cp))
        self._broadcast(b"".join(encode_split(packet)), peer)
        return qn

    def request_past_data(self, cn: str, begin: datetime, end: datetime, *, mn: str, pw: str,
                          st: str = "39", peer: str | None = None) -> str:
        """Ask for past minute (2051), hour (2061) or day (2031) data with DataTime in
        [begin, end], written as BeginTime/EndTime in this platform's time zone. The box
        answers 9011, one data packet per record (split if long), then 9012. Returns the QN."""
        if cn not in PAST_DATA_CNS:
            raise ValueError(f"CN {cn} is not a past-data request (one of {sorted(PAST_DATA_CNS)})")
        for t in (begin, end):
            if t.tzinfo is None:
                raise ValueError("naive datetime: give BeginTime/EndTime with their time zone")
        cp = ((("BeginTime", self.local_time(begin)),), (("EndTime", self.local_time(end)),))
        return self.command(cn, cp, mn=mn, pw=pw, st=st, peer=peer)

    def local_time(self, when: datetime) -> str:
        """`YYYYMMDDhhmmss` in this platform's time zone."""
        return when.astimezone(self._tz).strftime("%Y%m%d%H%M%S")

    def send_raw(self, data: bytes) -> int:
        """Send bytes as they are to every connected box (for garbage tests)."""
        return self._broadcast(data)

    def _broadcast(self, data: bytes, peer: str | None = None) -> int:
        with self._lock:
            clients = [sock for name, sock in self._clients.items() if peer is None or name == peer]
        sent = 0
        for sock in clients:
            try:
                sock.sendall(data)
                sent += 1
            except OSError:
                pass
        return sent

    def _new_qn(self) -> str:
        now = datetime.now(timezone.utc).astimezone(self._tz)
        qn = int(now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}")
        with self._lock:
            self._qn = max(qn, self._qn + 1)
            return f"{self._qn:017d}"

    # --- one connection ---------------------------------------------------------------------

    def _serve(self, sock: socket.socket, peer: str) -> None:
        with self._lock:
            self._clients[peer] = sock
        log.info("hj212-server: %s connected", peer)
        decoder, parts = StreamDecoder(strict=self.strict, tz=self.tz_name), Reassembler()
        try:
            while True:
                try:
                    data = sock.recv(4096)
                except OSError:
                    break
                if not data:
                    break
                for item in decoder.feed(data):
                    whole = parts.add(item.packet) if item.packet is not None else None
                    rec = Received(datetime.now(timezone.utc), peer, item.raw, item.packet, item.error, whole)
                    self._record(rec)
                    if whole is not None:
                        self._answer(sock, whole)
        finally:
            with self._lock:
                if self._clients.get(peer) is sock:
                    del self._clients[peer]
            log.info("hj212-server: %s disconnected", peer)

    def _record(self, rec: Received) -> None:
        counts: list[tuple[DecodeWarning, int]] = []
        with self._lock:
            self._received.append(rec)
            for w in rec.warnings:
                n = self._warnings[w.code] = self._warnings.get(w.code, 0) + 1
                counts.append((w, n))
            if rec.error is not None:
                self._errors[rec.error.kind] = self._errors.get(rec.error.kind, 0) + 1
            self._lock.notify_all()
        p = rec.packet
        if p is not None:
            log.info("hj212-server: %s ok len=%d CN=%s QN=%s MN=%s%s", rec.peer, len(rec.raw) - 12, p.cn, p.qn,
                     p.mn, f" part {p.pno}/{p.pnum}" if p.pnum else "")
            for w, n in counts:
                if n <= _LOUD_WARNINGS or n % 100 == 0:
                    log.warning("hj212-server: %s CN=%s MN=%s accepted with warning %s (#%d of this kind): %s",
                                rec.peer, p.cn, p.mn, w.code, n, w.text)
        else:
            log.warning("hj212-server: %s %s: %r", rec.peer, rec.error, rec.raw[:120])
        if self._on_frame is not None:
            try:
                self._on_frame(rec)
            except Exception:
                log.exception("hj212-server: on_frame callback failed")

    def _answer(self, sock: socket.socket, p: Packet) -> None:
        """9014 for data that wants an answer; commands' answers from boxes are only recorded.

        The answer echoes the QN as the box wrote it (a millisecond epoch stays one), so that
        the box can match it; only this platform's own packets are held to the standard."""
        if p.cn not in DATA_CNS or not p.ack_wanted or not self.answer_data or p.wire_qn is None:
            return
        reply = Packet(qn=p.wire_qn, st=self.st, cn="9014", pw=p.pw, mn=p.mn, flag=make_flag(ack=False), cp=())
        try:
            data = encode(reply, strict=False)
        except EncodeError as exc:
            log.warning("hj212-server: cannot answer CN %s QN %r: %s", p.cn, p.wire_qn, exc)
            return
        try:
            sock.sendall(data)
        except OSError:
            pass
