"""Bench: CPU of the microphone's work at 48 kHz — the level meter, YAMNet, the Opus ring.

Feeds 60 s of 48 kHz audio (a synthetic power-tool-like sound mixed with pink noise) in
100-ms blocks, as the microphone thread hands them over, through each listener the agent
attaches (`LevelReadings` + `SourceClassifier` + `AudioRing`), and measures the thread's
CPU time per listener. CPU % = CPU seconds / audio seconds × 100 of one core; the target
for meter + classifier is ≤ 3 %. Also: YAMNet ms per 0.975-s window (p50, p95) and the
load average at the time (this machine is shared: figures are noisy under load).

Ends with one JSON line.

    python bench/microphone.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.microphone import AudioBlock
from drivers.types import Reading
from edge_agent.sound.classifier import SourceClassifier, Yamnet
from edge_agent.sound.component import LevelReadings
from edge_agent.sound.ring import AudioRing

RATE = 48000


def signal(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    phase = 2 * np.pi * np.cumsum(600 * (1 + 0.02 * np.sin(2 * np.pi * 0.7 * t))) / RATE
    tool = sum(np.sin(k * phase) / k for k in range(1, 8)) + rng.normal(size=n)
    spectrum = np.fft.rfft(rng.normal(size=n))
    spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
    pink = np.fft.irfft(spectrum, n)
    x = tool / np.std(tool) + 0.5 * pink / np.std(pink)
    return (0.05 * x / np.std(x)).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    x = signal(args.seconds)
    t0 = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)
    blocks = [AudioBlock(x[i:i + RATE // 10], RATE, t0 + timedelta(seconds=i / RATE))
              for i in range(0, len(x), RATE // 10)]
    readings: list[Reading] = []
    load_start = time.perf_counter()
    model = Yamnet()
    load_s = time.perf_counter() - load_start
    classifier = SourceClassifier(model, RATE)
    listeners: dict[str, Callable[[AudioBlock], None]] = {
        "meter": LevelReadings(RATE, 120.0, "mic-1", "noise_la", readings.append),
        "classifier": classifier,
        "ring": AudioRing(RATE, seconds=1200),
    }
    cpu = dict.fromkeys(listeners, 0.0)
    window_ms: list[float] = []
    for block in blocks:
        for name, listener in listeners.items():
            before = classifier.windows
            c0 = time.thread_time()
            listener(block)
            cpu[name] += time.thread_time() - c0
            if classifier.windows != before:
                window_ms.append(classifier.last_ms)
    audio_s = len(x) / RATE
    pct = {name: round(100 * s / audio_s, 3) for name, s in cpu.items()}
    result = {
        "bench": "microphone",
        "audio_s": round(audio_s, 1),
        "rate": RATE,
        "cpu_pct_meter": pct["meter"],
        "cpu_pct_classifier": pct["classifier"],
        "cpu_pct_meter_plus_classifier": round(pct["meter"] + pct["classifier"], 3),
        "cpu_pct_ring_opus": pct["ring"],
        "cpu_pct_total": round(sum(pct.values()), 3),
        "target_pct_meter_plus_classifier": 3.0,
        "yamnet_windows": len(window_ms),
        "yamnet_ms_p50": round(float(np.percentile(window_ms, 50)), 2) if window_ms else None,
        "yamnet_ms_p95": round(float(np.percentile(window_ms, 95)), 2) if window_ms else None,
        "yamnet_load_s": round(load_s, 3),
        "readings": len(readings),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
