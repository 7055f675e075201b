"""The box's own recent log lines, for `logs` on a box without a readable journal.

A handler on the root logger keeps the last lines in a small file ring in the data dir
(`logs/agent.log` and one rotated `agent.log.1`, 256 kB each by default): it survives the
restart a config change makes, so the lines that explain a rollback are still there. Lines
start with an ISO 8601 UTC time, which `tail(minutes=...)` reads back.
"""

from __future__ import annotations

import logging
import logging.handlers
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

LOG_DIR = "logs"
LOG_FILE = "agent.log"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class LogRing(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler with UTC ISO times; one per data dir on the root logger."""

    def __init__(self, path: Path, max_bytes: int = 256 * 1024):
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, maxBytes=max_bytes, backupCount=1, encoding="utf-8", delay=False)
        self.setFormatter(_UtcFormatter(FORMAT))
        self.path = path

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # a full disk must not turn every log call into a traceback on stderr


def install(data_dir: Path, level: int = logging.INFO, max_bytes: int = 256 * 1024) -> LogRing:
    """Attach the ring for `data_dir` to the root logger (once: a second call returns the first)."""
    path = Path(data_dir) / LOG_DIR / LOG_FILE
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, LogRing) and handler.path == path:
            return handler
    ring = LogRing(path, max_bytes)
    ring.setLevel(level)
    root.addHandler(ring)
    return ring


def tail(data_dir: Path, lines: int, minutes: float | None = None, now: datetime | None = None) -> list[str]:
    """The last `lines` lines of the ring (the rotated file first), or those of the last `minutes`."""
    base = Path(data_dir) / LOG_DIR / LOG_FILE
    out: list[str] = []
    for path in (base.with_name(LOG_FILE + ".1"), base):
        try:
            out.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
        except OSError:
            continue
    if minutes is not None:
        since = (now or datetime.now(timezone.utc)) - timedelta(minutes=minutes)
        kept, keep = [], False
        for line in out:
            moment = _time_of(line)
            if moment is not None:
                keep = moment >= since
            if keep:  # a continuation line (a traceback's) goes with its record
                kept.append(line)
        out = kept
    return out[-lines:] if lines > 0 else []


def _time_of(line: str) -> datetime | None:
    """The time a line starts with; None for a continuation line (a traceback's), kept with its record."""
    stamp = line.split(" ", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
