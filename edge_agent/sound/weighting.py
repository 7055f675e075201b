"""Frequency weightings A, C and Z of IEC 61672-1 as digital filters (second-order sections).

The analogue weightings (IEC 61672-1 Annex E) are products of real poles at f1 = 20.6 Hz,
f2 = 107.7 Hz, f3 = 737.9 Hz and f4 = 12194 Hz and zeros at 0 Hz. The plain bilinear
transform maps them well below a few kHz but squeezes everything up to Nyquist into the
warped band: at 48 kHz the A-weighting reads 1.2 dB low at 10 kHz and 6 dB low at 16 kHz.
So the low poles and the zeros go through the bilinear transform, and the top of the band
(the double pole at f4) is replaced by two digital poles and one zero fitted, by least
squares in dB, to the analogue response from 1 kHz to min(20 kHz, 0.45·fs). At 44.1 and
48 kHz the result is within 0.2 dB of Annex E from 10 Hz to 16 kHz (class 1 allows ±1 dB
and more at the ends). Below 44.1 kHz the band above fs/2 cannot be measured at all.

Z (zero) weighting is flat; a 2nd-order 5 Hz high-pass takes out the converter's DC offset,
which would otherwise count as sound (−0.3 dB at 10 Hz, inside class 1's +3.5/−∞ there).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import optimize, signal

F1, F2, F3, F4 = 20.598997, 107.65265, 737.86223, 12194.217  # IEC 61672-1 Annex E (E.2, E.3)
A1000 = -2.000  # A-weighting gain at 1 kHz before normalisation (Annex E, equation E.6)
C1000 = -0.062


def analog_db(kind: str, f: np.ndarray | float) -> np.ndarray:
    """The Annex E weighting in dB at frequencies `f` (Hz): the design goal of the filters."""
    f2 = np.square(np.asarray(f, dtype=np.float64))
    if kind == "A":
        h = (F4**2 * f2**2) / ((f2 + F1**2) * np.sqrt(f2 + F2**2) * np.sqrt(f2 + F3**2) * (f2 + F4**2))
        return np.asarray(20 * np.log10(h) - A1000)
    if kind == "C":
        h = (F4**2 * f2) / ((f2 + F1**2) * (f2 + F4**2))
        return np.asarray(20 * np.log10(h) - C1000)
    if kind == "Z":
        return np.zeros_like(f2)
    raise ValueError(f"unknown weighting {kind!r}")


def _bilinear_pole(f: float, fs: float) -> float:
    """Digital pole of the analogue real pole s = -2πf under the bilinear transform."""
    w = 2 * math.pi * f / (2 * fs)
    return (1 - w) / (1 + w)


def _normalised(z: np.ndarray, p: np.ndarray, kind: str, fs: float) -> np.ndarray:
    sos = signal.zpk2sos(z, p, 1.0)
    _, h = signal.sosfreqz(sos, worN=np.array([1000.0]), fs=fs)
    sos[0, :3] *= 10 ** (float(analog_db(kind, 1000.0)) / 20) / abs(h[0])
    return np.asarray(sos)


@lru_cache(maxsize=16)
def design(kind: str, fs: int) -> np.ndarray:
    """Second-order sections of weighting `kind` ('A', 'C' or 'Z') at sample rate `fs`."""
    if kind == "Z":
        return np.asarray(signal.butter(2, 5.0, btype="highpass", fs=fs, output="sos"))
    if kind not in ("A", "C"):
        raise ValueError(f"unknown weighting {kind!r}")
    zeros = [1.0] * (4 if kind == "A" else 2)
    low = [_bilinear_pole(F1, fs), _bilinear_pole(F1, fs)]
    if kind == "A":
        low += [_bilinear_pole(F2, fs), _bilinear_pole(F3, fs)]
    fit = np.geomspace(1000.0, min(20000.0, 0.45 * fs), 60)
    goal = analog_db(kind, fit)

    def build(x: np.ndarray) -> np.ndarray:
        return _normalised(np.array([*zeros, x[2]]), np.array([*low, x[0], x[1]]), kind, fs)

    def error(x: np.ndarray) -> np.ndarray:
        _, h = signal.sosfreqz(build(x), worN=fit, fs=fs)
        return np.asarray(20 * np.log10(np.abs(h)) - goal)

    start = math.exp(-2 * math.pi * F4 / fs)  # the matched-z image of the f4 pole
    result = optimize.least_squares(error, [start, start, -0.5], bounds=([-0.99, -0.99, -1.0], [0.999, 0.999, 0.99]))
    return build(result.x)


def response_db(kind: str, fs: int, f: np.ndarray) -> np.ndarray:
    """The digital filter's magnitude response in dB at frequencies `f` (Hz)."""
    _, h = signal.sosfreqz(design(kind, fs), worN=np.asarray(f, dtype=np.float64), fs=fs)
    return np.asarray(20 * np.log10(np.maximum(np.abs(h), 1e-300)))
