"""Acting on site: violations and bureau commands become announcements and relay switching.

`Actions` is the agent component named "actions". It maps each violation kind to a clip
and relays (config `actions:`), feeds the speaker queue, and runs one small thread that
serves the relays' timed decisions (cut-offs, rests, override expiry) and watches the relays'
feedback inputs (edge_agent/actions/feedback.py): a relay commanded on whose feedback does not
come is a `device_fault`, handed to `report` (the violation path's, so it gets an event and
evidence like any violation). Switching happens in the caller's thread at once, so a strobe
follows a violation without waiting for a tick. Nothing here raises into the rules engine: a
failure is logged and shows in health.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from drivers.relay import FeedbackInput, Relay
from drivers.speaker import Speaker
from edge_agent.actions.clips import Clip, ClipError, ClipLibrary
from edge_agent.actions.feedback import FeedbackMonitor, FeedbackSource
from edge_agent.actions.relays import RelayController, Switch
from edge_agent.actions.speaker_queue import Done, Outcome, Player, Priority, SpeakerEvent, SpeakerQueue, SpeakRequest
from edge_agent.clock import SYSTEM_CLOCK, Clock
from edge_agent.component import threads_alive
from edge_agent.config.actions import ActionRule, RelayConfig, SpeakerConfig, check_references
from edge_agent.config.root import AgentConfig
from edge_agent.types import Violation

log = logging.getLogger(__name__)

MAX_SHOUT_REPEATS = 10
MOMENT_RELAYS_S = 30.0  # how long a moment violation's relays run (a strobe while its warning plays twice)


class ActionError(ValueError):
    """A command cannot be carried out as asked (unknown clip, unspeakable text, no such relay)."""


def default_relay(cfg: RelayConfig) -> Switch:
    return Relay(cfg.id, cfg.pin, active_high=cfg.active_high)


def default_feedback(cfg: RelayConfig, on_change: Callable[[bool], None]) -> FeedbackSource | None:
    """The relay's feedback input on its GPIO pin, or None if it has none."""
    fb = cfg.feedback
    if fb is None:
        return None
    return FeedbackInput(cfg.id, fb.pin, pull_up=fb.pull_up, active_state=fb.active_state, on_change=on_change)


