"""The speaker's owner thread: who gets the loudspeaker, in what order, how often.

Rules: a higher priority interrupts what is playing (bureau talk > bureau shout > violation
warning > early warning), even in the gap between repeats; the interrupted request keeps its
place and plays again, from the start of the repeat that was cut, once the louder matter is
done (unless its violation ends meanwhile, or its deadline passes). Equal priorities wait
their turn (first come, first served), a request plays all its repeats before the next of its
rank starts, and a clip already queued or playing is not queued twice. `cancel(key)`
withdraws what a violation asked for when it ends.

Every request ends in exactly one `Outcome` handed to its `done` callbacks (a duplicate that
was suppressed gets the outcome of the request it joined): `played`, with the wall-clock time
the first sample reached the device and the time the last repeat ended, or `failed` with a
reason: `no_device`, `interrupted` (cut by a louder request and not resumed before its
deadline), `expired` (still queued at its deadline), `cancelled` (its violation ended first)
or `shutting_down`. That is what "played, not just queued" rests on: bureau acks and the
events of local warnings.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from typing import Protocol

from drivers.speaker import Pcm, PlayResult
from edge_agent.actions.clips import Clip

log = logging.getLogger(__name__)


class Priority(IntEnum):
    EARLY_WARNING = 1
    VIOLATION = 2
    SHOUT = 3
    TALK = 4  # the officer's own voice: nothing cuts it

    @classmethod
    def parse(cls, name: str) -> Priority:
        return cls[name.upper()]


class Player(Protocol):
    """What the queue needs of a speaker driver (`drivers.speaker.Speaker`)."""

    def play(self, pcm: Pcm, cancel: threading.Event | None = None) -> PlayResult: ...

    def close(self) -> None: ...

    def health(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class Outcome:
    """How a request ended, for whoever asked for it (a bureau ack, a warning's event)."""

    result: str  # played, failed
    clip_id: str
    reason: str = ""  # with failed: no_device, interrupted, expired, cancelled, shutting_down
    detail: str = ""
    started: datetime | None = None  # UTC wall time the first sample reached the device
    ended: datetime | None = None  # UTC wall time the last repeat ended
    repeats: int = 0  # repeats played to their end
    interruptions: int = 0  # times a louder request cut it

    def as_data(self) -> dict[str, object]:
        """The ack's / event's `data`: ISO times, counts."""
        data: dict[str, object] = {"clip": self.clip_id, "repeats": self.repeats,
                                   "interruptions": self.interruptions}
        if self.started is not None:
            data["started"] = self.started.isoformat()
        if self.ended is not None:
            data["ended"] = self.ended.isoformat()
        return data


Done = Callable[[Outcome], None]


@dataclass(frozen=True)
class SpeakRequest:
    """Play `clip` `repeats` times with `gap_s` of silence between; `key` ties it to a violation.

    `deadline` (monotonic): not started, or not resumed after an interruption, by then, it is
    dropped (a bureau command's expiry: a stale instruction is worse than none). `done` gets
    the `Outcome`, once, on the speaker thread (or the caller's, for one refused at once)."""

    clip: Clip
    priority: Priority
    repeats: int = 1
    gap_s: float = 0.0
    key: str | None = None
    deadline: float | None = None
    done: Done | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SpeakerEvent:
    """One step in the speaker's life, for health, tests and latency figures (monotonic time)."""

    time: float
    event: str  # queued, suppressed, started, played, interrupted, cancelled, expired, failed
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
    dones: list[Done] = field(default_factory=list)
    deadline: float | None = None
    started: float | None = None  # monotonic: first sample of the first repeat
    played: int = 0
    interruptions: int = 0
    failure: str = ""
    began: bool = False  # some repeat has started
    cut: bool = False  # interrupted and waiting to play the cut repeat again

    @property
    def repeat(self) -> int:
        return self.request.repeats - self.remaining + 1


class SpeakerQueue:
    """Runs one thread that owns the player; `submit`/`cancel` are safe from any thread."""

    def __init__(self, player: Player, *, idle_close_s: float = 5.0, history: int = 500,
                 on_event: Callable[[SpeakerEvent], None] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        """`now`: the wall clock that labels outcomes (the agent's clock)."""
        self.player = player
        self.now = now
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
            current = self._current
            dropped = [e for e in self._entries if e is not current]
            self._entries.clear()
            if self._cancel is not None:
                self._cancel.set()
            self._cond.notify_all()
        for entry in dropped:
            self._resolve(entry, "failed", "shutting_down", "the box is stopping")
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("speaker thread did not stop within %.1f s", timeout)
        self._thread = None
        if current is not None:  # cut by the stop (a no-op if it ended on its own meanwhile)
            self._resolve(current, "failed", "shutting_down", "the box stopped while it played")

    def submit(self, request: SpeakRequest) -> bool:
        """Queue a request; False if the same clip is already queued or playing (it is kept, and
        `request.done` gets its outcome) or the queue is stopping (`done` gets `shutting_down`)."""
        with self._cond:
            stopping = self._stopping
            if not stopping:
                for entry in self._entries:
                    if entry.request.clip.id == request.clip.id and not entry.cancelled:
                        if request.key:
                            entry.keys.add(request.key)
                        if request.done is not None:
                            entry.dones.append(request.done)
                        if request.deadline is None or (entry.deadline is not None
                                                        and request.deadline > entry.deadline):
                            entry.deadline = request.deadline  # the most patient asker decides
                        raised = request.priority > entry.priority
                        if raised:
                            entry.priority = request.priority
                        self._record("suppressed", entry, detail="raised priority" if raised else "already queued")
                        return False
        if stopping:
            if request.done is not None:
                self._call(request.done, Outcome("failed", request.clip.id, "shutting_down", "the box is stopping"))
            return False
        with self._cond:
            entry = _Entry(next(self._seq), request, request.priority, request.repeats,
                           {request.key} if request.key else set(),
                           dones=[request.done] if request.done is not None else [], deadline=request.deadline)
            self._entries.append(entry)
            self._record("queued", entry)
            current = self._current
            if current is not None and entry.priority > current.priority and self._cancel is not None:
                self._cancel.set()  # preempt: the player returns within a block
            self._cond.notify_all()
            return True

    def cancel(self, key: str) -> None:
        """The violation `key` is over: drop what it alone asked for, cutting it if it plays."""
        dropped = []
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
                    self._cancel.set()  # resolved by the speaker thread when the cut play returns
                else:
                    dropped.append(entry)
            self._cond.notify_all()
        for entry in dropped:
            self._resolve(entry, "failed", "cancelled", f"{key} ended before it was played")

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

    def _expire(self, now: float) -> list[_Entry]:
        """Entries past their deadline that never started or wait to resume after a cut (not one
        between its repeats): out of the queue (the lock is held)."""
        late = [e for e in self._entries if e.deadline is not None and e.deadline <= now and e is not self._current
                and (not e.began or e.cut)]
        for entry in late:
            self._entries.remove(entry)
            self._record("expired", entry, detail="interrupted" if entry.interruptions else "never started")
        return late

    def _run(self) -> None:
        held = False  # the player may hold the device open
        idle_since: float | None = None
        while True:
            with self._cond:
                if self._stopping:
                    break
                late = self._expire(time.monotonic())
            for gone in late:
                if gone.cut:
                    self._resolve(gone, "failed", "interrupted",
                                  "cut by a louder announcement and not resumed before its deadline")
                else:
                    self._resolve(gone, "failed", "expired", "still queued when it expired")
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
                    entry.began, entry.cut = True, False
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
                ended = self._finish(entry, repeat, result)
            if ended:
                self._settle(entry)
        self._close_player()

    def _close_player(self) -> None:
        try:
            self.player.close()
        except Exception:
            log.exception("speaker close failed")

    def _finish(self, entry: _Entry, repeat: int, result: PlayResult) -> bool:
        """Book one play; True when the entry is over (then `_settle` resolves it, unlocked)."""
        if result.outcome == "interrupted":
            if not entry.cancelled:
                # Keeps its place: the cut repeat plays again once the louder request is done.
                entry.interruptions += 1
                entry.cut = True
                self._record("interrupted", entry, repeat, audio_start=result.started)
                return False
            return True
        self._record(result.outcome, entry, repeat, result.error, result.started)
        if result.outcome == "played":
            entry.played += 1
            if entry.started is None:
                entry.started = result.started
        elif not entry.failure:
            entry.failure = result.error or "the speaker failed"
        entry.remaining -= 1
        if entry.remaining <= 0 or entry.cancelled:
            if entry in self._entries:
                self._entries.remove(entry)
            return True
        gap = entry.request.gap_s
        if result.outcome == "failed":
            gap = max(gap, 1.0)  # a dead device must not turn the loop into a spin
        entry.not_before = time.monotonic() + gap
        return False

    def _settle(self, entry: _Entry) -> None:
        if entry.cancelled and entry.played < entry.request.repeats:
            self._resolve(entry, "failed", "cancelled", "its violation ended while it played")
        elif entry.failure:
            self._resolve(entry, "failed", "no_device", entry.failure)
        else:
            self._resolve(entry, "played", "", "", ended=time.monotonic())

    def _wall(self, mono: float | None) -> datetime | None:
        if mono is None:
            return None
        return self.now() - timedelta(seconds=time.monotonic() - mono)

    def _resolve(self, entry: _Entry, result: str, reason: str, detail: str, *, ended: float | None = None) -> None:
        """Hand the outcome to every asker, once (outside the lock: they publish)."""
        with self._cond:
            dones, entry.dones = entry.dones, []
        if not dones:
            return
        outcome = Outcome(result, entry.request.clip.id, reason, detail, self._wall(entry.started),
                          self._wall(ended), entry.played, entry.interruptions)
        for done in dones:
            self._call(done, outcome)

    @staticmethod
    def _call(done: Done, outcome: Outcome) -> None:
        try:
            done(outcome)
        except Exception:
            log.exception("speaker outcome listener failed")
