"""The last seconds of a camera's *encoded* packets, so that an evidence clip is a remux, not a re-encode.

Packets are kept whole GOP by GOP (a clip must start at a keyframe), and old GOPs leave only
while the next one still starts at or before the horizon: a clip of the last `seconds` always
finds a keyframe at or before its start. Remuxing 20 s of 1080p takes milliseconds and no
decoder; re-encoding it would take a Pi minutes.

A big packet (a keyframe: 100-500 kB at 1080p) is held in an anonymous mapping of its own
(`hold`), not on the malloc heap: it lives for the ring's ~30 s and then leaves, and from
the heap those leaving keyframes left holes that the capture thread's arena kept.
"""

from __future__ import annotations

import io
import mmap
import os
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from drivers.camera.decoder import open_decoder

BIG_PACKET = 64 * 1024  # from this size a packet gets a mapping of its own
REMUX_FORMATS = {"h264": "h264", "hevc": "hevc"}  # raw elementary-stream demuxers, to copy parameters from
OUT_TIME_BASE = Fraction(1, 90000)


class ClipError(Exception):
    """No clip can be written (nothing recorded for that time, or an unsupported codec)."""


@dataclass(frozen=True)
class StreamInfo:
    """What a remux needs of one connection's stream, as plain bytes so it outlives the connection."""

    codec: str  # "h264", "hevc"
    time_base: Fraction
    width: int
    height: int
    extradata: bytes  # parameter sets, Annex B as RTSP delivers them
    header: bytes = field(repr=False)  # extradata + the first keyframe: a tiny stream to copy parameters from

    @property
    def params(self) -> tuple[str, int, int, bytes]:
        return self.codec, self.width, self.height, self.extradata


@dataclass(frozen=True)
class RingPacket:
    wall: float  # Unix seconds when this packet (in decode order) was captured
    pts: int | None
    dts: int
    key: bool
    data: bytes | mmap.mmap = field(repr=False)  # see `hold`


def hold(data: Any) -> bytes | mmap.mmap:
    """A copy of a packet's bytes to keep in the ring: a big one in an anonymous mapping of its own.

    The mapping is unmapped when the packet leaves the ring (the last reference goes), so a
    keyframe's memory goes back to the kernel instead of into a hole in a malloc arena.
    """
    view = memoryview(data).cast("B")
    if view.nbytes < BIG_PACKET:
        return view.tobytes()
    buf = mmap.mmap(-1, view.nbytes)
    buf.write(view)
    return buf


def _packet(data: bytes | mmap.mmap) -> av.Packet:
    return av.Packet(data)  # type: ignore[arg-type]  # PyAV takes any buffer; its stub says bytes


@dataclass
class _Gop:
    info: StreamInfo
    start: float
    packets: list[RingPacket]
    size: int = 0


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    start: float  # wall time of the first packet (a keyframe)
    end: float  # wall time of the last packet
    packets: int
    keyframes: int

    @property
    def duration_s(self) -> float:
        return self.end - self.start


