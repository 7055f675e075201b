"""The speaker's owner thread: who gets the loudspeaker, in what order, how often.

Rules: a higher priority interrupts what is playing (bureau shout > violation warning >
early warning), even in the gap between repeats; the interrupted request keeps its place
and plays again, from the start of the repeat that was cut, once the louder matter is done
(unless its violation ends meanwhile). Equal priorities wait their turn (first come, first
served), a request plays all its repeats before the next of its rank starts, and a clip
already queued or playing is not queued twice. `cancel(key)` withdraws what a violation
asked for when it ends.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from drivers.speaker import Pcm, PlayResult
from edge_agent.actions.clips import Clip

log = logging.getLogger(__name__)


class Priority(IntEnum):
    EARLY_WARNING = 1
    VIOLATION = 2
    SHOUT = 3

    @classmethod
    def parse(cls, name: str) -> Priority:
        return cls[name.upper()]


class Player(Protocol):
    """What the queue needs of a speaker driver (`drivers.speaker.Speaker`)."""

    def play(self, pcm: Pcm, cancel: threading.Event | None = None) -> PlayResult: ...

    def close(self) -> None: ...

    def health(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class SpeakRequest:
    """Play `clip` `repeats` times with `gap_s` of silence between; `key` ties it to a violation."""

    clip: Clip
    priority: Priority
    repeats: int = 1
    gap_s: float = 0.0
    key: str | None = None


@dataclass(frozen=True)
class SpeakerEvent:
    """One step in the speaker's life, for health, tests and latency figures (monotonic time)."""

    time: float
    event: str  # queued, suppressed, started, played, interrupted, cancelled, failed
    clip_id: str
    priority: Priority
    repeat: int = 0  # 1-based repeat number for started/played/interrupted/failed
    detail: str = ""
    audio_start: float | None = None  # played/interrupted: when the first samples reached the device


@dataclass
class _Entry:
    seq: int
    request: SpeakRequest
    priority: Priority
    remaining: int
    keys: set[str] = field(default_factory=set)
    not_before: float = 0.0
    cancelled: bool = False

    @property
    def repeat(self) -> int:
        return self.request.repeats - self.remaining + 1


