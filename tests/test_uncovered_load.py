"""Open loads at the exit: vehicle track → load crop → frozen backbone + head → one judgement at the line.

Without ../shared the chain runs on rendered cars carrying a load on the roof, with a head
trained here on rendered load crops (the shipped head knows gantry photos, not these). With
../shared the shipped head is run on real gantry photos moved across an exit line.
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from detectors.card import ModelError
from detectors.heads import FitSettings, fit, pool
from detectors.objects import MODELS_DIR, ObjectDetector, load_objects
from detectors.pool import ModelPool
from detectors.registry import CameraView, build
from detectors.runtime import Classifier, load_classifier
from detectors.training.exit_scene import SHARED_DATA, Car, ExitScene, real_truck_frames, shared_images
from detectors.types import Detection
from detectors.uncovered_load import (
    HEAD_NAME,
    LABELS,
    LoadParams,
    UncoveredLoadDetector,
    crop,
    load_box,
    load_cover_classifier,
    region_of,
    train,
    write_head,
)

T0 = datetime(2025, 6, 1, 3, 0, tzinfo=timezone.utc)
ROAD = (0.0, 0.35, 1.0, 1.0)
ROOF = (0.1, -0.55, 0.9, 0.1)  # the roof load above a side-view car's box
SIDE_LINE = ((0.8, 0.0), (0.8, 1.0))


@pytest.fixture(scope="module")
def ssd() -> ObjectDetector:
    return load_objects()


@pytest.fixture(scope="module")
def shipped() -> Classifier:
    return load_cover_classifier()


@pytest.fixture(scope="module")
def rendered_head(ssd: ObjectDetector, shipped: Any, tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    """A site's own head, trained here as a site would: load crops cut by the detector's own steps (SSD box,
    load region) from rendered cars with a covered or uncovered roof load, saved with its card and loaded."""
    rng = np.random.default_rng(0)
    maps, ys = [], []
    for k in range(16):
        kind = ("covered", "uncovered")[k % 2]
        body = ((40, 40, 200), (160, 60, 30), (200, 200, 200), (30, 30, 30))[k // 4]
        scene = ExitScene(cars=[Car(start=0, body=body, roof=kind, stop_x=float(rng.uniform(0.3, 0.7)), dwell=99)],
                          seed=100 + k)
        frame = scene.frame(20.0)
        box = max((o for o in ssd.detect(frame, ROAD) if o.group == "vehicle"), key=lambda o: o.score).box
        patch = crop(frame, load_box(box, ROOF))
        for view in (patch, patch[:, ::-1]):
            maps.append(pool(shipped.backbone.feature_map(np.ascontiguousarray(view)), "mean"))
            ys.append(k % 2)
    head = fit(np.asarray(maps), np.asarray(ys), ("covered", "uncovered"), "mean", FitSettings(l2=0.1))
    out = tmp_path_factory.mktemp("site_head")
    card = write_head(head, out, shipped.backbone.path, shipped.backbone.sha256, ROOF, name="site_roof_loads")
    loaded = load_classifier(card)
    assert region_of(loaded) == ROOF and loaded.labels == ("covered", "uncovered")
    return loaded


def _run(scene: ExitScene, ssd: ObjectDetector, classifier: Any, seconds: int = 30,
         **params: object) -> list[Detection]:
    det = UncoveredLoadDetector(SIDE_LINE, (0.4, 0.7), LoadParams(crop=ROAD, **params),
                                camera="exit", objects=ssd, classifier=classifier)
    out: list[Detection] = []
    for t in range(seconds):
        out.extend(det.analyse(scene.frame(float(t), i=t), T0 + timedelta(seconds=t)))
    return out


@pytest.mark.parametrize(("load", "violation"), [("uncovered", True), ("covered", False)])
def test_rendered_covered_and_uncovered_load(ssd: ObjectDetector, rendered_head: Classifier, load: str,
                                             violation: bool) -> None:
    scene = ExitScene(cars=[Car(start=0, body=(40, 40, 200), roof=load, speed=0.1)], seed=2)
    out = _run(scene, ssd, rendered_head)  # the head's card gives the load region
    assert len(out) == 1, [(d.kind, d.metrics) for d in out]  # once per vehicle, at the line
    (d,) = out
    assert d.confirmed is violation
    assert d.kind == ("uncovered_load" if violation else "load_checked")
    assert d.metrics["load"] == load and float(d.metrics["samples"]) >= 2
    assert set(d.metrics) >= {"p_covered", "p_uncovered", "p_violation", "vehicle", "track"}
    assert (float(d.metrics["p_violation"]) >= 0.6) is violation
    assert d.key == "uncovered_load:exit:" + str(int(float(d.metrics["track"])))
    assert len(d.regions) == 2  # the vehicle box and its load area
    if violation:
        assert d.images["load"].size and d.images["snapshot"].shape == (360, 640, 3)


def test_two_vehicles_two_judgements(ssd: ObjectDetector, rendered_head: Classifier) -> None:
    first = Car(start=0, body=(40, 40, 200), roof="covered", speed=0.12)
    second = Car(start=6, body=(160, 60, 30), roof="uncovered", speed=0.12)
    out = _run(ExitScene(cars=[first, second], seed=3), ssd, rendered_head, seconds=36, load_region=ROOF)
    assert [d.kind for d in out] == ["load_checked", "uncovered_load"]
    assert out[0].key != out[1].key


class _Fixed:
    """A classifier that always answers the same: to test the detector's bookkeeping alone."""

    labels = LABELS

    def __init__(self, probs: list[float]) -> None:
        self.probs = np.asarray(probs, np.float32)
        self.calls = 0

    def classify(self, crops: list[np.ndarray]) -> np.ndarray:
        self.calls += len(crops)
        return np.tile(self.probs, (len(crops), 1))


