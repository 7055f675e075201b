"""`microphone:` — a measuring microphone on the box: a sound-level meter without an RS-485 meter.

The box computes A- and C-weighted levels to IEC 61672-1 from the samples (class 1
weighting filters; the microphone capsule and its mounting set the real class: a MEMS
capsule on a crane box is a class 2 instrument at best, and GB 12523-2011 asks for class 2
or better). Its 1-second LAeq enters the same figures and rules as a noise meter's reading,
under `sensor_id` and quantity `noise_la`.

The level scale: `full_scale_db` is the dB SPL of a full-scale sine at the converter (from
the capsule's datasheet sensitivity and the gain), and `edge-fw calibrate-mic --ref-db 94`
measures the offset against an acoustic calibrator and writes it to `calibration_file`;
the offset is added to `full_scale_db` when the agent starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from edge_agent.config.base import Section
from edge_agent.config.site import ID_PATTERN


class ClassifierConfig(Section):
    """Which noise it was: YAMNet (AudioSet classes) over the microphone's audio."""

    enabled: bool = Field(True, description="Classify the sound (YAMNet, ~1 ms per 0.975-s window on x86).")
    hop_s: float = Field(
        0.975, ge=0.2, le=10, description="Seconds between classified windows (0.975: back to back)."
    )
    target_dbfs: float = Field(
        -20.0, ge=-60, le=0,
        description="Each window is scaled to this RMS (dB re full-scale sine) first: YAMNet misreads quiet input.",
    )
    max_gain_db: float = Field(40.0, ge=0, le=80, description="At most this much gain when normalising.")
    groups: dict[str, list[str]] | None = Field(
        None,
        description="Source groups -> AudioSet class names (yamnet_class_map.csv); default: construction, "
        "traffic, aircraft, speech, music (edge_agent/sound/classifier.py GROUPS). Must include 'construction'.",
    )
    threads: int = Field(1, ge=1, le=4, description="LiteRT threads for YAMNet.")

    @field_validator("groups")
    @classmethod
    def _known_classes(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is None:
            return None
        if "construction" not in value:
            raise ValueError("groups must include 'construction'")
        labels = set(_labels())
        unknown = [c for members in value.values() for c in members if c not in labels]
        if unknown:
            raise ValueError(f"not AudioSet class names: {', '.join(map(repr, unknown))}")
        return value


class AudioConfig(Section):
    """Sound in the evidence: a ring of compressed audio beside the video ring. Privacy: this keeps what
    the microphone hears (voices too) for `ring_s`; set enabled: false to keep none."""

    enabled: bool = Field(True, description="Keep the last ring_s of audio (Opus) for noise evidence.")
    ring_s: int = Field(1200, ge=10, le=7200, description="Seconds of audio held in memory (20 min ≈ 3.6 MB).")
    bitrate: int = Field(24000, ge=6000, le=128000, description="Opus bit rate, bit/s.")
    evidence: bool = Field(True, description="Put audio.ogg (the rule's window, capped) in noise violation bundles.")
    evidence_max_s: int = Field(
        300, ge=5, le=7200, description="At most this many seconds of audio per bundle (the window's last ones)."
    )


def _labels() -> list[str]:
    from edge_agent.sound.labels import load_labels

    return load_labels()


class MicrophoneConfig(Section):
    """The microphone input and its level scale."""

    enabled: bool = Field(False, description="Capture from the microphone and measure the sound level.")
    device: str | None = Field(
        None, description="Part of the input device's name (see `python -m sounddevice`); default: the default input."
    )
    channel: int = Field(0, ge=0, le=7, description="Input channel that carries the measuring capsule.")
    sample_rate: int = Field(
        48000, ge=16000, le=192000,
        description="Capture rate, Hz. 48000 or more: the A-weighting filter is exact to 16 kHz only there "
        "(DOMAIN.md §1: a bilinear IIR drifts near the top of the band).",
    )
    sample_format: Literal["int16", "int32"] = Field(
        "int16", description="Capture format: int16 (every ALSA input; ~96 dB of range) or int32 (24-bit codecs)."
    )
    block_ms: int = Field(100, ge=10, le=1000, description="Samples are handed on in blocks this long.")
    sensor_id: str = Field(
        "mic-1", pattern=ID_PATTERN, description="Sensor id of the level readings (as a meter's id)."
    )
    quantity: str = Field("noise_la", description="Quantity of the 1-s LAeq readings (what the noise rules judge).")
    full_scale_db: float = Field(
        120.0, ge=60, le=200,
        description="dB SPL of a full-scale sine at the converter (datasheet sensitivity + gain); "
        "the calibration offset is added to it.",
    )
    calibration_file: Path | None = Field(
        None,
        description="Where `edge-fw calibrate-mic` stores the calibration offset (JSON); "
        "default: <storage.data_dir>/microphone-calibration.json.",
    )
    dead_after_s: float = Field(
        10.0, gt=0, le=3600, description="Digital silence this long marks the microphone dead in health."
    )
    audio: AudioConfig = Field(default_factory=AudioConfig, description="Audio ring and audio evidence.")
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig, description="Noise source attribution.")
    retry_s: float = Field(30.0, gt=0, le=3600, description="Seconds between attempts to open a missing device.")

    def calibration_path(self, data_dir: Path) -> Path:
        return self.calibration_file or data_dir / "microphone-calibration.json"
