"""Replay protection that survives a restart: every accepted nonce, kept until it expires.

A command is valid for at most `max_command_lifetime_s`, so a nonce needs remembering
only until its command's `expires_at` plus the clock-skew allowance; after that the
expiry check refuses a replay by itself. Check and record are one INSERT, so two
deliveries of the same command can never both pass.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    nonce      TEXT PRIMARY KEY,
    command_id TEXT NOT NULL,
    forget_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS nonces_forget ON nonces (forget_at);
"""


class NonceStore:
    def __init__(self, path: Path):
        self.path = path
        self.closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            # A worn SD card must not keep the box from starting. Replays of commands
            # accepted in the last few minutes become possible once: say so loudly.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("nonce store %s is unreadable (%s); moved to %s, starting empty", path, exc, aside)
            path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        db.execute("PRAGMA quick_check").fetchone()
        return db

    def record(self, nonce: str, command_id: str, forget_at: float, now: float) -> bool:
        """Remember `nonce` until `forget_at` (epoch s); False if it was already remembered."""
        with self._lock:
            self._db.execute("DELETE FROM nonces WHERE forget_at < ?", (now,))
            cur = self._db.execute("INSERT OR IGNORE INTO nonces (nonce, command_id, forget_at) VALUES (?, ?, ?)",
                                   (nonce, command_id, forget_at))
            return cur.rowcount == 1

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self.closed = True
