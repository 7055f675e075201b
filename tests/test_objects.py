"""The shared COCO detector and the box tracker: real SSD passes on rendered scenes, tracker rules on boxes."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from detectors.card import ModelError
from detectors.geometry import iou
from detectors.objects import (
    MODELS_DIR,
    BoxTracker,
    ObjectBox,
    ObjectDetector,
    ObjectParams,
    load_objects,
    merge_boxes,
    shrink_to,
    tile_boxes,
)
from detectors.pool import ModelPool
from detectors.registry import CameraView, build
from detectors.shared import SharedFeatures
from detectors.training.exit_scene import Car, ExitScene, yard
from detectors.uncovered_load import LoadParams
from detectors.washing import WashParams

T0 = datetime(2025, 6, 1, 22, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ssd() -> ObjectDetector:
    return load_objects()


def _truth(car: Car, t: float, scene: ExitScene) -> tuple[float, float, float, float]:
    """The rendered car's box, normalised (wheels to roof)."""
    cx = car.x(t)
    h = car.width * scene.width * 0.42 / scene.height
    return max(0.0, cx - car.width / 2), scene.ground_y - h, min(1.0, cx + car.width / 2), scene.ground_y + 0.0


def test_rendered_car_is_a_vehicle_where_it_is(ssd: ObjectDetector) -> None:
    for body in ((40, 40, 200), (160, 60, 30), (200, 200, 200)):
        car = Car(start=0, body=body, stop_x=0.45, dwell=100)
        scene = ExitScene(cars=[car], seed=2)
        image = scene.frame(10.0)
        found = [o for o in ssd.detect(image) if o.group == "vehicle" and o.score >= 0.5]
        assert found, f"the SSD missed the rendered car {body}"
        best = max(found, key=lambda o: iou(o.box, _truth(car, 10.0, scene)))
        assert iou(best.box, _truth(car, 10.0, scene)) > 0.6
        assert best.label in ("car", "truck", "bus")


def test_rendered_workers_are_people(ssd: ObjectDetector) -> None:
    image = yard(people=[(0.2, 0.92), (0.5, 0.92), (0.8, 0.92)], person_h=0.35, seed=1)
    people = [o for o in ssd.detect(image) if o.group == "person" and o.score >= 0.5]
    assert len(people) == 3
    xs = sorted((o.box[0] + o.box[2]) / 2 for o in people)
    assert np.allclose(xs, [0.2, 0.5, 0.8], atol=0.05)


def test_crop_and_tiles_give_boxes_in_whole_frame_coordinates(ssd: ObjectDetector) -> None:
    car = Car(start=0, stop_x=0.7, dwell=100, width=0.28)
    scene = ExitScene(width=960, height=540, cars=[car], seed=3)
    image = scene.frame(20.0)
    truth = _truth(car, 20.0, scene)
    for crop, tiles in ((None, (1, 1)), ((0.4, 0.3, 1.0, 1.0), (1, 1)), ((0.0, 0.35, 1.0, 1.0), (2, 1)),
                        (None, (2, 2))):
        found = [o for o in ssd.detect(image, crop, tiles) if o.group == "vehicle" and o.score >= 0.5]
        assert found, f"crop {crop} tiles {tiles}: car missed"
        assert max(iou(o.box, truth) for o in found) > 0.6, (crop, tiles, found)
        assert len([o for o in found if iou(o.box, truth) > 0.3]) == 1, "a car cut by a tile edge counted twice"


def test_tiles_cover_the_crop_with_overlap() -> None:
    tiles = tile_boxes((0.0, 0.35, 1.0, 1.0), (2, 1))
    assert len(tiles) == 2 and tiles[0][0] == 0.0 and tiles[1][2] == 1.0
    assert tiles[0][2] > tiles[1][0]  # they overlap
    assert all(t[1] == 0.35 and t[3] == 1.0 for t in tiles)


