"""The embedded store: one SQLite file (WAL) in the data dir, evidence bytes in `EvidenceFiles`.

One writer at a time (SQLite's rule): ingest applies each batch in one `BEGIN IMMEDIATE`
transaction; the web console reads on its own connections (one per thread) beside it.
The SQL itself is shared with PostgreSQL (`sql.py`).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from bureau.store.files import EvidenceFiles
from bureau.store.sql import Conn, SqlStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (msg_id TEXT PRIMARY KEY, received REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_received ON seen (received);
CREATE TABLE IF NOT EXISTS devices (
    site TEXT NOT NULL, device TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'unknown', since REAL, last_seen REAL, status_time REAL,
    clock_sync INTEGER, outbox_depth INTEGER, outbox_dropped INTEGER, version TEXT, uptime_s REAL,
    health TEXT NOT NULL DEFAULT '{}', status TEXT,
    key_b64 TEXT, key_id TEXT, key_state TEXT NOT NULL DEFAULT 'none', seen_key_b64 TEXT, seen_key_id TEXT,
    key_by TEXT, key_at REAL,
    PRIMARY KEY (site, device)
);
CREATE TABLE IF NOT EXISTS telemetry (
    site TEXT NOT NULL, device TEXT NOT NULL, end_ts INTEGER NOT NULL,
    leq REAL, lmax REAL, tsp REAL, pm10 REAL, pm2_5 REAL, sync INTEGER, extra TEXT,
    PRIMARY KEY (site, device, end_ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,
    state TEXT NOT NULL, started REAL NOT NULL, last_time REAL NOT NULL, ended REAL, source TEXT,
    figures TEXT NOT NULL, message TEXT, clock_sync INTEGER,
    UNIQUE (site, device, key)
);
CREATE INDEX IF NOT EXISTS events_time ON events (started);
CREATE INDEX IF NOT EXISTS events_open ON events (state) WHERE state != 'ended';
CREATE INDEX IF NOT EXISTS events_site ON events (site, started);
CREATE TABLE IF NOT EXISTS event_updates (
    id INTEGER PRIMARY KEY, event_id INTEGER NOT NULL, msg_id TEXT, time REAL NOT NULL, state TEXT NOT NULL,
    figures TEXT NOT NULL, received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS event_updates_event ON event_updates (event_id);
CREATE TABLE IF NOT EXISTS bundles (
    site TEXT NOT NULL, device TEXT NOT NULL, bundle TEXT NOT NULL,
    seq INTEGER, created TEXT, manifest TEXT, manifest_hash TEXT, prev_hash TEXT, key_id TEXT, public_key TEXT,
    violation_key TEXT, kind TEXT, files_total INTEGER NOT NULL DEFAULT 0,
    verification TEXT NOT NULL DEFAULT 'incomplete', problems TEXT NOT NULL DEFAULT '[]',
    chain TEXT, verified_key_id TEXT, verified_at REAL, received REAL NOT NULL,
    PRIMARY KEY (site, device, bundle)
);
CREATE INDEX IF NOT EXISTS bundles_seq ON bundles (site, device, seq);
CREATE INDEX IF NOT EXISTS bundles_violation ON bundles (site, device, violation_key);
CREATE INDEX IF NOT EXISTS bundles_todo ON bundles (verification) WHERE verification = 'pending';
CREATE TABLE IF NOT EXISTS bundle_files (
    site TEXT NOT NULL, device TEXT NOT NULL, bundle TEXT NOT NULL, name TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, received REAL NOT NULL,
    PRIMARY KEY (site, device, bundle, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL,
    issued_by TEXT NOT NULL, issued_at TEXT NOT NULL, expires_at TEXT NOT NULL, sent REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'sent', body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_sent ON commands (sent);
CREATE TABLE IF NOT EXISTS acks (
    id INTEGER PRIMARY KEY, command_id TEXT, site TEXT NOT NULL, device TEXT NOT NULL, command TEXT,
    result TEXT NOT NULL, reason TEXT, detail TEXT, time REAL NOT NULL, received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS acks_command ON acks (command_id);
CREATE TABLE IF NOT EXISTS refused (
    id INTEGER PRIMARY KEY, received REAL NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL, size INTEGER,
    site TEXT, device TEXT, sample TEXT
);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, "user" TEXT NOT NULL, csrf TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, "user" TEXT NOT NULL, action TEXT NOT NULL, target TEXT,
    detail TEXT
);
"""
class SQLiteStore(SqlStore):
    def __init__(self, path: Path, files: EvidenceFiles):
        self.path = path
        self.files = files
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        db = self._db()
        db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA foreign_keys=OFF")
            self._local.db = db
        return db

    def _tx(self) -> _Tx:
        return _Tx(self._db(), self._write_lock)

    def _many(self, db: Conn, sql: str, rows: list[tuple[Any, ...]]) -> None:
        assert isinstance(db, sqlite3.Connection)
        db.executemany(sql, rows)

    def outage(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT on this thread's connection, one writer of this process at a time."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock):
        self.db = db
        self.lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            self.lock.release()
