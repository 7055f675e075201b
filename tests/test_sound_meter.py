"""The sound-level meter against IEC 61672-1: weighting responses, time weighting, known levels.

Frequency responses are measured, not read off the filter design: a sine of known amplitude
at each exact base-ten frequency (f = 1000·10^(n/10) Hz, the frequencies the standard's
design goals are computed at) goes through `LevelMeter` like microphone samples do, and the
measured level minus the sine's true level is the weighting's response there.

IEC 61672-1:2013, Table 3 (frequency weightings and acceptance limits), as transcribed for
this test: nominal frequency, A and C design goals (dB), class 1 acceptance limits (dB).
The design goals are checked against the Annex E formula below, which catches a typo in the
transcription; the limits are the 2013 edition's (the 2002 edition's were wider: ±1.1 dB at
1 kHz, which DOMAIN.md quotes), so passing them passes both.
"""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np
import pytest

from edge_agent.cli import main as cli_main
from edge_agent.sound.meter import LevelMeter, summarise

pytest.importorskip("scipy")

#  nominal Hz, A goal, C goal, class 1 upper, class 1 lower
IEC_61672_TABLE_3 = [
    (31.5, -39.4, -3.0, 1.5, -1.5),
    (40, -34.6, -2.0, 1.0, -1.0),
    (50, -30.2, -1.3, 1.0, -1.0),
    (63, -26.2, -0.8, 1.0, -1.0),
    (80, -22.5, -0.5, 1.0, -1.0),
    (100, -19.1, -0.3, 1.0, -1.0),
    (125, -16.1, -0.2, 1.0, -1.0),
    (160, -13.4, -0.1, 1.0, -1.0),
    (200, -10.9, 0.0, 1.0, -1.0),
    (250, -8.6, 0.0, 1.0, -1.0),
    (315, -6.6, 0.0, 1.0, -1.0),
    (400, -4.8, 0.0, 1.0, -1.0),
    (500, -3.2, 0.0, 1.0, -1.0),
    (630, -1.9, 0.0, 1.0, -1.0),
    (800, -0.8, 0.0, 1.0, -1.0),
    (1000, 0.0, 0.0, 0.7, -0.7),
    (1250, 0.6, 0.0, 1.0, -1.0),
    (1600, 1.0, -0.1, 1.0, -1.0),
    (2000, 1.2, -0.2, 1.0, -1.0),
    (2500, 1.3, -0.3, 1.0, -1.0),
    (3150, 1.2, -0.5, 1.0, -1.0),
    (4000, 1.0, -0.8, 1.0, -1.0),
    (5000, 0.5, -1.3, 1.5, -1.5),
    (6300, -0.1, -2.0, 1.5, -2.0),
    (8000, -1.1, -3.0, 1.5, -2.5),
    (10000, -2.5, -4.4, 2.0, -3.0),
    (12500, -4.3, -6.2, 2.0, -5.0),
    (16000, -6.6, -8.5, 2.5, -16.0),
]


def exact_frequency(nominal: float) -> float:
    return 1000.0 * 10 ** (round(10 * math.log10(nominal / 1000.0)) / 10)


def annex_e(kind: str, f: float) -> float:
    """IEC 61672-1 Annex E, written out here independently of edge_agent.sound.weighting."""
    f1, f2, f3, f4 = 20.598997, 107.65265, 737.86223, 12194.217
    if kind == "A":
        return 20 * math.log10(f4**2 * f**4 / ((f**2 + f1**2) * math.sqrt(f**2 + f2**2)
                                               * math.sqrt(f**2 + f3**2) * (f**2 + f4**2))) + 2.000
    return 20 * math.log10(f4**2 * f**2 / ((f**2 + f1**2) * (f**2 + f4**2))) + 0.062


def sine(f: float, amplitude: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * f * t)


def measure(x: np.ndarray, rate: int, full_scale_db: float = 100.0, block: int = 4800):
    meter = LevelMeter(rate, full_scale_db)
    out = []
    for i in range(0, len(x), block):
        out += meter.feed(x[i:i + block])
    return out