class Actions:
    """The speaker and relays as one agent component."""

    name = "actions"

    def __init__(self, speaker: SpeakerConfig, relays: Sequence[RelayConfig], rules: Mapping[str, ActionRule], *,
                 cache_dir: Path, player: Player | None = None,
                 relay_factory: Callable[[RelayConfig], Switch] = default_relay,
                 feedback_factory: Callable[[RelayConfig, Callable[[bool], None]], FeedbackSource | None] = (
                     default_feedback),
                 on_speaker_event: Callable[[SpeakerEvent], None] | None = None,
                 report: Callable[[Violation], None] | None = None, clock: Clock = SYSTEM_CLOCK,
                 on_announced: Callable[[Violation, Outcome], None] | None = None):
        """`report` takes the relays' feedback faults (the violation path's `report`); without it they
        are only logged and shown in health. `on_announced` learns how each violation's warning
        ended (played with its times, or failed with the reason): the bureau's proof it was given."""
        self.speaker_config = speaker
        self.report = report
        self.clock = clock
        self.on_announced = on_announced
        self.rules = dict(rules)
        self.problems = check_references(speaker, list(relays), self.rules)
        self.clips = ClipLibrary(speaker.clips, voice=speaker.voice, rate_wpm=speaker.tts_rate_wpm,
                                 cache_dir=cache_dir)
        self.player: Player | None = None
        self.queue: SpeakerQueue | None = None
        if speaker.enabled:
            self.player = player or Speaker(speaker.device, speaker.volume, speaker.sample_rate,
                                            retry_s=speaker.retry_s)
            self.queue = SpeakerQueue(self.player, on_event=on_speaker_event, now=clock.now)
        self._wake = threading.Event()
        self.relays: dict[str, RelayController] = {}
        self.feedback: dict[str, FeedbackMonitor] = {}
        for cfg in relays:
            if cfg.id in self.relays:
                continue  # reported in self.problems
            self.relays[cfg.id] = RelayController(relay_factory(cfg), max_on_s=cfg.max_on_s, min_off_s=cfg.min_off_s)
            if cfg.feedback is not None:
                source = feedback_factory(cfg, self._feedback_changed)
                if source is not None:
                    self.feedback[cfg.id] = FeedbackMonitor(cfg.id, source, cfg.feedback, clock=clock)
        # A moment (a truck that left unwashed) has no end to switch its relays off at: they run this long.
        self.moment_relays_s = MOMENT_RELAYS_S
        self._timed_releases: list[tuple[float, str, str]] = []  # (monotonic deadline, relay id, key)
        self._timed_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors = 0
        self._last_error: str | None = None

    @classmethod
    def from_config(cls, config: AgentConfig, **kwargs: Any) -> Actions:
        """From the whole `AgentConfig`: clips are cached under storage.data_dir/clips."""
        kwargs.setdefault("cache_dir", Path(config.storage.data_dir) / "clips")
        return cls(config.speaker, config.relays, config.actions, **kwargs)

    # --- component -------------------------------------------------------------------------

    def start(self) -> None:
        for problem in self.problems:
            log.error("actions config: %s", problem)
        for ctl in self.relays.values():
            ctl.switch.set(False)  # claim every pin now, driven off, so a bad pin shows at start
        for monitor in self.feedback.values():
            monitor.source.read()  # and every feedback input
        self._stopping.clear()
        self._thread = threading.Thread(target=self._relay_loop, name="relays", daemon=True)
        self._thread.start()
        if self.queue is not None:
            self.clips.load()
            probe = getattr(self.player, "probe", None)
            if probe is not None:
                probe()
            self.queue.start()

    def alive(self) -> bool:
        """The relay timing thread and the speaker thread run (True before start)."""
        speaker = self.queue.thread if self.queue is not None else None
        return threads_alive(self._thread, speaker)

    def revive(self) -> None:
        """Start again whichever of its threads has died, keeping the pins claimed and the clips loaded."""
        if self._thread is not None and not self._thread.is_alive():
            self._thread = threading.Thread(target=self._relay_loop, name="relays", daemon=True)
            self._thread.start()
        if self.queue is not None and self.queue.thread is not None and not self.queue.thread.is_alive():
            self.queue.start()

    def stop(self) -> None:
        """Silence the speaker and switch every relay off."""
        self._stopping.set()
        self._wake.set()
        if self.queue is not None:
            self.queue.stop()
        for ctl in self.relays.values():
            try:
                ctl.all_off()
            except Exception:
                log.exception("relay %s: switching off at stop failed", ctl.name)
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        for item in [*(ctl.switch for ctl in self.relays.values()), *(m.source for m in self.feedback.values())]:
            close = getattr(item, "close", None)
            if close is not None:
                close()

    def health(self) -> dict[str, Any]:
        speaker: dict[str, Any] = {"state": "disabled"}
        if self.queue is not None and self.player is not None:
            speaker = {**self.player.health(), **self.queue.health(), "clips": self.clips.health()}
        relays: dict[str, dict[str, Any]] = {rid: dict(ctl.health()) for rid, ctl in self.relays.items()}
        for rid, monitor in self.feedback.items():
            relays[rid]["feedback"] = dict(monitor.health())
        parts = [speaker.get("state"), *(r.get("state") for r in relays.values()),
                 *(r["feedback"].get("state") for r in relays.values() if "feedback" in r)]
        degraded = any(p in ("down", "fault") for p in parts) or bool(self.problems) or bool(
            speaker.get("clips", {}).get("problems"))
        return {
            "state": "degraded" if degraded else "ok",
            "speaker": speaker,
            "relays": relays,
            "config_problems": list(self.problems),
            "errors": self._errors,
            "last_error": self._last_error,
        }

    # --- violations ------------------------------------------------------------------------

    def on_violation(self, v: Violation) -> None:
        """Announce and switch for a violation's state change. Never raises."""
        try:
            self._on_violation(v)
        except ActionError as exc:  # e.g. its clip could not be rendered at start: known, no trace
            self._errors += 1
            self._last_error = f"{v.kind} {v.state}: {exc}"
            log.error("actions for %s %s: %s", v.kind, v.state, exc)
        except Exception as exc:
            self._errors += 1
            self._last_error = f"{v.kind} {v.state}: {exc}"
            log.exception("actions for %s %s failed", v.kind, v.state)

    def _on_violation(self, v: Violation) -> None:
        rule = self.rules.get(v.kind)
        if rule is None:
            return
        if v.state == "ended":
            for rid in rule.relays:
                if rid not in self.relays:
                    continue
                if v.moment:
                    with self._timed_lock:
                        self._timed_releases.append((time.monotonic() + self.moment_relays_s, rid, v.key))
                else:
                    self.relays[rid].release(v.key)
            if self.queue is not None and not v.moment:  # a moment's warning is still owed: it plays
                self.queue.cancel(v.key)
        elif v.state in ("started", "ongoing"):
            # `ongoing` re-holds (idempotent): after a restart the relays follow the violation again.
            for rid in rule.relays:
                if rid in self.relays:
                    self.relays[rid].hold(v.key)
            if v.state == "started" and rule.clip is not None:
                done: Done | None = None
                if self.on_announced is not None:
                    listener = self.on_announced

                    def done(outcome: Outcome, v: Violation = v) -> None:
                        listener(v, outcome)
                self._announce(rule.clip, Priority.parse(rule.priority), v.key, done=done)
        self._wake.set()

    def _announce(self, clip_id: str, priority: Priority, key: str | None, repeats: int | None = None, *,
                  deadline: float | None = None, done: Done | None = None) -> bool:
        if self.queue is None:
            return False
        clip = self.clips.get(clip_id)
        if clip is None:
            raise ActionError(f"clip {clip_id!r} is not available")
        return self.queue.submit(SpeakRequest(clip, priority, repeats or clip.repeats, clip.gap_s, key,
                                              deadline=deadline, done=done))

    # --- bureau commands -------------------------------------------------------------------

    def shout(self, clip_id: str | None = None, text: str | None = None, repeats: int = 1, *,
              deadline: float | None = None, done: Done | None = None) -> None:
        """Play a clip or free Mandarin text at bureau priority, cutting any warning.

        Raises ActionError (a ValueError) if the clip is unknown or the text cannot be spoken,
        so the command can be answered with the reason. `deadline` (monotonic): not started
        (or resumed) by then, it is dropped; `done` gets how it ended.
        """
        if self.queue is None:
            raise ActionError("the speaker is disabled on this box")
        repeats = max(1, min(int(repeats), MAX_SHOUT_REPEATS))
        if text:
            gap = self.speaker_config.clips["shout"].gap_s if "shout" in self.speaker_config.clips else 2.0
            try:
                clip = self.clips.speak_text(text, repeats=repeats, gap_s=gap)
            except ClipError as exc:
                raise ActionError(str(exc)) from exc
            self.queue.submit(SpeakRequest(clip, Priority.SHOUT, repeats, clip.gap_s, deadline=deadline, done=done))
            return
        self._announce(clip_id or "shout", Priority.SHOUT, None, repeats, deadline=deadline, done=done)

    def talk(self, clip: Clip, *, deadline: float | None = None, done: Done | None = None) -> None:
        """Play the officer's recorded voice once, above everything (a bureau `talk`)."""
        if self.queue is None:
            raise ActionError("the speaker is disabled on this box")
        self.queue.submit(SpeakRequest(clip, Priority.TALK, 1, 0.0, deadline=deadline, done=done))

    def clip_text(self, clip_id: str) -> str:
        """What a clip says (for the announcement events), '' if unknown."""
        clip = self.clips.get(clip_id)
        return clip.text if clip is not None else ""

    @property
    def device_rate(self) -> int | None:
        """The rate the speaker plays at, when known (configured, or the device's once opened)."""
        if self.speaker_config.sample_rate:
            return self.speaker_config.sample_rate
        rate = getattr(self.player, "rate", 0)
        return int(rate) if isinstance(rate, int) and rate > 0 else None

    def spray(self, on: bool, duration_s: float | None = None) -> None:
        self.set_relay("spray", on, duration_s)

    def strobe(self, on: bool, duration_s: float | None = None) -> None:
        self.set_relay("strobe", on, duration_s)

    def set_relay(self, relay_id: str, on: bool | None, duration_s: float | None = None) -> dict[str, Any]:
        """Manual override: on/off for `duration_s` (None: until changed), or `on=None` for auto.

        The relay's protection still holds (a rest owed after `min_off_s` delays switching on; a
        duration beyond `max_on_s` is cut there). Returns the relay's state just after, as a bureau
        ack reports it."""
        ctl = self.relays.get(relay_id)
        if ctl is None:
            raise ActionError(f"no relay {relay_id!r} on this box")
        if duration_s is not None and duration_s <= 0:
            raise ActionError("duration_s must be positive")
        ctl.override(on, duration_s)
        self._wake.set()
        return {"relay": relay_id, **ctl.command_state()}

    # --- relay timing thread ---------------------------------------------------------------

    def _feedback_changed(self, present: bool) -> None:
        """A feedback input changed (gpiozero's thread): let the relay thread judge it now."""
        self._wake.set()

    def _relay_loop(self) -> None:
        while not self._stopping.is_set():
            deadlines = self._release_due()
            faults: list[Violation] = []
            for rid, ctl in self.relays.items():
                try:
                    nxt = ctl.tick()
                except Exception:
                    log.exception("relay %s: tick failed", ctl.name)
                    nxt = time.monotonic() + 1.0
                if nxt is not None:
                    deadlines.append(nxt)
                monitor = self.feedback.get(rid)
                if monitor is not None:
                    try:
                        changes, due_in = monitor.check(ctl.is_on)
                    except Exception:
                        log.exception("relay %s: feedback check failed", rid)
                        changes, due_in = [], None
                    faults.extend(changes)
                    if due_in is not None:
                        deadlines.append(time.monotonic() + due_in)
            for fault in faults:  # outside every relay lock: the path may act on relays itself
                self._report(fault)
            wait = 1.0 if not deadlines else min(1.0, max(0.0, min(deadlines) - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()

    def _release_due(self) -> list[float]:
        """Release the moments' relays whose time is up; the deadlines still to come."""
        now = time.monotonic()
        with self._timed_lock:
            due = [t for t in self._timed_releases if t[0] <= now]
            self._timed_releases = [t for t in self._timed_releases if t[0] > now]
            later = [t[0] for t in self._timed_releases]
        for _, rid, key in due:
            self.relays[rid].release(key)
        return later

    def _report(self, fault: Violation) -> None:
        if self.report is None:
            return
        try:
            self.report(fault)
        except Exception as exc:
            self._errors += 1
            self._last_error = f"reporting {fault.kind} {fault.state} of {fault.source}: {exc}"
            log.exception("reporting the feedback fault of %s failed", fault.source)
