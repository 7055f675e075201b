"""Voice audio in and out of the box: PyAV decodes the bureau's message, encodes the crew's reply.

Decoding accepts only the two containers a talk may carry (Ogg with Opus or Vorbis, WAV),
named by the signed command rather than sniffed, and stops as soon as the audio runs past
its limit, so a small file that claims hours cannot make the box decode hours. The result
is mono float32, resampled by libswresample to the rate the speaker plays at, so the
speaker driver has nothing left to convert.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from drivers.speaker import Pcm

FORMATS = {"ogg": "ogg", "wav": "wav"}  # the talk's `format` -> PyAV/FFmpeg demuxer
OPUS_RATE = 48000  # Opus encodes at 48 kHz (it also takes 8/12/16/24 kHz; 48 needs no thought)


class AudioError(ValueError):
    """The audio cannot be used; `reason` is the ack's code (bad_audio, too_long)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _av() -> Any:
    import av  # imported on use: the box starts (without talk) even if PyAV is broken

    return av


def decode_audio(data: bytes, fmt: str, *, rate: int | None, max_s: float) -> Pcm:
    """`data` (a whole Ogg or WAV file) as mono float32 at `rate` (None: the file's own rate)."""
    av = _av()
    demuxer = FORMATS.get(fmt)
    if demuxer is None:
        raise AudioError("bad_audio", f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise AudioError("bad_audio", "no audio stream in the file")
            stream = streams[0]
            out_rate = int(rate or stream.codec_context.sample_rate or stream.rate)
            limit = int(max_s * out_rate) + out_rate // 10  # a tenth of a second of grace for codec padding
            resampler = av.AudioResampler(format="flt", layout="mono", rate=out_rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    chunks.append(chunk)
                    total += len(chunk)
                if total > limit:
                    raise AudioError("too_long", f"longer than {max_s:g} s")
            for out in resampler.resample(None):
                chunk = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                chunks.append(chunk)
                total += len(chunk)
    except AudioError:
        raise
    except Exception as exc:  # FFmpeg's errors (av.error.*), truncated containers...
        raise AudioError("bad_audio", f"cannot decode the {fmt} audio: {type(exc).__name__}: {exc}"[:200]) from None
    if total > limit:
        raise AudioError("too_long", f"longer than {max_s:g} s")
    if total == 0:
        raise AudioError("bad_audio", "the file holds no samples")
    samples = np.clip(np.concatenate(chunks), -1.0, 1.0).astype(np.float32)
    return Pcm(samples, out_rate)


def encode_opus(samples: np.ndarray, rate: int, *, bitrate: int = 24000) -> bytes:
    """Mono float32 samples as an Ogg/Opus file (speech at 24 kbit/s: ~3 kB a second)."""
    av = _av()
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=OPUS_RATE)
        stream.codec_context.layout = "mono"
        stream.codec_context.bit_rate = bitrate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        mono = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(mono, format="flt", layout="mono")
        frame.sample_rate = rate
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def trim_silence(samples: np.ndarray, rate: int, *, threshold_dbfs: float, margin_s: float = 0.2,
                 frame_s: float = 0.02) -> np.ndarray:
    """The span from the first to the last 20-ms frame louder than `threshold_dbfs`, with a margin
    each side; empty when nothing is that loud (nobody answered)."""
    n = max(1, int(rate * frame_s))
    frames = len(samples) // n
    if frames == 0:
        return samples[:0]
    power = np.mean(np.square(samples[: frames * n].astype(np.float64).reshape(frames, n)), axis=1)
    loud = np.flatnonzero(power > 10 ** (threshold_dbfs / 10))
    if loud.size == 0:
        return samples[:0]
    margin = int(margin_s * rate)
    start = max(0, int(loud[0]) * n - margin)
    end = min(len(samples), (int(loud[-1]) + 1) * n + margin)
    return samples[start:end]
