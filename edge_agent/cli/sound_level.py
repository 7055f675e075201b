"""`edge-agent sound-level FILE --full-scale-db DB`: measure a recording the way the microphone meter does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NAME = "sound-level"
HELP = "measure a recording: LAeq, LZeq, LAFmax, LCpeak (IEC 61672-1 weightings), one JSON line"
DESCRIPTION = (
    "Run a recording through the box's sound-level meter (A/C/Z weighting, Fast/Slow time weighting) "
    "and print one JSON line: laeq, lzeq, lceq, lafmax, lasmax, lcpeak (dB re 20 µPa) and seconds. "
    "Full scale is the sound pressure level of a sine whose peak is the file's full scale "
    "(the microphone's full_scale_db, after calibration). With --source, also which noise it was "
    "(the box's YAMNet attribution). Exit 1 if the file cannot be read."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a recording (WAV of any sample format, FLAC, Ogg, ...)")
    parser.add_argument("--full-scale-db", type=float, required=True,
                        help="dB SPL of a full-scale sine in this recording (e.g. 120)")
    parser.add_argument("--channel", type=int, default=0, help="channel to measure (default 0)")
    parser.add_argument("--per-second", action="store_true",
                        help="also print one JSON line per second before the summary line")
    parser.add_argument("--source", action="store_true",
                        help="also say which noise it was, as the box does on a noise violation (YAMNet: "
                             "top classes, construction/traffic/aircraft/speech/music shares, likely source); "
                             "the way to check attribution on site recordings")


def run(args: argparse.Namespace) -> int:
    from edge_agent.sound.audiofile import AudioFileError, read_audio
    from edge_agent.sound.meter import LevelMeter, summarise

    try:
        samples, rate = read_audio(args.file, args.channel)
    except AudioFileError as exc:
        print(json.dumps({"error": str(exc)}, ensure_ascii=False))
        return 1
    meter = LevelMeter(rate, args.full_scale_db)
    levels = meter.feed(samples)
    tail = meter.flush()
    if tail is not None:
        levels.append(tail)
    if args.per_second:
        for lv in levels:
            print(json.dumps(lv.as_json()))
    summary: dict[str, Any] = dict(summarise(levels))
    if args.source:
        summary["source"] = _source(samples, rate)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def _source(samples: Any, rate: int) -> dict[str, Any]:
    """The box's attribution over the whole recording (every window, energy-weighted)."""
    from datetime import datetime, timedelta, timezone

    from drivers.microphone import AudioBlock
    from edge_agent.sound.classifier import SourceClassifier, Yamnet

    start = datetime(2000, 1, 1, tzinfo=timezone.utc)
    seconds = len(samples) / rate
    clf = SourceClassifier(Yamnet(), rate, keep_minutes=int(seconds // 60) + 2)
    clf(AudioBlock(samples, rate, start))
    found = clf.attribution(start, start + timedelta(seconds=seconds + 1))
    return found.as_json() if found is not None else {"windows": 0, "likely": "unattributed"}
