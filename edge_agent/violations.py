"""What happens when a rule breaks: the crew is warned, the bureau told, evidence collected.

Order matters for the crew: local actions first (speaker and relays must not wait on disk or
network), then the violation and its evidence job committed to disk together, then the event
through the outbox, then the evidence bundle, built on a worker thread because signing,
syncing files and (with cameras) waiting for a clip's post-event seconds take time. The
bundle's manifest names the violation's key, which is how the bureau joins a bundle to its
`started` event.

Nothing here lives only in memory: open violations and owed bundles are in the
ViolationStore, so after a crash a condition that is still there continues under its old
key, one that went away is ended with the reason `cleared_while_down`, and every owed
bundle is built. A full disk holds events in memory (bounded) until they can be stored.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from edge_agent.archive import Archive
from edge_agent.clock import SYSTEM_CLOCK, Clock
from edge_agent.evidence.bundle import Evidence, EvidenceFile, EvidenceStore
from edge_agent.evidence.publish import publish_bundle
from edge_agent.history import ReadingHistory
from edge_agent.types import Publish, Violation
from edge_agent.uplink.topics import Topics
from edge_agent.violation_store import ViolationStore

log = logging.getLogger(__name__)

# Extra media for a violation (a camera snapshot, a clip): called on the evidence thread.
MediaSource = Callable[[Violation], Sequence[EvidenceFile]]

HELD_EVENTS_MAX = 2000  # events kept in memory while the disk is full (oldest dropped past this)
HEARTBEAT_S = 10.0
DEFAULT_GRACE_S = 300.0


@dataclass
class _Recovered:
    """A violation open when the agent last stopped, waiting to be seen again or to time out."""

    violation: Violation
    deadline: float  # monotonic: ended as `cleared_while_down` if not seen again by then
    downtime_s: float | None


class ViolationPath:
    """The one way a violation's state change travels, whoever raised it (rules, meters' health,
    cameras, detectors): the crew first, then the bureau, then the evidence.

    Each step is guarded: a failure is logged, counted in `failures` and does not stop the
    next step. A `started` event says whether a bundle follows (`evidence_expected`).

    Also the component named "violations": its thread keeps a heartbeat (so a restart knows
    how long the box was down), retries events held while the disk was full, and ends
    recovered violations that did not come back within their grace time.
    """

    name = "violations"

    def __init__(self, *, act: Callable[[Violation], None], publish: Publish, archive: Archive,
                 evidence: EvidenceWorker | None, store: ViolationStore,
                 enrich: Callable[[Violation], Violation] | None = None,
                 grace_s: Callable[[Violation], float] = lambda v: DEFAULT_GRACE_S,
                 clock: Clock = SYSTEM_CLOCK):
        self.act = act
        self.enrich = enrich
        self.publish = publish
        self.archive = archive
        self.evidence = evidence
        self.store = store
        self.grace_s = grace_s
        self.clock = clock
        self.failures: dict[str, int] = {}
        self.reported: dict[str, int] = {}
        self._lock = threading.RLock()
        self._open: dict[str, Violation] = {}  # key -> last state change, this run
        # (kind, source) -> violations open in the last run, oldest first (a camera may have several plumes)
        self._recovered: dict[tuple[str, str], list[_Recovered]] = {}
        self._alias: dict[str, Violation] = {}  # a new tracker's key -> the recovered violation it continues
        self._held: deque[tuple[Violation, dict[str, Any]]] = deque(maxlen=HELD_EVENTS_MAX)
        self._unstored: deque[tuple[Violation, bool]] = deque()  # state changes a full disk refused, in order
        self._events_out: set[str] = set()  # started events stored while their record waited for the disk
        self._unarchived: deque[tuple[datetime, dict[str, Any]]] = deque(maxlen=HELD_EVENTS_MAX)
        self.held_dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recover()

    # --- a state change ----------------------------------------------------------------------------

    def report(self, violation: Violation) -> None:
        """Carry one state change through actions, store, event, archive and evidence. Never raises."""
        with self._lock:
            violation = self._continue_recovered(violation)
            self.reported[violation.state] = self.reported.get(violation.state, 0) + 1
            if violation.state == "ended":
                self._open.pop(violation.key, None)
            else:  # without what was seen: frames and crops go to the evidence, not into a long-lived dict
                self._open[violation.key] = replace(violation, seen=None)
        if self.enrich is not None:
            try:
                violation = self.enrich(violation)
            except Exception:
                log.exception("violation %s %s: adding corroboration failed", violation.kind, violation.key)
        self._step("actions", violation, lambda: self.act(violation))
        wants_bundle = violation.state == "started" and self.evidence is not None
        self._store(violation, wants_bundle)
        body = violation.to_json()
        if wants_bundle:
            body["evidence_expected"] = True
        self._send(violation, body)
        if wants_bundle:
            assert self.evidence is not None
            evidence = self.evidence
            self._step("evidence", violation, lambda: evidence.submit(violation))
        level = logging.WARNING if violation.state == "started" else logging.INFO
        log.log(level, "violation %s %s (%s): %s", violation.kind, violation.state, violation.source,
                violation.message)

    def _store(self, violation: Violation, evidence: bool) -> None:
        """Record the state change on disk, in order; what a full disk refuses is retried, in order."""
        plain = replace(violation, seen=None)
        with self._lock:
            if self._unstored:  # keep the order: an `ended` must not overtake its `started`
                self._unstored.append((plain, evidence))
                return
        if not self._try_store(plain, evidence):
            with self._lock:
                self._unstored.append((plain, evidence))

    def _try_store(self, violation: Violation, evidence: bool) -> bool:
        try:
            if violation.state == "started":
                self.store.started(violation, evidence=evidence)
            else:
                self.store.changed(violation)
            return True
        except Exception as exc:
            with self._lock:
                self.failures["store"] = self.failures.get("store", 0) + 1
            log.error("violation %s %s %s not yet on disk (retried): %s", violation.kind, violation.state,
                      violation.key, exc)
            return False

    def _retry_unstored(self) -> None:
        while True:
            with self._lock:
                if not self._unstored:
                    return
                violation, evidence = self._unstored[0]
            if not self._try_store(violation, evidence):
                return
            with self._lock:
                self._unstored.popleft()
            log.info("violation %s %s %s now on disk", violation.kind, violation.state, violation.key)
            if violation.state == "started" and violation.key in self._events_out:
                self._events_out.discard(violation.key)
                self._mark_event_stored(violation)

    def _mark_event_stored(self, violation: Violation) -> None:
        self._step("store", violation, lambda: self.store.event_stored(violation.key))

    def _send(self, violation: Violation, body: dict[str, Any]) -> bool:
        """The event into the outbox (and the on-site archive); held in memory if it cannot be stored."""
        try:
            self.publish(Topics.EVENT, body, kind="event")
        except Exception as exc:
            with self._lock:
                self.failures["event"] = self.failures.get("event", 0) + 1
                if len(self._held) == self._held.maxlen:
                    self.held_dropped += 1
                self._held.append((violation, body))
            log.error("event %s %s %s held in memory (%d held): cannot store it: %s", violation.kind,
                      violation.state, violation.key, len(self._held), exc)
            return False
        self._stored(violation, body)
        return True

    def _stored(self, violation: Violation, body: dict[str, Any]) -> None:
        """The event is in the outbox: mark it so (once its record is on disk), and keep the on-site copy."""
        if violation.state == "started":
            with self._lock:
                waiting = any(v.key == violation.key for v, _ in self._unstored)
                if waiting:
                    self._events_out.add(violation.key)  # marked when its record is written
            if not waiting:
                self._step("store", violation, lambda: self.store.event_stored(violation.key))
        try:
            self.archive.add("event", violation.time, body)
        except Exception as exc:  # the on-site copy waits for room too
            with self._lock:
                self._unarchived.append((violation.time, body))
            log.error("event %s %s not yet in the on-site archive (retried): %s", violation.kind, violation.key, exc)

    def _retry_unarchived(self) -> None:
        while True:
            with self._lock:
                if not self._unarchived:
                    return
                when, body = self._unarchived[0]
            try:
                self.archive.add("event", when, body)
            except Exception:
                return
            with self._lock:
                self._unarchived.popleft()

    def _step(self, name: str, violation: Violation, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception:
            with self._lock:
                self.failures[name] = self.failures.get(name, 0) + 1
            log.exception("violation %s %s %s: %s failed", violation.kind, violation.state, violation.key, name)

    # --- across restarts -------------------------------------------------------------------------

    def _recover(self) -> None:
        """Pick up what was open when the agent last stopped; re-send a `started` that never got out."""
        try:
            found = self.store.open_violations()
            last_alive = self.store.last_alive()
        except Exception:
            log.exception("cannot read the violations open before the restart")
            return
        now = self.clock.now()
        downtime = (now - last_alive).total_seconds() if last_alive is not None else None
        for item in found:
            v = item.violation
            self._recovered.setdefault((v.kind, v.source), []).append(
                _Recovered(v, self.clock.monotonic() + self.grace_s(v), downtime))
            self._open[v.key] = v
            if not item.event_stored and v.state == "started":
                log.warning("violation %s %s: its started event was never stored (the box died): sending it now",
                            v.kind, v.key)
                body = v.to_json()
                body["evidence_expected"] = self.evidence is not None
                self._send(v, body)
        if found:
            log.warning("%d violation(s) were open when the agent stopped (down %s s): %s", len(found),
                        "?" if downtime is None else f"{downtime:.0f}", ", ".join(i.violation.key for i in found))

    def _continue_recovered(self, v: Violation) -> Violation:
        """A new tracker's state change for a condition that was open before the restart keeps the old key."""
        old = self._alias.get(v.key)
        if old is not None:
            if v.state == "ended":
                del self._alias[v.key]
            return replace(v, key=old.key, started=old.started)
        waiting = self._recovered.get((v.kind, v.source))
        if not waiting or v.state != "started":
            return v
        rec = waiting.pop(0)
        if not waiting:
            del self._recovered[(v.kind, v.source)]
        self._alias[v.key] = rec.violation
        figures = {**v.figures, "resumed_after_restart": "yes"}
        if rec.downtime_s is not None:
            figures["downtime_s"] = round(rec.downtime_s, 1)
        log.info("violation %s %s continues after the restart", v.kind, rec.violation.key)
        return replace(v, state="ongoing", key=rec.violation.key, started=rec.violation.started, figures=figures)

    def _expire_recovered(self) -> None:
        """Violations from before the restart whose condition has not come back are over."""
        mono = self.clock.monotonic()
        with self._lock:
            due = [r for waiting in self._recovered.values() for r in waiting if mono >= r.deadline]
            for kind_source in list(self._recovered):
                left = [r for r in self._recovered[kind_source] if mono < r.deadline]
                if left:
                    self._recovered[kind_source] = left
                else:
                    del self._recovered[kind_source]
        for r in due:
            old = r.violation
            figures: dict[str, float | str | None] = {**old.figures, "reason": "cleared_while_down"}
            if r.downtime_s is not None:
                figures["downtime_s"] = round(r.downtime_s, 1)
            self.report(replace(old, state="ended", time=self.clock.now(), figures=figures,
                                message=f"{old.kind} ended while the box was down or restarting"))

    def open_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._open)

    # --- component -------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="violations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends nothing: what is open stays open, on disk, for the next start (and says so in status)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)
        self._retry_unstored()
        self._retry_held()
        self._retry_unarchived()
        if self._open:
            log.info("stopping with %d violation(s) open: %s", len(self._open), ", ".join(sorted(self._open)))
        try:
            self.store.alive(self.clock.now())
        except Exception:
            log.exception("could not record the stop time")

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"state": "degraded" if self._held or self._unstored else "ok", "open": sorted(self._open),
                    "unstored": len(self._unstored), "unarchived": len(self._unarchived),
                    "waiting_after_restart": sorted(r.violation.key for w in self._recovered.values() for r in w),
                    "held_events": len(self._held), "held_dropped": self.held_dropped,
                    "reported": dict(self.reported), "failures": dict(self.failures)}

    def _loop(self) -> None:
        next_beat = 0.0
        while not self.clock.wait(self._stop, 1.0):
            mono = self.clock.monotonic()
            if mono >= next_beat:
                try:
                    self.store.alive(self.clock.now())
                except Exception as exc:
                    log.warning("violation heartbeat not stored: %s", exc)
                next_beat = mono + HEARTBEAT_S
            self._retry_unstored()
            self._retry_held()
            self._retry_unarchived()
            self._expire_recovered()

    def _retry_held(self) -> None:
        while True:
            with self._lock:
                if not self._held:
                    return
                violation, body = self._held.popleft()
            try:
                self.publish(Topics.EVENT, body, kind="event")
            except Exception:
                with self._lock:
                    self._held.appendleft((violation, body))
                return
            log.info("held event %s %s %s stored", violation.kind, violation.state, violation.key)
            self._stored(violation, body)


