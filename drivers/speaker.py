"""A loudspeaker on a PortAudio output device (through sounddevice): plays mono clips.

One thread owns the speaker and calls `play()`, which blocks until the clip is done; any
other thread may interrupt it with `stop()` or with the `cancel` event it passed in. Errors
never escape `play()`: a missing device or a PortAudio failure comes back as a `failed`
result, is logged, shows in `health()`, and the device is tried again after `retry_s`.

Writing is paced against the monotonic clock so the software never runs more than
`ahead_s` ahead of real time. A real sound card paces itself (its writes block), but a sink
that swallows data at once (ALSA's file/null plugins in tests, some network sinks) would
otherwise "play" a minute of speech in a millisecond, and an interrupt would cut nothing.

`sounddevice` is imported on first use: PortAudio reads the ALSA configuration when it
initialises, and a box without libportaudio must still start (with the speaker `down`).
"""

from __future__ import annotations

import logging
import threading
import time
import wave
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAX_CLIP_S = 300.0  # longer recordings are refused: memory, and nobody listens that long


class SpeakerError(Exception):
    """The device or the audio data cannot be used; the message says why, for a technician."""


class _BackingOff(SpeakerError):
    """The device failed recently; not tried again before `retry_s` has passed."""


@dataclass(frozen=True, eq=False)
class Pcm:
    """Mono audio as float32 samples in [-1, 1] at `rate` Hz (identity-hashed: it holds an array)."""

    samples: np.ndarray = field(repr=False)
    rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate


@dataclass(frozen=True)
class PlayResult:
    """How one `play()` ended. Times are `time.monotonic()`; `started` is None if nothing was written."""

    outcome: str  # played, interrupted, failed
    started: float | None
    ended: float
    frames: int  # frames handed to the device, at the device rate
    error: str = ""


