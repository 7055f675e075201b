"""Actions end to end: violations and bureau commands → real audio (ALSA file sink) and mock GPIO pins.

Audio goes through the real PortAudio → ALSA → file path set up by `test_speaker.alsa_sink`
(see that module for why ALSA_CONFIG_PATH is set in a session fixture before PortAudio
starts). Relays use gpiozero's mock pin factory (GPIOZERO_PIN_FACTORY=mock): each pin's
`states` is a history of (seconds since the previous change, level) to assert on.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import wave
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from test_speaker import AlsaSink, alsa_file_sink, espeak_cache, read_int16

from edge_agent.actions import ActionError, Actions, Priority, SpeakerEvent
from edge_agent.config.actions import DEFAULT_ACTIONS, RelayConfig, SpeakerConfig
from edge_agent.types import Violation

gpiozero = pytest.importorskip("gpiozero", reason="pip install gpiozero")

STROBE, SPRAY = 17, 27
T0 = datetime(2024, 5, 6, 14, 0, tzinfo=timezone.utc)

# Short clips keep the suite fast; the warning is long enough to be cut in the middle.
CLIPS = {
    "noise_warning": {"text": "请注意，施工噪音即将超标，请降低噪音。",
                      "tts_text": "qing3 zhu4 yi4, shi1 gong1 zao4 yin1 ji2 jiang1 chao1 biao1, "
                                  "qing3 jiang4 di1 zao4 yin1.", "repeats": 1},
    "noise_stop": {"text": "噪音超标，停止施工。", "tts_text": "zao4 yin1 chao1 biao1, ting2 zhi3 shi1 gong1.",
                   "repeats": 1},
    "dust": {"text": "扬尘超标。", "tts_text": "yang2 chen2 chao1 biao1.", "repeats": 1},
    "night_work": {"text": "夜间禁止施工。", "tts_text": "ye4 jian1 jin4 zhi3 shi1 gong1.", "repeats": 1},
    "shout": {"text": "停止施工。", "tts_text": "ting2 zhi3 shi1 gong1.", "repeats": 1, "gap_s": 0.2},
}


def violation(kind: str, state: str, key: str | None = None) -> Violation:
    return Violation(kind=kind, state=state, key=key or f"{kind}:s1:1", time=T0, started=T0, source="s1",
                     figures={}, message="")


@pytest.fixture(scope="session")
def alsa_sink(tmp_path_factory: pytest.TempPathFactory) -> AlsaSink:
    return alsa_file_sink(tmp_path_factory)


@pytest.fixture(scope="session")
def clip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak_cache(tmp_path_factory)


def levels(factory: object, pin: int) -> list[bool]:
    """The pin's level history, without the mock's initial entry."""
    return [s.state for s in factory.pin(pin).states[1:]]  # type: ignore[attr-defined]


def make(tmp: Path, *, clips: dict | None = None, relays: list[dict] | None = None, speaker: bool = True,
         sample_rate: int = 22050, **speaker_kw: object) -> Actions:
    cfg = SpeakerConfig(enabled=speaker, sample_rate=sample_rate, volume=1.0, clips=clips or CLIPS,
                        **speaker_kw)  # type: ignore[arg-type]
    relay_cfgs = [RelayConfig(**r) for r in (relays if relays is not None else
                                              [{"id": "strobe", "pin": STROBE}, {"id": "spray", "pin": SPRAY}])]
    actions = Actions(cfg, relay_cfgs, DEFAULT_ACTIONS, cache_dir=tmp)
    actions.start()
    return actions


def has(*wanted: tuple[str, str], count: int = 1):
    def check(events: list[SpeakerEvent]) -> bool:
        return all(sum(1 for e in events if (e.event, e.clip_id) == w) >= count for w in wanted)
    return check


def seq(events: list[SpeakerEvent]) -> list[tuple[str, str]]:
    return [(e.event, e.clip_id) for e in events if e.event != "queued"]


def sleep(seconds: float) -> None:
    threading.Event().wait(seconds)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll until `check()` holds (timed relay decisions run on the actions thread)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        sleep(0.02)
    return True


# --- audio -----------------------------------------------------------------------------------


def test_violation_plays_its_warning_clip_and_strobes(alsa_sink: AlsaSink, clip_cache: Path, pins: object):
    actions = make(clip_cache)
    try:
        actions.on_violation(violation("noise_over_limit", "started"))
        assert levels(pins, STROBE) == [True]  # at once, in the caller's thread
        assert actions.queue is not None and actions.queue.wait_for(has(("played", "noise_stop")), 15)
        actions.on_violation(violation("noise_over_limit", "ended"))
        assert levels(pins, STROBE) == [True, False]
    finally:
        actions.stop()
    captured, rate = alsa_sink.captured()
    clip = actions.clips.get("noise_stop")
    assert clip is not None
    reference = read_int16(clip.path)
    assert rate == 22050
    onset = int(np.flatnonzero(captured)[0]) - int(np.flatnonzero(reference)[0])
    assert np.array_equal(captured[onset : onset + len(reference)], reference)
    assert levels(pins, SPRAY) == []  # noise does not start the spray cannon


def test_bureau_shout_interrupts_an_early_warning(alsa_sink: AlsaSink, clip_cache: Path, pins: object):
    actions = make(clip_cache)
    queue = actions.queue
    assert queue is not None
    try:
        actions.on_violation(violation("noise_early_warning", "started"))
        assert queue.wait_for(has(("started", "noise_warning")), 5)
        sleep(0.8)  # the warning is playing
        actions.shout("shout", repeats=1)
        assert queue.wait_for(has(("played", "shout")), 15)
        assert queue.wait_for(has(("started", "noise_warning"), count=2), 5)  # the warning resumes
    finally:
        actions.stop()
    events = queue.events()
    assert seq(events)[:4] == [("started", "noise_warning"), ("interrupted", "noise_warning"),
                               ("started", "shout"), ("played", "shout")]
    shout_ev = next(e for e in events if e.event == "started" and e.clip_id == "shout")
    assert shout_ev.priority is Priority.SHOUT

    # The capture holds the start of the warning, cut short, then the whole shout.
    captured, _ = alsa_sink.captured()
    warning, shout = (read_int16(actions.clips.get(c).path) for c in ("noise_warning", "shout"))  # type: ignore[union-attr]
    onset = int(np.flatnonzero(captured)[0]) - int(np.flatnonzero(warning)[0])
    at = locate_exact(captured, shout)
    assert at is not None, "the shout is not in the captured audio"
    cut = at - onset
    assert 0 < cut < len(warning) * 0.8  # only part of the warning was played
    assert np.array_equal(captured[onset:at], warning[:cut])


def locate_exact(haystack: np.ndarray, needle: np.ndarray) -> int | None:
    """First offset where `needle` appears sample for sample."""
    first = int(np.flatnonzero(needle)[0])
    probe = needle[first : first + 64]
    for i in np.flatnonzero(haystack == probe[0]):
        start = int(i) - first
        if start >= 0 and np.array_equal(haystack[start : start + len(needle)], needle):
            return start
    return None


def test_repeats_with_a_gap(alsa_sink: AlsaSink, clip_cache: Path, pins: object):
    clips = {**CLIPS, "dust": {**CLIPS["dust"], "repeats": 2, "gap_s": 0.5}}
    actions = make(clip_cache, clips=clips)
    queue = actions.queue
    assert queue is not None
    try:
        actions.on_violation(violation("dust_over_limit", "started"))
        assert queue.wait_for(has(("played", "dust"), count=2), 15)
    finally:
        actions.stop()
    events = [e for e in queue.events() if e.clip_id == "dust" and e.event in ("started", "played")]
    assert [(e.event, e.repeat) for e in events] == [("started", 1), ("played", 1), ("started", 2), ("played", 2)]
    assert events[2].time - events[1].time >= 0.5
    captured, _ = alsa_sink.captured()
    dust = read_int16(actions.clips.get("dust").path)  # type: ignore[union-attr]
    first = locate_exact(captured, dust)
    assert first is not None
    assert locate_exact(captured[first + len(dust):], dust) is not None  # played a second time
    assert levels(pins, SPRAY) == [True, False] and levels(pins, STROBE) == [True, False]  # off at stop


def test_equal_priority_waits_and_duplicates_are_suppressed(alsa_sink: AlsaSink, clip_cache: Path, pins: object):
    actions = make(clip_cache)
    queue = actions.queue
    assert queue is not None
    try:
        actions.on_violation(violation("dust_over_limit", "started"))
        actions.on_violation(violation("night_work", "started"))
        actions.on_violation(violation("dust_over_limit", "started", key="dust_over_limit:s2:1"))
        assert queue.wait_for(has(("played", "dust"), ("played", "night_work")), 15)
    finally:
        actions.stop()
    events = seq(queue.events())
    assert [e for e in events if e[0] != "suppressed"] == [("started", "dust"), ("played", "dust"),
                                                           ("started", "night_work"), ("played", "night_work")]
    assert events.count(("suppressed", "dust")) == 1  # the second dust violation joined the first


def test_ended_violation_withdraws_its_announcement(alsa_sink: AlsaSink, clip_cache: Path, pins: object):
    actions = make(clip_cache)
    queue = actions.queue
    assert queue is not None
    try:
        actions.on_violation(violation("noise_early_warning", "started"))
        assert queue.wait_for(has(("started", "noise_warning")), 5)
        actions.on_violation(violation("noise_early_warning", "ended"))
        assert queue.wait_for(has(("cancelled", "noise_warning")), 5)
        sleep(0.3)
    finally:
        actions.stop()
    assert not any(e.event == "played" for e in queue.events())


def test_a_moment_violation_ending_at_once_still_plays_its_warning(alsa_sink: AlsaSink, clip_cache: Path,
                                                                   pins: object):
    """An uncovered load or an unwashed truck is over as soon as it is seen: its `ended` comes with
    its `started`, and the crew must still hear the warning (the demo's went unplayed before)."""
    actions = make(clip_cache)
    actions.moment_relays_s = 1.5  # 30 s on a box
    queue = actions.queue
    assert queue is not None
    try:
        for state in ("started", "ended"):
            actions.on_violation(dataclasses.replace(violation("uncovered_load", state), moment=True))
        assert levels(pins, STROBE) == [True]  # the strobe outlives the moment's `ended`...
        assert eventually(lambda: levels(pins, STROBE) == [True, False], 5)  # ...for moment_relays_s
        assert queue.wait_for(has(("played", "uncovered_load")), 20)
    finally:
        actions.stop()
    assert not any(e.event == "cancelled" for e in queue.events())


def test_free_text_shout_is_rendered_and_played(alsa_sink: AlsaSink, clip_cache: Path, pins: object):
    actions = make(clip_cache)
    queue = actions.queue
    assert queue is not None
    try:
        actions.shout(text="请立即停止施工", repeats=1)
        assert queue.wait_for(lambda evs: any(e.event == "played" and e.clip_id.startswith("text:")
                                              for e in evs), 15)
        with pytest.raises(ActionError, match="not available"):
            actions.shout("no_such_clip")
    finally:
        actions.stop()


def test_missing_speaker_device_leaves_relays_working(clip_cache: Path, pins: object, alsa_sink: AlsaSink):
    actions = make(clip_cache, device="no-such-card")
    try:
        actions.on_violation(violation("dust_over_limit", "started"))
        assert actions.queue is not None
        assert actions.queue.wait_for(has(("failed", "dust")), 5)
        health = actions.health()
        assert health["state"] == "degraded" and health["speaker"]["state"] == "down"
        assert levels(pins, SPRAY) == [True] and levels(pins, STROBE) == [True]
    finally:
        actions.stop()


def test_without_espeak_the_relays_still_work(tmp_path: Path, pins: object, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng to be found, and nothing cached in tmp_path
    actions = make(tmp_path / "cache", sample_rate=22050)
    try:
        problems = actions.health()["speaker"]["clips"]["problems"]
        assert "espeak-ng is not installed" in problems["noise_stop"]
        assert actions.health()["state"] == "degraded"
        actions.on_violation(violation("noise_over_limit", "started"))  # no clip: logged, not raised
        assert levels(pins, STROBE) == [True]
    finally:
        actions.stop()


def test_a_bad_recording_falls_back_to_the_voice(clip_cache: Path, pins: object, tmp_path: Path):
    bad = tmp_path / "dust.wav"
    bad.write_bytes(b"not a wav")
    actions = make(clip_cache, clips={**CLIPS, "dust": {**CLIPS["dust"], "wav": str(bad)}}, speaker=True)
    try:
        clip = actions.clips.get("dust")
        assert clip is not None and clip.source == "tts"
        assert "recording unusable" in actions.health()["speaker"]["clips"]["problems"]["dust"]
    finally:
        actions.stop()


def test_a_technician_recording_is_used(clip_cache: Path, pins: object, tmp_path: Path):
    path = tmp_path / "rec.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(np.arange(16000) / 5) * 8000).astype("<i2").tobytes())
    actions = make(clip_cache, clips={**CLIPS, "dust": {**CLIPS["dust"], "wav": str(path)}})
    try:
        clip = actions.clips.get("dust")
        assert clip is not None and clip.source == "wav" and clip.pcm.rate == 16000
    finally:
        actions.stop()


# --- relays (mock pins; no audio) ------------------------------------------------------------


def test_strobe_follows_violations_held_by_several(tmp_path: Path, pins: object):
    actions = make(tmp_path, speaker=False)
    try:
        actions.on_violation(violation("noise_over_limit", "started", key="a"))
        actions.on_violation(violation("night_work", "started", key="b"))
        actions.on_violation(violation("noise_over_limit", "ended", key="a"))
        assert levels(pins, STROBE) == [True]  # still held by the night work
        actions.on_violation(violation("night_work", "ended", key="b"))
        assert levels(pins, STROBE) == [True, False]
        actions.on_violation(violation("camera_tamper", "started"))  # no rule: nothing happens
        assert levels(pins, STROBE) == [True, False]
    finally:
        actions.stop()


def test_max_on_cuts_off_until_a_new_demand(tmp_path: Path, pins: object):
    actions = make(tmp_path, speaker=False, relays=[{"id": "strobe", "pin": STROBE, "max_on_s": 0.3}])
    try:
        actions.on_violation(violation("noise_over_limit", "started", key="a"))
        assert levels(pins, STROBE) == [True]
        assert eventually(lambda: levels(pins, STROBE) == [True, False])  # cut off while still held
        health = actions.health()["relays"]["strobe"]
        assert health["cut_off"] is True and health["held_by"] == ["a"]
        assert pins.pin(STROBE).states[-1].timestamp >= 0.3  # type: ignore[attr-defined]
        actions.on_violation(violation("noise_over_limit", "ongoing", key="a"))
        assert levels(pins, STROBE) == [True, False]  # the same demand does not re-arm it
        actions.on_violation(violation("dust_over_limit", "started", key="b"))
        assert levels(pins, STROBE) == [True, False, True]  # a new violation does
    finally:
        actions.stop()


def test_min_off_delays_switching_back_on(tmp_path: Path, pins: object):
    actions = make(tmp_path, speaker=False, relays=[{"id": "spray", "pin": SPRAY, "min_off_s": 0.5}])
    try:
        actions.on_violation(violation("dust_over_limit", "started", key="a"))
        actions.on_violation(violation("dust_over_limit", "ended", key="a"))
        actions.on_violation(violation("dust_over_limit", "started", key="b"))
        assert levels(pins, SPRAY) == [True, False]  # resting
        assert eventually(lambda: levels(pins, SPRAY) == [True, False, True])
        assert pins.pin(SPRAY).states[-1].timestamp >= 0.5  # type: ignore[attr-defined]
    finally:
        actions.stop()


def test_manual_override_and_all_off_at_stop(tmp_path: Path, pins: object):
    actions = make(tmp_path, speaker=False, relays=[{"id": "spray", "pin": SPRAY, "active_high": False},
                                                    {"id": "strobe", "pin": STROBE}])
    pin = pins.pin(SPRAY)  # type: ignore[attr-defined]
    assert pin.state is True  # active-low: high is off, from the start
    actions.spray(True, 0.3)
    assert pin.state is False  # on
    assert eventually(lambda: pin.state is True)  # the duration ran out
    assert pin.states[-1].timestamp >= 0.3
    actions.on_violation(violation("dust_over_limit", "started"))
    assert pin.state is False
    actions.spray(False)  # the bureau stops it despite the violation
    assert pin.state is True and actions.health()["relays"]["spray"]["mode"] == "off"
    actions.set_relay("spray", None)  # back to auto: the violation holds it on again
    assert pin.state is False
    actions.strobe(True)
    with pytest.raises(ActionError):
        actions.set_relay("pump", True)
    actions.stop()
    assert pin.state is True and levels(pins, STROBE)[-1] is False  # everything off


def test_a_bad_pin_is_reported_and_the_other_relay_works(tmp_path: Path, pins: object):
    actions = make(tmp_path, speaker=False, relays=[{"id": "spray", "pin": "NO_SUCH_PIN"},
                                                    {"id": "strobe", "pin": STROBE}])
    try:
        actions.on_violation(violation("dust_over_limit", "started"))
        health = actions.health()
        assert health["state"] == "degraded"
        assert health["relays"]["spray"]["state"] == "down" and "NO_SUCH_PIN" in health["relays"]["spray"]["last_error"]
        assert levels(pins, STROBE) == [True]
    finally:
        actions.stop()
