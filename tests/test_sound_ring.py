"""The audio ring: Opus packets with wall times, cut into Ogg files that decode to the right stretch."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from drivers.microphone import AudioBlock
from edge_agent.config.microphone import MicrophoneConfig
from edge_agent.sound.audiofile import read_audio
from edge_agent.sound.component import SoundComponent
from edge_agent.sound.ring import AudioRing, AudioRingError
from edge_agent.types import Violation

pytest.importorskip("av")
T0 = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)


def feed(ring: AudioRing, x: np.ndarray, rate: int, block: int = 4800) -> None:
    for i in range(0, len(x), block):
        ring(AudioBlock(x[i:i + block].astype(np.float32), rate, T0 + timedelta(seconds=i / rate)))


def marked_signal(seconds: int, rate: int) -> np.ndarray:
    """A 440 Hz tone with a 2-s silence starting at 20 s: the cut must put the silence where it belongs."""
    t = np.arange(seconds * rate) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    x[20 * rate:22 * rate] = 0.0
    return x


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
def test_a_cut_decodes_to_the_asked_stretch(tmp_path: Path, rate: int) -> None:
    ring = AudioRing(rate, seconds=60)
    feed(ring, marked_signal(40, rate), rate)
    data, first, last = ring.ogg(T0 + timedelta(seconds=15), T0 + timedelta(seconds=30))
    assert abs((first - T0).total_seconds() - 15) < 0.03 and abs((last - T0).total_seconds() - 30) < 0.03
    path = tmp_path / "cut.ogg"
    path.write_bytes(data)
    y, out_rate = read_audio(path)
    assert out_rate == 48000 and abs(len(y) / out_rate - 15) < 0.05  # Opus always decodes at 48 kHz
    env = np.sqrt(np.convolve(y**2, np.ones(out_rate // 50) / (out_rate // 50), "valid"))
    quiet = np.flatnonzero(env < 0.01) / out_rate
    assert abs(quiet[0] - 5.0) < 0.05 and abs(quiet[-1] - 7.0) < 0.05  # the silence at 20..22 s
    assert np.sqrt(np.mean(y[: 4 * out_rate] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
    assert len(data) < 15 * 24000 / 8 * 2  # about 24 kbit/s (VBR: a pure tone takes more)


def test_the_ring_forgets_beyond_its_length() -> None:
    ring = AudioRing(48000, seconds=10)
    feed(ring, marked_signal(30, 48000), 48000)
    assert 9.9 <= ring.held_s() <= 10.1
    with pytest.raises(AudioRingError):
        ring.ogg(T0, T0 + timedelta(seconds=15))
    ring.ogg(T0 + timedelta(seconds=21), T0 + timedelta(seconds=30))


def _noise_violation(at: datetime, window_s: int) -> Violation:
    return Violation("noise_over_limit", "started", "noise_over_limit:mic-1:1", at, at, "mic-1",
                     {"leq": 70.0, "window_s": window_s})


def test_evidence_audio_is_capped_and_can_be_switched_off(tmp_path: Path) -> None:
    def component(**audio: object) -> SoundComponent:
        cfg = MicrophoneConfig(enabled=True, audio=audio, classifier={"enabled": False})
        return SoundComponent(cfg, tmp_path, submit=lambda r: None, now=lambda: T0)

    on = component(evidence_max_s=10)
    assert on.ring is not None
    feed(on.ring, marked_signal(40, 48000), 48000)
    files = on.evidence(_noise_violation(T0 + timedelta(seconds=40), 1200))
    assert [f.name for f in files] == ["audio.ogg"]
    (tmp_path / "a.ogg").write_bytes(files[0].data)
    y, rate = read_audio(tmp_path / "a.ogg")
    assert abs(len(y) / rate - 10) < 0.05  # the window's last 10 s, not its 20 min
    assert on.evidence(Violation("dust_over_limit", "started", "k", T0, T0, "dust-1", {})) == []
    assert component(evidence=False).evidence(_noise_violation(T0 + timedelta(seconds=40), 60)) == []
    off = component(enabled=False)
    assert off.ring is None and off.evidence(_noise_violation(T0 + timedelta(seconds=40), 60)) == []
