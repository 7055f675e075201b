"""A violation's warning, as the bureau sees it: an `announcement` event once it was played (or not).

预警-处理-反馈: the bureau must know the crew was really warned, not just that a clip was
queued. When the speaker queue settles a violation's warning, one event goes to `…/event`
with kind `announcement`, state `ended` (it is over when reported) and a key of its own
under the violation's, so it never disturbs the violation's own started/ongoing/ended life:

    {"key": "<violation key>/announcement/<random tag>", "kind": "announcement", "state": "ended",
     "started": <first sample out, or the time it was given up>, "source": "speaker",
     "message": <the clip's text>, "figures": {"result": "played"|"failed", "reason": ...,
     "violation_key", "violation_kind", "clip", "started", "ended", "repeats", "interruptions"}}
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edge_agent.actions.speaker_queue import Outcome
from edge_agent.timefmt import iso
from edge_agent.types import Publish, Violation
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

KIND = "announcement"


def announcement_event(v: Violation, outcome: Outcome, tag: str, now: datetime, tz: str,
                       text: str = "") -> dict[str, Any]:
    """The event body for how violation `v`'s warning ended (`tag`: unique, also across restarts)."""
    figures: dict[str, Any] = {"result": outcome.result, "violation_key": v.key, "violation_kind": v.kind,
                               "clip": outcome.clip_id, "repeats": outcome.repeats,
                               "interruptions": outcome.interruptions}
    if outcome.started is not None:
        figures["started"] = iso(outcome.started, tz)
    if outcome.ended is not None:
        figures["ended"] = iso(outcome.ended, tz)
    if outcome.reason:
        figures["reason"] = outcome.reason
        figures["detail"] = outcome.detail[:200]
    return {"key": f"{v.key}/{KIND}/{tag}", "kind": KIND, "state": "ended",
            "started": iso(outcome.started or now, tz), "source": "speaker", "message": text[:500],
            "figures": figures}


def announcement_publisher(publish: Publish, now: Callable[[], datetime], tz: str,
                           text_of: Callable[[str], str] = lambda clip_id: "") -> Callable[[Violation, Outcome], None]:
    """`Actions(on_announced=...)`: publish each settled warning as an event. Never raises."""
    def on_announced(v: Violation, outcome: Outcome) -> None:
        try:
            body = announcement_event(v, outcome, secrets.token_hex(6), now(), tz, text_of(outcome.clip_id))
            publish(Topics.EVENT, body, kind="event")
        except Exception:
            log.exception("could not store the announcement event of %s", v.key)
        level = logging.INFO if outcome.result == "played" else logging.WARNING
        log.log(level, "warning %s for %s %s: %s %s", outcome.clip_id, v.kind, v.key, outcome.result, outcome.reason)

    return on_announced
