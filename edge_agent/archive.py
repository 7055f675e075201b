"""On-site archive of what was reported (minute telemetry, events), kept for the retention period.

Shenzhen's 2018 notice wants data kept on site >= 180 days, independent of whether the
bureau received it: the outbox forgets a message once the broker has it, so this archive
keeps its own copy. Rows are zlib-compressed JSON (~0.5 KB a minute, ~130 MB for 180 days).

Kinds: `telemetry` (the minute message: its `measures` are the closed minute block when
`figures` is "block"), `event`, and `block` (the closed hourly and daily blocks of figures,
`add_block`, which the minute telemetry does not carry; HJ 212 answers a platform's request
for past hour/day data from them). Blocks are telemetry too: pruning `telemetry` prunes them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS archive (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    kind  TEXT NOT NULL,
    time  REAL NOT NULL,
    body  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS archive_time ON archive (kind, time);
"""


TELEMETRY = "telemetry"
EVENT = "event"
BLOCK = "block"


class _Figure(Protocol):
    def to_json(self) -> dict[str, object]: ...


class _Block(Protocol):
    """A closed block of figures (edge_agent.measures.figures.ClosedBlock)."""

    @property
    def period_s(self) -> int: ...

    @property
    def end(self) -> datetime: ...

    @property
    def measures(self) -> Sequence[_Figure]: ...


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

    def add_block(self, block: _Block) -> None:
        """Keep a closed hourly or daily block (period, end, every figure as `Measure.to_json`).
        Minute blocks are left out: the minute telemetry rows hold them already."""
        if block.period_s < 3600:
            return
        self.add(BLOCK, block.end, {"period_s": block.period_s, "end": block.end.isoformat(),
                                    "measures": [m.to_json() for m in block.measures]})

    def query(self, kind: str, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        for _time, body in self.entries(kind, start, end):
            yield body

    def entries(self, kind: str, start: datetime, end: datetime) -> Iterator[tuple[datetime, dict[str, Any]]]:
        """(time, body) of the rows of `kind` with start <= time < end, oldest first; time in UTC."""
        with self._lock:
            rows = self._db.execute("SELECT time, body FROM archive WHERE kind = ? AND time >= ? AND time < ? "
                                    "ORDER BY time", (kind, start.timestamp(), end.timestamp())).fetchall()
        for ts, body in rows:
            yield datetime.fromtimestamp(ts, timezone.utc), json.loads(zlib.decompress(body))

    def prune(self, kind: str, before: datetime) -> int:
        """Delete the rows of `kind` older than `before`."""
        with self._lock:
            cur = self._db.execute("DELETE FROM archive WHERE kind = ? AND time < ?", (kind, before.timestamp()))
            return cur.rowcount

    def count(self, kind: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM archive WHERE kind = ?", (kind,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
