"""On-site archive of what was reported (minute telemetry, events), kept for the retention period.

Shenzhen's 2018 notice wants data kept on site >= 180 days, independent of whether the
bureau received it: the outbox forgets a message once the broker has it, so this archive
keeps its own copy. Rows are zlib-compressed JSON (~0.5 KB a minute, ~130 MB for 180 days).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS archive (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    kind  TEXT NOT NULL,
    time  REAL NOT NULL,
    body  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS archive_time ON archive (kind, time);
"""


class Archive:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def add(self, kind: str, time: datetime, payload: Mapping[str, Any]) -> None:
        body = zlib.compress(json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8"))
        with self._lock:
            self._db.execute("INSERT INTO archive (kind, time, body) VALUES (?, ?, ?)",
                             (kind, time.timestamp(), body))

    def query(self, kind: str, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM archive WHERE kind = ? AND time >= ? AND time < ? ORDER BY time",
                                    (kind, start.timestamp(), end.timestamp())).fetchall()
        for (body,) in rows:
            yield json.loads(zlib.decompress(body))

    def prune(self, kind: str, before: datetime) -> int:
        with self._lock:
            cur = self._db.execute("DELETE FROM archive WHERE kind = ? AND time < ?", (kind, before.timestamp()))
            return cur.rowcount

    def count(self, kind: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM archive WHERE kind = ?", (kind,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
