"""The city store: PostgreSQL shared by any number of ingest workers and the web console.

The SQL is SQLite's (`sql.py`), run through a psycopg 3 connection pool: reads borrow a
connection per statement (autocommit), each ingest batch is one transaction. Several
workers write at once, so a batch's records are ordered by (site, device) before they
are applied (the same lock order everywhere), and a batch that meets a deadlock or a
concurrent insert of the same key is simply applied again (the `seen` key makes that
harmless). The schema is versioned (`migrations/NNNN_*.sql`, applied by `edge-bureau
migrate`); a store refuses to open on a schema it does not know. Telemetry is partitioned by
month. Evidence bytes stay on a path (`EvidenceFiles`) that every worker shares.
"""

from __future__ import annotations

import calendar
import logging
import random
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from bureau.messages import Record
from bureau.store.base import Applied
from bureau.store.files import EvidenceFiles
from bureau.store.sql import TELEMETRY_COLUMNS, Conn, SqlStore

log = logging.getLogger(__name__)

MIGRATION = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
# pg_advisory_xact_lock keys: one migrator and one partition maker at a time across the city.
LOCK_MIGRATE = 0x6564676501
LOCK_PARTITIONS = 0x6564676502
# Errors after which a batch is applied again: two workers met on one row.
RETRY = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure, psycopg.errors.UniqueViolation)


class SchemaError(RuntimeError):
    """The database's schema is not the one this edge-bureau runs on."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped in the package, in order."""
    found = []
    for entry in resources.files("bureau.store.migrations").iterdir():
        m = MIGRATION.fullmatch(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda x: x.version)


def latest_version() -> int:
    return max(m.version for m in migrations())


@lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (and a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _clean(params: Sequence[Any]) -> tuple[Any, ...]:
    # PostgreSQL text cannot hold NUL; a JSON string may ("\u0000"). Keep the message, mark the byte.
    return tuple(p.replace("\x00", "\ufffd") if isinstance(p, str) and "\x00" in p else p for p in params)


class _Conn:
    """A psycopg connection that speaks the shared SQL (`?` placeholders)."""

    def __init__(self, conn: psycopg.Connection[Any]):
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        return self.conn.execute(_pg(sql), _clean(parameters))


class _Result:
    """Rows fetched at once, so the connection goes back to the pool before they are read."""

    def __init__(self, rows: list[dict[str, Any]], rowcount: int):
        self.rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[dict[str, Any]]:
        return self.rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)


class _Reader:
    """Each statement on a connection borrowed from the pool (autocommit)."""

    def __init__(self, pool: ConnectionPool[Any]):
        self.pool = pool

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Result:
        with self.pool.connection() as conn:
            cur = conn.execute(_pg(sql), _clean(parameters))
            rows = cur.fetchall() if cur.description is not None else []
            return _Result(rows, cur.rowcount)


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.row_factory = dict_row
    # The console's queries are short; JIT compiling them costs more (~10 ms on the fleet query) than it saves.
    conn.execute("SET jit = off")


def connect_pool(dsn: str, *, min_size: int = 1, max_size: int = 8, timeout: float = 30.0) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = ConnectionPool(dsn, min_size=min_size, max_size=max_size, timeout=timeout,
                                               kwargs={"autocommit": True}, configure=_configure, open=False,
                                               name="edge-bureau")
    pool.open(wait=True, timeout=timeout)
    return pool


def schema_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").fetchone()
    if not row or not _get(row, "present"):
        return 0
    got = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").fetchone()
    return int(_get(got, "v") or 0)


