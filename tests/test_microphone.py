"""The microphone driver through a real PortAudio → ALSA path that reads a file as the capture device.

How ALSA is set up (`alsa_mic_source`, once per session): an asound.conf whose `default` is an
`asym` device: playback goes to the speaker's WAV file sink (the same one `test_speaker`
sets up, so both kinds of test can run in one worker), capture comes from ALSA's `file`
plugin reading `infile`, raw S16_LE mono at whatever rate the stream is opened with (the
`plug` in front only remixes channels: it must not convert the sample format, because the file
plugin then reads the infile in skipping chunks — the driver opens int16, the file's format).
A test writes the infile with `source.feed(...)` *before* the stream is opened (the plugin opens it with the device).
The file plugin does not pace and, past the end of the file, repeats stale buffer content:
feed more than the test reads. The driver paces itself (`ahead_s`).

The sound-level meter and `test_sound_*` build on `alsa_mic_source` from here.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from test_speaker import ALSA_CONF_MAIN, alsa_file_sink

from drivers.microphone import AudioBlock, Microphone

SOURCE_CONF = """\
pcm.!default {{ type asym;
  playback.pcm {{ type plug; slave.pcm "tee_to_file" }}
  capture.pcm {{ type plug; slave {{ pcm "micfile"; format S16_LE; channels 1 }} }} }}
