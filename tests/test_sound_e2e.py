"""The microphone as a noise meter, end to end: a recording played as the capture device
(ALSA's file plugin, see test_microphone), the whole daemon, a real Mosquitto.

Its 1-second LAeq readings must reach the same figures and rules as a Modbus meter's: a quiet
start makes the 60-s LAeq valid with no event, then the recording gets loud (a synthetic
power-tool-like sound, see test_sound_source) and the noise rule raises `noise_over_limit` for
sensor `mic-1`, whose figures say which noise it was, and whose signed bundle carries the
sound of the window as `audio.ogg` and passes `verify-evidence`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from agent_config import write_config
from broker import Broker, Recorder
from test_microphone import alsa_mic_source
from test_shout_stop_e2e import save_bundle
from test_sound_source import power_tool_like

from edge_agent.cli import main as cli_main
from edge_agent.clock import SkippingClock
from edge_agent.config import load_config
from edge_agent.daemon import build_agent
from edge_agent.sound.audiofile import read_audio
from edge_agent.sound.meter import LevelMeter, summarise

ALWAYS_NIGHT = {"night": [{"start": "00:00", "end": "00:00"}], "quiet": []}
RATE, FULL_SCALE = 48000, 100.0


def tone(level_db: float, seconds: float) -> np.ndarray:
    """A 1 kHz sine that the meter reads at `level_db` (A = C = Z at 1 kHz)."""
    t = np.arange(round(seconds * RATE)) / RATE
    return 10 ** ((level_db - FULL_SCALE) / 20) * np.sin(2 * np.pi * 1000 * t)


def at_laeq(x: np.ndarray, level_db: float) -> np.ndarray:
    """`x` scaled so that the meter reads `level_db` LAeq over it."""
    meter = LevelMeter(RATE, FULL_SCALE)
    measured = summarise(meter.feed(x))["laeq"]
    return x * 10 ** ((level_db - measured) / 20)


def after_onset(samples: np.ndarray, rate: int, settle_s: float = 0.1) -> np.ndarray:
    """The samples from `settle_s` after the first 10-ms frame 20 dB louder than the clip's start."""
    frame = rate // 100
    n = len(samples) // frame
    rms = np.sqrt(np.mean(np.square(samples[:n * frame].reshape(n, frame)), axis=1)) + 1e-12
    quiet = float(np.median(rms[:50]))
    onset = int(np.argmax(rms > 10 * quiet))
    assert rms[onset] > 10 * quiet, "no loud part in the clip"
    return samples[onset * frame + round(settle_s * rate):]


def events(bureau: Recorder, kind: str, state: str) -> list[dict]:
    return [e for e in bureau.payloads("event") if e["kind"] == kind and e["state"] == state]


def test_microphone_levels_reach_the_noise_rule(mosquitto: Broker, tmp_path: Path,
                                                tmp_path_factory: pytest.TempPathFactory,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    source = alsa_mic_source(tmp_path_factory)
    source.feed(np.concatenate([tone(45.0, 6.0), at_laeq(power_tool_like(40.0), 75.0)]))
    config = write_config(
        tmp_path, mosquitto.port,
        schedule=ALWAYS_NIGHT,
        microphone={"enabled": True, "sample_rate": RATE, "full_scale_db": FULL_SCALE},
        rules={"figure_validity": 0.05,  # the 60 s window counts after 3 s, to keep the test short
               "noise": {"window_s": 60, "timing": {"min_duration_s": 1, "clear_s": 1, "cooldown_s": 0}},
               "early_warning": {"enabled": False}, "night_lmax": {"enabled": False},
               "night_work": {"enabled": False}},
    )
    bureau = Recorder(mosquitto.port, "edge/v1/site-test/box-1/#").start()
    clock = SkippingClock()
    parts = build_agent(load_config(config), clock=clock)
    assert parts.sound is not None
    parts.agent.start()
    try:
        engine = parts.figures.engine

        def quiet_leq() -> list:
            return [m for m in engine.rolling(clock.now())
                    if m.sensor_id == "mic-1" and m.figure == "leq" and m.window_s == 60 and m.valid]

        valid = bureau.wait_for(quiet_leq, timeout=15)
        assert valid and valid[0].value == pytest.approx(45.0, abs=0.2) and valid[0].quantity == "noise_la"
        assert not events(bureau, "noise_over_limit", "started")

        started = bureau.wait_for(lambda: events(bureau, "noise_over_limit", "started"), timeout=20)
        assert started, bureau.payloads("event")
        event = started[0]
        assert event["source"] == "mic-1", event
        figures = event["figures"]
        assert 55 < figures["leq"] <= 75.1
        # which noise it was: the windows of the rule's minute, energy-weighted
        assert figures["source_likely"] == "construction", figures
        assert figures["source_construction_share"] > 0.4 and figures["source_windows"] >= 2  # 0.5-0.85 seen
        assert "Tools" in figures["source_top"] or "Power tool" in figures["source_top"]
        assert isinstance(figures["low_frequency_db"], float)
        # a telemetry minute over the limit carries the same
        minute = parts.sound.telemetry(clock.now(), 60, lambda t: 55.0)
        assert minute["noise_source"]["likely"] == "construction" and minute["noise_source"]["laeq"] > 55
        assert parts.sound.telemetry(clock.now(), 60, lambda t: 99.0) == {}  # under the limit: nothing

        # the bundle: audio.ogg of the window, hashed and signed with the rest
        bundle = bureau.wait_for(lambda: save_bundle(bureau, tmp_path / "received", event["key"]), timeout=15)
        assert bundle is not None, "no complete evidence bundle"
        manifest = json.loads((bundle / "manifest.json").read_bytes())
        audio = next(f for f in manifest["files"] if f["name"] == "audio.ogg")
        assert audio["media_type"].startswith("audio/ogg") and audio["size"] > 1000
        assert cli_main(["verify-evidence", str(bundle)]) == 0, capsys.readouterr().out
        samples, rate = read_audio(bundle / "audio.ogg")
        assert rate == RATE and 6.0 <= len(samples) / rate <= 61.0  # the quiet start and the loud seconds
        loud_part = after_onset(samples, rate)  # the clip ends when the bundle is made: seconds after the onset vary
        assert len(loud_part) >= 0.8 * rate, len(loud_part) / rate
        meter = LevelMeter(rate, FULL_SCALE)
        loud = summarise([*meter.feed(loud_part), *filter(None, [meter.flush()])])["laeq"]
        assert loud == pytest.approx(75.0, abs=1.5)  # Opus at 24 kbit/s keeps the level
        (bundle / "audio.ogg").write_bytes((bundle / "audio.ogg").read_bytes()[:-10])  # tampered: refused
        capsys.readouterr()
        assert cli_main(["verify-evidence", str(bundle)]) == 1
        assert "audio.ogg" in capsys.readouterr().out
        health = parts.sound.health()
        assert health["state"] == "ok" and health["seconds_by_quality"]["ok"] >= 5, health
    finally:
        parts.agent.stop(timeout=2)
        bureau.stop()
