"""The last minutes of the microphone as Opus packets, so a noise violation's bundle can carry its sound.

A microphone listener encodes the samples to Opus (PyAV's libopus, mono, 20-ms frames, 24 kbit/s
by default: 20 minutes ≈ 3.6 MB) and keeps the packets with the wall time of their first
sample, dropping those older than `seconds`. `ogg(start, end)` muxes the packets of a stretch
into an Ogg/Opus file without re-encoding: the stream parameters (the OpusHead) come from a
tiny template file the same encoder settings produced, the way the camera ring remuxes H.264.

Rates Opus does not take (44.1 kHz) are resampled to 48 kHz first. An encoder failure
switches the ring off (logged, in health); the meter and the classifier go on.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import numpy as np

from drivers.microphone import AudioBlock

log = logging.getLogger(__name__)

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class AudioRingError(Exception):
    """No audio for the asked stretch, or the encoder cannot run."""


@dataclass(frozen=True)
class _Packet:
    wall: float  # epoch seconds of the first sample
    pts: int  # encoder samples
    duration: int
    data: bytes


def _frame(av: Any, x: np.ndarray, rate: int, pts: int) -> Any:
    frame = av.AudioFrame.from_ndarray(x[None, :], format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame


class AudioRing:
    """A microphone listener holding the last `seconds` of audio, compressed."""

    def __init__(self, rate: int, seconds: float = 1200.0, bitrate: int = 24000):
        import av

        self._av = av
        self.in_rate = rate
        self.rate = rate if rate in OPUS_RATES else 48000
        self.seconds = seconds
        self.bitrate = bitrate
        self.frame = self.rate // 50  # 20 ms
        self._enc = self._encoder()
        self._header = self._template()
        self._pending = np.zeros(0, dtype=np.int16)
        self._pending_wall: float | None = None
        self._pts = 0
        self._packets: deque[_Packet] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.error = ""

    def _encoder(self) -> Any:
        enc = self._av.CodecContext.create("libopus", "w")
        enc.sample_rate = self.rate
        enc.layout = "mono"
        enc.format = "s16"
        enc.bit_rate = self.bitrate
        enc.time_base = Fraction(1, self.rate)
        enc.open()
        return enc

    def _template(self) -> bytes:
        """A short Ogg/Opus file from an encoder with the same settings: its stream parameters are ours."""
        buf = io.BytesIO()
        with self._av.open(buf, "w", format="ogg") as out:
            stream = out.add_stream("libopus", rate=self.rate, layout="mono")
            stream.codec_context.format = "s16"
            stream.codec_context.bit_rate = self.bitrate
            for packet in stream.encode(_frame(self._av, np.zeros(self.frame, np.int16), self.rate, 0)):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        return buf.getvalue()

    def __call__(self, block: AudioBlock) -> None:
        if self.error:
            return
        try:
            self._add(block)
        except Exception as exc:  # the rest of the microphone keeps working
            self.error = f"audio ring stopped: {exc}"
            log.exception("microphone: %s", self.error)

    def _add(self, block: AudioBlock) -> None:
        x = block.samples.astype(np.float64)
        if self.in_rate != self.rate:
            from scipy.signal import resample_poly

            x = resample_poly(x, self.rate, self.in_rate)
        ints = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
        start = block.start.timestamp()
        if self._pending_wall is None or len(self._pending) == 0:
            self._pending_wall = start - len(self._pending) / self.rate
        data = np.concatenate([self._pending, ints])
        done = len(data) // self.frame * self.frame
        packets: list[_Packet] = []
        for i in range(0, done, self.frame):
            for p in self._enc.encode(_frame(self._av, data[i:i + self.frame], self.rate, self._pts)):
                # the encoder's packet pts runs `pre-skip` behind the input; wall follows the pts
                wall = self._pending_wall + (i + (int(p.pts) - self._pts)) / self.rate
                packets.append(_Packet(wall, int(p.pts), int(p.duration or self.frame), bytes(p)))
            self._pts += self.frame
        self._pending = data[done:]
        self._pending_wall += done / self.rate
        if packets:
            with self._lock:
                self._packets.extend(packets)
                self._bytes += sum(len(p.data) for p in packets)
                horizon = packets[-1].wall - self.seconds
                while self._packets and self._packets[0].wall < horizon:
                    self._bytes -= len(self._packets.popleft().data)

    def held_s(self) -> float:
        with self._lock:
            if not self._packets:
                return 0.0
            return self._packets[-1].wall - self._packets[0].wall + self._packets[-1].duration / self.rate

    def health(self) -> dict[str, Any]:
        return {"held_s": round(self.held_s(), 1), "bytes": self._bytes, "bitrate": self.bitrate,
                "error": self.error or None}

    def ogg(self, start: datetime, end: datetime) -> tuple[bytes, datetime, datetime]:
        """Ogg/Opus of the packets whose first sample lies in [start, end), with their real span."""
        t0, t1 = start.timestamp(), end.timestamp()
        with self._lock:
            picked = [p for p in self._packets if t0 <= p.wall < t1]
        if not picked:
            raise AudioRingError(f"no audio held between {start.isoformat()} and {end.isoformat()}")
        av = self._av
        buf = io.BytesIO()
        base = picked[0].pts
        with av.open(io.BytesIO(self._header), "r") as template, av.open(buf, "w", format="ogg") as out:
            stream = out.add_stream_from_template(template.streams.audio[0])
            for p in picked:
                packet = av.Packet(p.data)
                packet.pts = packet.dts = p.pts - base
                packet.duration = p.duration
                packet.time_base = Fraction(1, self.rate)
                packet.stream = stream
                out.mux(packet)
        first = datetime.fromtimestamp(picked[0].wall, tz=timezone.utc)
        last = datetime.fromtimestamp(picked[-1].wall, tz=timezone.utc) + timedelta(
            seconds=picked[-1].duration / self.rate)
        return buf.getvalue(), first, last
