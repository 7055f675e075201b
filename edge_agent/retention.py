"""Keeps the data dir within its limits: retention periods first, then free disk space.

Order of sacrifice when the disk runs low: the oldest video clips (largest, 30-day
retention), then the oldest evidence bundles past nothing else. Every deletion forced by
low disk is logged and counted in status, because it may cost the bureau evidence.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edge_agent.archive import Archive
from edge_agent.config.storage import StorageConfig

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mkv", ".ts"}


def free_mb(path: Path) -> float:
    return shutil.disk_usage(path).free / 1e6


class Janitor:
    """A component that prunes the archive, evidence and clips once an hour (and at start)."""

    name = "storage"

    def __init__(self, config: StorageConfig, archive: Archive | None = None, *,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 free_mb_fn: Callable[[Path], float] = free_mb, interval_s: float = 3600):
        self.config = config
        self.archive = archive
        self.now = now
        self.free_mb = free_mb_fn
        self.interval_s = interval_s
        self.evidence_dir = Path(config.data_dir) / "evidence"
        self.forced_deletions = 0
        self.last_run: float | None = None
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        data_dir = Path(self.config.data_dir)
        free = self.free_mb(data_dir) if data_dir.exists() else None
        low = free is not None and free < self.config.disk_min_free_mb
        return {
            "state": "degraded" if low or self.last_error else "ok",
            "free_mb": None if free is None else round(free),
            "min_free_mb": self.config.disk_min_free_mb,
            "forced_deletions": self.forced_deletions,
            "last_error": self.last_error,
        }

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
                self.last_error = ""
            except Exception as exc:  # a full or read-only disk must not kill the thread
                self.last_error = str(exc)
                log.exception("storage housekeeping failed: %s", exc)
            self._stop.wait(self.interval_s)

    def _entries(self) -> list[tuple[float, Path]]:
        """(mtime, path) of every bundle dir and every clip file under evidence/, oldest first."""
        out: list[tuple[float, Path]] = []
        if not self.evidence_dir.is_dir():
            return out
        for bundle in self.evidence_dir.iterdir():
            if bundle.is_dir():
                out.append((bundle.stat().st_mtime, bundle))
        return sorted(out)

    def run_once(self) -> None:
        now = self.now()
        ret = self.config.retention
        if self.archive is not None:
            for kind in ("telemetry", "event"):
                self.archive.prune(kind, now - timedelta(days=ret.readings_days))
        video_cutoff = (now - timedelta(days=ret.video_days)).timestamp()
        bundle_cutoff = (now - timedelta(days=ret.evidence_days)).timestamp()
        for mtime, bundle in self._entries():
            if mtime < bundle_cutoff:
                shutil.rmtree(bundle, ignore_errors=True)
                continue
            if mtime < video_cutoff:
                for clip in bundle.iterdir():
                    if clip.suffix in VIDEO_SUFFIXES:
                        clip.unlink(missing_ok=True)
        self._free_space()
        self.last_run = time.time()

    def _free_space(self) -> None:
        data_dir = Path(self.config.data_dir)
        minimum = self.config.disk_min_free_mb
        if self.free_mb(data_dir) >= minimum:
            return
        clips = sorted(
            (p.stat().st_mtime, p) for _, b in self._entries() for p in b.iterdir() if p.suffix in VIDEO_SUFFIXES
        )
        for _, clip in clips:
            if self.free_mb(data_dir) >= minimum:
                return
            log.error("disk low (< %d MB free): deleting video clip %s before its retention ends", minimum, clip)
            clip.unlink(missing_ok=True)
            self.forced_deletions += 1
        for _, bundle in self._entries():
            if self.free_mb(data_dir) >= minimum:
                return
            log.error("disk low (< %d MB free): deleting evidence bundle %s before its retention ends",
                      minimum, bundle)
            shutil.rmtree(bundle, ignore_errors=True)
            self.forced_deletions += 1
