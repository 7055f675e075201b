"""Stream time to wall time: when was this packet captured?

RTSP timestamps are relative. The mapping keeps the smallest observed delay between a packet's
stream time and its arrival (a packet cannot arrive before it was made), so bursts after a
connect or a stall do not push times late; a jump of more than `max_lag_s` (camera clock drift,
a stream restarted by the camera) re-anchors on the arrival time.
"""

from __future__ import annotations


class StreamClock:
    def __init__(self, max_lag_s: float = 2.0):
        self.max_lag_s = max_lag_s
        self._offset: float | None = None  # wall - stream seconds
        self._last = float("-inf")

    def wall(self, stream_s: float, arrival: float) -> float:
        """Wall time (Unix seconds) of the packet at `stream_s` that arrived at `arrival`."""
        if self._offset is None:
            self._offset = arrival - stream_s
        mapped = stream_s + self._offset
        # Sooner than any packet before (the true delay is smaller) or far too late: re-anchor.
        if mapped > arrival or arrival - mapped > self.max_lag_s:
            self._offset = arrival - stream_s
            mapped = arrival
        return mapped

    def at(self, stream_s: float) -> float:
        """Wall time of another timestamp of the same stream (e.g. a frame's pts), without re-anchoring."""
        return stream_s + (self._offset or 0.0)

    def monotonic(self, t: float) -> float:
        """Clamp decode-order times so that a ring of packets stays ordered."""
        t = max(t, self._last)
        self._last = t
        return t

    def reset(self) -> None:
        self._offset = None
        self._last = float("-inf")