class EvidenceWorker:
    """Builds, signs, stores and publishes one bundle per started violation, in order.

    Jobs are on disk (ViolationStore) before they reach this worker: a job that fails (a full
    disk, a camera gone) is retried with back-off, and the jobs left when the agent stopped
    are built at the next start (their manifest says `recovered_after_restart`).
    """

    name = "evidence"

    def __init__(self, store: EvidenceStore, history: ReadingHistory, publish: Publish | None,
                 readings_window_s: float, media: Sequence[MediaSource] = (), *,
                 jobs: ViolationStore | None = None, clock: Clock = SYSTEM_CLOCK):
        self.store = store
        self.history = history
        self.publish = publish
        self.readings_window_s = readings_window_s
        self.media = tuple(media)
        self.jobs = jobs
        self.clock = clock
        self._queue: queue.Queue[Violation | None] = queue.Queue(maxsize=256)
        self._retry: dict[str, tuple[float, int, Violation]] = {}  # key -> (monotonic due, tries, violation)
        self._built: dict[str, Evidence] = {}  # built but not yet published (the outbox was full)
        self._recovered_loaded = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.bundles = 0
        self.failures = 0
        self.last_error = ""

    def submit(self, violation: Violation) -> None:
        for source in self.media:  # a camera keeps the clip's video from now until the job cuts it
            reserve = getattr(source, "reserve", None)
            if reserve is not None:
                try:
                    reserve(violation)
                except Exception as exc:
                    log.warning("evidence media for %s could not be reserved: %s", violation.key, exc)
        try:
            self._queue.put_nowait(violation)
        except queue.Full:  # the job is on disk: it is built when the retries come round
            self._schedule_retry(violation, 0, "evidence queue full")

    def start(self) -> None:
        self._stopping.clear()
        self.store.start()
        if not self._recovered_loaded and self.jobs is not None:
            self._recovered_loaded = True
            for v in self.jobs.pending_jobs():
                log.warning("evidence for %s %s was owed when the agent stopped: building it now", v.kind, v.key)
                self._retry[v.key] = (self.clock.monotonic(), 0, replace(v, figures={
                    **v.figures, "recovered_after_restart": "yes"}))
        # A stop's end-of-work marker left behind by a thread that had already died must not
        # end the new thread at once: keep the pending violations, drop the markers.
        pending = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                pending.append(item)
        for item in pending:
            self._queue.put_nowait(item)
        self._thread = threading.Thread(target=self._loop, name="evidence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued (10 s at most); what is left stays owed on disk for the next start."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(10)
        self.store.stop()

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        return {**self.store.health(), "bundles": self.bundles, "failures": self.failures,
                "pending": self._queue.qsize(), "retrying": len(self._retry), "last_error": self.last_error,
                "state": "degraded" if self.last_error or self._retry else "ok"}

    def _loop(self) -> None:
        while True:
            try:
                violation = self._queue.get(timeout=1.0)
            except queue.Empty:
                violation = None
                self._run_due_retries()
                continue
            if violation is None:
                return
            self._job(violation, 0)
            self._run_due_retries()

    def _run_due_retries(self) -> None:
        if self._stopping.is_set():
            return
        mono = self.clock.monotonic()
        for key, (due, tries, violation) in list(self._retry.items()):
            if due <= mono and self._retry.get(key, (0, 0, None))[0] == due:
                del self._retry[key]
                self._job(violation, tries)

    def _job(self, violation: Violation, tries: int) -> None:
        try:
            built = self._built.get(violation.key)
            if built is None:
                built = self._built[violation.key] = self.build(violation)
            if self.publish is not None:
                publish_bundle(built, self.publish)
            del self._built[violation.key]
            self.bundles += 1
            self.last_error = ""
            if self.jobs is not None:
                self.jobs.job_done(violation.key)
            log.info("evidence %s for %s %s: %d file(s)", built.id, violation.kind, violation.key,
                     len(built.file_names))
        except Exception as exc:  # a full disk must not stop the next bundle: this one is retried
            if self._stopping.is_set():  # the outbox closed under us: the job stays owed on disk
                log.info("evidence for %s %s left for the next start: %s", violation.kind, violation.key, exc)
                return
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("evidence for %s %s failed (try %d), retried later: %s", violation.kind, violation.key,
                      tries + 1, exc)
            if self.jobs is not None:
                try:
                    self.jobs.job_failed(violation.key, self.last_error)
                except Exception:
                    pass  # the disk that failed the bundle may fail this too; the retry is in memory
            self._schedule_retry(violation, tries + 1, self.last_error)

    def _schedule_retry(self, violation: Violation, tries: int, why: str) -> None:
        delay = min(300.0, 10.0 * 2 ** max(0, tries - 1))
        self._retry[violation.key] = (self.clock.monotonic() + delay, tries, violation)

    def build(self, violation: Violation) -> Evidence:
        """The signed bundle on disk: the samples behind the figure (the rule's whole window, at least
        readings_window_s) and the media sources' pictures."""
        window = max(float(violation.figures.get("window_s") or 0), self.readings_window_s)
        start = violation.started - timedelta(seconds=window)
        readings = self.history.window(violation.source, start, violation.time)
        extra: list[EvidenceFile] = []
        for source in self.media:
            try:
                extra.extend(source(violation))
            except Exception as exc:
                log.error("evidence media for %s failed: %s", violation.kind, exc)
        return self.store.for_violation(violation, readings, extra=extra)
