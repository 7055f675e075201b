"""The one violation path: crew first, then the bureau, then evidence; no step stops the next.

Also: night work raised from noise carries what the cameras saw over its window.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edge_agent.archive import Archive
from edge_agent.types import Violation
from edge_agent.video.activity import Activity, ActivityLog
from edge_agent.violation_store import ViolationStore
from edge_agent.violations import ViolationPath

T0 = datetime(2026, 12, 1, 16, 0, tzinfo=timezone.utc)  # 00:00 in Shenzhen


def violation(kind: str = "noise_over_limit", state: str = "started", at: datetime = T0,
              **figures: Any) -> Violation:
    return Violation(kind, state, f"{kind}:noise-1:{int(at.timestamp())}", at, at, "noise-1",
                     {"leq": 72.0, "limit": 55, "window_s": 1200, **figures}, "LAeq over the limit")


class Published:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any, str]] = []

    def __call__(self, leaf: str, payload: Any, *, kind: str) -> None:
        self.items.append((leaf, payload, kind))


class Evidence:
    def __init__(self) -> None:
        self.submitted: list[Violation] = []

    def submit(self, v: Violation) -> None:
        self.submitted.append(v)


def test_a_failing_step_does_not_stop_the_next_and_is_counted(tmp_path: Path):
    published, evidence = Published(), Evidence()

    def speaker_on_fire(v: Violation) -> None:
        raise RuntimeError("speaker on fire")

    store = ViolationStore(tmp_path / "v.sqlite")
    path = ViolationPath(act=speaker_on_fire, publish=published, archive=Archive(tmp_path / "a.sqlite"),
                         evidence=evidence, store=store)  # type: ignore[arg-type]
    path.report(violation())
    path.report(violation(state="ended"))
    assert [(leaf, body["state"]) for leaf, body, _ in published.items] == [("event", "started"), ("event", "ended")]
    # Only a started violation gets a bundle, and its event says one follows.
    assert [v.state for v in evidence.submitted] == ["started"]
    assert published.items[0][1]["evidence_expected"] is True and "evidence_expected" not in published.items[1][1]
    assert path.health()["failures"] == {"actions": 2}
    assert not store.open_violations() and [v.key for v in store.pending_jobs()] == [evidence.submitted[0].key]


def test_night_work_carries_what_the_cameras_saw_over_its_window(tmp_path: Path):
    log = ActivityLog()
    box = ((0.1, 0.2), (0.3, 0.2), (0.3, 0.6), (0.1, 0.6))
    log.add(Activity("cam-yard", T0 - timedelta(minutes=3), people=2, vehicles=1, moving=2, outlines=(box,)))
    log.add(Activity("cam-yard", T0 - timedelta(minutes=40), people=5, vehicles=0, moving=5, outlines=(box,)))
    published = Published()
    path = ViolationPath(act=lambda v: None, publish=published, archive=Archive(tmp_path / "a.sqlite"),
                         evidence=None, store=ViolationStore(tmp_path / "v.sqlite"), enrich=log.corroborate)
    path.report(violation("night_work", window_s=600))
    figures = published.items[0][1]["figures"]
    assert figures["video_corroborated"] == "yes" and figures["video_people_max"] == 2  # the 40-min-old frame is out
    assert figures["video_cameras"] == "cam-yard" and figures["video_frames_moving"] == 1

    quiet = ActivityLog()  # nobody on camera: the noise alone raised it, and the event says so
    ViolationPath(act=lambda v: None, publish=published, archive=Archive(tmp_path / "b.sqlite"), evidence=None,
                  store=ViolationStore(tmp_path / "w.sqlite"),
                  enrich=quiet.corroborate).report(violation("night_work", window_s=600))
    assert published.items[1][1]["figures"]["video_corroborated"] == "no"


def test_corroboration_outlines_the_people_on_the_evidence_snapshot():
    log = ActivityLog()
    box = ((0.1, 0.2), (0.3, 0.2), (0.3, 0.6), (0.1, 0.6))
    log.add(Activity("cam-yard", T0 - timedelta(seconds=30), people=1, vehicles=0, moving=1, outlines=(box,)))
    enriched = log.corroborate(violation("night_work", window_s=300))
    assert enriched.seen is not None and enriched.seen.camera == "cam-yard" and enriched.seen.outlines == (box,)
    other = violation("noise_over_limit")
    assert log.corroborate(other) is other


def test_a_camera_is_told_to_keep_each_clip_when_its_violation_is_reported_not_when_its_job_runs(tmp_path: Path):
    """The evidence worker builds one bundle at a time: a media source with `reserve` hears of each
    violation at once (the camera pins the clip's start), and is asked for its files later."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent.evidence.bundle import EvidenceStore
    from edge_agent.history import ReadingHistory
    from edge_agent.security.keys import Signer
    from edge_agent.violations import EvidenceWorker

    calls: list[tuple[str, str]] = []

    class Camera:
        def reserve(self, v: Violation) -> None:
            calls.append(("reserve", v.key))

        def __call__(self, v: Violation) -> list:
            calls.append(("files", v.key))
            return []

    store = EvidenceStore(tmp_path / "evidence", Signer(Ed25519PrivateKey.generate()), "s", "d")
    worker = EvidenceWorker(store, ReadingHistory(), None, 60, media=[Camera()])
    first, second = violation(at=T0), violation(at=T0 + timedelta(seconds=1))
    worker.submit(first)
    worker.submit(second)  # both reported before any job ran
    assert calls == [("reserve", first.key), ("reserve", second.key)]
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while worker.bundles < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert calls[2:] == [("files", first.key), ("files", second.key)] and worker.bundles == 2