def test_the_transcribed_design_goals_agree_with_annex_e() -> None:
    for nominal, a_goal, c_goal, _, _ in IEC_61672_TABLE_3:
        f = exact_frequency(nominal)
        assert annex_e("A", f) == pytest.approx(a_goal, abs=0.051), nominal
        assert annex_e("C", f) == pytest.approx(c_goal, abs=0.051), nominal


@pytest.mark.parametrize("rate", [48000, 44100])
def test_a_and_c_weighting_meet_class_1_from_31_5_hz_to_16_khz(rate: int) -> None:
    full_scale, amplitude = 100.0, 0.5
    true_level = full_scale + 20 * math.log10(amplitude)
    worst = {"A": 0.0, "C": 0.0}
    for nominal, a_goal, c_goal, upper, lower in IEC_61672_TABLE_3:
        f = exact_frequency(nominal)
        second = measure(sine(f, amplitude, 2.0, rate), rate, full_scale)[1]  # the first holds the filters' onset
        for kind, goal, level in (("A", a_goal, second.laeq), ("C", c_goal, second.lceq)):
            deviation = (level - true_level) - goal
            assert lower <= deviation <= upper, f"{kind} at {nominal} Hz: {deviation:+.2f} dB off the design goal"
            # tighter than the standard: the fitted top of the band keeps to Annex E itself
            assert abs(level - true_level - annex_e(kind, f)) < 0.25, (kind, nominal, level - true_level)
            worst[kind] = max(worst[kind], abs(level - true_level - annex_e(kind, f)))
    assert worst["A"] > 0  # the measurement really ran through the filters


def test_a_1_khz_sine_at_a_known_level_reads_within_0_1_db() -> None:
    rate, full_scale = 48000, 120.0
    amplitude = 10 ** ((94.0 - full_scale) / 20)  # a calibrator's 94 dB SPL
    levels = measure(sine(1000.0, amplitude, 6.0, rate), rate, full_scale)
    for lv in levels[1:]:
        for value in (lv.laeq, lv.lceq, lv.lzeq, lv.lafmax, lv.lcpeak):
            assert value == pytest.approx(94.0, abs=0.1)
    assert levels[5].lasmax == pytest.approx(94.0, abs=0.1)  # Slow (τ = 1 s) has settled after 5 s
    assert summarise(levels)["laeq"] == pytest.approx(94.0, abs=0.1)
    # and 40 dB lower, still linear
    quiet = measure(sine(1000.0, amplitude / 100, 3.0, rate), rate, full_scale)[1:]
    assert all(lv.laeq == pytest.approx(54.0, abs=0.1) for lv in quiet)


def pink_noise(seconds: float, rate: int, seed: int) -> np.ndarray:
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    f = np.fft.rfftfreq(n, 1 / rate)
    spectrum = (rng.normal(size=f.size) + 1j * rng.normal(size=f.size))
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[(f < 20) | (f > 20000)] = 0
    x = np.fft.irfft(spectrum, n)
    return 0.1 * x / np.sqrt(np.mean(x**2))


def fft_weighted_level(x: np.ndarray, rate: int, full_scale_db: float, kind: str | None) -> float:
    """Independent LAeq/LZeq: weight the power spectrum of the whole signal by Annex E (Parseval)."""
    n = len(x)
    power = np.abs(np.fft.rfft(x)) ** 2
    power[1:-1] *= 2  # one-sided (n even)
    f = np.fft.rfftfreq(n, 1 / rate)
    if kind is not None:
        gain = np.zeros_like(f)
        gain[1:] = [10 ** (annex_e(kind, fi) / 10) for fi in f[1:]]
        power *= gain
    ms = float(np.sum(power)) / n**2
    return 10 * math.log10(ms / 0.5) + full_scale_db


def test_pink_noise_agrees_with_an_fft_domain_weighting_within_0_3_db() -> None:
    rate, full_scale = 48000, 110.0
    x = pink_noise(10.0, rate, seed=7)
    got = summarise(measure(x, rate, full_scale))
    assert got["laeq"] == pytest.approx(fft_weighted_level(x, rate, full_scale, "A"), abs=0.3)
    assert got["lceq"] == pytest.approx(fft_weighted_level(x, rate, full_scale, "C"), abs=0.3)
    assert got["lzeq"] == pytest.approx(fft_weighted_level(x, rate, full_scale, None), abs=0.3)
    assert got["lzeq"] - got["laeq"] > 2  # pink noise has low-frequency energy A discounts