class PacketRing:
    """Thread-safe: the capture thread adds, evidence threads cut clips.

    A clip that is owed but not cut yet (its evidence job waits behind others) pins its start
    (`pin`): the GOPs from there on stay past `seconds` until it is cut (`unpin`), so the ring
    needs no spare seconds for a queue of jobs. A pin older than `max_pin_s` is dropped (a job
    that died before cutting its clip), and `max_bytes` bounds the ring whatever is pinned.
    """

    def __init__(self, seconds: float, max_bytes: int = 64 * 1024 * 1024, max_pin_s: float = 300.0):
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.max_pin_s = max_pin_s
        self._gops: deque[_Gop] = deque()
        self._bytes = 0
        self._pins: Counter[float] = Counter()  # clip start (wall seconds) -> clips owed from there
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    def pin(self, start: float) -> None:
        """Keep what a clip starting at wall time `start` needs until `unpin(start)`."""
        with self._lock:
            self._pins[start] += 1

    def unpin(self, start: float) -> None:
        with self._lock:
            if self._pins[start] <= 1:
                self._pins.pop(start, None)
            else:
                self._pins[start] -= 1

    def pinned(self) -> list[float]:
        with self._lock:
            return sorted(self._pins.elements())

    def add(self, info: StreamInfo, packet: RingPacket) -> None:
        """Append one packet; packets before a stream's first keyframe are useless and dropped."""
        with self._cond:
            last = self._gops[-1] if self._gops else None
            if packet.key or last is None or last.info is not info:
                if not packet.key:
                    return
                last = _Gop(info, packet.wall, [])
                self._gops.append(last)
            last.packets.append(packet)
            last.size += len(packet.data)
            self._bytes += len(packet.data)
            self._prune(packet.wall)
            self._cond.notify_all()

    def _prune(self, newest: float) -> None:
        horizon = newest - self.seconds
        if self._pins:
            for stale in [t for t in self._pins if t < newest - self.max_pin_s]:
                del self._pins[stale]
            if self._pins:
                horizon = min(horizon, min(self._pins))
        while len(self._gops) >= 2 and (self._gops[1].start <= horizon or self._bytes > self.max_bytes):
            self._bytes -= self._gops.popleft().size

    def newest(self) -> float | None:
        with self._lock:
            return self._gops[-1].packets[-1].wall if self._gops else None

    def oldest(self) -> float | None:
        with self._lock:
            return self._gops[0].start if self._gops else None

    def wait_until(self, t: float, timeout: float) -> bool:
        """Block until a packet at or after wall time `t` is held (True) or `timeout` passes (False)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: bool(self._gops) and self._gops[-1].packets[-1].wall >= t, timeout=max(0.0, timeout)
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            if not self._gops:
                return {"seconds": 0.0, "bytes": 0, "gops": 0}
            span = self._gops[-1].packets[-1].wall - self._gops[0].start
            return {"seconds": round(span, 2), "bytes": self._bytes, "gops": len(self._gops)}

    def _select(self, start: float, end: float) -> list[tuple[StreamInfo, RingPacket]]:
        """Packets from the last keyframe at or before `start` up to `end`, one stream's parameters."""
        with self._lock:
            gops = list(self._gops)
        if not gops:
            return []
        first = 0
        for i, gop in enumerate(gops):
            if gop.start <= start:
                first = i
        params = gops[first].info.params
        chosen: list[tuple[StreamInfo, RingPacket]] = []
        for gop in gops[first:]:
            if gop.start > end or gop.info.params != params:
                break
            chosen.extend((gop.info, p) for p in gop.packets if p.wall <= end)
        return chosen

    def write_clip(self, start: float, end: float, path: str | os.PathLike[str]) -> ClipInfo:
        """Remux [start, end] (wall seconds) into an MP4 at `path`, starting at a keyframe <= start.

        Timestamps follow wall time, so a reconnect inside the clip shows as a gap, not a jump.
        The file appears atomically (written beside, then renamed).
        """
        chosen = self._select(start, end)
        if not chosen:
            raise ClipError(f"no video recorded between {start:.3f} and {end:.3f}")
        info = chosen[0][0]
        fmt = REMUX_FORMATS.get(info.codec)
        if fmt is None:
            raise ClipError(f"cannot remux codec {info.codec!r} into MP4")
        target = Path(path)
        tmp = target.with_name(f".{target.name}.part")
        clip0 = chosen[0][1].wall
        with (
            av.open(io.BytesIO(info.header), "r", format=fmt) as template,
            av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out,
        ):
            stream = out.add_stream_from_template(template.streams.video[0])
            stream.time_base = OUT_TIME_BASE
            last_dts = -1
            for src, p in chosen:
                dts = max(round((p.wall - clip0) / OUT_TIME_BASE), last_dts + 1)
                delay = 0 if p.pts is None else round((p.pts - p.dts) * src.time_base / OUT_TIME_BASE)
                packet = _packet(p.data)
                packet.dts = dts
                packet.pts = dts + max(0, delay)
                packet.time_base = OUT_TIME_BASE
                packet.is_keyframe = p.key
                packet.stream = stream
                out.mux(packet)
                last_dts = dts
        tmp.replace(target)
        return ClipInfo(target, clip0, chosen[-1][1].wall, len(chosen), sum(1 for _, p in chosen if p.key))

    def decode_at(self, t: float) -> tuple[float, Any] | None:
        """(wall time, BGR ndarray) of the last frame at or before `t`, decoded from its keyframe."""
        chosen = self._select(t, t)
        if not chosen:
            return None
        info = chosen[0][0]
        ctx = open_decoder(info.codec, info.extradata)
        best: tuple[float, Any] | None = None
        for _, p in chosen:
            packet = _packet(p.data)
            packet.pts, packet.dts = p.pts, p.dts
            for frame in ctx.decode(packet):
                best = (p.wall, frame)
        for frame in ctx.decode(None):
            best = (chosen[-1][1].wall, frame)
        if best is None:
            return None
        return best[0], best[1].to_ndarray(format="bgr24")