class SpeakerQueue:
    """Runs one thread that owns the player; `submit`/`cancel` are safe from any thread."""

    def __init__(self, player: Player, *, idle_close_s: float = 5.0, history: int = 500,
                 on_event: Callable[[SpeakerEvent], None] | None = None):
        self.player = player
        self.idle_close_s = idle_close_s
        self.on_event = on_event
        self._entries: list[_Entry] = []
        self._current: _Entry | None = None
        self._cancel: threading.Event | None = None
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._events: deque[SpeakerEvent] = deque(maxlen=history)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- public ----------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="speaker", daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def stop(self, timeout: float = 2.0) -> None:
        """Cut what is playing, drop the queue, release the device."""
        with self._cond:
            self._stopping = True
            self._entries.clear()
            if self._cancel is not None:
                self._cancel.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("speaker thread did not stop within %.1f s", timeout)
        self._thread = None

    def submit(self, request: SpeakRequest) -> bool:
        """Queue a request; False if the same clip is already queued or playing (it is kept)."""
        with self._cond:
            if self._stopping:
                return False
            for entry in self._entries:
                if entry.request.clip.id == request.clip.id and not entry.cancelled:
                    if request.key:
                        entry.keys.add(request.key)
                    raised = request.priority > entry.priority
                    if raised:
                        entry.priority = request.priority
                    self._record("suppressed", entry, detail="raised priority" if raised else "already queued")
                    return False
            entry = _Entry(next(self._seq), request, request.priority, request.repeats,
                           {request.key} if request.key else set())
            self._entries.append(entry)
            self._record("queued", entry)
            current = self._current
            if current is not None and entry.priority > current.priority and self._cancel is not None:
                self._cancel.set()  # preempt: the player returns within a block
            self._cond.notify_all()
            return True

    def cancel(self, key: str) -> None:
        """The violation `key` is over: drop what it alone asked for, cutting it if it plays."""
        with self._cond:
            for entry in list(self._entries):
                if key not in entry.keys:
                    continue
                entry.keys.discard(key)
                if entry.keys:
                    continue
                entry.cancelled = True
                self._entries.remove(entry)
                self._record("cancelled", entry, detail=f"{key} ended")
                if entry is self._current and self._cancel is not None:
                    self._cancel.set()
            self._cond.notify_all()

    def events(self) -> list[SpeakerEvent]:
        with self._cond:
            return list(self._events)

    def wait_for(self, predicate: Callable[[list[SpeakerEvent]], bool], timeout: float) -> bool:
        """Block until the event log satisfies `predicate` (for tests and the CLI)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._events)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def health(self) -> dict[str, object]:
        with self._cond:
            current = self._current
            last = next((e for e in reversed(self._events) if e.event in ("played", "failed")), None)
            return {
                "thread_alive": self._thread is not None and self._thread.is_alive(),
                "playing": current.request.clip.id if current else None,
                "queued": [e.request.clip.id for e in self._entries if e is not current],
                "last": None if last is None else f"{last.event} {last.clip_id}",
            }

    # --- thread ----------------------------------------------------------------------------

    def _record(self, event: str, entry: _Entry, repeat: int = 0, detail: str = "",
                audio_start: float | None = None) -> None:
        ev = SpeakerEvent(time.monotonic(), event, entry.request.clip.id, entry.priority, repeat, detail, audio_start)
        self._events.append(ev)
        self._cond.notify_all()  # wakes `wait_for`; every caller holds the lock
        log.debug("speaker %s %s (priority %s, repeat %d) %s", event, ev.clip_id, ev.priority.name, repeat, detail)
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:
                log.exception("speaker event listener failed")

    def _next(self) -> _Entry | None:
        """The entry to play next: highest priority, then oldest (the one playing keeps its turn)."""
        if not self._entries:
            return None
        return max(self._entries, key=lambda e: (e.priority, -e.seq))

    def _run(self) -> None:
        held = False  # the player may hold the device open
        idle_since: float | None = None
        while True:
            with self._cond:
                if self._stopping:
                    break
                entry = self._next()
                now = time.monotonic()
                if entry is None:
                    if not held:
                        self._cond.wait(1.0)  # wake now and then: a thread stuck for good is not noticed
                        continue
                    idle_since = now if idle_since is None else idle_since
                    if now < idle_since + self.idle_close_s:
                        self._cond.wait(idle_since + self.idle_close_s - now)
                        continue
                elif entry.not_before > now:  # the gap between repeats; a louder request ends it early
                    self._cond.wait(entry.not_before - now)
                    continue
                else:
                    cancel = threading.Event()
                    self._current, self._cancel = entry, cancel
                    repeat = entry.repeat
                    self._record("started", entry, repeat)
            if entry is None:
                self._close_player()  # a quiet device stays free between announcements
                held, idle_since = False, None
                continue
            try:
                result = self.player.play(entry.request.clip.pcm, cancel)
            except Exception as exc:  # a player must not raise; if it does, the queue survives it
                log.exception("speaker player raised")
                result = PlayResult("failed", None, time.monotonic(), 0, str(exc))
            held, idle_since = True, None
            with self._cond:
                self._current, self._cancel = None, None
                self._finish(entry, repeat, result)
        self._close_player()

    def _close_player(self) -> None:
        try:
            self.player.close()
        except Exception:
            log.exception("speaker close failed")

    def _finish(self, entry: _Entry, repeat: int, result: PlayResult) -> None:
        if result.outcome == "interrupted":
            if not entry.cancelled:
                # Keeps its place: the cut repeat plays again once the louder request is done.
                self._record("interrupted", entry, repeat, audio_start=result.started)
            return
        self._record(result.outcome, entry, repeat, result.error, result.started)
        entry.remaining -= 1
        if entry.remaining <= 0 or entry.cancelled:
            if entry in self._entries:
                self._entries.remove(entry)
            return
        gap = entry.request.gap_s
        if result.outcome == "failed":
            gap = max(gap, 1.0)  # a dead device must not turn the loop into a spin
        entry.not_before = time.monotonic() + gap