def load_wav(path: Path | str, max_s: float = MAX_CLIP_S) -> Pcm:
    """Read an integer-PCM WAV file (8/16/24/32-bit, any rate, any channel count) as mono."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate, frames = wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()
            if rate < 4000 or rate > 384000:
                raise SpeakerError(f"{path}: unusable sample rate {rate} Hz")
            if frames > max_s * rate:
                raise SpeakerError(f"{path}: {frames / rate:.0f} s long, more than {max_s:.0f} s")
            raw = wav.readframes(frames)
    except SpeakerError:
        raise
    except (OSError, EOFError, wave.Error) as exc:
        raise SpeakerError(f"{path}: not a readable PCM WAV file ({exc})") from exc
    samples = _decode(raw, width, channels)
    if samples.size == 0:
        raise SpeakerError(f"{path}: no audio in the file")
    return Pcm(samples, rate)


def _decode(raw: bytes, width: int, channels: int) -> np.ndarray:
    usable = len(raw) - len(raw) % (width * channels)
    raw = raw[:usable]
    if width == 1:  # unsigned 8-bit
        ints = np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0
        scale = 128.0
    elif width == 2:
        ints = np.frombuffer(raw, "<i2").astype(np.float32)
        scale = 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32)
        scale = 8388608.0
    elif width == 4:
        ints = np.frombuffer(raw, "<i4").astype(np.float64)  # float32 would lose the low bits
        scale = 2147483648.0
    else:
        raise SpeakerError(f"unsupported sample width of {width} bytes")
    frames = ints.reshape(-1, channels).mean(axis=1) / scale
    return frames.astype(np.float32)


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling through the FFT (numpy only, no scipy on the box).

    The clip is padded with silence on both sides first, because the FFT treats it as
    periodic and the end would otherwise ring into the start.
    """
    if src_rate == dst_rate or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    pad = max(16, src_rate // 50)
    padded = np.concatenate([np.zeros(pad), samples.astype(np.float64), np.zeros(pad)])
    n_in = padded.size
    n_out = round(n_in * dst_rate / src_rate)
    spectrum = np.fft.rfft(padded)
    bins = n_out // 2 + 1
    out_spectrum = np.zeros(bins, dtype=complex)
    keep = min(bins, spectrum.size)
    out_spectrum[:keep] = spectrum[:keep]
    out = np.fft.irfft(out_spectrum, n_out) * (n_out / n_in)
    start = round(pad * dst_rate / src_rate)
    return out[start : start + round(samples.size * dst_rate / src_rate)].astype(np.float32)


def to_int16(samples: np.ndarray, volume: float) -> np.ndarray:
    """Apply the digital gain and convert to int16, clipping rather than wrapping around."""
    scaled = np.round(samples.astype(np.float64) * (volume * 32768.0))
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: libportaudio2 is not installed
        raise SpeakerError(f"PortAudio is not available: {exc}") from exc
    return sounddevice


class Speaker:
    """One output device. `play()` from the owning thread only; `stop()`/`health()` from any."""

    def __init__(self, device: str | None = None, volume: float = 1.0, sample_rate: int | None = None, *,
                 retry_s: float = 30.0, ahead_s: float = 0.25, block_frames: int = 1024):
        if not 0.0 <= volume <= 1.0:
            raise ValueError("volume must be within 0..1")
        self.device = device
        self.volume = volume
        self.sample_rate = sample_rate
        self.retry_s = retry_s
        self.ahead_s = ahead_s
        self.block_frames = block_frames
        self._stream: Any = None
        self._rate = 0
        self._channels = 1
        self._device_name: str | None = None
        self._next_try = 0.0
        self._open_error = ""
        self._lock = threading.Lock()
        self._cancel: threading.Event | None = None
        self._prepared: weakref.WeakKeyDictionary[Pcm, tuple[tuple[int, int, float], np.ndarray]] = (
            weakref.WeakKeyDictionary()
        )
        self._state = "unknown"
        self._last_error: str | None = None
        self._counts = {"played": 0, "interrupted": 0, "failed": 0}

    # --- device ----------------------------------------------------------------------------

    def probe(self) -> bool:
        """Find the device and a usable rate without opening it (for health at start)."""
        try:
            sd = _sounddevice()
            index, name = self._find_device(sd)
            self._pick_format(sd, index)
        except Exception as exc:
            self._fail(f"speaker device: {exc}")
            return False
        with self._lock:
            self._device_name = name
            if self._state != "down":
                self._state = "ok"
        return True

    def _find_device(self, sd: Any) -> tuple[int, str]:
        devices = list(sd.query_devices())
        outputs = [(i, d["name"]) for i, d in enumerate(devices) if d["max_output_channels"] > 0]
        if self.device:
            needle = self.device.lower()
            for index, name in outputs:
                if needle in name.lower():
                    return index, name
            listed = ", ".join(repr(n) for _, n in outputs) or "none"
            raise SpeakerError(f"no output device whose name contains {self.device!r} (outputs: {listed})")
        default = sd.default.device[1]
        if default is None or int(default) < 0:
            if not outputs:
                raise SpeakerError("no audio output device")
            return outputs[0]
        return int(default), devices[int(default)]["name"]

    def _pick_format(self, sd: Any, index: int) -> tuple[int, int]:
        info = sd.query_devices(index)
        rate = int(self.sample_rate or info["default_samplerate"])
        errors = []
        for channels in (1, min(2, int(info["max_output_channels"]))):
            try:
                sd.check_output_settings(device=index, samplerate=rate, channels=channels, dtype="int16")
                return rate, channels
            except Exception as exc:
                errors.append(str(exc))
        raise SpeakerError(f"device {info['name']!r} refuses {rate} Hz int16 output: {'; '.join(errors)}")

    def _open(self) -> Any:
        now = time.monotonic()
        if now < self._next_try:
            raise _BackingOff(f"{self._open_error} (next try in {self._next_try - now:.0f} s)")
        try:
            sd = _sounddevice()
            index, name = self._find_device(sd)
            rate, channels = self._pick_format(sd, index)
            stream = sd.OutputStream(device=index, samplerate=rate, channels=channels, dtype="int16")
        except Exception as exc:
            self._next_try = now + self.retry_s
            self._open_error = f"cannot open the speaker: {exc}"
            raise SpeakerError(self._open_error) from exc
        self._stream, self._rate, self._channels = stream, rate, channels
        with self._lock:
            self._device_name = name
        log.info("speaker open: %r at %d Hz, %d channel(s), latency %.3f s", name, rate, channels, stream.latency)
        return stream

    def close(self) -> None:
        """Release the device (the owning thread, when idle or at shutdown)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as exc:
                log.warning("speaker close failed: %s", exc)

    # --- playback --------------------------------------------------------------------------

    def stop(self) -> None:
        """Interrupt the clip playing now, if any; returns at once."""
        with self._lock:
            if self._cancel is not None:
                self._cancel.set()

    def _prepare(self, pcm: Pcm) -> np.ndarray:
        key = (self._rate, self._channels, self.volume)
        cached = self._prepared.get(pcm)
        if cached is not None and cached[0] == key:
            return cached[1]
        mono = to_int16(resample(pcm.samples, pcm.rate, self._rate), self.volume)
        data = np.repeat(mono[:, None], self._channels, axis=1) if self._channels > 1 else mono[:, None]
        data = np.ascontiguousarray(data)
        self._prepared[pcm] = (key, data)
        return data

    def play(self, pcm: Pcm, cancel: threading.Event | None = None) -> PlayResult:
        """Play `pcm` to its end, unless `cancel` is set or `stop()` is called. Never raises."""
        cancel = cancel or threading.Event()
        with self._lock:
            self._cancel = cancel
        started: float | None = None
        written = 0
        try:
            stream = self._stream or self._open()
            data = self._prepare(pcm)
            if not stream.active:
                stream.start()
            t0 = time.monotonic()
            rate = self._rate
            while written < len(data) and not cancel.is_set():
                ahead = written / rate - (time.monotonic() - t0)
                if ahead > self.ahead_s:
                    cancel.wait(ahead - self.ahead_s)
                    continue
                block = data[written : written + self.block_frames]
                stream.write(block)  # an underflow only comes back as a flag; it is not an error here
                if started is None:
                    started = time.monotonic()
                written += len(block)
            if not cancel.is_set():  # let the tail play out in real time, still interruptible
                cancel.wait(max(0.0, written / rate - (time.monotonic() - t0)))
            if cancel.is_set():
                stream.abort()  # drops what the device still holds: the cut is immediate
                return self._done("interrupted", started, written)
            stream.stop()
            return self._done("played", started, written)
        except _BackingOff as exc:
            return self._done("failed", started, written, str(exc), quiet=True)
        except Exception as exc:
            self.close()
            return self._done("failed", started, written, str(exc))
        finally:
            with self._lock:
                if self._cancel is cancel:
                    self._cancel = None

    def _done(self, outcome: str, started: float | None, frames: int, error: str = "", *,
              quiet: bool = False) -> PlayResult:
        with self._lock:
            self._counts[outcome] += 1
            if outcome == "failed":
                self._state = "down"
                self._last_error = error
            else:
                self._state = "ok"
        if outcome == "failed":
            (log.debug if quiet else log.error)("speaker: %s", error)
        return PlayResult(outcome, started, time.monotonic(), frames, error)

    def _fail(self, error: str) -> None:
        log.error("%s", error)
        with self._lock:
            self._state = "down"
            self._last_error = error

    @property
    def rate(self) -> int:
        """The rate the device is open at (0 before the first play)."""
        return self._rate

    def health(self) -> dict[str, object]:
        with self._lock:
            return {
                "state": self._state,
                "device": self._device_name or self.device or "default",
                "sample_rate": self._rate or None,
                "playing": self._cancel is not None,
                **self._counts,
                "last_error": self._last_error,
            }
