"""What happens when a rule breaks: the crew is warned, the bureau told, evidence collected.

Order matters for the crew: local actions first (speaker and relays must not wait on disk or
network), then the event through the outbox, then the evidence bundle, built on a worker
thread because signing, syncing files and (with cameras) waiting for a clip's post-event
seconds take time. The bundle's manifest names the violation's key, which is how the
bureau joins a bundle to its `started` event.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from edge_agent.archive import Archive
from edge_agent.evidence.bundle import EvidenceFile, EvidenceStore
from edge_agent.evidence.publish import publish_bundle
from edge_agent.history import ReadingHistory
from edge_agent.types import Publish, Violation
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

# Extra media for a violation (a camera snapshot, a clip): called on the evidence thread.
MediaSource = Callable[[Violation], Sequence[EvidenceFile]]


class ViolationPath:
    """The one way a violation's state change travels, whoever raised it (rules, meters' health,
    cameras, detectors): the crew first, then the bureau, then the evidence.

    Each step is guarded: a failure is logged, counted in `failures` and does not stop the
    next step. A `started` event says whether a bundle follows (`evidence_expected`); the
    bundle's manifest names the violation's key.
    """

    def __init__(self, *, act: Callable[[Violation], None], publish: Publish, archive: Archive,
                 evidence: EvidenceWorker | None, enrich: Callable[[Violation], Violation] | None = None):
        self.act = act
        self.enrich = enrich
        self.publish = publish
        self.archive = archive
        self.evidence = evidence
        self.failures: dict[str, int] = {}
        self.reported: dict[str, int] = {}
        self._lock = threading.Lock()

    def report(self, violation: Violation) -> None:
        """Carry one state change through actions, event, archive and evidence. Never raises."""
        with self._lock:
            self.reported[violation.state] = self.reported.get(violation.state, 0) + 1
        if self.enrich is not None:
            try:
                violation = self.enrich(violation)
            except Exception:
                log.exception("violation %s %s: adding corroboration failed", violation.kind, violation.key)
        self._step("actions", violation, lambda: self.act(violation))
        body = violation.to_json()
        wants_bundle = violation.state == "started" and self.evidence is not None
        if wants_bundle:
            body["evidence_expected"] = True
        self._step("event", violation, lambda: self.publish(Topics.EVENT, body, kind="event"))
        self._step("archive", violation, lambda: self.archive.add("event", violation.time, body))
        if wants_bundle:
            assert self.evidence is not None
            self._step("evidence", violation, lambda: self.evidence.submit(violation))  # type: ignore[union-attr]
        level = logging.WARNING if violation.state == "started" else logging.INFO
        log.log(level, "violation %s %s (%s): %s", violation.kind, violation.state, violation.source,
                violation.message)

    def _step(self, name: str, violation: Violation, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception:
            with self._lock:
                self.failures[name] = self.failures.get(name, 0) + 1
            log.exception("violation %s %s %s: %s failed", violation.kind, violation.state, violation.key, name)

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"reported": dict(self.reported), "failures": dict(self.failures)}


class EvidenceWorker:
    """Builds, signs, stores and publishes one bundle per started violation, in order."""

    name = "evidence"

    def __init__(self, store: EvidenceStore, history: ReadingHistory, publish: Publish | None,
                 readings_window_s: float, media: Sequence[MediaSource] = ()):
        self.store = store
        self.history = history
        self.publish = publish
        self.readings_window_s = readings_window_s
        self.media = tuple(media)
        self._queue: queue.Queue[Violation | None] = queue.Queue(maxsize=256)
        self._thread: threading.Thread | None = None
        self.bundles = 0
        self.failures = 0
        self.last_error = ""

    def submit(self, violation: Violation) -> None:
        try:
            self._queue.put_nowait(violation)
        except queue.Full:
            self.failures += 1
            self.last_error = "evidence queue full"
            log.error("evidence queue full: no bundle for %s %s", violation.kind, violation.key)

    def start(self) -> None:
        self.store.start()
        self._thread = threading.Thread(target=self._loop, name="evidence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(10)
        self.store.stop()

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        return {**self.store.health(), "bundles": self.bundles, "failures": self.failures,
                "pending": self._queue.qsize(), "last_error": self.last_error,
                "state": "degraded" if self.last_error else "ok"}

    def _loop(self) -> None:
        while True:
            violation = self._queue.get()
            if violation is None:
                return
            try:
                self.build(violation)
                self.last_error = ""
            except Exception as exc:  # a full disk must not stop the next bundle
                self.failures += 1
                self.last_error = str(exc)
                log.exception("evidence for %s %s failed: %s", violation.kind, violation.key, exc)

    def build(self, violation: Violation) -> str:
        # The samples behind the figure: the rule's whole window, at least readings_window_s.
        window = max(float(violation.figures.get("window_s") or 0), self.readings_window_s)
        start = violation.started - timedelta(seconds=window)
        readings = self.history.window(violation.source, start, violation.time)
        extra: list[EvidenceFile] = []
        for source in self.media:
            try:
                extra.extend(source(violation))
            except Exception as exc:
                log.error("evidence media for %s failed: %s", violation.kind, exc)
        evidence = self.store.for_violation(violation, readings, extra=extra)
        del extra  # a 1080p clip is megabytes: let it go before publishing reads the files again
        self.bundles += 1
        if self.publish is not None:
            publish_bundle(evidence, self.publish)
        log.info("evidence %s for %s %s: %d file(s)", evidence.id, violation.kind, violation.key,
                 len(evidence.file_names))
        return evidence.id
