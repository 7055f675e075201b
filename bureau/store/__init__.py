"""The bureau's store: an interface (`base.Store`), SQLite behind it, evidence files on a path."""

from __future__ import annotations

from bureau.config.model import BureauConfig
from bureau.store.base import Applied, Store
from bureau.store.files import EvidenceFiles, FsEvidenceFiles
from bureau.store.sqlite import SQLiteStore

__all__ = ["Applied", "EvidenceFiles", "FsEvidenceFiles", "SQLiteStore", "Store", "open_store"]


def open_store(config: BureauConfig) -> tuple[Store, EvidenceFiles]:
    data = config.store.data_dir
    files = FsEvidenceFiles(data / "evidence")
    return SQLiteStore(data / "bureau.sqlite", files), files
