"""Cost per analysed frame of the backbone detectors: 1 LiteRT thread, 1080p BGR input, pre-processing included.

Synthetic 1080p video (detectors/training/synth.py) with something to find in it, so the
heads really run: a billowing black plume over a site (black_smoke: background model,
candidates, one pass of its two backbones per candidate crop, Ringelmann grade), and a yard with an
uncovered stockpile zone classified at every frame (bare_soil: one backbone pass per zone,
every cell of the zone from that one map). Each detector is timed alone, then both on one
camera sharing each frame's work (SharedFeatures: the downscaled copies and any backbone
input both use) as the vision worker runs them, every detector on every frame (the worst frame:
the target's figure); then as shipped, bare soil every 10 s (the mean per frame). The exit camera's detectors (washing,
uncovered_load, on the shared SSD) are in bench/object_detectors.py. All of it runs `--rounds`
times and each figure is the best round's median (this VM's speed drifts by a third from minute to
minute); every round's figures are in the JSON line it ends with.
Run: `python bench/detectors.py [--frames 30] [--rounds 3]`.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.backbone import StackedBackbone
from detectors.bare_soil import BareSoilDetector, SoilParams
from detectors.black_smoke import BlackSmokeDetector
from detectors.pool import ModelPool
from detectors.runtime import HeadClassifier
from detectors.shared import SharedFeatures
from detectors.training.synth import SmokeScene, SoilScene

W, H = 1920, 1080
T0 = datetime(2025, 6, 1, tzinfo=timezone.utc)
TARGET_DETECTOR_MS, TARGET_CAMERA_MS = 40.0, 60.0


def _time(analyse: Callable[[np.ndarray, datetime], list[Any]], frames: list[np.ndarray],
          warm: int) -> tuple[float, int]:
    """Median ms per frame after `warm` frames (the first ones build background models), and detections."""
    spent, found = [], 0
    for i, frame in enumerate(frames):
        t = time.perf_counter()
        out = analyse(frame, T0 + timedelta(seconds=i))
        if i >= warm:
            spent.append((time.perf_counter() - t) * 1000)
            found += len(out)
    return statistics.median(spent), found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=30, help="frames per run (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each figure is the best round's (default 3)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    n = max(args.frames, 8)
    smoke = SmokeScene(width=W, height=H, opacity=0.8, kind="site", start=2, seed=3)
    soil = SoilScene(width=W, height=H, seed=0)
    smoke_frames = [smoke.frame(i) for i in range(n)]
    soil_frames = [soil.frame(i, False, 2) for i in range(n)]
    pool = ModelPool()  # one camera's pool: MobileNet V1 is loaded once for both heads
    smoke_clf, soil_clf = pool.classifier("smoke_cls"), pool.classifier("soil_cls")
    assert isinstance(smoke_clf, HeadClassifier) and isinstance(soil_clf, HeadClassifier)
    backbone = soil_clf.backbone  # MobileNet V1: soil reads it alone, smoke beside MobileNet V2 (a stack)
    stack = smoke_clf.backbone
    assert isinstance(stack, StackedBackbone) and stack.parts[0] is backbone

    x = smoke_frames[0][:224, :224]

    def pass_ms(model: Any) -> float:
        for _ in range(3):
            model.feature_map(x)
        t = time.perf_counter()
        for _ in range(20):
            model.feature_map(x)
        return (time.perf_counter() - t) / 20 * 1000

    sys.path.append(str(Path(__file__).resolve().parent))
    from object_detectors import NAMES, measure

    def one_round() -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """Every figure once: (per detector and camera, the other figures)."""
        backbone_ms, stack_ms = pass_ms(backbone), pass_ms(stack)

        results: dict[str, dict[str, float]] = {}
        sd = BlackSmokeDetector(smoke_clf)
        before = stack.passes
        ms, found = _time(sd.analyse, smoke_frames, 3)
        results["black_smoke"] = {"ms": round(ms, 2), "detections": found,
                                  "backbone_passes_per_frame": round((stack.passes - before) / n, 2)}
        soil_params = SoilParams(classify_every_s=0)
        bd = BareSoilDetector(soil_clf, {"stockpile": soil.zone}, soil_params)
        before = backbone.passes
        ms, found = _time(bd.analyse, soil_frames, 1)
        results["bare_soil"] = {"ms": round(ms, 2), "detections": found, "cells": float(len(bd.zones[0].cells)),
                                "backbone_passes_per_frame": round((backbone.passes - before) / n, 2)}

        # One crane camera running both on the same frames (a plume over the site, the ground as a zone),
        # as the vision worker does: one SharedFeatures per frame handed to each detector.
        ground = ((0.0, 0.75), (1.0, 0.75), (1.0, 1.0), (0.0, 1.0))
        cam_smoke = BlackSmokeDetector(smoke_clf)
        cam_soil = BareSoilDetector(soil_clf, {"ground": ground}, soil_params)

        def camera(frame: np.ndarray, when: datetime) -> list[Any]:
            shared = SharedFeatures(frame, pool)
            return cam_smoke.analyse(frame, when, shared=shared) + cam_soil.analyse(frame, when, shared=shared)

        ms, found = _time(camera, smoke_frames, 3)
        results["camera:black_smoke+bare_soil"] = {"ms": round(ms, 2), "detections": found}

        # The same camera as shipped: bare soil classifies its zones every 10 s (SoilParams default), so
        # at 1 fps one frame in ten carries both backbones. The mean per frame is what the CPU pays;
        # the median above (every frame carrying both) is the worst frame, which the target is held to.
        cadence_soil = BareSoilDetector(soil_clf, {"ground": ground}, SoilParams())
        cadence_smoke = BlackSmokeDetector(smoke_clf)
        spent = []
        for i, frame in enumerate(smoke_frames):
            t = time.perf_counter()
            shared = SharedFeatures(frame, pool)
            cadence_smoke.analyse(frame, T0 + timedelta(seconds=i), shared=shared)
            cadence_soil.analyse(frame, T0 + timedelta(seconds=i), shared=shared)
            if i >= 3:
                spent.append((time.perf_counter() - t) * 1000)
        cadence_mean_ms = round(statistics.fmean(spent), 2)

        # The exit camera's detectors, which share one COCO detector pass (bench/object_detectors.py).
        objects = measure(n)
        for name in NAMES:
            results[name] = {"ms": objects[f"{name}_alone"], "detections": 0}
        results["camera:washing+uncovered_load+site_activity"] = {"ms": objects["camera_all_three"], "detections": 0}

        return results, {"backbone_ms": backbone_ms, "smoke_backbones_ms": stack_ms,
                         "site_camera_mean_ms_at_default_cadence": cadence_mean_ms}

    # The VM's speed drifts by a third between minutes (other tenants): each figure is the best of
    # `--rounds` rounds' medians (as timeit takes the minimum), every round's kept in the JSON line.
    rounds = [one_round() for _ in range(max(1, args.rounds))]
    results = {k: dict(v, ms=min(r[0][k]["ms"] for r in rounds)) for k, v in rounds[0][0].items()}
    others = {k: round(min(r[1][k] for r in rounds), 2) for k in rounds[0][1]}
    backbone_ms, stack_ms = others["backbone_ms"], others["smoke_backbones_ms"]
    cadence_mean_ms = others["site_camera_mean_ms_at_default_cadence"]
    by_round = {k: [r[0][k]["ms"] for r in rounds] for k in results}

    print(f"backbone {backbone.path.name}: {backbone_ms:.2f} ms per 224x224 pass; "
          f"smoke's two (+ {stack.parts[1].path.name}): {stack_ms:.2f} ms")
    print(f"{'detector':<30}{'ms/frame':>10}{'detections':>12}")
    for name, r in results.items():
        print(f"{name:<30}{r['ms']:>10.2f}{r['detections']:>12}")
    print(f"site camera as shipped (bare soil every 10 s), mean per frame: {cadence_mean_ms:.2f} ms")
    per_detector = {k: v["ms"] for k, v in results.items() if not k.startswith("camera:")}
    camera_ms = max(v["ms"] for k, v in results.items() if k.startswith("camera:"))
    ok = all(v <= TARGET_DETECTOR_MS for v in per_detector.values()) and camera_ms <= TARGET_CAMERA_MS
    print(json.dumps({"bench": "detectors", "input": f"{W}x{H}", "threads": 1, "frames": n,
                      "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "backbone": backbone.path.name, "backbone_ms": round(backbone_ms, 2),
                      "smoke_backbones_ms": round(stack_ms, 2),
                      "ms_per_frame": {k: v["ms"] for k, v in results.items()},
                      "backbone_passes_per_frame": {k: v["backbone_passes_per_frame"] for k, v in results.items()
                                                    if "backbone_passes_per_frame" in v},
                      "site_camera_mean_ms_at_default_cadence": cadence_mean_ms,
                      "rounds": len(rounds), "ms_per_frame_each_round": by_round,
                      "target_ms": {"detector": TARGET_DETECTOR_MS, "camera": TARGET_CAMERA_MS}, "ok": ok}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
