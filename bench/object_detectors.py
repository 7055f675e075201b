"""Cost per analysed 1080p frame of the detectors built on the shared COCO detector, 1 LiteRT thread.

Rendered 1080p exit and yard video (detectors/training/exit_scene.py) with vehicles and workers the SSD
really finds, so trackers and the load head really run. The SSD pass is shared by a camera's
detectors (SharedFeatures): it is timed once on its own (per crop / tiling), and each detector
is timed both alone (its own SSD pass included) and with the pass already made (its own work
only). Ends with one JSON line. Run: `python bench/object_detectors.py [--frames 40]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.activity import ActivityDetector, ActivityParams  # noqa: E402
from detectors.objects import ObjectDetector, load_objects  # noqa: E402
from detectors.pool import ModelPool  # noqa: E402
from detectors.shared import SharedFeatures  # noqa: E402
from detectors.training.exit_scene import Car, ExitScene, yard  # noqa: E402
from detectors.uncovered_load import HEAD_NAME, LoadParams, UncoveredLoadDetector  # noqa: E402
from detectors.washing import WashingDetector, WashParams  # noqa: E402

W, H = 1920, 1080
T0 = datetime(2025, 6, 1, tzinfo=timezone.utc)
ROAD = (0.0, 0.35, 1.0, 1.0)


def _median_ms(run: Callable[[int], Any], n: int, warm: int = 2) -> float:
    spent = []
    for i in range(n):
        t = time.perf_counter()
        run(i)
        if i >= warm:
            spent.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(spent), 2)


def small_objects(ssd: ObjectDetector, share: float = 0.33, photos: int = 40) -> dict[str, float]:
    """Real photos (../shared/datasets/smoke*, when present) shrunk to `share` of a 1080p frame's width: how many of
    the people and vehicles the SSD finds in the full-size photo (score >= 0.6) it still finds (>= 0.5) per tiling.

    Rendered workers are no use here: they were drawn to be found in a 16:9 frame squashed to 300x300.
    """
    from detectors.geometry import iou

    data = ROOT.parent / "shared" / "datasets"
    files = sorted(data.glob("smoke/*/*.jpg")) + sorted(data.glob("smoke_extra/*/*.jpg"))
    picked: list[tuple[np.ndarray, list[Any]]] = []
    for f in files:
        img = cv2.imread(str(f))
        if img is None:
            continue
        ref = [o for o in ssd.detect(img) if o.score >= 0.6]
        if ref:
            picked.append((img, ref))
        if len(picked) >= photos:
            break
    if not picked:
        return {}
    out = {}
    for tiles in ((1, 1), (2, 1), (2, 2), (3, 2)):
        found = total = 0
        for k, (img, ref) in enumerate(picked):
            rng = np.random.default_rng(k)
            w = int(W * share)
            h = min(H, int(img.shape[0] * w / img.shape[1]))
            canvas = np.full((H, W, 3), 110, np.uint8)
            x0, y0 = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
            canvas[y0:y0 + h, x0:x0 + w] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            got = [o for o in ssd.detect(canvas, None, tiles) if o.score >= 0.5]
            for r in ref:
                box = ((x0 + r.box[0] * w) / W, (y0 + r.box[1] * h) / H, (x0 + r.box[2] * w) / W,
                       (y0 + r.box[3] * h) / H)
                total += 1
                found += any(g.group == r.group and iou(g.box, box) > 0.4 for g in got)
        out[f"small_objects_found_{tiles[0]}x{tiles[1]}_pct"] = round(100 * found / max(1, total), 1)
    return out


NAMES = ("washing", "uncovered_load", "site_activity")


def measure(n: int) -> dict[str, float]:
    """The figures by name (ms per frame unless named otherwise); bench/detectors.py reports them too."""
    cv2.setNumThreads(1)
    scene = ExitScene(width=W, height=H, seed=1, cars=[Car(start=0, stop_x=0.46, dwell=8, roof="uncovered"),
                                                        Car(start=6, body=(160, 60, 30), speed=0.12)])
    exit_frames = [scene.frame(float(i), i=i) for i in range(n)]
    yard_frames = [yard(W, H, seed=2, people=[(0.15 + 0.01 * i, 0.9), (0.6, 0.7), (0.85 - 0.01 * i, 0.95)],
                        cars=[(0.4, 0.85)], person_h=0.3) for i in range(n)]
    ssd = load_objects()
    results: dict[str, float] = {}

    def ssd_case(name: str, frames: list[np.ndarray], crop: Any, tiles: tuple[int, int]) -> None:
        results[f"ssd_{name}"] = _median_ms(lambda i: ssd.detect(frames[i], crop, tiles), n)

    ssd_case("whole_1x1", exit_frames, None, (1, 1))
    ssd_case("road_crop_1x1", exit_frames, ROAD, (1, 1))
    ssd_case("whole_2x1", exit_frames, None, (2, 1))
    ssd_case("whole_2x2", exit_frames, None, (2, 2))

    results.update(small_objects(ssd))

    pool = ModelPool()
    objects: ObjectDetector = pool.objects()
    head = pool.classifier(HEAD_NAME)
    bay = scene.wash_bay

    def make() -> list[Any]:
        return [WashingDetector(bay, scene.exit_line, WashParams(min_dwell_s=5, crop=ROAD), "exit", objects),
                UncoveredLoadDetector(scene.exit_line, (0.4, 0.7), LoadParams(crop=ROAD, load_region=(0.1, -0.55,
                                      0.9, 0.1)), "exit", objects, head),
                ActivityDetector(None, ActivityParams(crop=ROAD), "exit", objects)]

    names = NAMES
    for k, name in enumerate(names):  # alone: its own SSD pass included
        det = make()[k]

        def alone(i: int, det: Any = det) -> None:
            det.analyse(exit_frames[i], T0 + timedelta(seconds=i))

        results[f"{name}_alone"] = _median_ms(alone, n)
    for k, name in enumerate(names):  # the pass already made by another detector of the camera
        dets = make()
        timings: list[float] = []
        for i, frame in enumerate(exit_frames):
            shared = SharedFeatures(frame, pool)
            for j, d in enumerate(dets):
                if j == k:
                    continue
                d.analyse(frame, T0 + timedelta(seconds=i), shared=shared)
            t = time.perf_counter()
            dets[k].analyse(frame, T0 + timedelta(seconds=i), shared=shared)
            if i >= 2:
                timings.append((time.perf_counter() - t) * 1000)
        results[f"{name}_own"] = round(statistics.median(timings), 2)
        results[f"{name}_own_max"] = round(max(timings), 2)
    dets = make()

    def camera(i: int) -> None:
        shared = SharedFeatures(exit_frames[i], pool)
        for d in dets:
            d.analyse(exit_frames[i], T0 + timedelta(seconds=i), shared=shared)

    before = objects.passes
    results["camera_all_three"] = _median_ms(camera, n)
    results["ssd_passes_per_frame"] = round((objects.passes - before) / n, 2)
    act = ActivityDetector(None, ActivityParams(), "yard", objects)
    results["site_activity_yard_alone"] = _median_ms(
        lambda i: act.analyse(yard_frames[i], T0 + timedelta(seconds=i)), n)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    n = max(args.frames, 8)
    results = measure(n)
    names = NAMES
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}} {value:>8}")
    per_detector = [results[f"{k}_alone"] for k in names]
    print(json.dumps({"bench": "object_detectors", "input": f"{W}x{H}", "threads": 1, "frames": n,
                      "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "ms": results, "target_ms_per_detector": 40, "target_ms_camera": 60,
                      "ok": max(per_detector) <= 40 and results["camera_all_three"] <= 60}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
