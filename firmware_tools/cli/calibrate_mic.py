"""`edge-fw calibrate-mic --ref-db 94`: set the microphone's level scale against an acoustic calibrator.

The technician fits the calibrator (e.g. 94 dB SPL at 1 kHz, IEC 60942) over the capsule
and runs this while the agent is stopped (it needs the input device). It records a few
seconds, checks that the input really is the calibrator (one steady tone at the expected
frequency, not clipped, no loud background), and writes the calibration file the agent reads
at start: `full_scale_db`, the dB SPL of a full-scale sine at the converter, is
`ref_db − level of the tone in dB re full-scale sine`. Unweighted (the calibrator's level is
SPL): the result holds at any calibrator frequency.

Field tools do not import the daemon: the config is read as plain YAML (only `microphone:`
and `storage.data_dir`), and the file format is kept in step with
`edge_agent/sound/calibration.py` by a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from drivers.microphone import CLIP_LEVEL, AudioBlock, Microphone
from firmware_tools.meter_io import ToolError, fail

NAME = "calibrate-mic"
HELP = "measure the microphone against an acoustic calibrator and store the level scale"
DEFAULT_CONFIG = Path("/etc/edge-agent/config.yaml")
DEFAULT_DATA_DIR = Path("/var/lib/edge-agent")
MAX_SPREAD_DB = 0.5  # a held calibrator is steady to ~0.1 dB; more means it slipped or the room is loud
MIN_TONE_SHARE = 0.95  # of the signal's power within ±10 % of the calibrator's frequency


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ref-db", type=float, required=True, help="the calibrator's level, dB SPL (e.g. 94 or 114)")
    parser.add_argument("--frequency", type=float, default=1000.0, help="the calibrator's frequency, Hz (default 1000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to record (default 5)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"agent config: microphone device and where the file goes (default {DEFAULT_CONFIG})")
    parser.add_argument("--out", type=Path, help="write the calibration here instead of where the config says")
    parser.add_argument("--device", help="input device name (overrides the config)")


def _section(config: Path) -> tuple[dict[str, Any], Path]:
    """The `microphone:` mapping and the data directory, from the YAML (absent file: defaults)."""
    if not config.exists():
        return {}, DEFAULT_DATA_DIR
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ToolError(f"cannot read {config}: {exc}") from exc
    if not isinstance(data, dict):
        raise ToolError(f"{config}: not a mapping")
    mic = data.get("microphone") or {}
    storage = data.get("storage") or {}
    if not isinstance(mic, dict) or not isinstance(storage, dict):
        raise ToolError(f"{config}: microphone/storage must be mappings")
    return mic, Path(storage.get("data_dir") or DEFAULT_DATA_DIR)


def record(mic: Microphone, seconds: float) -> np.ndarray:
    """`seconds` of samples from the microphone (raises ToolError if it gives none)."""
    blocks: list[np.ndarray] = []
    want = round(seconds * mic.sample_rate)
    done = threading.Event()

    def take(block: AudioBlock) -> None:
        blocks.append(block.samples)
        if sum(len(b) for b in blocks) >= want:
            done.set()

    mic.add_listener(take)
    mic.start()
    try:
        if not done.wait(seconds + 10):
            raise ToolError(f"the microphone gave no audio: {mic.health().get('last_error') or 'no samples'}")
    finally:
        mic.stop()
    return np.concatenate(blocks)[:want]


def analyse(x: np.ndarray, rate: int, frequency: float) -> dict[str, float]:
    """Level (dB re a full-scale sine), spread of 100-ms levels, and the tone's share of the power."""
    x = x.astype(np.float64) - float(np.mean(x))
    skip = min(len(x) // 5, rate // 2)  # the first half second: the technician's hands, the device's start
    x = x[skip:]
    if x.size < rate // 2:
        raise ToolError("too little audio to calibrate (record at least 1 s)")
    if np.count_nonzero(np.abs(x) >= CLIP_LEVEL):
        raise ToolError("the input clips: lower the gain, or use a calibrator level the capsule can take")
    ms = float(np.mean(x**2))
    if ms <= 0:
        raise ToolError("the input is digital silence: is the capsule connected?")
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / rate)
    near = (f > 0.9 * frequency) & (f < 1.1 * frequency)
    share = float(power[near].sum() / power[1:].sum())
    hop = rate // 10
    blocks = x[: x.size // hop * hop].reshape(-1, hop)
    block_db = 10 * np.log10(np.maximum(np.mean(blocks**2, axis=1), 1e-30))
    return {"level_dbfs": 10 * math.log10(ms / 0.5), "spread_db": float(block_db.max() - block_db.min()),
            "tone_share": share}


def run(args: argparse.Namespace) -> int:
    try:
        mic_cfg, data_dir = _section(args.config)
        rate = int(mic_cfg.get("sample_rate", 48000))
        mic = Microphone(args.device or mic_cfg.get("device"), rate, channel=int(mic_cfg.get("channel", 0)),
                         sample_format=str(mic_cfg.get("sample_format", "int16")), retry_s=1.0, dead_after_s=3600)
        out: Path = args.out or Path(mic_cfg.get("calibration_file") or data_dir / "microphone-calibration.json")
        found = analyse(record(mic, args.seconds), rate, args.frequency)
        if found["tone_share"] < MIN_TONE_SHARE:
            raise ToolError(f"only {found['tone_share']:.0%} of the sound is near {args.frequency:.0f} Hz: "
                            "is the calibrator on, fitted, and the room quiet?")
        if found["spread_db"] > MAX_SPREAD_DB:
            raise ToolError(f"the level moved by {found['spread_db']:.1f} dB while recording: hold the calibrator "
                            "still and try again")
        full_scale = args.ref_db - found["level_dbfs"]
        if not 60.0 <= full_scale <= 200.0:
            raise ToolError(f"that gives a full scale of {full_scale:.1f} dB SPL, outside 60..200: wrong --ref-db?")
    except ToolError as exc:
        return fail(NAME, exc)
    result = {"full_scale_db": round(full_scale, 2), "ref_db": args.ref_db, "frequency_hz": args.frequency,
              "measured_dbfs": round(found["level_dbfs"], 3), "spread_db": round(found["spread_db"], 3),
              "device": mic.health()["device"], "sample_rate": rate,
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        return fail(NAME, ToolError(f"cannot write {out}: {exc}"))
    print(json.dumps({**result, "file": str(out)}))
    print(f"calibrated: full scale {full_scale:.2f} dB SPL; restart the agent to use it", flush=True)
    return 0