def test_unknown_when_never_big_enough_and_partial_counts(ssd: ObjectDetector) -> None:
    scene = ExitScene(cars=[Car(start=0, speed=0.12)], seed=4)
    never = _Fixed([0.1, 0.1, 0.7, 0.1])
    (d,) = _run(scene, ssd, never, min_box_height=0.9)
    assert d.kind == "load_checked" and d.metrics["load"] == "unknown" and never.calls == 0
    partial = _Fixed([0.1, 0.7, 0.1, 0.1])
    (d,) = _run(scene, ssd, partial)
    assert d.kind == "uncovered_load" and d.confirmed and d.metrics["load"] == "partial"
    (d,) = _run(scene, ssd, _Fixed([0.1, 0.7, 0.1, 0.1]), violation_labels=("uncovered",))
    assert not d.confirmed
    with pytest.raises(ValueError, match="violation_labels"):
        _run(scene, ssd, partial, violation_labels=("tarp",))  # names nothing the head knows


def test_load_box_is_relative_to_the_vehicle() -> None:
    assert load_box((0.2, 0.5, 0.6, 0.9), (0.0, -0.5, 1.0, 0.0)) == pytest.approx((0.2, 0.3, 0.6, 0.5))
    assert load_box((0.2, 0.1, 0.6, 0.5), (0.0, -0.5, 1.0, 0.0))[1] == 0.0  # clipped to the image


def test_registry_build_and_shipped_card() -> None:
    pool = ModelPool()
    view = CameraView("exit", {"wash_bay": ((0.3, 0.5), (0.62, 0.5), (0.62, 0.95), (0.3, 0.95))})
    det = build(LoadParams(exit_line=SIDE_LINE), view, pool)
    assert isinstance(det, UncoveredLoadDetector) and det.objects is pool.objects()
    assert det.classifier is pool.classifier(HEAD_NAME)
    with pytest.raises(ValueError, match="inside"):
        build(LoadParams(exit_line=SIDE_LINE), CameraView("exit"), pool)
    card = yaml.safe_load((MODELS_DIR / f"{HEAD_NAME}.yaml").read_text())
    loo = card["leave_one_out"]
    assert sum(c["n"] for c in loo["per_class"].values()) == loo["n"]
    with (MODELS_DIR / f"{HEAD_NAME}.loo.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == loo["n"]  # the card's figures are those of the listed predictions
    assert sum(r["label"] == r["predicted"] for r in rows) / len(rows) == pytest.approx(loo["accuracy"], abs=1e-3)
    assert "limitations" in card and str(loo["n"]) in card["limitations"]


def test_a_head_that_does_not_match_its_card_is_refused(tmp_path: Path) -> None:
    card = yaml.safe_load((MODELS_DIR / f"{HEAD_NAME}.yaml").read_text())
    (tmp_path / card["file"]).write_bytes(b"not a head")
    (tmp_path / f"{HEAD_NAME}.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match="does not match"):
        load_cover_classifier(tmp_path / f"{HEAD_NAME}.yaml")


# --- real photos (../shared/datasets/site_vehicles), skipped in a clone without them -------------------------


def _real(label: str, ssd) -> Path:
    photos = shared_images(label)
    if not photos:
        pytest.skip("../shared/datasets/site_vehicles is not here (a user's clone)")
    import cv2

    for photo in photos:  # the first photo whose truck the SSD finds
        if any(o.group == "vehicle" and o.score >= 0.5 for o in ssd.detect(cv2.imread(str(photo)))):
            return photo
    pytest.skip(f"no {label} photo with a vehicle the SSD finds")


def test_real_gantry_photos_cross_the_line_once_each(ssd: ObjectDetector, shipped: Classifier) -> None:
    p_violation = {}
    for label in ("uncovered_load", "covered_load"):
        frames = real_truck_frames(_real(label, ssd), n=14)
        det = UncoveredLoadDetector(((0.0, 0.78), (1.0, 0.78)), (0.5, 0.3), LoadParams(), camera="gantry",
                                    objects=ssd, classifier=shipped)
        out = [d for k, f in enumerate(frames) for d in det.analyse(f, T0 + timedelta(seconds=k))]
        assert len(out) == 1, (label, [(d.kind, d.metrics) for d in out])
        assert float(out[0].metrics["samples"]) >= 1
        p_violation[label] = float(out[0].metrics["p_violation"])
    # these photos were in the shipped head's training set: an in-sample check of the chain, not accuracy
    assert p_violation["uncovered_load"] > p_violation["covered_load"]


def test_training_command_writes_a_head_and_card_that_load(tmp_path: Path) -> None:
    if not (SHARED_DATA / "site_vehicles" / "labels.csv").is_file():
        pytest.skip("../shared/datasets/site_vehicles is not here (a user's clone)")
    result = train(SHARED_DATA / "site_vehicles", tmp_path, steps=100)
    figures = result["leave_one_out"]
    assert set(figures["per_class"]) == set(LABELS) and figures["n"] >= 10
    assert 0.0 <= figures["violation_vs_ok"]["accuracy"] <= 1.0
    loaded = load_cover_classifier(tmp_path / f"{HEAD_NAME}.yaml")
    assert loaded.labels == LABELS
