"""`edge-fw calibrate-mic` through the real ALSA file source: a calibrator's tone played as the
microphone sets the level scale the agent then uses; anything but a steady tone is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_microphone import alsa_mic_source

from edge_agent.config.microphone import MicrophoneConfig
from edge_agent.sound.calibration import load_calibration
from edge_agent.sound.component import SoundComponent
from firmware_tools.cli import main as fw_main

RATE = 48000


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"storage": {"data_dir": str(tmp_path / "data")},
                                    "microphone": {"enabled": True, "sample_rate": RATE, "full_scale_db": 120}}))
    return path


def test_a_calibrator_tone_sets_the_full_scale_the_agent_uses(tmp_path: Path,
                                                              tmp_path_factory: pytest.TempPathFactory,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    source = alsa_mic_source(tmp_path_factory)
    amplitude = 0.05  # the capsule puts the 94 dB calibrator at -26 dB re full scale: full scale = 120.0 dB SPL
    t = np.arange(RATE * 4) / RATE
    source.feed(amplitude * np.sin(2 * np.pi * 1000 * t))
    config = _config(tmp_path)
    assert fw_main(["calibrate-mic", "--ref-db", "94", "--seconds", "1.5", "--config", str(config)]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    stored = tmp_path / "data" / "microphone-calibration.json"  # where the config's data_dir puts it
    assert printed["file"] == str(stored)
    expected = 94 - 20 * math.log10(amplitude)
    calibration, error = load_calibration(stored)  # the daemon's reader understands the tool's file
    assert error == "" and calibration is not None
    assert calibration.full_scale_db == pytest.approx(expected, abs=0.05) and calibration.ref_db == 94
    component = SoundComponent(MicrophoneConfig(enabled=True, sample_rate=RATE, full_scale_db=110.0),
                               tmp_path / "data", submit=lambda r: None, now=lambda: None)  # type: ignore[arg-type,return-value]
    assert component.full_scale_db == pytest.approx(expected, abs=0.05)
    assert component.health()["calibration"]["offset_db"] == pytest.approx(expected - 110.0, abs=0.05)


def test_noise_instead_of_a_calibrator_is_refused_and_nothing_is_written(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    source = alsa_mic_source(tmp_path_factory)
    source.feed(np.random.default_rng(5).normal(0, 0.05, RATE * 4))
    config = _config(tmp_path)
    assert fw_main(["calibrate-mic", "--ref-db", "94", "--seconds", "1.0", "--config", str(config)]) != 0
    assert "near 1000 Hz" in capsys.readouterr().err
    assert not (tmp_path / "data" / "microphone-calibration.json").exists()


def test_a_broken_calibration_file_falls_back_to_the_configured_scale(tmp_path: Path) -> None:
    (tmp_path / "microphone-calibration.json").write_text("{not json")
    component = SoundComponent(MicrophoneConfig(enabled=True, full_scale_db=117.0), tmp_path,
                               submit=lambda r: None, now=lambda: None)  # type: ignore[arg-type,return-value]
    assert component.full_scale_db == 117.0
    assert "unusable" in component.health()["calibration_error"]