def test_shrink_is_an_area_average_not_a_skip() -> None:
    stripes = np.zeros((1080, 1920, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: a point sampler sees black or white, an average grey
    small = shrink_to(stripes, 300, 300)
    assert small.shape == (300, 300, 3)
    assert 100 < float(small.mean()) < 155 and float(small.std()) < 30


def test_merge_keeps_one_box_per_object() -> None:
    a = ObjectBox("vehicle", "car", 0.8, (0.1, 0.1, 0.5, 0.5))
    b = ObjectBox("vehicle", "truck", 0.6, (0.12, 0.1, 0.5, 0.52))
    c = ObjectBox("person", "person", 0.7, (0.12, 0.1, 0.5, 0.52))
    assert merge_boxes([b, a, c]) == [a, c]


def test_one_ssd_pass_per_frame_for_all_detectors_of_a_camera() -> None:
    pool = ModelPool()
    view = CameraView("exit", {"wash_bay": ((0.3, 0.5), (0.62, 0.5), (0.62, 0.95), (0.3, 0.95))})
    line = ((0.8, 0.0), (0.8, 1.0))
    dets = [build(WashParams(exit_line=line), view, pool),
            build(LoadParams(exit_line=line), view, pool),
            build(ObjectParamsActivity(), view, pool)]
    objects = pool.objects()
    assert all(getattr(d, "objects", None) is objects for d in dets)  # loaded once per camera
    scene = ExitScene(cars=[Car(start=0)], seed=1)
    before = objects.passes
    for i in range(4):
        frame = scene.frame(float(i), i=i)
        shared = SharedFeatures(frame, pool)
        for d in dets:
            d.analyse(frame, T0 + timedelta(seconds=i), shared=shared)
    assert objects.passes - before == 4
    for i in range(4, 6):  # a caller without SharedFeatures: the detector's own last-frame cache
        frame = scene.frame(float(i), i=i)
        for d in dets:
            d.analyse(frame, T0 + timedelta(seconds=i))
    assert objects.passes - before == 6


def ObjectParamsActivity() -> ObjectParams:
    from detectors.activity import ActivityParams

    return ActivityParams()


def test_model_that_does_not_match_its_card_is_refused(tmp_path: Path) -> None:
    for name in ("ssd_mobilenet_v1_coco_int8.yaml", "coco_labelmap.txt"):
        shutil.copy(MODELS_DIR / name, tmp_path / name)
    bad = tmp_path / "ssd_mobilenet_v1_coco_int8.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="does not match its card"):
        load_objects(bad)
    with pytest.raises(ModelError, match="card"):
        load_objects(tmp_path / "missing.tflite")


def test_params_check_crop_and_scores() -> None:
    with pytest.raises(ValueError):
        WashParams(crop=(0.5, 0.0, 0.4, 1.0))
    with pytest.raises(ValueError):
        WashParams(min_score=0.5, keep_score=0.6)
    with pytest.raises(ValueError):
        WashParams(tiles=(5, 1))


# --- tracker rules, on boxes ---------------------------------------------------------------------------------


def _box(x0: float, x1: float, score: float = 0.8, y0: float = 0.6, y1: float = 0.85) -> ObjectBox:
    return ObjectBox("vehicle", "car", score, (x0, y0, x1, y1))


def _t(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_touching_vehicles_merged_into_one_box_stay_two_tracks() -> None:
    tr = BoxTracker()
    for s in range(3):  # two cars side by side, seen apart
        tr.update([_box(0.1, 0.4), _box(0.42, 0.72)], _t(s))
    a, b = sorted(tr.tracks.values(), key=lambda t: t.box[0])
    for s in range(3, 6):  # the detector now sees one box over both
        live = tr.update([_box(0.1, 0.72, 0.9)], _t(s))
        assert {t.id for t in live} == {a.id, b.id}
        assert not a.observed and not b.observed  # both coast; neither takes the merged box
    tr.update([_box(0.1, 0.4), _box(0.42, 0.72)], _t(6))
    assert a.observed and b.observed and len(tr.tracks) == 2
    assert a.box[2] < b.box[0] + 0.02


def test_motion_prediction_bridges_missed_analyses() -> None:
    tr = BoxTracker()
    for s in range(4):  # 0.1 of the width per second
        tr.update([_box(0.05 + 0.1 * s, 0.3 + 0.1 * s)], _t(s))
    (track,) = tr.tracks.values()
    assert track.velocity[0] == pytest.approx(0.1, abs=0.02)
    tr.update([], _t(4))
    tr.update([], _t(5))
    tr.update([_box(0.65, 0.9)], _t(6))  # three seconds later, 0.3 further on: the same vehicle
    assert list(tr.tracks) == [track.id] and track.observed


def test_low_scores_only_continue_tracks() -> None:
    tr = BoxTracker(min_score=0.5, keep_score=0.35)
    tr.update([_box(0.1, 0.4, 0.4)], _t(0))
    assert not tr.tracks  # too weak to start one
    tr.update([_box(0.1, 0.4, 0.8)], _t(1))
    tr.update([_box(0.12, 0.42, 0.8)], _t(2))
    (track,) = tr.tracks.values()
    for s in range(3, 6):  # spray over the truck: weak boxes keep it
        tr.update([_box(0.12, 0.42, 0.4)], _t(s))
        assert track.observed


def test_no_new_track_inside_a_coasting_one_and_tracks_expire() -> None:
    tr = BoxTracker(max_coast_s=3.0)
    tr.update([_box(0.3, 0.6)], _t(0))
    tr.update([_box(0.3, 0.6)], _t(1))
    (track,) = tr.tracks.values()
    tr.update([_box(0.25, 0.65, 0.9, y0=0.4)], _t(2))  # an odd, taller box over the same vehicle
    assert list(tr.tracks) == [track.id]
    tr.update([], _t(4))
    assert list(tr.tracks) == [track.id]
    tr.update([], _t(6))
    assert not tr.tracks  # unseen for more than max_coast_s
    tr.update([_box(0.0, 0.1)], _t(7))
    tr.update([], _t(8))
    assert not tr.tracks  # a tentative track (seen once) goes at its first miss
