"""The speaker driver through a real PortAudio → ALSA path into a WAV file.

How ALSA is set up: the session fixture `alsa_sink` writes an asound.conf whose `default`
device is a `plug` into the `file` plugin (slave `null`), and puts it on ALSA_CONFIG_PATH
*before* PortAudio initialises. `drivers.speaker` imports sounddevice lazily (on first use)
precisely so that this works in-process; if something imported sounddevice earlier, the
fixture re-initialises PortAudio so the device list is read again. Each stream the driver
opens truncates the capture file, and closing it finalises the WAV header, so a test plays,
closes the speaker, then reads `played.wav`. Samples come out bit-exact; the file plugin
does not pace in real time (the driver does), and captured audio starts after the clip's
own leading silence, so tests locate the clip rather than assume offset 0.

`test_actions.py` builds its fixtures on `alsa_file_sink` and `espeak_cache` from here.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import sys
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from drivers.speaker import Pcm, Speaker, SpeakerError, load_wav, resample

ALSA_CONF_MAIN = Path("/usr/share/alsa/alsa.conf")
SINK_CONF = """\
pcm.!default {{ type plug; slave.pcm "tee_to_file" }}
pcm.tee_to_file {{ type file; slave.pcm "null"; file "{wav}"; format "wav"; perm 0644 }}
"""
VOICE = "cmn-latn-pinyin"


@dataclass(frozen=True)
class AlsaSink:
    wav: Path

    def captured(self) -> tuple[np.ndarray, int]:
        """The int16 samples (mono) and rate of the last stream, after it was closed."""
        with wave.open(str(self.wav), "rb") as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2
            return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy(), w.getframerate()


_SINK: AlsaSink | None = None
_CACHE: Path | None = None


def alsa_file_sink(tmp_path_factory: pytest.TempPathFactory) -> AlsaSink:
    """Point ALSA's default device at a WAV file, once per session (skips if it cannot)."""
    global _SINK
    if _SINK is not None:
        return _SINK
    if ctypes.util.find_library("portaudio") is None:
        pytest.skip("libportaudio2 is not installed (apt-get install libportaudio2)")
    if not ALSA_CONF_MAIN.is_file():
        pytest.skip("ALSA's alsa.conf is missing (apt-get install alsa-utils)")
    pytest.importorskip("sounddevice", reason="pip install sounddevice")
    folder = tmp_path_factory.mktemp("alsa")
    sink = AlsaSink(folder / "played.wav")
    conf = folder / "asound.conf"
    conf.write_text(SINK_CONF.format(wav=sink.wav), encoding="utf-8")
    # Left set for the rest of the session: a later PortAudio user then also lands in the file.
    os.environ["ALSA_CONFIG_PATH"] = f"{ALSA_CONF_MAIN}:{conf}"
    if "sounddevice" in sys.modules:  # PortAudio already read the devices: make it read them again
        sd = sys.modules["sounddevice"]
        sd._terminate()
        sd._initialize()
    _SINK = sink
    return sink


def espeak_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clip cache for the session, so each text is rendered once (skips without espeak-ng)."""
    global _CACHE
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    if _CACHE is None:
        _CACHE = tmp_path_factory.mktemp("clips")
    return _CACHE


@pytest.fixture(scope="session")
def alsa_sink(tmp_path_factory: pytest.TempPathFactory) -> AlsaSink:
    return alsa_file_sink(tmp_path_factory)


@pytest.fixture(scope="session")
def clip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak_cache(tmp_path_factory)


def read_int16(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()


def locate(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Offset where `needle` best lines up inside `haystack` (FFT cross-correlation)."""
    a, b = haystack.astype(np.float64), needle.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)[: len(a) - len(b) + 1]
    return int(np.argmax(corr))


@pytest.fixture(scope="session")
def spoken(clip_cache: Path) -> Path:
    from edge_agent.actions.clips import render_tts

    return render_tts("qing3 zhu4 yi4, zao4 yin1 chao1 biao1", VOICE, 175, clip_cache)


def test_clip_plays_bit_exact_at_its_own_rate(alsa_sink: AlsaSink, spoken: Path):
    reference = read_int16(spoken)
    speaker = Speaker(sample_rate=22050, volume=1.0)
    result = speaker.play(load_wav(spoken))
    speaker.close()
    captured, rate = alsa_sink.captured()

    assert result.outcome == "played" and result.frames == len(reference)
    assert rate == 22050
    onset = int(np.flatnonzero(captured)[0]) - int(np.flatnonzero(reference)[0])
    assert onset >= 0
    assert np.array_equal(captured[onset : onset + len(reference)], reference)


