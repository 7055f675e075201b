"""Detector cost per analysed frame: 1 LiteRT thread, 1080p BGR input, pre-processing included.

Synthetic 1080p video (detectors/training/synth.py) with something to find in it, so the
classifier really runs: a black plume, an uncovered zone (classified at every frame), a
truck at the exit. int8 and float32 variants of the same model are compared. Ends with
one JSON line. Run: `python bench/detectors.py [--frames 30]`.
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

from detectors.bare_soil import BareSoilDetector, SoilParams
from detectors.black_smoke import BlackSmokeDetector
from detectors.runtime import load_shipped
from detectors.training.synth import SmokeScene, SoilScene, WashScene
from detectors.washing import WashingDetector

W, H = 1920, 1080
T0 = datetime(2025, 6, 1, tzinfo=timezone.utc)


def _time(analyse: Callable[..., list[Any]], frames: list[np.ndarray], warm: int) -> tuple[float, int]:
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
    args = parser.parse_args()
    cv2.setNumThreads(1)
    n = max(args.frames, 8)
    smoke = SmokeScene(width=W, height=H, opacity=0.8, start=2, seed=3)
    soil = SoilScene(width=W, height=H, seed=0)
    wash = WashScene(width=W, height=H, seed=1)
    smoke_frames = [smoke.frame(i) for i in range(n)]
    soil_frames = [soil.frame(i, False, 2) for i in range(n)]
    wash_frames = [wash.frame(float(i), 0.0, i=i) for i in range(n)]
    results: dict[str, dict[str, float]] = {}
    for variant, suffix in (("int8", ""), ("float32", "_f32")):
        sd = BlackSmokeDetector(load_shipped("smoke_cls" + suffix, threads=1))
        ms, found = _time(sd.analyse, smoke_frames, 3)
        results[f"black_smoke_{variant}"] = {"ms": round(ms, 2), "detections": found}
        bd = BareSoilDetector(load_shipped("soil_cls" + suffix, threads=1), {"stockpile": soil.zone},
                              SoilParams(classify_every_s=0))
        ms, found = _time(bd.analyse, soil_frames, 1)
        results[f"bare_soil_{variant}"] = {"ms": round(ms, 2), "detections": found,
                                           "patches": float(len(bd.zones[0].cells))}
    wd = WashingDetector(wash.wash_bay, wash.exit_line)
    ms, found = _time(wd.analyse, wash_frames, 1)
    results["washing"] = {"ms": round(ms, 2), "detections": found}
    print(f"{'detector':<22}{'ms/frame':>10}{'detections':>12}")
    for name, r in results.items():
        print(f"{name:<22}{r['ms']:>10.2f}{r['detections']:>12}")
    print(json.dumps({"bench": "detectors", "input": f"{W}x{H}", "threads": 1, "frames": n,
                      "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "ms_per_frame": {k: v["ms"] for k, v in results.items()},
                      "target_ms": 20, "ok": all(v["ms"] <= 20 for v in results.values())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
