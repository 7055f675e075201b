"""Store-and-forward queue: every upward message is written here before anything is sent.

A message leaves the outbox only when the broker has acknowledged it (QoS 1 PUBACK), so a
link that is down for a day, or a process killed at any moment, loses nothing that a
producer was told was stored. SQLite in WAL mode gives us atomic, crash-safe commits; with
`fsync` on, each commit also survives a power cut.

Delivery is at-least-once: a message sent but not acknowledged before a crash is sent
again. Every JSON payload carries a stable `msg_id` so the bureau can drop duplicates.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Lower numbers leave first. Events and evidence go before telemetry (a backlog of a day of
# telemetry must not hold back a violation); the retained status goes before everything.
PRIORITY = {"status": 0, "ack": 0, "event": 1, "evidence": 2, "telemetry": 5}
DEFAULT_PRIORITY = 3
# Over the size cap, whole kinds are dropped in this order, oldest first within a kind.
DROP_ORDER = ("telemetry", "status", "ack", "evidence", "event")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    row_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id   TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    topic    TEXT NOT NULL,
    payload  BLOB NOT NULL,
    qos      INTEGER NOT NULL,
    retain   INTEGER NOT NULL,
    created  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_order ON messages (priority, row_id);
CREATE TABLE IF NOT EXISTS dropped (
    kind   TEXT PRIMARY KEY,
    count  INTEGER NOT NULL,
    bytes  INTEGER NOT NULL,
    last   REAL NOT NULL
);
"""


class OutboxFull(Exception):
    """A single message larger than the whole cap: it can never be stored."""


@dataclass(frozen=True)
class Message:
    row_id: int
    msg_id: str
    topic: str  # relative to PREFIX/SITE/DEVICE, e.g. "telemetry" or "evidence/ID/snap.jpg"
    payload: bytes
    kind: str
    priority: int
    qos: int
    retain: bool
    created: float

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic)


def new_msg_id() -> str:
    return uuid.uuid4().hex


def encode_json(payload: Mapping[str, Any], msg_id: str) -> bytes:
    """JSON with the message id first, UTF-8 (Mandarin stays readable), compact."""
    body = {"msg_id": msg_id, **{k: v for k, v in payload.items() if k != "msg_id"}}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