def safe_dsn(dsn: str) -> str:
    """The DSN to print: without its password (or the text itself if it does not parse)."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(a DSN that does not parse)"
    parts.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


def _get(row: Any, key: str) -> Any:
    return row[key] if isinstance(row, dict) else row[0]


def migrate(dsn: str, *, partitions: bool = True) -> list[str]:
    """Apply the migrations the database lacks, each in its own transaction; returns their names.

    Safe to run from several places at once: an advisory lock makes the others wait."""
    applied = []
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MIGRATE,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                         "name TEXT NOT NULL, applied TIMESTAMPTZ NOT NULL DEFAULT now())")
            have = schema_version(conn)
            for m in migrations():
                if m.version <= have:
                    continue
                with conn.transaction():
                    conn.execute(m.sql.encode("utf-8"))
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
                applied.append(m.name)
        if partitions:
            ensure_partitions(conn, time.time())
    return applied


def month_bounds(ts: float, offset: int) -> tuple[int, int, str]:
    """The UTC month `offset` months from the one holding `ts`: (start, end) epoch seconds and its name."""
    d = datetime.fromtimestamp(ts, timezone.utc)
    y, m = divmod(d.year * 12 + d.month - 1 + offset, 12)
    start = calendar.timegm((y, m + 1, 1, 0, 0, 0))
    y2, m2 = divmod(y * 12 + m + 1, 12)
    end = calendar.timegm((y2, m2 + 1, 1, 0, 0, 0))
    return start, end, f"telemetry_{y:04d}{m + 1:02d}"


def ensure_partitions(conn: psycopg.Connection[Any], now: float, back: int = 13, ahead: int = 3) -> list[str]:
    """Monthly telemetry partitions from `back` months ago to `ahead` months on; returns those made.

    A month whose rows already sit in the default partition (a box's clock far off, or a
    backlog older than `back`) keeps them there: it is logged, not forced."""
    made: list[str] = []
    existing = {r["relname"] if isinstance(r, dict) else r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'telemetry'::regclass").fetchall()}
    todo = [month_bounds(now, k) for k in range(-back, ahead + 1)]
    todo = [t for t in todo if t[2] not in existing]
    if not todo:
        return made
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_PARTITIONS,))
        for start, end, name in todo:
            try:
                with conn.transaction():
                    conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF telemetry "
                                 f"FOR VALUES FROM ({start}) TO ({end})")
                made.append(name)
            except psycopg.Error as exc:
                log.warning("telemetry partition %s not made (%s); its rows stay in telemetry_default",
                            name, str(exc).strip().splitlines()[0])
    return made


class PgStore(SqlStore):
    LOCK_ROW = " FOR UPDATE"
    TOUCH_APART = True

    def __init__(self, dsn: str, files: EvidenceFiles, *, pool_size: int = 8, timeout: float = 30.0):
        self.files = files
        self.pool = connect_pool(dsn, max_size=pool_size, timeout=timeout)
        try:
            with self.pool.connection() as conn:
                have = schema_version(conn)
                want = latest_version()
                if have != want:
                    raise SchemaError(f"the PostgreSQL schema is at version {have}, this edge-bureau needs {want}: "
                                      "run `edge-bureau migrate --config FILE`" if have < want else
                                      f"the PostgreSQL schema is at version {have}, newer than this edge-bureau "
                                      f"({want}): upgrade edge-bureau")
                ensure_partitions(conn, time.time())
        except BaseException:
            self.pool.close()
            raise
        self._reader = _Reader(self.pool)
        self.retries = 0  # batches applied again after meeting another worker (deadlock, same key)

    def _db(self) -> _Reader:
        return self._reader

    @contextmanager
    def _tx(self) -> Iterator[_Conn]:
        with self.pool.connection() as conn, conn.transaction():
            yield _Conn(conn)

    def _claim(self, db: Conn, msg_ids: list[str], received: float) -> set[str]:
        # One statement for the whole batch; ids in one order, so two workers never wait on each other in a cycle.
        if not msg_ids:
            return set()
        rows = db.execute("INSERT INTO seen (msg_id, received) SELECT unnest(?::text[]), ? "
                          "ON CONFLICT DO NOTHING RETURNING msg_id", (sorted(set(msg_ids)), received)).fetchall()
        return {r["msg_id"] for r in rows}

    def _many(self, db: Conn, sql: str, rows: list[tuple[Any, ...]]) -> None:
        assert isinstance(db, _Conn)
        with db.conn.cursor() as cur:
            cur.executemany(_pg(sql), [_clean(r) for r in rows])  # pipelined: no wait per row

    def _insert_telemetry(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        # One statement for the batch: a column of values per array.
        columns = [list(c) for c in zip(*rows, strict=True)]
        columns[9] = [x.replace("\x00", "\ufffd") if isinstance(x, str) else x for x in columns[9]]
        db.execute(f"INSERT INTO telemetry ({', '.join(TELEMETRY_COLUMNS)}) SELECT * FROM unnest(?::text[], "
                   "?::text[], ?::bigint[], ?::float8[], ?::float8[], ?::float8[], ?::float8[], ?::float8[], "
                   "?::smallint[], ?::text[]) ON CONFLICT DO NOTHING", columns)

    def _touch_apart(self, rows: list[tuple[Any, ...]]) -> None:
        # One statement in its own transaction, rows in one order: no lock held beyond it, no cycle.
        sites, devices, when = ([r[0] for r in rows], [r[1] for r in rows], rows[0][2])
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO devices (site, device, last_seen) SELECT s, d, %s FROM unnest(%s::text[], "
                         "%s::text[]) AS t(s, d) ON CONFLICT (site, device) DO UPDATE SET last_seen = "
                         "excluded.last_seen", (when, sites, devices))

    def apply(self, records: Sequence[Record], received: float) -> Applied:
        # One lock order for every worker: by device, keeping each device's own order.
        ordered = sorted(records, key=lambda r: (r.site or "", r.device or ""))
        for attempt in range(20):
            try:
                return super().apply(ordered, received)
            except RETRY as exc:
                if attempt == 19:
                    raise
                self.retries += 1
                log.debug("batch met another worker (%s); applying it again", type(exc).__name__)
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    def prune(self, now: float, dedup_days: int) -> None:
        super().prune(now, dedup_days)
        with self.pool.connection() as conn:
            ensure_partitions(conn, now)

    def outage(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.OperationalError)

    def close(self) -> None:
        self.pool.close()
