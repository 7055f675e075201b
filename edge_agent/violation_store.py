"""Open violations and pending evidence jobs, kept on disk so a crash or a restart loses neither.

DATA_DIR/violations.sqlite, with the outbox's durability (WAL, `synchronous=FULL`):

- `open_violations`: every violation that has started and not yet ended, with the record
  that proves it. After a restart the violation path picks them up again: a condition still
  present continues under its old key, one that has gone is ended with the reason
  `cleared_while_down` and the downtime.
- `evidence_jobs`: the bundle each started violation is owed. The job is committed in the
  same transaction as the open violation, before the event is stored, so a kill at any
  moment leaves either nothing or a violation whose bundle is still built after the restart.
- `meta`: the last moment the agent was known alive (a heartbeat), to state the downtime.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_agent.types import Violation

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS open_violations (
    key          TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    source       TEXT NOT NULL,
    record       TEXT NOT NULL,
    event_stored INTEGER NOT NULL DEFAULT 0,
    updated      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence_jobs (
    key        TEXT PRIMARY KEY,
    record     TEXT NOT NULL,
    created    REAL NOT NULL,
    tries      INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def violation_record(v: Violation) -> str:
    """The violation as JSON, enough to rebuild it after a restart."""
    return json.dumps({**v.to_json(), "time": v.time.isoformat()}, ensure_ascii=False)


def violation_from_record(text: str) -> Violation:
    d = json.loads(text)
    return Violation(kind=d["kind"], state=d["state"], key=d["key"], time=datetime.fromisoformat(d["time"]),
                     started=datetime.fromisoformat(d["started"]), source=d["source"], figures=dict(d["figures"]),
                     message=d.get("message", ""))


@dataclass(frozen=True)
class OpenViolation:
    """A violation that was open when the agent last stopped (or died)."""

    violation: Violation  # its last state change
    event_stored: bool  # False: the process died before its `started` event reached the outbox


class ViolationStore:
    def __init__(self, path: Path, *, fsync: bool = True):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = self._connect(fsync)
        except sqlite3.DatabaseError as exc:
            # A worn SD card must not keep the box from starting: what was open is lost, loudly.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("violation store %s is unreadable (%s); moved to %s, starting empty", path, exc, aside)
            path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self._db = self._connect(fsync)

    def _connect(self, fsync: bool) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        db.executescript(_SCHEMA)
        db.execute("PRAGMA quick_check").fetchone()
        return db

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run the statements in one transaction (all or nothing)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # --- the violation path ---------------------------------------------------------------------

    def started(self, v: Violation, *, evidence: bool) -> None:
        """The violation is open; with `evidence`, its bundle is owed too (one transaction)."""
        record, now = violation_record(v), time.time()
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("INSERT OR REPLACE INTO open_violations (key, kind, source, record, event_stored, updated) "
             "VALUES (?, ?, ?, ?, 0, ?)", (v.key, v.kind, v.source, record, now))]
        if evidence:
            statements.append(("INSERT OR IGNORE INTO evidence_jobs (key, record, created) VALUES (?, ?, ?)",
                               (v.key, record, now)))
        self._write(statements)

    def event_stored(self, key: str) -> None:
        self._write([("UPDATE open_violations SET event_stored = 1 WHERE key = ?", (key,))])

    def changed(self, v: Violation) -> None:
        """An `ongoing` refreshes the record; `ended` closes it."""
        if v.state == "ended":
            self._write([("DELETE FROM open_violations WHERE key = ?", (v.key,))])
        else:
            self._write([("UPDATE open_violations SET record = ?, updated = ? WHERE key = ?",
                          (violation_record(v), time.time(), v.key))])

    def open_violations(self) -> list[OpenViolation]:
        with self._lock:
            rows = self._db.execute("SELECT record, event_stored FROM open_violations ORDER BY updated").fetchall()
        out = []
        for record, stored in rows:
            try:
                out.append(OpenViolation(violation_from_record(record), bool(stored)))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("unreadable open violation in %s: %s", self.path, exc)
        return out

    # --- evidence jobs ---------------------------------------------------------------------------

    def pending_jobs(self) -> list[Violation]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM evidence_jobs ORDER BY created").fetchall()
        out = []
        for (record,) in rows:
            try:
                out.append(violation_from_record(record))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("unreadable evidence job in %s: %s", self.path, exc)
        return out

    def job_done(self, key: str) -> None:
        self._write([("DELETE FROM evidence_jobs WHERE key = ?", (key,))])

    def job_failed(self, key: str, error: str) -> None:
        self._write([("UPDATE evidence_jobs SET tries = tries + 1, last_error = ? WHERE key = ?",
                      (error[:500], key))])

    def jobs_pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM evidence_jobs").fetchone()[0])

    # --- heartbeat -------------------------------------------------------------------------------

    def alive(self, now: datetime) -> None:
        self._write([("INSERT OR REPLACE INTO meta (name, value) VALUES ('alive_at', ?)", (now.isoformat(),))])

    def last_alive(self) -> datetime | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'alive_at'").fetchone()
        if row is None:
            return None
        try:
            moment = datetime.fromisoformat(row[0])
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

    def close(self) -> None:
        with self._lock:
            self._db.close()
