"""Low disk never costs evidence inside its retention: clips go first, then the janitor stops and says so.

Seen before: with the default `disk_min_free_mb` of 200 on a 30 MB data disk, all 34 bundles
inside their 180-day retention were deleted within 20 s of start, chasing a target no deletion
could reach.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from small_fs import fill, small_filesystem

from edge_agent.config.storage import RetentionConfig, StorageConfig
from edge_agent.retention import Janitor, free_mb

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def bundle(root: Path, name: str, age_days: float, clip_bytes: int = 0) -> Path:
    """A bundle as the evidence store writes it: manifest, readings, snapshot, maybe a clip."""
    d = root / "evidence" / name
    d.mkdir(parents=True)
    (d / "manifest.json").write_text('{"files": []}')
    (d / "readings.json").write_text("[]")
    (d / "snapshot.jpg").write_bytes(os.urandom(20_000))
    if clip_bytes:
        (d / "clip.mp4").write_bytes(os.urandom(clip_bytes))
    t = (NOW - timedelta(days=age_days)).timestamp()
    for p in [*d.iterdir(), d]:
        os.utime(p, (t, t))
    return d


def evidence_intact(b: Path) -> bool:
    return all((b / name).exists() for name in ("manifest.json", "readings.json", "snapshot.jpg"))


def test_unreachable_target_on_a_real_30_mb_disk_keeps_all_34_bundles(tmp_path: Path, caplog):
    """The reported case, on a real 30 MB filesystem with the default 200 MB minimum."""
    with small_filesystem(tmp_path / "disk", 30 * 1024) as disk:
        bundles = [bundle(disk, f"b{i:02d}", age_days=i * 5, clip_bytes=300_000) for i in range(34)]  # 0..165 d
        old = bundle(disk, "old", age_days=200, clip_bytes=300_000)
        cfg = StorageConfig(data_dir=disk)
        assert cfg.disk_min_free_mb == 200 and free_mb(disk) < 32  # 30 MiB, in MB
        janitor = Janitor(cfg, now=lambda: NOW)
        caplog.set_level(logging.INFO, logger="edge_agent")
        janitor.run_once()
        assert not old.exists()  # past 180 days: deleted by age, as before
        assert all(evidence_intact(b) for b in bundles)  # inside retention: every one kept
        assert not any((b / "clip.mp4").exists() for b in bundles)  # the clips were the sacrifice
        assert janitor.forced_deletions == 7  # clips of the bundles 0..30 days old; older clips went by age
        health = janitor.health()
        assert health["storage_low"] is True and health["state"] == "degraded"
        assert health["free_mb"] < 32

        janitor.run_once()  # an hour later: nothing more to delete, and no second alarm
        assert all(evidence_intact(b) for b in bundles)
        alarms = [r for r in caplog.records if "no video clip is left" in r.getMessage()]
        assert len(alarms) == 1 and alarms[0].levelno == logging.ERROR

        janitor.config = StorageConfig(data_dir=disk, disk_min_free_mb=10)  # someone fitted a bigger card
        janitor.run_once()
        assert janitor.health()["storage_low"] is False
        assert any("disk space recovered" in r.getMessage() for r in caplog.records)


def simulated_disk(root: Path, size_mb: float):
    """Free space of a disk of `size_mb` holding exactly the files under `root` (real files, real sizes)."""
    def free(path: Path) -> float:
        used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        return size_mb - used / 1e6
    return free


def test_reachable_target_deletes_only_the_oldest_clips_it_needs(tmp_path: Path):
    bundles = [bundle(tmp_path, f"b{i}", age_days=10 - i, clip_bytes=1_000_000) for i in range(6)]
    cfg = StorageConfig(data_dir=tmp_path, disk_min_free_mb=2)
    janitor = Janitor(cfg, now=lambda: NOW, free_mb_fn=simulated_disk(tmp_path, 7.5))  # ~1.4 MB free
    janitor.run_once()
    assert [(b / "clip.mp4").exists() for b in bundles] == [False, True, True, True, True, True]
    assert all(evidence_intact(b) for b in bundles) and janitor.forced_deletions == 1
    assert janitor.health()["storage_low"] is False


def test_unreachable_target_deletes_every_clip_then_stops_and_flags(tmp_path: Path):
    bundles = [bundle(tmp_path, f"b{i}", age_days=170 - i, clip_bytes=500_000) for i in range(10)]
    cfg = StorageConfig(data_dir=tmp_path, disk_min_free_mb=200,
                        retention=RetentionConfig(video_days=365, evidence_days=180))
    janitor = Janitor(cfg, now=lambda: NOW, free_mb_fn=simulated_disk(tmp_path, 30))
    janitor.run_once()
    assert all(evidence_intact(b) for b in bundles)
    assert not any((b / "clip.mp4").exists() for b in bundles) and janitor.forced_deletions == 10
    assert janitor.health()["storage_low"] is True


def test_bundle_age_is_not_reset_when_its_clip_is_removed(tmp_path: Path):
    """Taking the clip out touches the folder; the bundle must still go when its own 180 days are over."""
    b = bundle(tmp_path, "b", age_days=170, clip_bytes=1000)
    cfg = StorageConfig(data_dir=tmp_path, disk_min_free_mb=0)
    Janitor(cfg, now=lambda: NOW, free_mb_fn=lambda p: 1e9).run_once()
    assert evidence_intact(b) and not (b / "clip.mp4").exists()  # video past 30 days
    Janitor(cfg, now=lambda: NOW + timedelta(days=20), free_mb_fn=lambda p: 1e9).run_once()
    assert not b.exists()  # 190 days old


def test_bundle_being_written_is_not_touched(tmp_path: Path):
    tmp = tmp_path / "evidence" / ".tmp-b1"
    tmp.mkdir(parents=True)
    (tmp / "clip.mp4").write_bytes(b"\0" * 1000)
    old = (NOW - timedelta(days=400)).timestamp()
    os.utime(tmp, (old, old))
    cfg = StorageConfig(data_dir=tmp_path, disk_min_free_mb=100)
    Janitor(cfg, now=lambda: NOW, free_mb_fn=lambda p: 1.0).run_once()
    assert (tmp / "clip.mp4").exists()


@pytest.mark.skipif(not shutil.which("mount"), reason="no mount")
def test_health_clears_storage_low_once_space_is_freed(tmp_path: Path):
    with small_filesystem(tmp_path / "disk", 4 * 1024) as disk:
        bundle(disk, "b", age_days=1)
        filler = fill(disk)
        janitor = Janitor(StorageConfig(data_dir=disk, disk_min_free_mb=1), now=lambda: NOW)
        janitor.run_once()
        assert janitor.health()["storage_low"] is True
        filler.unlink()
        assert janitor.health()["storage_low"] is False  # without waiting an hour for the next run


def test_clips_left_by_an_interrupted_bundle_are_removed_after_an_hour(tmp_path: Path):
    import os
    import time

    from edge_agent.config.storage import StorageConfig
    from edge_agent.retention import VIDEO_TMP_DIR, Janitor

    folder = tmp_path / VIDEO_TMP_DIR
    folder.mkdir(parents=True)
    old, fresh, other = folder / "cam1_old.mp4", folder / "cam1_fresh.mp4", folder / "notes.txt"
    for f in (old, fresh, other):
        f.write_bytes(b"x" * 100)
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(other, (two_hours_ago, two_hours_ago))
    Janitor(StorageConfig(data_dir=tmp_path, disk_min_free_mb=0), None).run_once()
    assert not old.exists() and fresh.exists() and other.exists()
