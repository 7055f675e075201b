"""A microphone on a PortAudio input device (through sounddevice): hands mono blocks to listeners.

One thread owns the input stream, reads fixed-size blocks and calls every listener with an
`AudioBlock` (the sound-level meter, the source classifier, the audio ring, a reply being
recorded). Listeners run on that thread and must be quick; one that raises is logged and
counted, never allowed to stop the others or the thread.

Time stamps come from the sample count, anchored once to the wall clock when the stream
starts: consecutive blocks are contiguous to the sample, which is what a level meter and an
audio recording need. If the sound card's clock and the system clock drift apart by more
than `resync_s` (an overrun dropped samples, the wall clock was stepped), the anchor is
reset and the gap counted in `health()`.

Reads are paced against the monotonic clock so the thread never runs more than `ahead_s`
ahead of real time: a real card paces itself, but ALSA's file plugin (tests) returns a
minute of audio at once, which would otherwise stamp the future.

Health says `down` when the device is absent or fails (retried every `retry_s`), `dead`
when it delivers digital silence (a disconnected or broken capsule usually does) for
`dead_after_s`, and counts clipped samples: a clipping microphone under-reads the level.

`sounddevice` is imported on first use, as for the speaker: a box without libportaudio still
starts, with the microphone `down`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SILENCE_RMS = 10 ** (-100 / 20)  # below -100 dBFS: no 16-bit or better converter produces this from a live capsule
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped


# Integer capture: every ALSA input does int16 natively, and ALSA's `plug` (and its file plugin, in tests)
# misbehaves when it must convert capture formats; 16 bits span ~96 dB, enough for 30-120 dB SPL at a site.
_SCALE = {"int16": 32768.0, "int32": 2147483648.0}


class MicrophoneError(Exception):
    """The input device cannot be found or opened; the message says why, for a technician."""


@dataclass(frozen=True, eq=False)
class AudioBlock:
    """Contiguous mono samples (float32 in -1..1) at `rate` Hz; `start` is the wall time of the first one."""

    samples: np.ndarray = field(repr=False)
    rate: int
    start: datetime  # UTC, timezone-aware

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)


Listener = Callable[[AudioBlock], None]


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: libportaudio2 is not installed
        raise MicrophoneError(f"PortAudio is not available: {exc}") from exc
    return sounddevice


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Microphone:
    """The component named `microphone` (by default): one input device, one reading thread."""

    def __init__(self, device: str | None = None, sample_rate: int = 48000, *, block_s: float = 0.1,
                 channel: int = 0, name: str = "microphone", retry_s: float = 30.0, dead_after_s: float = 10.0,
                 ahead_s: float = 0.2, resync_s: float = 0.5, sample_format: str = "int16",
                 now: Callable[[], datetime] = _utc_now):
        if sample_rate < 8000 or sample_rate > 192000:
            raise ValueError("sample_rate must be within 8000..192000")
        if sample_format not in _SCALE:
            raise ValueError(f"sample_format must be one of {', '.join(_SCALE)}")
        self.sample_format = sample_format
        self.name = name
        self.device = device
        self.sample_rate = sample_rate
        self.block_frames = max(1, round(block_s * sample_rate))
        self.channel = channel
        self.retry_s = retry_s
        self.dead_after_s = dead_after_s
        self.ahead_s = ahead_s
        self.resync_s = resync_s
        self._now = now
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "unknown"
        self._device_name: str | None = None
        self._last_error: str | None = None
        self._frames = 0
        self._overflows = 0
        self._resyncs = 0
        self._listener_errors = 0
        self._clipped_total = 0
        self._clip_window: deque[tuple[float, int, int]] = deque()  # (monotonic, clipped, frames) per block
        self._silent_since: float | None = None
        self._peak_dbfs: float | None = None
        self._rms_dbfs: float | None = None

    # --- listeners ---------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        """Call `fn(block)` for every block from now on (on the microphone's thread)."""
        with self._lock:
            if fn not in self._listeners:
                self._listeners = [*self._listeners, fn]

    def remove_listener(self, fn: Listener) -> None:
        with self._lock:
            self._listeners = [f for f in self._listeners if f != fn]

    # --- component ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5.0)

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def health(self) -> dict[str, object]:
        now = time.monotonic()
        with self._lock:
            recent = [(c, n) for t, c, n in self._clip_window if now - t <= 60.0]
            clipped = sum(c for c, _ in recent)
            frames = sum(n for _, n in recent)
            return {
                "state": self._state,
                "device": self._device_name or self.device or "default",
                "sample_rate": self.sample_rate,
                "seconds": round(self._frames / self.sample_rate, 1),
                "rms_dbfs": self._rms_dbfs,
                "peak_dbfs": self._peak_dbfs,
                "clipping": clipped > 0,
                "clipped_ratio_1min": round(clipped / frames, 6) if frames else 0.0,
                "clipped_samples": self._clipped_total,
                "silent_s": round(now - self._silent_since, 1) if self._silent_since is not None else 0.0,
                "overflows": self._overflows,
                "resyncs": self._resyncs,
                "listener_errors": self._listener_errors,
                "last_error": self._last_error,
            }

    # --- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            stream = None
            try:
                stream, channels = self._open()
                self._capture(stream, channels)
            except Exception as exc:
                self._set_down(f"microphone: {exc}")
                self._stop.wait(self.retry_s)
            finally:
                if stream is not None:
                    try:
                        stream.abort()
                        stream.close()
                    except Exception as exc:
                        log.warning("microphone close failed: %s", exc)

    def _open(self) -> tuple[Any, int]:
        sd = _sounddevice()
        devices = list(sd.query_devices())
        inputs = [(i, d["name"], int(d["max_input_channels"])) for i, d in enumerate(devices)
                  if d["max_input_channels"] > 0]
        if self.device:
            found = [d for d in inputs if self.device.lower() in d[1].lower()]
            if not found:
                listed = ", ".join(repr(n) for _, n, _ in inputs) or "none"
                raise MicrophoneError(f"no input device whose name contains {self.device!r} (inputs: {listed})")
            index, name, max_ch = found[0]
        else:
            default = sd.default.device[0]
            if default is None or int(default) < 0:
                if not inputs:
                    raise MicrophoneError("no audio input device")
                index, name, max_ch = inputs[0]
            else:
                index, name, max_ch = int(default), devices[int(default)]["name"], int(
                    devices[int(default)]["max_input_channels"])
        channels = max(1, self.channel + 1)
        if channels > max_ch:
            raise MicrophoneError(f"device {name!r} has {max_ch} input channel(s); channel {self.channel} asked")
        stream = sd.InputStream(device=index, samplerate=self.sample_rate, channels=channels, dtype=self.sample_format,
                                blocksize=self.block_frames)
        stream.start()
        with self._lock:
            self._device_name = name
            self._state = "ok"
            self._last_error = None
        log.info("microphone open: %r at %d Hz, channel %d of %d", name, self.sample_rate, self.channel, channels)
        return stream, channels

    def _capture(self, stream: Any, channels: int) -> None:
        rate = self.sample_rate
        t0 = time.monotonic()
        anchor = self._now()
        read = 0  # frames since the anchor
        paced = 0  # frames since t0
        while not self._stop.is_set():
            ahead = paced / rate - (time.monotonic() - t0)
            if ahead > self.ahead_s:
                self._stop.wait(ahead - self.ahead_s)
                continue
            data, overflowed = stream.read(self.block_frames)
            samples = (data[:, self.channel].astype(np.float64) / _SCALE[self.sample_format]).astype(np.float32)
            if overflowed:
                with self._lock:
                    self._overflows += 1
            start = anchor + timedelta(seconds=read / rate)
            wall = self._now()
            expected_end = start + timedelta(seconds=len(samples) / rate)
            if abs((wall - expected_end).total_seconds()) > self.resync_s + self.ahead_s:
                anchor, read = wall - timedelta(seconds=len(samples) / rate), 0
                start = anchor
                with self._lock:
                    self._resyncs += 1
            read += len(samples)
            paced += len(samples)
            self._observe(samples)
            self._deliver(AudioBlock(samples, rate, start))

    def _observe(self, samples: np.ndarray) -> None:
        now = time.monotonic()
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
        clipped = int(np.count_nonzero(np.abs(samples) >= CLIP_LEVEL))
        with self._lock:
            self._frames += len(samples)
            self._clipped_total += clipped
            self._clip_window.append((now, clipped, len(samples)))
            while self._clip_window and now - self._clip_window[0][0] > 60.0:
                self._clip_window.popleft()
            self._peak_dbfs = round(20 * np.log10(max(peak, 1e-10)), 1)
            self._rms_dbfs = round(20 * np.log10(max(rms, 1e-10)), 1)
            if rms < SILENCE_RMS:
                if self._silent_since is None:
                    self._silent_since = now
                if now - self._silent_since >= self.dead_after_s and self._state != "dead":
                    self._state = "dead"
                    self._last_error = f"digital silence for {self.dead_after_s:.0f} s: capsule disconnected or broken?"
                    log.error("microphone: %s", self._last_error)
            else:
                self._silent_since = None
                if self._state == "dead":
                    log.info("microphone: sound again")
                    self._last_error = None
                self._state = "ok"

    def _deliver(self, block: AudioBlock) -> None:
        with self._lock:
            listeners = self._listeners
        for fn in listeners:
            try:
                fn(block)
            except Exception:
                with self._lock:
                    self._listener_errors += 1
                    count = self._listener_errors
                if count <= 10 or count % 1000 == 0:
                    log.exception("microphone listener %r failed (%d failures)", fn, count)

    def _set_down(self, error: str) -> None:
        with self._lock:
            first = self._state != "down" or self._last_error != error
            self._state = "down"
            self._last_error = error
        (log.error if first else log.debug)("%s", error)
