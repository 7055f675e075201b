"""Store-and-forward queue: every upward message is written here before anything is sent.

A message leaves the outbox only when the broker has acknowledged it (QoS 1 PUBACK), so a
link that is down for a day, or a process killed at any moment, loses nothing that a
producer was told was stored. SQLite in WAL mode gives us atomic, crash-safe commits; with
`fsync` on, each commit also survives a power cut.

Delivery is at-least-once: a message sent but not acknowledged before a crash is sent
again. Every JSON payload carries a stable `msg_id` so the bureau can drop duplicates.

A full disk is a state, not an error storm: `put` raises `StorageFull` (nothing half-stored,
counts kept right), `stats()["storage"]` says `full`, and what is stored keeps leaving. To be
able to delete on a disk with no byte free (in WAL mode even a DELETE appends to the WAL), the
outbox keeps a reserve file of a few MB beside its database: it gives that up to delete what
the broker acknowledged, and makes it again once there is room. The file itself shrinks as
the queue drains (`auto_vacuum=INCREMENTAL`), and its WAL is kept to about 1 MB.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
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


# The WAL is checkpointed every WAL_PAGES pages and cut back to WAL_BYTES after: a full disk
# then never holds a large WAL hostage, and the reserve is enough to checkpoint it.
WAL_PAGES = 256
WAL_BYTES = 1 << 20
RESERVE_BYTES = 2 << 20  # given up on a full disk to delete what the broker acknowledged
SLACK_PAGES = 256  # free pages kept in the file (1 MB): a draining queue does not shrink and regrow it
MIGRATE_MAX_BYTES = 8 << 20  # an old file is converted to auto_vacuum only while this little is queued


class OutboxFull(Exception):
    """A single message larger than the whole cap: it can never be stored."""


class StorageFull(OSError):
    """The disk (or the file's size limit) is full: the message was not stored, nothing else changed."""


def _is_full(exc: BaseException) -> bool:
    """SQLITE_FULL (13), from the code where Python gives it (3.11+) or from its fixed message."""
    return getattr(exc, "sqlite_errorcode", None) == 13 or "database or disk is full" in str(exc)


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

    def __init__(self, path: str | Path, max_bytes: int, *, fsync: bool = True,
                 reserve_bytes: int | None = None):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.reserve_path = self.path.with_name(self.path.name + "-reserve")
        self.reserve_bytes = min(RESERVE_BYTES, max_bytes // 4) if reserve_bytes is None else reserve_bytes
        self._lock = threading.RLock()
        self._last_drop_log: dict[str, float] = {}
        self._drops: list[tuple[str, int]] = []  # logged once their transaction commits
        self._full_since: float | None = None  # the last write found the disk full
        self._needs_migration = False
        self._migrate_after = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open(fsync)
        with self._lock:
            self._recount()
            self._migrate()
            self._keep_reserve()

    def _open(self, fsync: bool) -> sqlite3.Connection:
        try:
            return self._connect(fsync)
        except sqlite3.DatabaseError as exc:
            if _is_full(exc):
                raise StorageFull(f"outbox {self.path}: disk full, cannot open it ({exc})") from exc
            if isinstance(exc, sqlite3.OperationalError):
                raise  # locked, read-only, I/O error: the file is not to blame; never move it aside
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
        try:
            new = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            if new:
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only before the first table is made
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_BYTES}")
            db.executescript(_SCHEMA)
            db.execute("PRAGMA quick_check").fetchone()
            self._needs_migration = db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self) -> None:
        """An outbox made before auto_vacuum: switch it over with a one-time VACUUM.

        VACUUM rewrites the live rows (through the WAL, then back), so it runs only while few are
        queued and the disk has room for three copies of them; otherwise at a later drain.
        """
        if not self._needs_migration or self._bytes > MIGRATE_MAX_BYTES or time.monotonic() < self._migrate_after:
            return
        self._migrate_after = time.monotonic() + 3600  # at most one try an hour
        if self._free_bytes() < 3 * self._bytes + 4 * WAL_BYTES:
            return
        try:
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("outbox %s: could not switch to auto_vacuum (%s); will try again later", self.path, exc)
            return
        self._needs_migration = self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2
        if not self._needs_migration:
            log.info("outbox %s: switched to auto_vacuum=INCREMENTAL (the file now shrinks as it drains)",
                     self.path)

    # --- the disk-full state -----------------------------------------------------------------

    def _free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return 0

    def _keep_reserve(self) -> bool:
        """Make the reserve file if it is missing and the disk has room to spare; True if it is there."""
        if self.reserve_bytes <= 0:
            return True
        try:
            if self.reserve_path.stat().st_size >= self.reserve_bytes:
                return True
        except FileNotFoundError:
            pass
        try:
            if self._free_bytes() < 2 * self.reserve_bytes:
                return False
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                # Real blocks, not a sparse file (glibc writes zeros where fallocate is missing).
                os.posix_fallocate(fd, 0, self.reserve_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.reserve_path.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                return False
            log.warning("outbox %s: cannot make its reserve file (%s); going on without one", self.path, exc)
            self.reserve_bytes = 0
        return True

    def _release_reserve(self) -> bool:
        """Give the reserve back to the filesystem; True if there was one to give."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        log.warning("outbox %s: disk full; released its %d kB reserve to delete what the broker acknowledged",
                    self.path, self.reserve_bytes // 1024)
        return True

    def _set_full(self, exc: BaseException) -> StorageFull:
        if self._full_since is None:
            self._full_since = time.time()
            log.error("outbox %s: disk full (%s, %d kB free): new messages are refused until there is room; "
                      "stored ones keep leaving", self.path, exc, self._free_bytes() // 1024)
        return StorageFull(f"outbox {self.path}: disk full, message not stored ({exc})")

    def _check_recovered(self) -> None:
        """Leave the full state once the disk has room again: the reserve is back, and as much again free."""
        if self._full_since is None:
            return
        if self._keep_reserve() and self._free_bytes() >= max(self.reserve_bytes, 1 << 20):
            log.info("outbox %s: disk has room again after %.0f s; storing messages again", self.path,
                     time.time() - self._full_since)
            self._full_since = None

    def _rollback(self) -> None:
        """ROLLBACK if a transaction is still open: on SQLITE_FULL SQLite may have rolled it back itself."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.warning("outbox %s: rollback failed: %s", self.path, exc)

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
            self._check_recovered()
            self._drops.clear()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for m in rows:
                    if m.retain:
                        # A newer retained message supersedes any unsent older one on its topic.
                        self._delete_where("topic = ? AND retain = 1", (m.topic,))
                self._make_room(incoming)
                for m in rows:
                    cur = self._db.execute(
                        "INSERT INTO messages (msg_id, priority, kind, topic, payload, qos, retain, created) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (m.msg_id, m.priority, m.kind, m.topic, m.payload, m.qos, int(m.retain), m.created),
                    )
                    stored.append(Message(int(cur.lastrowid or 0), m.msg_id, m.topic, m.payload, m.kind,
                                          m.priority, m.qos, m.retain, m.created))
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                self._recount()
                self._drops.clear()  # rolled back: nothing was dropped after all
                if isinstance(exc, sqlite3.Error) and _is_full(exc):
                    raise self._set_full(exc) from exc
                raise
            self._bytes += incoming
            self._count += len(stored)
            for kind, count in self._drops:
                self._log_drop(kind, count)
            self._drops.clear()
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

    def _make_room(self, incoming: int) -> None:
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
                self._drops.append((kind, len(chosen)))

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
        """Forget messages the broker has acknowledged. Returns how many were removed.

        On a full disk the reserve is given up for the delete; StorageFull if even that fails.
        """
        ids = [(r,) for r in row_ids]
        if not ids:
            return 0
        with self._lock:
            before = self._count
            try:
                try:
                    self._delete_rows(ids)
                except sqlite3.Error as exc:
                    if not _is_full(exc):
                        raise
                    self._set_full(exc)
                    if not self._release_reserve():
                        raise
                    self._delete_rows(ids)
                    self._shrink(checkpoint=True)
            except sqlite3.Error as exc:
                if _is_full(exc):
                    raise self._set_full(exc) from exc
                raise
            finally:
                self._recount()
            self._shrink()
            if self._needs_migration:
                self._migrate()
            return before - self._count

    def _delete_rows(self, ids: list[tuple[int]]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM messages WHERE row_id = ?", ids)
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _shrink(self, checkpoint: bool = False) -> None:
        """Give free pages beyond the slack back to the filesystem (best effort: it may be full)."""
        try:
            free_pages = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
            full = self._full_since is not None
            slack = 0 if full else SLACK_PAGES
            # Trimming a queue that still holds rows moves them (write wear on an SD card): trim
            # once it is drained, which on a working link is often, or when the disk is full.
            if free_pages > slack and (full or self._count == 0):
                # executescript steps the pragma to the end; execute() would free a single page.
                self._db.executescript(f"PRAGMA incremental_vacuum({free_pages - slack});")
                checkpoint = checkpoint or self._full_since is not None
            if checkpoint:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.debug("outbox %s: shrinking failed: %s", self.path, exc)

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

    def storage_state(self) -> str:
        """`full` from a write the disk refused until the disk has room again, else `ok`."""
        with self._lock:
            self._check_recovered()
            return "ok" if self._full_since is None else "full"

    def stats(self) -> dict[str, Any]:
        return {
            "storage": self.storage_state(),
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