def test_volume_and_resampling_to_the_device_rate(alsa_sink: AlsaSink, spoken: Path):
    reference = read_int16(spoken).astype(np.float64)
    speaker = Speaker(sample_rate=48000, volume=0.5)
    result = speaker.play(load_wav(spoken))
    speaker.close()
    captured, rate = alsa_sink.captured()

    assert result.outcome == "played" and rate == 48000
    # An independent reference: linear interpolation to 48 kHz, at half the amplitude.
    t_out = np.arange(round(len(reference) * 48000 / 22050)) * 22050 / 48000
    expected = np.interp(t_out, np.arange(len(reference)), reference) * 0.5
    start = locate(captured, expected)
    got = captured[start : start + len(expected)].astype(np.float64)
    assert len(got) == len(expected)
    assert np.corrcoef(got, expected)[0, 1] >= 0.99
    gain = float(np.dot(got, expected) / np.dot(expected, expected))
    assert 0.97 <= gain <= 1.03  # the captured level is the reference at volume 0.5


def test_stop_interrupts_and_cuts_the_clip(alsa_sink: AlsaSink, spoken: Path):
    reference = read_int16(spoken)
    pcm = load_wav(spoken)
    speaker = Speaker(sample_rate=22050)
    started = threading.Event()
    results = []

    def player() -> None:
        started.set()
        results.append(speaker.play(pcm))

    thread = threading.Thread(target=player)
    thread.start()
    started.wait()
    threading.Event().wait(0.4)
    speaker.stop()
    thread.join(pcm.duration_s)
    assert not thread.is_alive()
    speaker.close()
    captured, _ = alsa_sink.captured()

    assert results[0].outcome == "interrupted"
    assert 0 < results[0].frames < len(reference)
    assert len(captured) < len(reference)  # the rest of the clip never reached the device
    onset = int(np.flatnonzero(captured)[0]) - int(np.flatnonzero(reference)[0])
    assert np.array_equal(captured[onset:], reference[: len(captured) - onset])
    assert speaker.health()["interrupted"] == 1


def test_missing_device_fails_softly_and_backs_off(alsa_sink: AlsaSink, spoken: Path):
    speaker = Speaker(device="no-such-card", retry_s=60)
    first = speaker.play(load_wav(spoken))
    second = speaker.play(load_wav(spoken))
    health = speaker.health()

    assert first.outcome == "failed" and "no-such-card" in first.error
    assert second.outcome == "failed" and "next try" in second.error
    assert health["state"] == "down" and "no-such-card" in str(health["last_error"])
    assert speaker.probe() is False


def test_device_is_matched_by_name_substring(alsa_sink: AlsaSink):
    speaker = Speaker(device="TEE_TO")
    assert speaker.probe()
    assert speaker.health()["device"] == "tee_to_file" and speaker.health()["state"] == "ok"


def test_bad_wav_is_refused_with_a_reason(tmp_path: Path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(SpeakerError, match=r"bad\.wav"):
        load_wav(bad)
    with pytest.raises(SpeakerError, match=r"missing\.wav"):
        load_wav(tmp_path / "missing.wav")


def test_stereo_24bit_wav_is_read_as_mono(tmp_path: Path):
    path = tmp_path / "tech.wav"
    left = np.array([0, 4194304, -8388608, 8388607], dtype=np.int32)  # 0, 0.5, -1, ~1 in 24-bit
    frames = np.stack([left, left], axis=1).reshape(-1)
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in frames)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(3)
        w.setframerate(44100)
        w.writeframes(raw)
    pcm = load_wav(path)
    assert pcm.rate == 44100
    np.testing.assert_allclose(pcm.samples, [0.0, 0.5, -1.0, 8388607 / 8388608], atol=1e-6)


def test_resampling_keeps_a_tone_intact():
    rate_in, rate_out, freq = 22050, 48000, 1000.0
    n = rate_in // 2
    tone = np.sin(2 * np.pi * freq * np.arange(n) / rate_in).astype(np.float32)
    out = resample(tone, rate_in, rate_out)
    exact = np.sin(2 * np.pi * freq * np.arange(len(out)) / rate_out)
    assert len(out) == round(n * rate_out / rate_in)
    middle = slice(len(out) // 10, -len(out) // 10)  # the abrupt start and end ring a little
    assert np.max(np.abs(out[middle] - exact[middle])) < 0.01
    assert Pcm(out, rate_out).duration_s == pytest.approx(0.5, abs=1e-3)
