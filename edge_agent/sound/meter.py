"""A sound-level meter on raw samples: 1-second LAeq, LCeq, LZeq, LAFmax, LASmax and LCpeak.

What a class 1/2 meter does (IEC 61672-1), in software: the samples pass the A, C and Z
weighting filters (`weighting.py`); the equivalent levels are energy means of the squared
weighted signal over each second; the Fast and Slow levels are exponential time
weightings (τ = 0.125 s and 1 s) of the squared A-weighted signal, whose maximum over the
second is LAFmax / LASmax; LCpeak is the largest |C-weighted sample|, in dB (a sample
peak: without oversampling it may read up to ~0.5 dB low for content near fs/4 and above).

The scale: `full_scale_db` is the sound pressure level (dB re 20 µPa) of a sine whose peak
is the converter's full scale, so a sample stream with mean square `ms` is at
`10·log10(ms / 0.5) + full_scale_db`. Filter and time-weighting state carries over from
block to block, so feeding 100-ms blocks gives the same figures as feeding a whole file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from scipy import signal

from edge_agent.sound.weighting import design

FAST_S = 0.125  # IEC 61672-1 time constants
SLOW_S = 1.0
FLOOR_DB = -200.0  # what digital silence reads as, instead of -inf


@dataclass(frozen=True)
class Levels:
    """The figures of one interval (normally one second), in dB re 20 µPa."""

    start: datetime | None  # wall time of the interval's first sample (None for a file)
    seconds: float
    laeq: float
    lceq: float
    lzeq: float
    lafmax: float
    lasmax: float
    lcpeak: float

    def as_json(self) -> dict[str, Any]:
        return {"laeq": round(self.laeq, 2), "lceq": round(self.lceq, 2), "lzeq": round(self.lzeq, 2),
                "lafmax": round(self.lafmax, 2), "lasmax": round(self.lasmax, 2), "lcpeak": round(self.lcpeak, 2),
                "seconds": round(self.seconds, 3)}


def ms_to_db(ms: float, full_scale_db: float) -> float:
    return 10 * math.log10(ms / 0.5) + full_scale_db if ms > 0 else FLOOR_DB


def energy_mean_db(levels: list[float], weights: list[float] | None = None) -> float:
    """The energy mean of levels in dB (weighted by durations), as windows combine exactly."""
    if not levels:
        return FLOOR_DB
    w = np.asarray(weights if weights is not None else [1.0] * len(levels), dtype=np.float64)
    e = np.power(10.0, np.asarray(levels, dtype=np.float64) / 10)
    mean = float(np.sum(w * e) / np.sum(w))
    return 10 * math.log10(mean) if mean > 0 else FLOOR_DB


class _Weighted:
    """One weighting filter with its state."""

    def __init__(self, kind: str, rate: int):
        self.sos = design(kind, rate)
        self.zi = np.zeros((self.sos.shape[0], 2))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y, self.zi = signal.sosfilt(self.sos, x, zi=self.zi)
        return np.asarray(y)


class _TimeWeighted:
    """Exponential time weighting of a squared signal: y' = (x² − y)/τ, discretised exactly."""

    def __init__(self, tau_s: float, rate: int):
        a = math.exp(-1.0 / (tau_s * rate))
        self.b, self.a = np.array([1 - a]), np.array([1.0, -a])
        self.zi = np.zeros(1)

    def __call__(self, squared: np.ndarray) -> np.ndarray:
        y, self.zi = signal.lfilter(self.b, self.a, squared, zi=self.zi)
        return np.asarray(y)


class LevelMeter:
    """Feed contiguous samples; get one `Levels` per completed interval."""

    def __init__(self, rate: int, full_scale_db: float, interval_s: float = 1.0):
        self.rate = rate
        self.full_scale_db = full_scale_db
        self.interval = max(1, round(interval_s * rate))
        self._a, self._c, self._z = _Weighted("A", rate), _Weighted("C", rate), _Weighted("Z", rate)
        self._fast, self._slow = _TimeWeighted(FAST_S, rate), _TimeWeighted(SLOW_S, rate)
        self._reset_interval(None)

    def _reset_interval(self, start: datetime | None) -> None:
        self._start = start
        self._n = 0
        self._sa = self._sc = self._sz = 0.0
        self._fmax = self._smax = self._cpeak = 0.0

    @property
    def pending(self) -> int:
        """Samples of the interval in progress."""
        return self._n

    def feed(self, samples: np.ndarray, start: datetime | None = None) -> list[Levels]:
        """Add samples (float, full scale ±1); `start` is the wall time of the first one, if known."""
        x = np.asarray(samples, dtype=np.float64)
        out: list[Levels] = []
        pos = 0
        while pos < len(x):
            if self._n == 0 and self._start is None and start is not None:
                self._start = start + timedelta(seconds=pos / self.rate)
            take = min(self.interval - self._n, len(x) - pos)
            self._add(x[pos:pos + take])
            pos += take
            if self._n == self.interval:
                out.append(self._close())
        return out

    def flush(self) -> Levels | None:
        """The partial interval so far (end of a file), or None if it is empty."""
        return self._close() if self._n else None

    def _add(self, x: np.ndarray) -> None:
        a = self._a(x)
        c = self._c(x)
        z = self._z(x)
        a2 = np.square(a)
        self._sa += float(np.sum(a2))
        self._sc += float(np.sum(np.square(c)))
        self._sz += float(np.sum(np.square(z)))
        self._fmax = max(self._fmax, float(np.max(self._fast(a2))))
        self._smax = max(self._smax, float(np.max(self._slow(a2))))
        self._cpeak = max(self._cpeak, float(np.max(np.abs(c))))
        self._n += len(x)

    def _close(self) -> Levels:
        n, fs_db = self._n, self.full_scale_db
        levels = Levels(
            start=self._start, seconds=n / self.rate,
            laeq=ms_to_db(self._sa / n, fs_db), lceq=ms_to_db(self._sc / n, fs_db), lzeq=ms_to_db(self._sz / n, fs_db),
            lafmax=ms_to_db(self._fmax, fs_db), lasmax=ms_to_db(self._smax, fs_db),
            # a peak p is the level of a sine of amplitude p: 20·log10(p) + full scale
            lcpeak=20 * math.log10(self._cpeak) + fs_db if self._cpeak > 0 else FLOOR_DB,
        )
        next_start = self._start + timedelta(seconds=n / self.rate) if self._start is not None else None
        self._reset_interval(next_start)
        return levels


def summarise(levels: list[Levels]) -> dict[str, float]:
    """Whole-recording figures: energy means of the equivalent levels, maxima of the others."""
    if not levels:
        return {"laeq": FLOOR_DB, "lzeq": FLOOR_DB, "lceq": FLOOR_DB, "lafmax": FLOOR_DB, "lasmax": FLOOR_DB,
                "lcpeak": FLOOR_DB, "seconds": 0.0}
    w = [lv.seconds for lv in levels]
    return {
        "laeq": round(energy_mean_db([lv.laeq for lv in levels], w), 2),
        "lzeq": round(energy_mean_db([lv.lzeq for lv in levels], w), 2),
        "lceq": round(energy_mean_db([lv.lceq for lv in levels], w), 2),
        "lafmax": round(max(lv.lafmax for lv in levels), 2),
        "lasmax": round(max(lv.lasmax for lv in levels), 2),
        "lcpeak": round(max(lv.lcpeak for lv in levels), 2),
        "seconds": round(sum(w), 3),
    }
