"""Played, not just queued: every speaker request ends in one outcome with real times, or a reason.

Real speaker (PortAudio → ALSA file sink, see test_speaker), real espeak-ng clips (test_actions'
short ones). The outcome is what a bureau command's final ack (`played` / `failed`) and a
warning's `announcement` event are made of; the MQTT side is in test_talk.py and
test_shout_stop_e2e.py.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from test_actions import CLIPS, make, violation
from test_speaker import AlsaSink, alsa_file_sink, espeak_cache

from drivers.speaker import Pcm
from edge_agent.actions import Outcome
from edge_agent.actions.announcements import announcement_event
from edge_agent.actions.clips import Clip
from edge_agent.command_dispatch import played_ack

pytest.importorskip("gpiozero", reason="pip install gpiozero")


@pytest.fixture(scope="session")
def alsa_sink(tmp_path_factory: pytest.TempPathFactory) -> AlsaSink:
    return alsa_file_sink(tmp_path_factory)


@pytest.fixture(scope="session")
def clip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak_cache(tmp_path_factory)


class Outcomes:
    """A `done` callback that keeps what it got."""

    def __init__(self) -> None:
        self.got: list[Outcome] = []
        self.event = threading.Event()

    def __call__(self, outcome: Outcome) -> None:
        self.got.append(outcome)
        self.event.set()

    def wait(self, timeout: float) -> Outcome:
        assert self.event.wait(timeout), "no outcome"
        return self.got[0]


def tone_clip(seconds: float, rate: int = 22050) -> Clip:
    t = np.arange(int(seconds * rate)) / rate
    pcm = Pcm((0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate)
    return Clip(f"tone-{seconds}", "tone", pcm, "talk", Path("tone.wav"))


def test_a_shout_reports_played_with_the_times_it_was_heard(alsa_sink: AlsaSink, clip_cache: Path, pins: object):
    actions = make(clip_cache)
    got = Outcomes()
    try:
        before = datetime.now(timezone.utc)
        actions.shout("shout", repeats=2, done=got)
        outcome = got.wait(20)
        after = datetime.now(timezone.utc)
    finally:
        actions.stop()
    assert outcome.result == "played" and outcome.repeats == 2 and outcome.interruptions == 0
    assert outcome.started is not None and outcome.ended is not None
    assert before <= outcome.started < outcome.ended <= after
    clip = actions.clips.get("shout")
    assert clip is not None
    # Two repeats and the 0.2 s gap: the span is at least that long, and not much longer.
    span = (outcome.ended - outcome.started).total_seconds()
    assert 2 * clip.pcm.duration_s + 0.2 - 0.1 <= span <= 2 * clip.pcm.duration_s + 0.2 + 1.0, span
    ack = played_ack(outcome)
    assert ack.result == "played" and ack.data["started"] == outcome.started.isoformat()


def test_a_shout_that_cannot_start_before_its_deadline_fails_expired(alsa_sink: AlsaSink, clip_cache: Path,
                                                                   pins: object):
    actions = make(clip_cache)
    talk, shout = Outcomes(), Outcomes()
    try:
        actions.talk(tone_clip(1.5), done=talk)  # the officer speaks for 1.5 s; nothing cuts that
        assert actions.queue is not None and actions.queue.wait_for(
            lambda evs: any(e.event == "started" and e.clip_id == "tone-1.5" for e in evs), 5)
        actions.shout("shout", deadline=time.monotonic() + 0.5, done=shout)
        assert shout.wait(10).result == "failed"
        assert talk.wait(10).result == "played"
    finally:
        actions.stop()
    assert shout.got[0].reason == "expired" and shout.got[0].started is None
    assert not any(e.event == "started" and e.clip_id == "shout" for e in actions.queue.events())


def test_a_deadline_passing_between_repeats_does_not_stop_a_started_shout(alsa_sink: AlsaSink, clip_cache: Path,
                                                                          pins: object):
    actions = make(clip_cache)
    got = Outcomes()
    try:
        actions.shout("shout", repeats=2, deadline=time.monotonic() + 0.3, done=got)  # expires during repeat 1
        outcome = got.wait(15)
    finally:
        actions.stop()
    assert outcome.result == "played" and outcome.repeats == 2


def test_a_warning_cut_by_a_talk_and_not_resumed_in_time_fails_interrupted(alsa_sink: AlsaSink, clip_cache: Path,
                                                                          pins: object):
    actions = make(clip_cache)
    shout, talk = Outcomes(), Outcomes()
    try:
        actions.shout("noise_warning", deadline=time.monotonic() + 1.5, done=shout)  # a long clip
        assert actions.queue is not None and actions.queue.wait_for(
            lambda evs: any(e.event == "started" and e.clip_id == "noise_warning" for e in evs), 5)
        threading.Event().wait(0.5)
        actions.talk(tone_clip(2.0), done=talk)  # cuts it; the shout's deadline passes meanwhile
        assert talk.wait(10).result == "played"
        outcome = shout.wait(10)
    finally:
        actions.stop()
    assert outcome.result == "failed" and outcome.reason == "interrupted" and outcome.interruptions == 1


def test_no_device_fails_with_the_reason(alsa_sink: AlsaSink, clip_cache: Path, pins: object):
    actions = make(clip_cache, device="no-such-card")
    got = Outcomes()
    try:
        actions.shout("shout", done=got)
        outcome = got.wait(10)
    finally:
        actions.stop()
    assert outcome.result == "failed" and outcome.reason == "no_device"
    assert "no-such-card" in outcome.detail


def test_a_duplicate_shout_gets_the_outcome_of_the_one_it_joined(alsa_sink: AlsaSink, clip_cache: Path,
                                                                pins: object):
    actions = make(clip_cache)
    first, second = Outcomes(), Outcomes()
    try:
        actions.shout("shout", done=first)
        actions.shout("shout", done=second)  # already queued: suppressed, but still answered
        a, b = first.wait(10), second.wait(10)
    finally:
        actions.stop()
    assert a.result == b.result == "played" and a.started == b.started


def test_stopping_answers_what_was_still_queued(alsa_sink: AlsaSink, clip_cache: Path, pins: object):
    actions = make(clip_cache)
    playing, waiting = Outcomes(), Outcomes()
    actions.talk(tone_clip(3.0), done=playing)
    actions.shout("shout", done=waiting)
    assert actions.queue is not None and actions.queue.wait_for(
        lambda evs: any(e.event == "started" and e.clip_id == "tone-3.0" for e in evs), 5)
    actions.stop()
    assert playing.wait(5).reason == "shutting_down" and waiting.wait(5).reason == "shutting_down"


def test_a_violation_warning_becomes_an_announcement_event(alsa_sink: AlsaSink, clip_cache: Path, pins: object):
    from edge_agent.actions import Actions
    from edge_agent.config.actions import DEFAULT_ACTIONS, RelayConfig, SpeakerConfig

    seen: list[tuple[str, Outcome]] = []
    done = threading.Event()

    def on_announced(v, outcome):
        seen.append((v.key, outcome))
        done.set()

    cfg = SpeakerConfig(enabled=True, sample_rate=22050, volume=1.0, clips=CLIPS)
    actions = Actions(cfg, [RelayConfig(id="strobe", pin=17)], DEFAULT_ACTIONS, cache_dir=clip_cache,
                      on_announced=on_announced)
    actions.start()
    try:
        v = violation("dust_over_limit", "started")
        actions.on_violation(v)
        assert done.wait(15)
    finally:
        actions.stop()
    key, outcome = seen[0]
    assert key == v.key and outcome.result == "played" and outcome.clip_id == "dust"
    now = datetime.now(timezone.utc)
    body = announcement_event(v, outcome, "t1", now, "Asia/Shanghai", "扬尘超标。")
    assert body["kind"] == "announcement" and body["state"] == "ended" and body["key"].startswith(v.key + "/")
    assert body["figures"]["result"] == "played" and body["figures"]["violation_kind"] == "dust_over_limit"
    started = datetime.fromisoformat(body["figures"]["started"])
    assert now - timedelta(seconds=15) < started < datetime.fromisoformat(body["figures"]["ended"]) <= now
