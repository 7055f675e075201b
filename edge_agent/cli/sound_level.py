"""`edge-agent sound-level FILE --full-scale-db DB`: measure a recording the way the microphone meter does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "sound-level"
HELP = "measure a recording: LAeq, LZeq, LAFmax, LCpeak (IEC 61672-1 weightings), one JSON line"
DESCRIPTION = (
    "Run a recording through the box's sound-level meter (A/C/Z weighting, Fast/Slow time weighting) "
    "and print one JSON line: laeq, lzeq, lceq, lafmax, lasmax, lcpeak (dB re 20 µPa) and seconds. "
    "Full scale is the sound pressure level of a sine whose peak is the file's full scale "
    "(the microphone's full_scale_db, after calibration). Exit 1 if the file cannot be read."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a recording (WAV of any sample format, FLAC, Ogg, ...)")
    parser.add_argument("--full-scale-db", type=float, required=True,
                        help="dB SPL of a full-scale sine in this recording (e.g. 120)")
    parser.add_argument("--channel", type=int, default=0, help="channel to measure (default 0)")
    parser.add_argument("--per-second", action="store_true",
                        help="also print one JSON line per second before the summary line")


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
    print(json.dumps(summarise(levels)))
    return 0
