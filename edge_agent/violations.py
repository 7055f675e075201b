"""What happens when a rule breaks: the crew is warned, the bureau told, evidence collected.

Order matters for the crew: local actions first (speaker and relays must not wait on disk or
network), then the event through the outbox, then the evidence bundle, built on a worker
thread because a clip needs its post-event seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from edge_agent.types import Violation

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, leaf: str, payload: Any, *, kind: str, retain: bool = False, qos: int = 1) -> Any: ...


class ViolationHandler:
    def __init__(self, agent: Any):
        self.agent = agent
        self.local_actions: list[Callable[[Violation], None]] = []
        # Returns the evidence ids it will fill (may be empty); called for `started` only.
        self.evidence: Callable[[Violation], list[str]] | None = None
        self.counts: dict[str, int] = {}

    def __call__(self, violation: Violation) -> None:
        for act in self.local_actions:
            try:
                act(violation)
            except Exception:
                log.exception("local action failed for %s", violation.kind)
        if violation.state == "started" and self.evidence is not None:
            try:
                ids = self.evidence(violation)
                violation = _with_evidence(violation, ids)
            except Exception:
                log.exception("evidence for %s could not be started", violation.kind)
        body = violation.to_json()
        self.agent.publish("event", body, kind="event")
        try:
            self.agent.archive.add("event", violation.time, body)
        except Exception as exc:
            log.error("could not archive event: %s", exc)
        self.counts[violation.kind] = self.counts.get(violation.kind, 0) + (violation.state == "started")
        level = logging.WARNING if violation.state == "started" else logging.INFO
        log.log(level, "violation %s %s (%s): %s", violation.kind, violation.state, violation.source,
                violation.message)


def _with_evidence(v: Violation, ids: list[str]) -> Violation:
    from dataclasses import replace

    return replace(v, evidence_ids=tuple(ids))
