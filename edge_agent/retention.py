"""Keeps the data dir within its limits: retention periods first, then free disk space.

Evidence is deleted only by age, when its retention period (`evidence_days`, 180 by the
Shenzhen notice) is over: never to make room. When the disk runs low, the only thing the
janitor sacrifices is video clips, oldest first: their legal period is shorter (30 days) and
the outbox holds its own copy of any not yet sent. If the disk is still below
`disk_min_free_mb` with no clip left, the janitor stops there and raises `storage_low` in its
health (component `storage` in the status): a person has to free space or fit a bigger card.
Every deletion forced by low disk is logged and counted.

A bundle's age is its manifest's modification time (written once, when the bundle is made):
the folder's own time changes whenever a clip is taken out of it.
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

from edge_agent.archive import BLOCK, EVENT, TELEMETRY, Archive
from edge_agent.config.storage import StorageConfig

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mkv", ".ts"}
VIDEO_TMP_DIR = "video-clips"  # where cameras cut clips before a bundle takes its copy


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
        self.forced_deletions = 0  # clips deleted before their retention ended, to free space
        self.storage_low = False  # below disk_min_free_mb with nothing left the janitor may delete
        self.last_run: float | None = None
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        """`storage_low: true` is the fault to report: the disk is below its minimum and only people can help."""
        data_dir = Path(self.config.data_dir)
        free = self.free_mb(data_dir) if data_dir.exists() else None
        if self.storage_low and free is not None and free >= self.config.disk_min_free_mb:
            self._set_low(False, free)
        low = free is not None and free < self.config.disk_min_free_mb
        return {
            "state": "degraded" if low or self.storage_low or self.last_error else "ok",
            "storage_low": self.storage_low,
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
            due = time.monotonic() + self.interval_s
            while not self._stop.is_set() and time.monotonic() < due:  # awake each second, so a stop
                self._stop.wait(min(1.0, due - time.monotonic()))  # (or a thread gone wrong) is seen

    def _bundles(self) -> list[tuple[float, Path]]:
        """(time made, folder) of every bundle under evidence/, oldest first (not the `.tmp-*` being written)."""
        out: list[tuple[float, Path]] = []
        if not self.evidence_dir.is_dir():
            return out
        for bundle in self.evidence_dir.iterdir():
            if bundle.name.startswith(".") or not bundle.is_dir():
                continue
            try:
                manifest = bundle / "manifest.json"
                made = (manifest if manifest.exists() else bundle).stat().st_mtime
            except FileNotFoundError:
                continue
            out.append((made, bundle))
        return sorted(out)

    def _clips(self) -> list[Path]:
        """Every video clip in a bundle, those of the oldest bundles first."""
        return [p for _, b in self._bundles() for p in sorted(b.iterdir()) if p.suffix in VIDEO_SUFFIXES]

    def run_once(self) -> None:
        now = self.now()
        ret = self.config.retention
        if self.archive is not None:
            for kind in (TELEMETRY, BLOCK, EVENT):  # readings (minute, hour, day blocks) and events
                self.archive.prune(kind, now - timedelta(days=ret.readings_days))
        video_cutoff = (now - timedelta(days=ret.video_days)).timestamp()
        bundle_cutoff = (now - timedelta(days=ret.evidence_days)).timestamp()
        for made, bundle in self._bundles():
            if made < bundle_cutoff:
                log.info("evidence bundle %s is past its %d days: deleting it", bundle.name, ret.evidence_days)
                shutil.rmtree(bundle, ignore_errors=True)
            elif made < video_cutoff:
                for clip in bundle.iterdir():
                    if clip.suffix in VIDEO_SUFFIXES:
                        clip.unlink(missing_ok=True)
        self._orphan_clips()
        self._free_space()
        self.last_run = time.time()

    def _orphan_clips(self) -> None:
        """A clip is cut into DATA_DIR/video-clips and copied into its bundle; one left by a crash goes."""
        folder = Path(self.config.data_dir) / VIDEO_TMP_DIR
        if not folder.is_dir():
            return
        cutoff = time.time() - 3600
        for clip in folder.iterdir():
            try:
                if clip.suffix in VIDEO_SUFFIXES and clip.stat().st_mtime < cutoff:
                    log.info("removing clip %s left by an interrupted bundle", clip.name)
                    clip.unlink(missing_ok=True)
            except OSError:
                continue

    def _free_space(self) -> None:
        """Delete clips, oldest first, until the minimum is free; never evidence. Flag what is left."""
        data_dir = Path(self.config.data_dir)
        minimum = self.config.disk_min_free_mb
        free = self.free_mb(data_dir)
        if free < minimum:
            for clip in self._clips():
                log.error("disk low (%.0f MB free, minimum %d MB): deleting video clip %s before its "
                          "retention ends", free, minimum, clip)
                clip.unlink(missing_ok=True)
                self.forced_deletions += 1
                free = self.free_mb(data_dir)
                if free >= minimum:
                    break
        self._set_low(free < minimum, free)

    def _set_low(self, low: bool, free: float) -> None:
        """Log once when the disk becomes, or stops being, too full for the janitor to help."""
        if low and not self.storage_low:
            log.error("disk low: %.0f MB free in %s, minimum %d MB, and no video clip is left to delete; "
                      "evidence inside its %d-day retention is kept: free space or fit a bigger card",
                      free, self.config.data_dir, self.config.disk_min_free_mb,
                      self.config.retention.evidence_days)
        elif self.storage_low and not low:
            log.info("disk space recovered: %.0f MB free in %s", free, self.config.data_dir)
        self.storage_low = low
