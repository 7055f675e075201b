"""Shared by the bureau tests: a store in a temp dir (SQLite, or PostgreSQL given a DSN), a simulated
box, and applying its messages."""

from __future__ import annotations

import time
from pathlib import Path

from bureau.messages import parse
from bureau.simulate import Message, SimBox
from bureau.store import Applied, FsEvidenceFiles, SQLiteStore
from bureau.store.sql import SqlStore
from bureau.verify import verify_one

PREFIX = "edge/v1"


def make_store(tmp: Path, dsn: str | None = None) -> tuple[SqlStore, FsEvidenceFiles]:
    files = FsEvidenceFiles(tmp / "evidence")
    if dsn is None:
        return SQLiteStore(tmp / "bureau.sqlite", files), files
    from bureau.store.postgres import PgStore

    return PgStore(dsn, files, pool_size=4), files


def feed(store: SqlStore, messages: list[Message]) -> Applied:
    records = [r for r in (parse(t, p, PREFIX) for t, p, _ in messages) if r is not None]
    return store.apply(records, time.time())


def verify_ready(store: SqlStore, files: FsEvidenceFiles, applied: Applied) -> dict[str, str]:
    return {b: verify_one(store, files, s, d, b) for s, d, b in applied.bundles_ready}


def box(tmp: Path, site: str = "sz-nanshan-0001", device: str = "crane-1") -> SimBox:
    return SimBox(site, device, tmp / f"box-{site}-{device}")