# IEC 61672-1:2013 Table 4: LAFmax / LASmax of a 4 kHz toneburst relative to the steady signal's level,
# with class 1 acceptance limits (duration s, time weighting, reference response, upper, lower).
TONEBURSTS = [
    (1.0, "F", 0.0, 0.5, -0.5), (0.2, "F", -1.0, 0.5, -0.5), (0.002, "F", -18.0, 1.0, -1.5),
    (0.00025, "F", -27.0, 1.0, -3.0), (1.0, "S", -2.0, 0.5, -0.5), (0.002, "S", -27.0, 1.0, -1.5),
]


@pytest.mark.parametrize("duration,weighting,reference,upper,lower", TONEBURSTS)
def test_fast_and_slow_time_weighting_meet_the_toneburst_response(duration: float, weighting: str,
                                                                   reference: float, upper: float,
                                                                   lower: float) -> None:
    rate = 48000
    steady = sine(4000.0, 0.5, 3.0, rate)
    steady_levels = measure(steady, rate)[2]
    steady_max = steady_levels.lafmax if weighting == "F" else steady_levels.lasmax
    burst = np.zeros(3 * rate)
    n = round(duration * rate)
    burst[rate:rate + n] = steady[:n]  # starts at a zero crossing, whole cycles (12 samples each)
    levels = measure(burst, rate)
    got = max(lv.lafmax if weighting == "F" else lv.lasmax for lv in levels)
    assert lower <= (got - steady_max) - reference <= upper, got - steady_max


def test_block_size_does_not_change_the_figures() -> None:
    rate = 48000
    x = pink_noise(3.0, rate, seed=3)
    whole = measure(x, rate, block=len(x))
    odd = measure(x, rate, block=777)
    assert len(whole) == len(odd) == 3
    for a, b in zip(whole, odd, strict=True):
        assert a.laeq == pytest.approx(b.laeq, abs=1e-9) and a.lafmax == pytest.approx(b.lafmax, abs=1e-9)
        assert a.lcpeak == pytest.approx(b.lcpeak, abs=1e-9)


def _write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes())


def test_sound_level_cli_prints_one_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rate = 48000
    wav = tmp_path / "tone.wav"
    _write_wav(wav, sine(1000.0, 0.25, 4.5, rate), rate)
    assert cli_main(["sound-level", str(wav), "--full-scale-db", "100"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    got = json.loads(lines[0])
    assert {"laeq", "lzeq", "lafmax", "lcpeak", "seconds"} <= set(got)
    expected = 100 + 20 * math.log10(0.25)
    assert got["laeq"] == pytest.approx(expected, abs=0.1) and got["lzeq"] == pytest.approx(expected, abs=0.1)
    assert got["lafmax"] == pytest.approx(expected, abs=0.1) and got["seconds"] == 4.5


def test_sound_level_cli_refuses_a_file_that_is_not_audio(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    assert cli_main(["sound-level", str(bad), "--full-scale-db", "100"]) == 1
    assert "error" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sound_level_cli_says_which_noise_it_was(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--source: the attribution a noise violation would carry, for checking it on site recordings."""
    from test_sound_source import power_tool_like

    rate = 48000
    wav = tmp_path / "tool.wav"
    _write_wav(wav, power_tool_like(6.0, rate=rate), rate)
    assert cli_main(["sound-level", str(wav), "--full-scale-db", "100", "--source"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    source = got["source"]
    assert source["windows"] >= 5 and source["likely"] == "construction", source
    assert {"construction", "traffic", "aircraft", "unattributed"} <= set(source["shares"])
    assert "laeq" in got  # the levels are still there
    _write_wav(wav, sine(1000.0, 0.25, 3.0, rate), rate)  # a pure tone is no construction noise
    assert cli_main(["sound-level", str(wav), "--full-scale-db", "100", "--source"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["source"]["likely"] != "construction"