class Outbox:
    """A durable priority queue of MQTT messages in one SQLite file."""

    def __init__(self, path: str | Path, max_bytes: int, *, fsync: bool = True):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._last_drop_log: dict[str, float] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open(fsync)
        with self._lock:
            row = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0), COUNT(*) "
                                   "FROM messages").fetchone()
            self._bytes, self._count = int(row[0]), int(row[1])

    def _open(self, fsync: bool) -> sqlite3.Connection:
        try:
            return self._connect(fsync)
        except sqlite3.DatabaseError as exc:
            # A corrupt file (a worn SD card) must not keep the box from starting: keep the
            # old file for forensics and begin a new queue.
            aside = self.path.with_suffix(self.path.suffix + f".corrupt-{int(time.time())}")
            log.error("outbox %s is unreadable (%s); moved aside to %s and starting empty",
                      self.path, exc, aside)
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            return self._connect(fsync)

    def _connect(self, fsync: bool) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        db.executescript(_SCHEMA)
        db.execute("PRAGMA quick_check").fetchone()
        return db

    # --- producers -------------------------------------------------------------------------

    def put(
        self,
        topic: str,
        payload: bytes | Mapping[str, Any],
        *,
        kind: str,
        priority: int | None = None,
        qos: int = 1,
        retain: bool = False,
        msg_id: str | None = None,
    ) -> Message:
        """Store one message durably; returns only once it is on disk."""
        return self.put_many([(topic, payload, kind, priority, qos, retain, msg_id)])[0]

    def put_many(
        self,
        items: Iterable[tuple[str, bytes | Mapping[str, Any], str, int | None, int, bool, str | None]],
    ) -> list[Message]:
        """Store several messages in one transaction (one disk flush)."""
        now = time.time()
        rows: list[Message] = []
        for topic, payload, kind, priority, qos, retain, msg_id in items:
            mid = msg_id or new_msg_id()
            body = payload if isinstance(payload, bytes) else encode_json(payload, mid)
            prio = PRIORITY.get(kind, DEFAULT_PRIORITY) if priority is None else priority
            rows.append(Message(0, mid, topic, body, kind, prio, qos, retain, now))
        stored: list[Message] = []
        with self._lock:
            incoming = sum(m.size for m in rows)
            if any(m.size > self.max_bytes for m in rows):
                raise OutboxFull(f"message larger than the outbox cap of {self.max_bytes} bytes")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for m in rows:
                    if m.retain:
                        # A newer retained message supersedes any unsent older one on its topic.
                        self._delete_where("topic = ? AND retain = 1", (m.topic,))
                self._make_room(incoming, protect=set())
                for m in rows:
                    cur = self._db.execute(
                        "INSERT INTO messages (msg_id, priority, kind, topic, payload, qos, retain, created) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (m.msg_id, m.priority, m.kind, m.topic, m.payload, m.qos, int(m.retain), m.created),
                    )
                    stored.append(Message(int(cur.lastrowid or 0), m.msg_id, m.topic, m.payload, m.kind,
                                          m.priority, m.qos, m.retain, m.created))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._recount()
                raise
            self._bytes += incoming
            self._count += len(stored)
        return stored

    def _delete_where(self, where: str, args: tuple[Any, ...]) -> None:
        row = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0) FROM messages WHERE {where}",
            args,
        ).fetchone()
        if row[0]:
            self._db.execute(f"DELETE FROM messages WHERE {where}", args)
            self._count -= int(row[0])
            self._bytes -= int(row[1])

    def _make_room(self, incoming: int, protect: set[int]) -> None:
        """Drop the least valuable messages, oldest first, until `incoming` bytes fit."""
        for kind in DROP_ORDER:
            while self._bytes + incoming > self.max_bytes:
                victims = self._db.execute(
                    "SELECT row_id, LENGTH(payload) + LENGTH(topic) FROM messages WHERE kind = ? "
                    "ORDER BY row_id LIMIT 256",
                    (kind,),
                ).fetchall()
                if not victims:
                    break
                need = self._bytes + incoming - self.max_bytes
                chosen, freed = [], 0
                for row_id, size in victims:
                    chosen.append(row_id)
                    freed += size
                    if freed >= need:
                        break
                self._db.executemany("DELETE FROM messages WHERE row_id = ?", [(r,) for r in chosen])
                self._db.execute(
                    "INSERT INTO dropped (kind, count, bytes, last) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(kind) DO UPDATE SET count = count + excluded.count, "
                    "bytes = bytes + excluded.bytes, last = excluded.last",
                    (kind, len(chosen), freed, time.time()),
                )
                self._bytes -= freed
                self._count -= len(chosen)
                self._log_drop(kind, len(chosen))

    def _log_drop(self, kind: str, count: int) -> None:
        """Evidence and events are logged on every drop; telemetry at most once a minute."""
        now = time.monotonic()
        if kind in ("telemetry", "status") and now - self._last_drop_log.get(kind, -1e9) < 60:
            return
        self._last_drop_log[kind] = now
        level = logging.WARNING if kind in ("telemetry", "status") else logging.ERROR
        log.log(level, "outbox full (cap %d bytes): dropped %d oldest %s message(s); see status.outbox.dropped",
                self.max_bytes, count, kind)

    def _recount(self) -> None:
        row = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0), COUNT(*) "
                               "FROM messages").fetchone()
        self._bytes, self._count = int(row[0]), int(row[1])

    # --- the uplink ------------------------------------------------------------------------

    def pending(self, limit: int, exclude: Collection[int] = (), max_bytes: int | None = None) -> list[Message]:
        """The next messages to send: by priority, oldest first, skipping those in flight.

        With `max_bytes`, stop before the payloads add up to more than that (but always give at
        least one): a backlog of video clips is then never loaded into memory all at once.
        """
        with self._lock:
            # Sizes first (cheap), payloads only for the rows chosen.
            heads = self._db.execute(
                "SELECT row_id, LENGTH(payload) + LENGTH(topic) FROM messages ORDER BY priority, row_id LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
            chosen: list[int] = []
            total = 0
            for row_id, size in heads:
                if row_id in exclude:
                    continue
                if chosen and max_bytes is not None and total + size > max_bytes:
                    break
                chosen.append(row_id)
                total += size
                if len(chosen) >= limit:
                    break
            if not chosen:
                return []
            rows = self._db.execute(
                "SELECT row_id, msg_id, topic, payload, kind, priority, qos, retain, created FROM messages "
                f"WHERE row_id IN ({','.join('?' * len(chosen))})", chosen).fetchall()
        by_id = {r[0]: Message(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], bool(r[7]), r[8]) for r in rows}
        return [by_id[row_id] for row_id in chosen if row_id in by_id]

    def ack(self, row_ids: Iterable[int]) -> int:
        """Forget messages the broker has acknowledged. Returns how many were removed."""
        ids = [(r,) for r in row_ids]
        if not ids:
            return 0
        with self._lock:
            before = self._count
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM messages WHERE row_id = ?", ids)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._recount()
            return before - self._count

    def contains(self, row_id: int) -> bool:
        """Whether a message is still waiting (i.e. not yet acknowledged by the broker)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM messages WHERE row_id = ?", (row_id,)).fetchone() is not None

    # --- health ----------------------------------------------------------------------------

    def depth(self) -> int:
        with self._lock:
            return self._count

    def bytes_used(self) -> int:
        with self._lock:
            return self._bytes

    def depth_by_kind(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT kind, COUNT(*) FROM messages GROUP BY kind").fetchall())

    def dropped(self) -> dict[str, dict[str, float]]:
        """What the size cap has cost so far, by kind (reported upstream in status)."""
        with self._lock:
            rows = self._db.execute("SELECT kind, count, bytes, last FROM dropped").fetchall()
        return {k: {"count": c, "bytes": b, "last": last} for k, c, b, last in rows}

    def stats(self) -> dict[str, Any]:
        return {
            "depth": self.depth(),
            "bytes": self.bytes_used(),
            "cap_bytes": self.max_bytes,
            "by_kind": self.depth_by_kind(),
            "dropped": {k: int(v["count"]) for k, v in self.dropped().items()},
        }

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
