"""Which packets reach the decoder: decode only what analysis needs.

On a Pi the decoder is the dearest part of the box. Analysis wants a frame every
`interval_s` (1 s at 1 fps); a camera sends a keyframe every GOP (`gop_s`, measured from the
stream: the longest of the last few keyframe intervals).

* When keyframes come at least as often as analysis wants frames (gop_s <= interval_s), only
  keyframes are decoded, and only those that are due: other packets never reach the decoder,
  and the decoder is told to skip non-key frames as well (`keyframes_only`).
* When the consumers declare that a slower rate still serves them (`keyframe_max_s`: every
  detector of the camera accepts keyframes this far apart, e.g. 2 s for black smoke and bare
  soil), keyframes alone are also enough while gop_s <= keyframe_max_s (with 10 % slack for
  stretched encoder clocks): every keyframe is decoded and handed on, at the camera's keyframe
  rate instead of `interval_s`.
* Otherwise a GOP is decoded from its keyframe up to the last frame analysis needs in that
  GOP, and the rest of the GOP is dropped before the decoder (P-frames cannot be decoded
  without their predecessors, so this is the least work that yields the wanted frames).

Packets before the first keyframe are dropped (they cannot be decoded); until two keyframes
have been seen the GOP length is unknown and only keyframes are decoded.
Times are stream seconds (pts x time base), not wall time.

Measured with bench/camera_cpu.py (1080p25, 4 Mbit/s, 1 fps): keyframes only cost 1.2-1.5x
the keyframe-decode floor (GOP 25 and GOP 50 alike); a 2-s GOP (50 at 25 fps, as most cameras
leave the factory) decoded to its mid-GOP frame costs 4-5x (`decode_cost`: ~13 decoded frames
per analysed frame). So factory cameras are read keyframes-only where the detectors allow it, and the
frames that need a higher rate come from the camera's sub-stream (edge_agent/video/streams.py).
Clips need no change: a shorter GOP only makes their start more precise.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

# A consumer served by a keyframe every 2 s is served by one every 2.2 s: live encoders and camera
# clocks stretch a nominal GOP by a few per cent, and that must not switch a camera to decoding GOPs.
KEYFRAME_SLACK = 1.1


def _tol(interval_s: float) -> float:
    return min(0.1 * interval_s, 0.05)  # pts jitter between "due" and a frame that is on time


def keyframes_serve(gop_s: float, interval_s: float, keyframe_max_s: float | None = None) -> bool:
    """Whether keyframes `gop_s` apart alone give the frames analysis needs."""
    if gop_s <= interval_s + _tol(interval_s):
        return True
    return keyframe_max_s is not None and keyframe_max_s > interval_s and gop_s <= keyframe_max_s * KEYFRAME_SLACK


class DecodePlan:
    """Per-stream decision: feed this packet to the decoder? hand this decoded frame on?"""

    def __init__(self, interval_s: float, *, keyframe_max_s: float | None = None, history: int = 4):
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = interval_s
        # Keyframes this far apart still serve every consumer (None: only at interval_s).
        self.keyframe_max_s = max(interval_s, keyframe_max_s) if keyframe_max_s is not None else interval_s
        self.tol_s = _tol(interval_s)
        self._gaps: deque[float] = deque(maxlen=history)
        self._gop_frames: deque[int] = deque(maxlen=history)
        self._since_key = 0  # packets since the last keyframe
        self._last_key: float | None = None
        self._next_due: float | None = None
        self._active = True  # inside a GOP that still holds a due frame
        self.decoded = 0
        self.skipped = 0

    @property
    def gop_s(self) -> float | None:
        """The longest recent keyframe interval (the conservative guess for the next one)."""
        return max(self._gaps) if self._gaps else None

    @property
    def gop_frames(self) -> int | None:
        """Frames (packets) in the longest recent GOP: with gop_s, the stream's frame rate."""
        return max(self._gop_frames) if self._gop_frames else None

    @property
    def keyframes_only(self) -> bool:
        gop = self.gop_s
        return gop is not None and keyframes_serve(gop, self.interval_s, self.keyframe_max_s)

    def note(self, t: float, key: bool) -> None:
        """Measure the keyframe interval from one packet (feed() does this; a record-only stream calls it)."""
        if not key:
            self._since_key += 1
            return
        if self._last_key is not None:
            gap = t - self._last_key
            if gap > 0:
                self._gaps.append(gap)
                self._gop_frames.append(self._since_key + 1)
            elif gap < -1.0:  # timestamps went back (new session): forget the history
                self._gaps.clear()
                self._gop_frames.clear()
                self._next_due = None
        self._last_key = t
        self._since_key = 0

    def feed(self, t: float, key: bool) -> bool:
        """True when the packet at stream time `t` must go to the decoder."""
        self.note(t, key)
        if key:
            if self._next_due is None:
                self._next_due = t
            self._active = self._key_due(t) if self.keyframes_only else self._due_within_gop()
        elif self._last_key is None or self.gop_s is None:
            # Joined mid-GOP: nothing is decodable before the first keyframe. After it, until the
            # GOP length is known, assume keyframes suffice: at worst the second analysis frame
            # comes one GOP late, instead of decoding a whole GOP that may not be needed.
            self._active = False
        elif self._active and (self.keyframes_only or not self._due_within_gop()):
            self._active = False
        if self._active:
            self.decoded += 1
        else:
            self.skipped += 1
        return self._active

    def take(self, t: float, key: bool = False) -> bool:
        """True when the decoded frame at stream time `t` (`key`: a keyframe) is due for analysis
        (then the next is booked)."""
        if self._next_due is None:
            self._next_due = t
        tol = self._take_tol()
        if key and not self.keyframes_only and self._next_due - tol > t > self._next_due - self.interval_s + tol:
            # A keyframe while the grid waits for a frame later in this GOP: the grid has slipped off
            # the keyframes (a stall, lost packets), and on time it would stay there, decoding each GOP
            # up to that later frame. Taken a little early, the keyframe puts the grid back on it.
            self._next_due = t + self.interval_s
            return True
        if t < self._next_due - tol:
            return False
        # Stay on the grid while on time. A frame later than due (a gap, a stretched GOP), and in a
        # decoded GOP a keyframe taken at all after its due time, starts the grid again from itself,
        # so the due frames keep their place in the GOP (keyframe + n x interval) and the least of
        # each GOP is decoded, however the encoder's clock drifts against ours.
        late = t - self._next_due
        if late > self.tol_s or (key and late > 0 and not self.keyframes_only):
            self._next_due = t + self.interval_s
        else:
            self._next_due += self.interval_s
        return True

    def reset(self) -> None:
        """A new connection: timestamps restart, the GOP may differ."""
        self._gaps.clear()
        self._gop_frames.clear()
        self._since_key = 0
        self._last_key = None
        self._next_due = None
        self._active = True

    def _take_tol(self) -> float:
        """How early a frame may be taken: with keyframes only, the keyframe nearest the due time."""
        gop = self.gop_s
        return max(self.tol_s, gop / 2) if gop is not None and self.keyframes_only else self.tol_s

    def _key_due(self, t: float) -> bool:
        return self._next_due is None or t >= self._next_due - self._take_tol()

    def _due_within_gop(self) -> bool:
        """Whether a frame due before this GOP's end is still to come. The end is judged on the
        typical keyframe interval (the lower median of the recent ones), not the longest: a GOP
        stretched by a frame now and then must not make the frame due at the nominal keyframe
        time look like a P-frame of this GOP, or the whole GOP is decoded to reach what is in fact
        the next keyframe (taken instead, a frame late)."""
        if not self._gaps or self._last_key is None or self._next_due is None:
            return True
        typical = statistics.median_low(self._gaps)
        # Due shortly before the next keyframe: that keyframe serves, a little late. "Shortly" is about
        # a frame, or the few per cent a live encoder stretches its GOP by (KEYFRAME_SLACK: a 2-s GOP
        # that lasts 2.08 s put the frame due at +2 s two frames before the next keyframe, and each
        # GOP was decoded whole to reach it), but never half an analysis interval, so a faster
        # analysis rate keeps every frame of its grid.
        frame_s = typical / max(self.gop_frames or 1, 1)
        stretch = min((KEYFRAME_SLACK - 1.0) * typical, self.interval_s / 2)
        return self._next_due < self._last_key + typical - max(self.tol_s, 1.5 * frame_s, stretch)


def decode_cost(interval_s: float, gop_s: float, fps: float, keyframe_max_s: float | None = None) -> float:
    """Frames decoded per analysed frame, for a stream of `fps` frames with a keyframe every `gop_s` s.

    1 when keyframes alone serve (gop_s <= interval_s, or <= keyframe_max_s); otherwise each
    GOP is decoded from its keyframe to its last due frame: a 2-s GOP at 25 fps analysed at
    1 fps decodes 26 frames (the keyframe and the 25 P-frames up to the 1-s mark) for two
    analysed frames, 13 each.
    """
    if keyframes_serve(gop_s, interval_s, keyframe_max_s):
        return 1.0
    # Analysed frames per GOP: at 0, interval, 2 x interval, ... while due before the next keyframe.
    due = max(1, math.ceil((gop_s - _tol(interval_s)) / interval_s))
    decoded = 1 + round((due - 1) * interval_s * fps)  # the keyframe and every frame up to the last due one
    return decoded / due
