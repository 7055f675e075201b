"""Bench: a day of 1-second samples (86,400 s) through every figure of the measure engine.

Each simulated second brings four readings — noise_la, tsp, pm10, pm2_5 — as a dust box
with a noise meter produces them, with 1 % comm errors. Each minute the core's calls are
made too: rolling() and close_period(60); each hour close_period(3600); at the end of the
day close_period(86400). Readings are built an hour at a time outside the timed loop.

Ends with one JSON line: µs per sample for `add` alone and with the per-minute figure
calls amortised in (target ≤ 10 µs), and the process's peak RSS.

    python bench/measures.py
"""

from __future__ import annotations

import json
import platform
import random
import resource
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.types import Quality, Reading
from edge_agent.measures import MeasureEngine

DAY = 86_400
QUANTITIES = (("noise_la", "dB(A)"), ("tsp", "ug/m3"), ("pm10", "ug/m3"), ("pm2_5", "ug/m3"))


def hour_of_readings(rng: random.Random, start: datetime, hour: int) -> list[Reading]:
    out = []
    for s in range(3600):
        t = start + timedelta(seconds=hour * 3600 + s)
        for quantity, unit in QUANTITIES:
            if rng.random() < 0.01:
                out.append(Reading("box", quantity, None, unit, t, Quality.COMM_ERROR))
            elif quantity == "noise_la":
                out.append(Reading("box", quantity, round(rng.uniform(40.0, 95.0), 1), unit, t))
            else:
                out.append(Reading("box", quantity, float(rng.randint(5, 900)), unit, t))
    return out


def main() -> int:
    rng = random.Random(1)
    engine = MeasureEngine("Asia/Shanghai")
    start = datetime(2024, 5, 1, tzinfo=timezone(timedelta(hours=8))).astimezone(timezone.utc)
    add_s = figures_s = 0.0
    n = 0
    measures = 0
    for hour in range(24):
        batch = hour_of_readings(rng, start, hour)
        t0 = time.perf_counter()
        for r in batch:
            engine.add(r)
        add_s += time.perf_counter() - t0
        n += len(batch)
        t0 = time.perf_counter()
        for minute in range(60):  # the core's per-minute calls for this hour
            end = start + timedelta(hours=hour, minutes=minute + 1)
            measures += len(engine.rolling(end))
            measures += len(engine.close_period(60, end))
        end = start + timedelta(hours=hour + 1)
        measures += len(engine.close_period(3600, end))
        figures_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    measures += len(engine.close_period(86400, start + timedelta(days=1)))
    figures_s += time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "bench": "measures",
        "seconds_simulated": DAY,
        "samples": n,
        "us_per_sample_add": round(add_s / n * 1e6, 3),
        "us_per_sample_with_figures": round((add_s + figures_s) / n * 1e6, 3),
        "target_us_per_sample": 10,
        "figure_calls_ms_per_minute": round(figures_s / (24 * 60) * 1e3, 3),
        "measures_produced": measures,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
