"""The bureau's store: an interface (`base.Store`), SQLite or PostgreSQL behind it, evidence files on a path."""

from __future__ import annotations

from bureau.config.model import BureauConfig
from bureau.store.base import Applied, Store
from bureau.store.files import EvidenceFiles, FsEvidenceFiles
from bureau.store.sqlite import SQLiteStore

__all__ = ["Applied", "EvidenceFiles", "FsEvidenceFiles", "SQLiteStore", "Store", "open_store"]


def open_store(config: BureauConfig) -> tuple[Store, EvidenceFiles]:
    """The configured store and its evidence files (PostgreSQL: the schema must be migrated)."""
    cfg = config.store
    files = FsEvidenceFiles(cfg.evidence_dir or cfg.data_dir / "evidence")
    if cfg.kind == "postgres":
        from bureau.store.postgres import PgStore  # psycopg only where PostgreSQL is used

        assert cfg.dsn is not None
        return PgStore(cfg.dsn, files, pool_size=cfg.pool_size), files
    return SQLiteStore(cfg.data_dir / "bureau.sqlite", files), files
