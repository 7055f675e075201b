"""Retention: periods from the config, then free space, clips sacrificed before bundles."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edge_agent.archive import Archive
from edge_agent.config.storage import RetentionConfig, StorageConfig
from edge_agent.retention import Janitor

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def bundle(root: Path, name: str, age_days: float, clip_bytes: int = 0) -> Path:
    d = root / "evidence" / name
    d.mkdir(parents=True)
    (d / "manifest.json").write_text("{}")
    (d / "readings.json").write_text("[]")
    if clip_bytes:
        (d / "clip.mp4").write_bytes(b"\0" * clip_bytes)
    t = (NOW - timedelta(days=age_days)).timestamp()
    for p in [*d.iterdir(), d]:
        os.utime(p, (t, t))
    return d


def test_periods_remove_old_clips_then_old_bundles(tmp_path: Path):
    cfg = StorageConfig(data_dir=tmp_path, retention=RetentionConfig(video_days=30, evidence_days=180))
    young, middle, old = bundle(tmp_path, "a", 5, 10), bundle(tmp_path, "b", 40, 10), bundle(tmp_path, "c", 200, 10)
    Janitor(cfg, now=lambda: NOW, free_mb_fn=lambda p: 1e9).run_once()
    assert (young / "clip.mp4").exists()
    assert middle.exists() and not (middle / "clip.mp4").exists()  # video past 30 days, bundle kept
    assert (middle / "manifest.json").exists()
    assert not old.exists()  # past 180 days


def test_low_disk_deletes_oldest_clips_first_and_counts(tmp_path: Path):
    cfg = StorageConfig(data_dir=tmp_path, disk_min_free_mb=100)
    a, b = bundle(tmp_path, "a", 3, 1000), bundle(tmp_path, "b", 1, 1000)
    free = {"mb": 99.0}

    def fake_free(path: Path) -> float:  # the disk frees up once one clip is gone
        return free["mb"] + (0 if (a / "clip.mp4").exists() else 5)

    janitor = Janitor(cfg, now=lambda: NOW, free_mb_fn=fake_free)
    janitor.run_once()
    assert not (a / "clip.mp4").exists() and (b / "clip.mp4").exists()
    assert a.exists() and janitor.forced_deletions == 1


def test_archive_keeps_readings_for_the_period(tmp_path: Path):
    archive = Archive(tmp_path / "archive.sqlite")
    for days in (1, 179, 181):
        archive.add("telemetry", NOW - timedelta(days=days), {"days": days, "测": "站"})
    cfg = StorageConfig(data_dir=tmp_path)
    Janitor(cfg, archive, now=lambda: NOW, free_mb_fn=lambda p: 1e9).run_once()
    kept = list(archive.query("telemetry", NOW - timedelta(days=400), NOW))
    assert [r["days"] for r in kept] == [179, 1] and kept[0]["测"] == "站"
