"""Sound-level figures from a histogram of 0.1-dB bins (GB 12523 / HJ 212 figures).

Meters report A-weighted levels at 0.1 dB resolution, so a histogram of 0.1-dB bins holds a
window *exactly*: a sample entering or leaving the window is one integer increment (O(1)),
and Leq, Lmax, Lmin and every L_N are read off the histogram in O(bins) when a figure is
asked for (once a minute) — no window is ever sorted. Leq comes from integer counts times a
fixed energy table, so it cannot drift the way a long-running float sum with subtractions
does. Levels that are not on the 0.1 dB grid (a box's own microphone) are rounded to it:
at most 0.05 dB, far inside a class-1 meter's tolerance.

L_N (DOMAIN.md §1): sort descending, take element ceil(N/100 · n), 1-based.
"""

from __future__ import annotations

import math

import numpy as np

BINS_PER_DB = 10
MAX_DB = 160.0
N_BINS = int(MAX_DB * BINS_PER_DB) + 1
# 10^(L/10) for each bin's level L = b / 10.
ENERGY = np.array([10.0 ** (b / (10.0 * BINS_PER_DB)) for b in range(N_BINS)])
PERCENTILES = (5, 10, 50, 90, 95)


def level_bin(value: float) -> int:
    """Bin index of a level, or -1 when it is outside 0..160 dB (or not a number)."""
    if not value >= 0.0 or value > MAX_DB:  # catches NaN too
        return -1
    return int(value * BINS_PER_DB + 0.5)


def bin_level(b: int) -> float:
    return b / BINS_PER_DB


def leq_of(levels: list[float]) -> float:
    """Reference energy mean of plain levels: 10·log10(mean(10^(L/10)))."""
    return 10.0 * math.log10(sum(10.0 ** (v / 10.0) for v in levels) / len(levels))


def rank(n_percent: int, n: int) -> int:
    """1-based rank of L_N among n samples sorted descending: ceil(N/100 · n), at least 1."""
    return max(1, -(-n_percent * n // 100))


def figures(hist: list[int], n: int, percentiles: tuple[int, ...] = PERCENTILES) -> dict[str, float]:
    """leq, lmax, lmin and l<N> of the n samples counted in `hist`; empty dict when n == 0."""
    if n <= 0:
        return {}
    counts = np.asarray(hist, dtype=np.int64)
    nz = np.flatnonzero(counts)
    c = counts[nz]
    energy = float(np.dot(c, ENERGY[nz]))
    out = {
        "leq": 10.0 * math.log10(energy / n),
        "lmax": bin_level(int(nz[-1])),
        "lmin": bin_level(int(nz[0])),
    }
    if percentiles:
        desc_bins = nz[::-1]
        cum = np.cumsum(c[::-1])
        for p in percentiles:
            i = int(np.searchsorted(cum, rank(p, n)))  # first bin where the running count reaches the rank
            out[f"l{p}"] = bin_level(int(desc_bins[i]))
    return out


def leq_from_hist(hist: list[int], n: int) -> float | None:
    if n <= 0:
        return None
    counts = np.asarray(hist, dtype=np.int64)
    nz = np.flatnonzero(counts)
    return 10.0 * math.log10(float(np.dot(counts[nz], ENERGY[nz])) / n)
