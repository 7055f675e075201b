"""Read a recording (WAV of any sample format, FLAC, Ogg/Opus, ...) as float samples, through PyAV.

Integer PCM is scaled so that full scale is ±1 (int16 / 32768), exactly as the microphone's
capture is, so a recording and the live meter read the same level for the same samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class AudioFileError(Exception):
    """The file cannot be read as audio; the message says why."""


def read_audio(path: Path | str, channel: int = 0, max_s: float = 24 * 3600) -> tuple[np.ndarray, int]:
    """The samples of one channel (float64, full scale ±1) and the sample rate."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioFileError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            channels = stream.codec_context.channels
            if channel >= channels:
                raise AudioFileError(f"{path}: channel {channel} asked, the file has {channels}")
            rate = int(stream.codec_context.sample_rate)
            parts: list[np.ndarray] = []
            total = 0
            for frame in container.decode(stream):
                data = frame.to_ndarray()
                fmt = frame.format.name
                if not frame.format.is_planar:
                    data = data.reshape(-1, channels).T
                row = data[channel]
                if fmt.startswith("s16"):
                    x = row.astype(np.float64) / 32768.0
                elif fmt.startswith("s32"):
                    x = row.astype(np.float64) / 2147483648.0
                elif fmt.startswith("u8"):
                    x = (row.astype(np.float64) - 128.0) / 128.0
                elif fmt.startswith(("flt", "dbl")):
                    x = row.astype(np.float64)
                else:
                    raise AudioFileError(f"{path}: unsupported sample format {fmt}")
                parts.append(x)
                total += len(x)
                if total > max_s * rate:
                    raise AudioFileError(f"{path}: longer than {max_s:.0f} s")
    except AudioFileError:
        raise
    except (OSError, ValueError, av.error.FFmpegError) as exc:
        raise AudioFileError(f"{path}: not readable as audio ({exc})") from exc
    if not parts:
        raise AudioFileError(f"{path}: no audio in the file")
    return np.concatenate(parts), rate
