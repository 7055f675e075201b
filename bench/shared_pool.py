"""What one model pool for the whole box costs in time: two camera threads, each model's interpreter shared.

The two cameras of bench/box.py at 1080p (site: black smoke + bare soil; exit: washing +
uncovered load + site activity + black smoke, on rendered scenes the models really see), each
on its own thread as the vision workers run them, with one ModelPool for both (the daemon)
and then with one pool each (before). Paced at 1 analysed frame per second per camera (the
box) and back to back (the worst case: each camera always wants a model). Reports ms per
camera frame (median, p95, max), how often a pass found its interpreter busy and for how
long, and the RSS the second set of interpreters costs. Ends with one JSON line.

Run: `python bench/shared_pool.py [--frames 20]`
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.activity import ActivityParams  # noqa: E402
from detectors.bare_soil import SoilParams  # noqa: E402
from detectors.black_smoke import SmokeParams  # noqa: E402
from detectors.pool import ModelPool  # noqa: E402
from detectors.registry import CameraView, Detector, build  # noqa: E402
from detectors.shared import SharedFeatures  # noqa: E402
from detectors.training.exit_scene import Car, ExitScene  # noqa: E402
from detectors.training.synth import SmokeScene, SoilScene  # noqa: E402
from detectors.uncovered_load import LoadParams  # noqa: E402
from detectors.washing import WashParams  # noqa: E402

W, H = 1920, 1080
T0 = datetime(2025, 6, 1, 10, 0, tzinfo=timezone.utc)
ROAD = (0.0, 0.35, 1.0, 1.0)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cameras(pool_site: ModelPool, pool_exit: ModelPool) -> dict[str, list[Detector]]:
    yard = SoilScene(width=W, height=H, seed=0)
    wash = ExitScene(width=W, height=H, seed=1)
    site = CameraView("cam-site", {"stockpile": yard.zone})
    exit_ = CameraView("cam-exit", {"wash_bay": wash.wash_bay})
    line = wash.exit_line
    return {
        "cam-site": [build(SmokeParams(), site, pool_site), build(SoilParams(classify_every_s=0), site, pool_site)],
        "cam-exit": [build(WashParams(exit_line=line, crop=ROAD), exit_, pool_exit),
                     build(LoadParams(exit_line=line, crop=ROAD), exit_, pool_exit),
                     build(ActivityParams(crop=ROAD), exit_, pool_exit), build(SmokeParams(), exit_, pool_exit)],
    }


def frames(n: int) -> dict[str, list[np.ndarray]]:
    smoke = SmokeScene(width=W, height=H, opacity=0.8, kind="site", start=2, seed=3)
    wash = ExitScene(width=W, height=H, seed=1, cars=[Car(start=0, stop_x=0.46, dwell=5),
                                                      Car(start=8, body=(160, 60, 30), roof="uncovered")])
    return {"cam-site": [smoke.frame(i) for i in range(n)],
            "cam-exit": [wash.frame(float(i), spray=2 < i < 6, i=i) for i in range(n)]}


def run(dets: dict[str, list[Detector]], pools: list[ModelPool], clips: dict[str, list[np.ndarray]],
        period_s: float) -> dict[str, Any]:
    """Both cameras at once; ms per frame per camera, and the pools' waits over the run."""
    before = [p.contention() for p in pools]
    spent: dict[str, list[float]] = {}
    go = threading.Barrier(len(dets))

    def camera(cam: str) -> None:
        go.wait()
        out = spent.setdefault(cam, [])
        start = time.monotonic()
        for i, frame in enumerate(clips[cam]):
            if period_s:
                time.sleep(max(0.0, start + i * period_s - time.monotonic()))
            t = time.perf_counter()
            shared = SharedFeatures(frame, pools[-1])
            for det in dets[cam]:
                det.analyse(frame, T0 + timedelta(seconds=i), motion=0.1, shared=shared)
            out.append((time.perf_counter() - t) * 1000)

    threads = [threading.Thread(target=camera, args=(cam,)) for cam in dets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = [p.contention() for p in pools]
    waits = sum(a["waits"] - b["waits"] for a, b in zip(after, before, strict=True))
    passes = sum(a["passes"] - b["passes"] for a, b in zip(after, before, strict=True))
    out: dict[str, Any] = {"passes": passes, "waits": waits,
                           "waited_ms": round(sum(a["waited_ms"] - b["waited_ms"]
                                                  for a, b in zip(after, before, strict=True)), 1),
                           "max_wait_ms": max(a["max_wait_ms"] for a in after)}
    for cam, ms in spent.items():
        ms = ms[2:]  # the first frames build background models
        out[cam] = {"median_ms": round(statistics.median(ms), 1),
                    "p95_ms": round(sorted(ms)[int(0.95 * (len(ms) - 1))], 1), "max_ms": round(max(ms), 1)}
    return out


def models_rss(mode: str) -> float:
    """RSS that loading the two cameras' detectors adds, in a fresh process (imports paid before)."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'bench')!r}); "
            "import shared_pool as b; from detectors.pool import ModelPool; r0 = b.rss_mb(); "
            "p = ModelPool(); q = p if sys.argv[1] == 'one' else ModelPool(); d = b.cameras(p, q); "
            "print(b.rss_mb() - r0)")
    out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=20, help="frames per camera per run (default 20)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    clips = frames(max(args.frames, 6))
    results: dict[str, Any] = {}
    one = ModelPool()
    site_pool, exit_pool = ModelPool(), ModelPool()
    for mode, period in (("paced_1fps", 1.0), ("back_to_back", 0.0)):
        results[f"one_pool:{mode}"] = run(cameras(one, one), [one], clips, period)
        results[f"pool_per_camera:{mode}"] = run(cameras(site_pool, exit_pool), [site_pool, exit_pool], clips, period)
    rss = {"one_pool": round(models_rss("one"), 1), "pool_per_camera": round(models_rss("per-camera"), 1)}
    for name, r in results.items():
        cams = ", ".join(f"{c} {r[c]['median_ms']}/{r[c]['p95_ms']}/{r[c]['max_ms']}" for c in ("cam-site", "cam-exit"))
        print(f"{name:<30} ms median/p95/max: {cams}; {r['waits']} of {r['passes']} passes waited, "
              f"{r['waited_ms']} ms in all, max {r['max_wait_ms']} ms")
    print(f"RSS the models add: one pool +{rss['one_pool']} MB, a pool per camera +{rss['pool_per_camera']} MB")
    print(json.dumps({"bench": "shared_pool", "input": f"{W}x{H}", "frames": len(clips["cam-site"]),
                      "rss_models_mb": rss, "runs": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
