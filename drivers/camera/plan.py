"""Which packets reach the decoder: decode only what analysis needs.

On a Pi the decoder is the dearest part of the box. Analysis wants a frame every
`interval_s` (1 s at 1 fps); a camera sends a keyframe every GOP (`gop_s`).

* When keyframes come at least as often as analysis wants frames (gop_s <= interval_s), only
  keyframes are decoded, and only those that are due: other packets never reach the decoder,
  and the decoder is told to skip non-key frames as well (`keyframes_only`).
* Otherwise a GOP is decoded from its keyframe up to the last frame analysis needs in that
  GOP, and the rest of the GOP is dropped before the decoder (P-frames cannot be decoded
  without their predecessors, so this is the least work that yields the wanted frames).

Packets before the first keyframe are dropped (they cannot be decoded); until two keyframes
have been seen the GOP length is unknown and only keyframes are decoded.
Times are stream seconds (pts x time base), not wall time.

For technicians: set each camera's I-frame interval (GOP) to its frame rate, i.e. one keyframe a
second (25 at 25 fps), and analysis_fps to 1 or less. Measured with bench/camera_cpu.py (1080p25,
4 Mbit/s, 1 fps): GOP 25 costs 1.2-1.3x the keyframe-only floor; GOP 50 costs ~5x, because half
of every GOP must be decoded to reach the mid-GOP frame. Clips need no change: a shorter GOP only
makes their start more precise.
"""

from __future__ import annotations

from collections import deque


class DecodePlan:
    """Per-stream decision: feed this packet to the decoder? hand this decoded frame on?"""

    def __init__(self, interval_s: float, *, history: int = 4):
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = interval_s
        self.tol_s = min(0.1 * interval_s, 0.05)  # pts jitter between "due" and a frame that is on time
        self._gaps: deque[float] = deque(maxlen=history)
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
    def keyframes_only(self) -> bool:
        gop = self.gop_s
        return gop is not None and gop <= self.interval_s + self.tol_s

    def feed(self, t: float, key: bool) -> bool:
        """True when the packet at stream time `t` must go to the decoder."""
        if key:
            if self._last_key is not None:
                gap = t - self._last_key
                if gap > 0:
                    self._gaps.append(gap)
                elif gap < -1.0:  # timestamps went back (new session): forget the history
                    self._gaps.clear()
                    self._next_due = None
            self._last_key = t
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

    def take(self, t: float) -> bool:
        """True when the decoded frame at stream time `t` is due for analysis (then the next is booked)."""
        if self._next_due is None:
            self._next_due = t
        tol = self._take_tol()
        if t < self._next_due - tol:
            return False
        # Stay on the grid while on time; after a gap (reconnect, lost packets) restart from now.
        self._next_due += self.interval_s
        if self._next_due <= t:
            self._next_due = t + self.interval_s
        return True

    def reset(self) -> None:
        """A new connection: timestamps restart, the GOP may differ."""
        self._gaps.clear()
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
        gop = self.gop_s
        if gop is None or self._last_key is None or self._next_due is None:
            return True
        return self._next_due < self._last_key + gop - self.tol_s
