"""The last hour of raw readings per sensor, so evidence can hold the samples behind a figure."""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime, timedelta

from drivers.types import Reading


class ReadingHistory:
    def __init__(self, keep_s: float = 3900):
        self.keep = timedelta(seconds=keep_s)
        self._by_sensor: dict[str, deque[Reading]] = {}
        self._lock = threading.Lock()

    def add(self, reading: Reading) -> None:
        with self._lock:
            buf = self._by_sensor.setdefault(reading.sensor_id, deque())
            buf.append(reading)
            horizon = reading.time - self.keep
            while buf and buf[0].time < horizon:
                buf.popleft()

    def window(self, sensor_id: str, start: datetime, end: datetime) -> list[Reading]:
        with self._lock:
            return [r for r in self._by_sensor.get(sensor_id, ()) if start <= r.time <= end]
