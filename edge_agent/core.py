"""The core: one thread that turns readings into figures and rule decisions.

Bus threads only hand readings over (`ReadingQueue.submit`, which never blocks them): a night-Lmax
breach then plays the speaker, stores the event and queues its evidence on this thread,
never on the thread that owns a serial port, so a slow disk cannot delay the next poll.
The queue is bounded; if this thread falls that far behind, the oldest readings are kept
and new ones are counted as dropped (the supervisor restarts a dead core thread).

Once a second (just after the whole second, so blocks that end on :00 close promptly) the
figures tick: closed minute/hour/day blocks go out, rolling figures go to the rules. A wall
clock that moved more or less than the monotonic clock was stepped (NTP on a box with no
battery clock): the step is recorded (status, next evidence), the figures are relabelled
and at most one partial block per period is closed, never a replay of every minute between.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from drivers.types import Reading
from edge_agent.clock import STEP_THRESHOLD_S, Clock, ClockStep, ClockSteps
from edge_agent.measures.engine import MeasureEngine
from edge_agent.measures.figures import Figures

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000  # about three hours of one meter at 1 Hz, or minutes of a full bus


class ReadingQueue:
    """The bounded hand-over from bus threads to the core: `submit` never blocks a bus thread."""

    def __init__(self, size: int = QUEUE_SIZE):
        self.queue: queue.Queue[Reading] = queue.Queue(maxsize=size)
        self.dropped = 0

    def submit(self, reading: Reading) -> None:
        try:
            self.queue.put_nowait(reading)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("core queue full (%d readings waiting): %d reading(s) dropped so far",
                          self.queue.qsize(), self.dropped)


class Core:
    """The component named "core": readings in through a bounded queue, a figures tick every second."""

    name = "core"

    def __init__(self, engine: MeasureEngine, figures: Figures, on_reading: Callable[[Reading], None], clock: Clock,
                 readings: ReadingQueue, steps: ClockSteps | None = None):
        self.engine = engine
        self.figures = figures
        self.on_reading = on_reading
        self.clock = clock
        self.readings = readings
        self.steps = steps or ClockSteps()
        self._queue = readings.queue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.handled = 0
        self.last_error = ""

    # --- component -----------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="core", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        return {"state": "degraded" if self.last_error or self.readings.dropped else "ok", "readings": self.handled,
                "queued": self._queue.qsize(), "dropped": self.readings.dropped, "last_error": self.last_error,
                **self.figures.stats()}

    # --- the thread ------------------------------------------------------------------------------

    def _loop(self) -> None:
        prev = self.clock.now()
        prev_mono = self.clock.monotonic()
        next_tick = self.clock.monotonic() + self._to_next_second()
        while not self._stop.is_set():
            wait = next_tick - self.clock.monotonic()
            if wait > 0:
                try:
                    reading = self._queue.get(timeout=min(wait, 0.25))
                except queue.Empty:
                    continue
                self._reading(reading)
                continue
            now, mono = self.clock.now(), self.clock.monotonic()
            step = (now - prev).total_seconds() - (mono - prev_mono)
            try:
                if abs(step) > STEP_THRESHOLD_S:
                    self._clock_stepped(prev, now, step)
                else:
                    self.figures.tick(prev, now)
                self.last_error = ""
            except Exception as exc:  # a bad figure must not stop the rules for good
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("figures tick failed: %s", exc)
            prev, prev_mono = now, mono
            next_tick = self.clock.monotonic() + self._to_next_second()

    def _clock_stepped(self, prev: datetime, now: datetime, step: float) -> None:
        log.warning("the wall clock jumped %+.1f s (%s -> %s): figures relabelled, at most one partial block "
                    "closed per period", step, prev.isoformat(), now.isoformat())
        self.steps.record(ClockStep(step, prev, now))
        self.engine.clock_stepped(step)
        self.figures.clock_stepped(prev, now)
        self.figures.tick(now, now)  # the rules at the new time; no block boundary is crossed

    def _reading(self, reading: Reading) -> None:
        self.handled += 1
        try:
            self.engine.add(reading)
        except Exception as exc:
            self.last_error = f"measures: {exc}"
            log.exception("measures rejected a reading of %s", reading.sensor_id)
        self.on_reading(reading)

    def _to_next_second(self) -> float:
        return 1.0 - (self.clock.now().timestamp() % 1.0) + 0.01
