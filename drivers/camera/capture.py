"""One RTSP camera: a capture thread that demuxes, records and decodes only what analysis needs.

Why PyAV rather than OpenCV or an ffmpeg subprocess: PyAV hands us the encoded packets (for the
ring buffer and remuxed clips), lets us keep packets away from the decoder (keyframe-only
decoding, with a decoder per run of packets: drivers/camera/decoder.py), and hands us the
decoded planes of just the frames we keep.
OpenCV decodes every frame and hides the packets; an ffmpeg subprocess would need a second
process per camera and a pipe protocol for packets and frames.

A watchdog thread watches packet arrival itself, so a frozen stream is reported after
`watchdog_s` whatever the library does: the blocked reader is abandoned (it ends when
its read finally fails) and a fresh connection is started beside it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av

from drivers.camera.clock import StreamClock
from drivers.camera.decoder import RunDecoder
from drivers.camera.luma import small_luma
from drivers.camera.picture import i420_planes, i420_to_bgr
from drivers.camera.plan import DecodePlan
from drivers.camera.ring import PacketRing, RingPacket, StreamInfo, hold
from drivers.types import Frame

log = logging.getLogger(__name__)

MAX_STUCK_READERS = 3  # abandoned readers still blocked in the library; beyond this we wait
MAX_DECODE_ERRORS = 50  # consecutive undecodable packets before the stream counts as garbage


@dataclass(frozen=True)
class CaptureSettings:
    camera_id: str
    url: str
    analysis_fps: float = 1.0
    # Keyframes at least this often serve analysis even when they come slower than analysis_fps
    # (every consumer declared it: drivers/camera/plan.py). None: frames at analysis_fps.
    keyframes_min_fps: float | None = None
    decode: bool = True  # False: record only (the main stream when a sub-stream is analysed)
    ring_s: float = 0.0  # seconds of packets kept for clips; 0: no ring
    ring_max_bytes: int = 64 * 1024 * 1024
    watchdog_s: float = 5.0
    lost_after_s: float = 10.0
    open_timeout_s: float = 10.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 5.0
    transport: str = "tcp"
    small_width: int = 0  # > 0: each frame also carries a grey copy this wide, from its luma plane


@dataclass(frozen=True)
class StreamEvent:
    """A change in a stream's life: connected, frozen (watchdog), lost (down for lost_after_s), error."""

    camera_id: str
    kind: str
    time: float  # Unix seconds
    detail: str = ""


@dataclass(frozen=True)
class CaptureHealth:
    state: str  # ok, degraded, down
    connected: bool
    frozen: bool
    fps_in: float  # packets (frames) per second arriving
    frames_out: int  # frames handed to analysis
    decoded: int  # packets sent to the decoder
    skipped: int  # packets kept away from the decoder
    decode_mode: str  # keyframes, gop, all (GOP not yet known), none (record only)
    keyframe_interval_s: float | None  # measured: the longest of the last few keyframe intervals
    gop_frames: int | None  # frames in that GOP (with keyframe_interval_s: the stream's frame rate)
    last_frame: float | None  # Unix seconds of the last frame handed on
    last_packet: float | None
    reconnects: int
    last_error: str | None
    ring: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fps_in"] = round(self.fps_in, 2)
        return out


def redact(url: str) -> str:
    """The URL without credentials, for logs and health."""
    parts = urlsplit(url)
    if parts.username is None:
        return url
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