pcm.tee_to_file {{ type file; slave.pcm "null"; file "{wav}"; format "wav"; perm 0644 }}
pcm.micfile {{ type file; slave.pcm "null"; file "/dev/null"; infile "{raw}"; format "raw" }}
"""


@dataclass(frozen=True)
class AlsaMicSource:
    raw: Path

    def feed(self, samples: np.ndarray) -> None:
        """What the microphone will hear next: float samples in -1..1 (or int16), as raw S16_LE."""
        if samples.dtype != np.int16:
            samples = np.clip(np.round(samples.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
        self.raw.write_bytes(samples.astype("<i2").tobytes())


_SOURCE: AlsaMicSource | None = None


def alsa_mic_source(tmp_path_factory: pytest.TempPathFactory) -> AlsaMicSource:
    """Point ALSA's default capture at a raw file (and playback at the speaker's sink), once per session."""
    global _SOURCE
    if _SOURCE is not None:
        return _SOURCE
    sink = alsa_file_sink(tmp_path_factory)  # skips when PortAudio or ALSA is missing
    folder = tmp_path_factory.mktemp("alsa_mic")
    source = AlsaMicSource(folder / "in.raw")
    source.feed(np.zeros(48000, np.int16))
    conf = folder / "asound.conf"
    conf.write_text(SOURCE_CONF.format(wav=sink.wav, raw=source.raw), encoding="utf-8")
    os.environ["ALSA_CONFIG_PATH"] = f"{ALSA_CONF_MAIN}:{conf}"
    if "sounddevice" in sys.modules:  # PortAudio already read the devices: make it read them again
        sd = sys.modules["sounddevice"]
        sd._terminate()
        sd._initialize()
    _SOURCE = source
    return source


@pytest.fixture
def mic_source(tmp_path_factory: pytest.TempPathFactory) -> AlsaMicSource:
    return alsa_mic_source(tmp_path_factory)


class Collector:
    """A listener that keeps every block and says when it has enough."""

    def __init__(self, want_s: float):
        self.blocks: list[AudioBlock] = []
        self.want_s = want_s
        self.done = threading.Event()

    def __call__(self, block: AudioBlock) -> None:
        self.blocks.append(block)
        if sum(b.duration_s for b in self.blocks) >= self.want_s:
            self.done.set()

    def samples(self) -> np.ndarray:
        return np.concatenate([b.samples for b in self.blocks])


def _ramp(n: int) -> np.ndarray:
    return ((np.arange(n) % 20000) - 10000).astype(np.int16)


def test_blocks_are_the_file_sample_exact_contiguous_and_stamped_in_real_time(mic_source: AlsaMicSource) -> None:
    rate = 48000
    mic_source.feed(_ramp(rate * 3))
    mic = Microphone(sample_rate=rate, block_s=0.1)
    got = Collector(1.0)
    mic.add_listener(got)
    before = datetime.now(timezone.utc)
    mic.start()
    try:
        assert got.done.wait(10), mic.health()
    finally:
        mic.stop()
    after = datetime.now(timezone.utc)
    samples = got.samples()
    assert got.blocks[0].rate == rate and all(b.samples.dtype == np.float32 for b in got.blocks)
    assert np.array_equal(np.round(samples * 32768).astype(np.int16), _ramp(rate * 3)[: len(samples)])
    for a, b in zip(got.blocks, got.blocks[1:], strict=False):  # contiguous to the sample
        assert b.start == a.start + timedelta(seconds=len(a.samples) / rate)
    assert before - timedelta(seconds=0.5) <= got.blocks[0].start <= after
    # paced: ~1 s of audio took ~1 s, not the instant the file plugin would give
    assert (after - before).total_seconds() >= 0.7
    assert mic.health()["state"] == "ok" and mic.alive()


def test_listeners_come_and_go_and_a_failing_one_harms_nobody(mic_source: AlsaMicSource,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    mic_source.feed(np.full(48000 * 3, 1000, np.int16))
    mic = Microphone(block_s=0.05)

    def broken(block: AudioBlock) -> None:
        raise RuntimeError("listener bug")

    first, second = Collector(0.3), Collector(0.3)
    mic.add_listener(broken)
    mic.add_listener(first)
    with caplog.at_level(logging.ERROR):
        mic.start()
        try:
            assert first.done.wait(10)
            mic.remove_listener(first)
            n = len(first.blocks)
            mic.add_listener(second)
            assert second.done.wait(10)
        finally:
            mic.stop()
    assert len(first.blocks) <= n + 1  # at most the block being delivered when it was removed
    assert int(mic.health()["listener_errors"]) >= len(second.blocks)  # type: ignore[call-overload]
    assert "listener bug" in caplog.text
    assert mic.health()["state"] == "ok"


def test_health_shows_clipping(mic_source: AlsaMicSource) -> None:
    rate = 48000
    t = np.arange(rate * 3) / rate
    mic_source.feed(np.clip(1.5 * np.sin(2 * np.pi * 440 * t), -1, 1))  # an overdriven capsule
    mic = Microphone(sample_rate=rate, block_s=0.1)
    got = Collector(0.3)
    mic.add_listener(got)
    mic.start()
    try:
        assert got.done.wait(10)
    finally:
        mic.stop()
    h = mic.health()
    assert h["clipping"] is True and float(h["clipped_ratio_1min"]) > 0.1, h  # type: ignore[arg-type]
    assert h["peak_dbfs"] == 0.0


def test_quiet_but_live_input_is_not_clipping_nor_dead(mic_source: AlsaMicSource) -> None:
    rng = np.random.default_rng(1)
    mic_source.feed(rng.normal(0, 0.001, 48000 * 3))  # about -60 dBFS of hiss
    mic = Microphone(block_s=0.1, dead_after_s=0.3)
    got = Collector(0.6)
    mic.add_listener(got)
    mic.start()
    try:
        assert got.done.wait(10)
    finally:
        mic.stop()
    h = mic.health()
    assert h["state"] == "ok" and h["clipping"] is False and h["silent_s"] == 0.0, h
    assert -65 < float(h["rms_dbfs"]) < -55  # type: ignore[arg-type]


def test_digital_silence_marks_the_microphone_dead(mic_source: AlsaMicSource) -> None:
    mic_source.feed(np.zeros(48000 * 3, np.int16))
    mic = Microphone(block_s=0.1, dead_after_s=0.3)
    got = Collector(0.8)
    mic.add_listener(got)
    mic.start()
    try:
        assert got.done.wait(10)
    finally:
        mic.stop()
    h = mic.health()
    assert h["state"] == "dead" and "silence" in str(h["last_error"]), h


def test_an_absent_device_is_down_retried_and_never_kills_the_thread(mic_source: AlsaMicSource) -> None:
    mic = Microphone(device="no-such-capsule", retry_s=0.1)
    mic.start()
    try:
        deadline = time.monotonic() + 5
        while mic.health()["state"] != "down" and time.monotonic() < deadline:
            time.sleep(0.02)
        h = mic.health()
        assert h["state"] == "down" and "no-such-capsule" in str(h["last_error"]), h
        assert "micfile" in str(h["last_error"])  # lists the inputs there are, for the technician
        time.sleep(0.3)
        assert mic.alive()
    finally:
        mic.stop()


def test_without_portaudio_the_microphone_is_down_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    # The only mock here: a box without libportaudio2 cannot be made on this machine otherwise.
    import drivers.microphone as module

    def missing() -> None:
        raise module.MicrophoneError("PortAudio is not available: libportaudio.so.2: cannot open")

    monkeypatch.setattr(module, "_sounddevice", missing)
    mic = Microphone(retry_s=10)
    mic.start()
    try:
        deadline = time.monotonic() + 5
        while mic.health()["state"] != "down" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mic.health()["state"] == "down" and "PortAudio" in str(mic.health()["last_error"])
        assert mic.alive()
    finally:
        mic.stop()


def test_a_microphone_is_a_noise_meter_to_check_config(tmp_path: Path) -> None:
    from test_config_meaning import BASE, warnings_of

    no_meter = BASE.replace("""  - id: noise-1
    port: /dev/ttyUSB0
    profile: renke_rs_zs_n01
    baud: 4800
