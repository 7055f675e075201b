"""Evidence files on a filesystem path, in the box's own bundle layout.

`ROOT/SITE/DEVICE/BUNDLE/` holds `manifest.json` and the files exactly as the box wrote
them, so `edge-agent verify-evidence` (and `verify_bundle`) work on a bundle directory as
it is, and an export is a copy. Kept behind this small interface so the file storage can
move (a shared volume for several ingest workers, an object store) without the store.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol


class EvidenceFiles(Protocol):
    def write(self, site: str, device: str, bundle: str, name: str, data: bytes) -> None: ...

    def read(self, site: str, device: str, bundle: str, name: str) -> bytes | None: ...

    def bundle_dir(self, site: str, device: str, bundle: str) -> Path: ...

    def remove_bundle(self, site: str, device: str, bundle: str) -> None: ...

    def write_part(self, site: str, device: str, bundle: str, name: str, index: int, count: int,
                   data: bytes) -> None: ...

    def join_parts(self, site: str, device: str, bundle: str, name: str, count: int) -> bytes | None: ...

    def remove_parts(self, site: str, device: str, bundle: str) -> None: ...


class FsEvidenceFiles:
    """Files under one directory; each write goes through a temporary file and a rename."""

    def __init__(self, root: Path, *, fsync: bool = False):
        self.root = root
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True)

    def bundle_dir(self, site: str, device: str, bundle: str) -> Path:
        # site, device, bundle and name are checked against strict patterns before they get here.
        return self.root / site / device / bundle

    def write(self, site: str, device: str, bundle: str, name: str, data: bytes) -> None:
        folder = self.bundle_dir(site, device, bundle)
        folder.mkdir(parents=True, exist_ok=True)
        self._write(folder.parent / f".{bundle}.{name}.{os.getpid()}.tmp", folder / name, data)

    def _write(self, tmp: Path, final: Path, data: bytes) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, final)

    # Parts of a large file wait in ROOT/SITE/DEVICE/.parts/BUNDLE/NAME.COUNT/INDEX until all are
    # here (any worker may get any part); the joined file is then written like a whole one.
    # '.parts' cannot be a bundle id, and a part's count in the folder name keeps two different
    # splittings of one file apart.

    def _parts_dir(self, site: str, device: str, bundle: str) -> Path:
        return self.root / site / device / ".parts" / bundle

    def write_part(self, site: str, device: str, bundle: str, name: str, index: int, count: int,
                   data: bytes) -> None:
        folder = self._parts_dir(site, device, bundle) / f"{name}.{count}"
        folder.mkdir(parents=True, exist_ok=True)
        self._write(folder / f".{index}.{os.getpid()}.tmp", folder / str(index), data)

    def join_parts(self, site: str, device: str, bundle: str, name: str, count: int) -> bytes | None:
        """The file joined in index order, or None while a part is missing."""
        folder = self._parts_dir(site, device, bundle) / f"{name}.{count}"
        try:
            return b"".join((folder / str(i)).read_bytes() for i in range(count))
        except FileNotFoundError:
            return None

    def remove_parts(self, site: str, device: str, bundle: str) -> None:
        shutil.rmtree(self._parts_dir(site, device, bundle), ignore_errors=True)

    def read(self, site: str, device: str, bundle: str, name: str) -> bytes | None:
        try:
            return (self.bundle_dir(site, device, bundle) / name).read_bytes()
        except OSError:
            return None

    def remove_bundle(self, site: str, device: str, bundle: str) -> None:
        shutil.rmtree(self.bundle_dir(site, device, bundle), ignore_errors=True)
        self.remove_parts(site, device, bundle)