class CameraCapture:
    """Reads one stream on its own thread; `on_frame` gets `Frame`s at the analysis rate.

    `on_frame` runs on the capture thread and should return quickly (queue heavy work).
    """

    def __init__(
        self,
        settings: CaptureSettings,
        on_frame: Callable[[Frame], None] | None = None,
        on_event: Callable[[StreamEvent], None] | None = None,
    ):
        self.settings = settings
        self.on_frame = on_frame
        self.on_event = on_event
        self.ring = PacketRing(settings.ring_s, settings.ring_max_bytes) if settings.ring_s > 0 else None
        min_fps = settings.keyframes_min_fps
        self._plan = DecodePlan(1.0 / settings.analysis_fps,
                                keyframe_max_s=1.0 / min_fps if min_fps else None)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._gen = 0
        self._readers: list[threading.Thread] = []
        self._reader: threading.Thread | None = None  # the current (not abandoned) reader
        self._watchdog: threading.Thread | None = None
        self._connected = False
        self._frozen = False
        self._lost = False
        self._in_callback = False
        self._last_packet_mono: float | None = None
        self._good_since = time.monotonic()  # start of the current outage is measured from here
        self._last_packet: float | None = None
        self._arrivals: deque[float] = deque()
        self._latest: Frame | None = None
        # The latest frame keeps its picture as I420 planes (3 MB at 1080p, not 6 as BGR). While
        # the next frame is converted, the last one's picture is let go (one alive, not two); a
        # snapshot asked for meanwhile waits.
        self._latest_cond = threading.Condition()
        self._replacing = False
        self._frames_out = 0
        self._reconnects = 0
        self._sessions = 0
        self._last_error: str | None = None

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._good_since = time.monotonic()
        self._spawn_reader()
        self._watchdog = threading.Thread(target=self._watch, name=f"cam-{self.settings.camera_id}-watchdog",
                                          daemon=True)
        self._watchdog.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the threads to end; a reader stuck in the library is left to its read timeout."""
        self._stop.set()
        with self._lock:
            self._gen += 1
        deadline = time.monotonic() + timeout
        for thread in [*self._readers, self._watchdog]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        """The watchdog thread runs (it brings a dead reader back itself); True before start."""
        return self._watchdog is None or self._stop.is_set() or self._watchdog.is_alive()

    def latest_frame(self, wait_s: float = 2.0) -> Frame | None:
        """The last frame handed to analysis (for snapshots); waits for one being converted.

        Its picture is usually in `yuv` with no `image`: drivers.camera.picture.frame_bgr makes BGR."""
        with self._latest_cond:
            if self._latest is None and self._replacing:
                self._latest_cond.wait_for(lambda: not self._replacing, wait_s)
            return self._latest

    def health(self) -> CaptureHealth:
        now = time.monotonic()
        with self._lock:
            while self._arrivals and self._arrivals[0] < now - 5.0:
                self._arrivals.popleft()
            fps = len(self._arrivals) / 5.0
            down_for = now - self._good_since
            if self._connected and not self._frozen:
                state = "ok"
            elif down_for < self.settings.lost_after_s and self._sessions > 0:
                state = "degraded"
            else:
                state = "down"
            mode = "none"
            if self.settings.decode:
                mode = "all" if self._plan.gop_s is None else ("keyframes" if self._plan.keyframes_only else "gop")
            latest = self._latest
            return CaptureHealth(
                state=state, connected=self._connected, frozen=self._frozen, fps_in=fps,
                frames_out=self._frames_out, decoded=self._plan.decoded, skipped=self._plan.skipped,
                decode_mode=mode,
                keyframe_interval_s=None if self._plan.gop_s is None else round(self._plan.gop_s, 3),
                gop_frames=self._plan.gop_frames,
                last_frame=latest.time.timestamp() if latest else None, last_packet=self._last_packet,
                reconnects=self._reconnects, last_error=self._last_error,
                ring=self.ring.stats() if self.ring else None,
            )

    # --- reader ----------------------------------------------------------------------------

    def _spawn_reader(self) -> None:
        with self._lock:
            self._readers = [t for t in self._readers if t.is_alive()]
            if len(self._readers) > MAX_STUCK_READERS:
                log.error("camera %s: %d readers stuck in the video library; not starting another",
                          self.settings.camera_id, len(self._readers))
                return
            self._gen += 1
            gen = self._gen
            thread = threading.Thread(target=self._run, args=(gen,), name=f"cam-{self.settings.camera_id}",
                                      daemon=True)
            self._readers.append(thread)
            self._reader = thread
        thread.start()

    def _current(self, gen: int) -> bool:
        return gen == self._gen and not self._stop.is_set()

    def _run(self, gen: int) -> None:
        delay = self.settings.reconnect_min_s
        while self._current(gen):
            started = time.monotonic()
            try:
                self._session(gen)
                if self._current(gen):
                    self._fail(gen, "stream ended")
            except Exception as exc:  # av errors, network errors, garbage: never take the box down
                if self._current(gen):
                    self._fail(gen, f"{type(exc).__name__}: {exc}")
            if not self._current(gen):
                return
            if time.monotonic() - started > 2 * self.settings.reconnect_max_s:
                delay = self.settings.reconnect_min_s  # it had been streaming: retry soon
            wait = delay * random.uniform(0.8, 1.2)
            log.debug("camera %s: reconnecting in %.1f s", self.settings.camera_id, wait)
            if self._stop.wait(wait):
                return
            delay = min(delay * 2, self.settings.reconnect_max_s)
            with self._lock:
                self._reconnects += 1

    def _fail(self, gen: int, reason: str) -> None:
        with self._lock:
            if gen != self._gen:
                return
            was = self._connected
            repeated = not was and reason == self._last_error
            self._connected = False
            self._last_error = reason
        # A dead camera retries every few seconds: say it once, not 20 000 times a day.
        (log.debug if repeated else log.warning)(
            "camera %s (%s): %s", self.settings.camera_id, redact(self.settings.url), reason)
        if was:
            self._emit(StreamEvent(self.settings.camera_id, "error", time.time(), reason))

    def _session(self, gen: int) -> None:
        s = self.settings
        options = {
            "rtsp_transport": s.transport,
            "timeout": str(int(s.open_timeout_s * 1e6)),  # socket I/O timeout (microseconds)
            "analyzeduration": "500000",
            "probesize": "262144",
        }
        # The library's own read timeout only frees a stuck reader; freezes are judged by _watch.
        with av.open(s.url, options=options, timeout=(s.open_timeout_s, 3 * s.watchdog_s)) as container:
            if not container.streams.video:
                raise RuntimeError("no video stream in the source")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # frames out at once, least memory (when it is the decoder)
            if stream.time_base is None:
                raise RuntimeError("stream has no time base")
            tb = float(stream.time_base)  # every packet is timed: a float product, not a Fraction one
            with self._lock:
                self._sessions += 1
            self._plan.reset()
            clock = StreamClock()
            info: StreamInfo | None = None
            decoder = RunDecoder(stream)
            errors = 0
            first = True
            for packet in container.demux(stream):
                if not self._current(gen):
                    return
                ts = packet.dts if packet.dts is not None else packet.pts
                if ts is None:
                    continue
                arrival = time.time()
                stream_s = ts * tb
                wall = clock.monotonic(clock.wall(stream_s, arrival))
                key = packet.is_keyframe
                self._on_packet(arrival, first)
                first = False
                if self.ring is not None and (info is not None or key):
                    if info is None:
                        info = _stream_info(stream, bytes(packet))
                    self.ring.add(info, RingPacket(wall, packet.pts, ts, key, hold(packet)))
                if not s.decode:
                    self._plan.note(stream_s, key)  # the keyframe interval, for health and doctor
                    continue
                fed = self._plan.feed(stream_s, key)
                if not fed and not decoder.running:
                    continue
                try:
                    if fed:
                        # Until the GOP is known, and while keyframes serve, only keyframes are fed.
                        alone = self._plan.keyframes_only or self._plan.gop_s is None
                        frames = decoder.decode(packet, key, alone)
                    else:
                        frames = decoder.end()  # the plan has what it needs from this GOP
                    errors = 0
                except av.FFmpegError as exc:
                    errors += 1
                    if errors >= MAX_DECODE_ERRORS:
                        raise RuntimeError(f"{errors} undecodable packets in a row: {exc}") from exc
                    continue
                while frames:
                    # The decoded frame is let go inside _picture, before the consumer starts on it: it
                    # holds a buffer of the decoder's pool, and a closed run's whole decoder (~5 MB at
                    # 1080p) lives until its last frame goes.
                    picture = self._picture(frames.pop(0), tb, stream_s, clock, arrival)
                    if picture is not None:
                        self._hand_on(*picture)
                    # Not held here until the next conversion: with this name still bound, the last
                    # picture (3 MB of planes and 6 MB of BGR at 1080p) would live on beside the next one.
                    del picture

    def _picture(self, frame: Any, tb: float, stream_s: float, clock: StreamClock,
                 arrival: float) -> tuple[Frame, Any] | None:
        """The analysis Frame and the I420 planes kept for snapshots, if the decode plan takes this frame."""
        fts = frame.pts * tb if frame.pts is not None else stream_s
        key = bool(frame.key_frame)
        if not self._plan.take(fts, key):
            return None
        with self._latest_cond:
            self._replacing, self._latest = True, None
        try:
            small = small_luma(frame, self.settings.small_width)
            yuv = i420_planes(frame)
            image = i420_to_bgr(yuv) if yuv is not None else frame.to_ndarray(format="bgr24")
        except BaseException:
            self._set_latest(None)  # no picture until the next frame; waiters are released
            raise
        taken = datetime.fromtimestamp(min(clock.at(fts), arrival), timezone.utc)
        return Frame(camera_id=self.settings.camera_id, time=taken, image=image, keyframe=key, small=small), yuv

    def _on_packet(self, arrival: float, first: bool) -> None:
        now = time.monotonic()
        resumed = None
        with self._lock:
            self._last_packet_mono = now
            self._last_packet = arrival
            self._good_since = now
            self._arrivals.append(now)
            if first or not self._connected:
                resumed = "after a freeze" if self._frozen else ("after an outage" if self._lost else "")
                self._connected = True
                self._frozen = False
                self._lost = False
        if resumed is not None:
            log.info("camera %s: streaming %s", self.settings.camera_id, resumed)
            self._emit(StreamEvent(self.settings.camera_id, "connected", arrival, resumed))

    def _set_latest(self, frame: Frame | None) -> None:
        with self._latest_cond:
            self._latest = frame
            self._replacing = False
            self._latest_cond.notify_all()

    def _hand_on(self, frame: Frame, yuv: Any = None) -> None:
        """Keep the frame as the latest (as its I420 planes when there are some: the BGR picture
        then lives only while the consumer reads it) and give it to the consumer."""
        self._set_latest(frame if yuv is None else replace(frame, image=None, yuv=yuv))
        with self._lock:
            self._frames_out += 1
        if self.on_frame is None:
            return
        self._in_callback = True
        try:
            self.on_frame(frame)
        except Exception:
            log.exception("camera %s: frame consumer failed", self.settings.camera_id)
        finally:
            self._in_callback = False
            with self._lock:
                # Time spent in the consumer is not the stream's fault.
                self._good_since = self._last_packet_mono = time.monotonic()

    def _emit(self, event: StreamEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("camera %s: event consumer failed", self.settings.camera_id)

    # --- watchdog --------------------------------------------------------------------------

    def _watch(self) -> None:
        s = self.settings
        period = min(0.25, s.watchdog_s / 10)
        while not self._stop.wait(period):
            now = time.monotonic()
            event: StreamEvent | None = None
            restart = False
            with self._lock:
                if self._in_callback:
                    continue
                silent = now - (self._last_packet_mono or self._good_since)
                if self._connected and not self._frozen and silent >= s.watchdog_s:
                    self._frozen = True
                    self._connected = False
                    self._last_error = f"stream frozen: no packet for {silent:.1f} s"
                    event = StreamEvent(s.camera_id, "frozen", time.time(), self._last_error)
                    restart = True
                elif not self._lost and now - self._good_since >= s.lost_after_s:
                    self._lost = True
                    event = StreamEvent(s.camera_id, "lost", time.time(),
                                        self._last_error or f"no video for {s.lost_after_s:.0f} s")
            if event is not None:
                (log.error if event.kind == "lost" else log.warning)(
                    "camera %s: %s", s.camera_id, event.detail if event.kind == "frozen" else f"lost: {event.detail}")
                self._emit(event)
            if restart:
                with self._lock:
                    self._reconnects += 1
                self._spawn_reader()  # the stuck reader's generation is now stale: it exits when freed
            elif not self._stop.is_set() and (self._reader is None or not self._reader.is_alive()):
                log.error("camera %s: reader thread is gone; starting a new one", s.camera_id)
                self._spawn_reader()


def _stream_info(stream: Any, first_key: bytes) -> StreamInfo:
    ctx = stream.codec_context
    extradata = bytes(ctx.extradata or b"")
    return StreamInfo(
        codec=ctx.name, time_base=stream.time_base, width=ctx.width, height=ctx.height,
        extradata=extradata, header=extradata + first_key,
    )