""", "")
    assert "rules.noise.quantity" in [w.path for w in warnings_of(tmp_path, no_meter)]
    with_mic = no_meter.replace("rules:\n", "microphone:\n  enabled: true\nrules:\n", 1)
    assert "rules.noise.quantity" not in [w.path for w in warnings_of(tmp_path, with_mic)]


def test_microphone_config_refuses_what_cannot_measure() -> None:
    from pydantic import ValidationError

    from edge_agent.config.microphone import MicrophoneConfig

    with pytest.raises(ValidationError, match="sample_rate"):
        MicrophoneConfig(sample_rate=8000)  # below 16 kHz: no A-weighting worth the name
    with pytest.raises(ValidationError, match="extra"):
        MicrophoneConfig(gain_db=3)  # type: ignore[call-arg]
    assert MicrophoneConfig().enabled is False and MicrophoneConfig().sensor_id == "mic-1"


def _component_readings(mic_source: AlsaMicSource, tmp_path: Path, samples: np.ndarray, seconds: int):
    from drivers.types import Reading
    from edge_agent.config.microphone import MicrophoneConfig
    from edge_agent.sound.component import SoundComponent

    mic_source.feed(samples)
    got: list[Reading] = []
    enough = threading.Event()

    def submit(reading: Reading) -> None:
        got.append(reading)
        if len(got) >= seconds:
            enough.set()

    config = MicrophoneConfig(enabled=True, dead_after_s=0.5, classifier={"enabled": False},
                              audio={"enabled": False})
    component = SoundComponent(config, tmp_path, submit, now=lambda: datetime.now(timezone.utc))
    component.start()
    try:
        assert enough.wait(10), component.health()
    finally:
        component.stop()
    return component, got


def test_clipped_and_silent_seconds_are_flagged_and_a_dead_microphone_is_a_device_fault(
        mic_source: AlsaMicSource, tmp_path: Path) -> None:
    from drivers.types import Quality

    rate = 48000
    t = np.arange(rate) / rate
    clipped = np.clip(2 * np.sin(2 * np.pi * 1000 * t), -1, 1)  # one overdriven second
    fine = 0.1 * np.sin(2 * np.pi * 1000 * t)
    component, got = _component_readings(mic_source, tmp_path,
                                         np.concatenate([fine, clipped, np.zeros(rate * 4)]), 4)
    assert [r.quality for r in got[:4]] == [Quality.OK, Quality.OUT_OF_RANGE, Quality.COMM_ERROR,
                                            Quality.COMM_ERROR]
    assert got[0].value == pytest.approx(120 - 20, abs=0.1) and got[0].sensor_id == "mic-1"
    assert got[2].value is None
    # ~1.5 s of silence by now, more than dead_after_s: the core's device_fault rule sees it down
    assert component.device_health() == {"mic-1": {"state": "down", "last_error": component.health()["last_error"]}}
    assert "silence" in str(component.health()["last_error"])
