"""Relays that report back: a feedback input per relay, on gpiozero's mock pins.

The feedback inputs here are wired as the usual dry contact (pull-up, contact to ground), so
a mock input pin reads "present" when the test drives it low. A relay commanded on whose
feedback never comes must give a `device_fault` (source `relay:ID`, reason `ID not running`)
through the violation path; one whose feedback comes in time gives none; the fault ends when
the feedback returns or the relay is switched off.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_config import BASE, write_config
from broker import Broker, Recorder, retained

from edge_agent.actions import Actions
from edge_agent.config import load_config
from edge_agent.config.actions import DEFAULT_ACTIONS, RelayConfig, SpeakerConfig
from edge_agent.daemon import build_agent
from edge_agent.types import Violation

pytest.importorskip("gpiozero", reason="pip install gpiozero")

SPRAY, FLOW = 17, 22
CONFIRM_S = 0.4


def eventually(check: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Reported:
    """Stands in for the violation path's `report`: what the actions component hands it."""

    def __init__(self) -> None:
        self.items: list[Violation] = []
        self.lock = threading.Lock()

    def __call__(self, v: Violation) -> None:
        with self.lock:
            self.items.append(v)

    def states(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(v.state, str(v.figures.get("reason"))) for v in self.items]


@pytest.fixture
def reported() -> Reported:
    return Reported()


@pytest.fixture
def actions(tmp_path: Path, pins: object, reported: Reported) -> Iterator[Actions]:
    relays = [RelayConfig(id="spray", pin=SPRAY, min_off_s=0,
                          feedback={"pin": FLOW, "confirm_s": CONFIRM_S})]  # type: ignore[arg-type]
    act = Actions(SpeakerConfig(enabled=False), relays, DEFAULT_ACTIONS, cache_dir=tmp_path, report=reported)
    act.start()
    yield act
    act.stop()


def flow(pins: object, present: bool) -> None:
    pin = pins.pin(FLOW)  # type: ignore[attr-defined]
    pin.drive_low() if present else pin.drive_high()


def test_relay_on_without_feedback_is_a_device_fault_that_ends_when_switched_off(
        actions: Actions, pins: object, reported: Reported):
    switched = time.monotonic()
    actions.set_relay("spray", True)
    assert pins.pin(SPRAY).state  # type: ignore[attr-defined]
    assert eventually(lambda: reported.items)
    waited = time.monotonic() - switched
    fault = reported.items[0]
    assert (fault.kind, fault.state, fault.source) == ("device_fault", "started", "relay:spray")
    assert fault.figures["reason"] == "spray not running"
    assert fault.figures["expected"] == "on" and fault.figures["seen"] == "off"
    assert CONFIRM_S <= waited < CONFIRM_S + 1.5  # not before confirm_s, and not much after it
    assert "spray" in fault.message and "0.4" in fault.message  # the configured Mandarin text, filled in
    feedback = actions.health()["relays"]["spray"]["feedback"]
    assert feedback["state"] == "fault" and feedback["expected"] is True and feedback["seen"] is False
    assert feedback["fault"] == "spray not running" and actions.health()["state"] == "degraded"

    actions.set_relay("spray", False)
    assert eventually(lambda: len(reported.items) == 2)
    ended = reported.items[1]
    assert (ended.state, ended.key, ended.figures["ended_because"]) == ("ended", fault.key, "relay_off")
    feedback = actions.health()["relays"]["spray"]["feedback"]
    assert feedback["state"] == "ok" and feedback["expected"] is False and feedback["fault"] is None
    time.sleep(CONFIRM_S + 0.3)
    assert len(reported.items) == 2  # off and no flow: they agree, nothing more


def test_feedback_that_comes_in_time_gives_no_fault(actions: Actions, pins: object, reported: Reported):
    actions.set_relay("spray", True)
    time.sleep(CONFIRM_S / 3)
    flow(pins, True)  # the flow switch closes while the pump primes
    assert eventually(lambda: actions.health()["relays"]["spray"]["feedback"]["seen"] is True)
    time.sleep(CONFIRM_S + 0.5)
    assert reported.items == []
    feedback = actions.health()["relays"]["spray"]["feedback"]
    assert feedback["state"] == "ok" and feedback["expected"] is True and feedback["agree"] is True
    assert feedback["changes"] == 1 and feedback["last_change"] > time.time() - 5
    actions.set_relay("spray", False)
    flow(pins, False)  # the pump stops, the flow with it
    time.sleep(CONFIRM_S + 0.3)
    assert reported.items == []


def test_the_fault_ends_when_the_feedback_returns_and_a_dry_run_mid_way_is_one_too(
        actions: Actions, pins: object, reported: Reported):
    actions.set_relay("spray", True)
    assert eventually(lambda: reported.states() == [("started", "spray not running")])
    flow(pins, True)  # water back
    assert eventually(lambda: len(reported.items) == 2)
    assert reported.items[1].state == "ended" and reported.items[1].figures["ended_because"] == "feedback_returned"
    assert reported.items[1].key == reported.items[0].key
    flow(pins, False)  # the flow stops while the pump is on: a new fault after confirm_s
    assert eventually(lambda: len(reported.items) == 3)
    third = reported.items[2]
    assert third.state == "started" and third.key != reported.items[0].key
    assert actions.health()["relays"]["spray"]["feedback"]["faults"] == 2


def test_feedback_while_the_relay_is_off_is_a_fault_too(actions: Actions, pins: object, reported: Reported):
    flow(pins, True)  # e.g. a welded relay contact keeps the pump running
    assert eventually(lambda: reported.states() == [("started", "spray running while off")])
    assert reported.items[0].figures["expected"] == "off"
    actions.set_relay("spray", True)  # now it is meant to run: they agree
    assert eventually(lambda: len(reported.items) == 2)
    assert reported.items[1].figures["ended_because"] == "relay_on"


def test_a_feedback_pin_that_cannot_be_claimed_shows_in_health(tmp_path: Path, pins: object):
    relays = [RelayConfig(id="spray", pin=SPRAY, feedback={"pin": "NO_SUCH_PIN"})]  # type: ignore[arg-type]
    act = Actions(SpeakerConfig(enabled=False), relays, DEFAULT_ACTIONS, cache_dir=tmp_path)
    act.start()
    try:
        act.set_relay("spray", True)
        assert pins.pin(SPRAY).state  # type: ignore[attr-defined]  # the relay itself still works
        feedback = act.health()["relays"]["spray"]["feedback"]
        assert feedback["state"] == "down" and "NO_SUCH_PIN" in feedback["last_error"]
        assert act.health()["state"] == "degraded"
    finally:
        act.stop()


def test_config_checks_feedback_levels_and_timing():
    with pytest.raises(ValueError, match="active_state"):
        RelayConfig(id="spray", pin=SPRAY, feedback={"pin": FLOW, "pull_up": None})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_on_s"):
        RelayConfig(id="spray", pin=SPRAY, max_on_s=5, feedback={"pin": FLOW, "confirm_s": 5})  # type: ignore[arg-type]
    from edge_agent.config.actions import check_references

    same = [RelayConfig(id="spray", pin=SPRAY, feedback={"pin": 27}),  # type: ignore[arg-type]
            RelayConfig(id="strobe", pin=27)]
    assert any("27" in p for p in check_references(SpeakerConfig(enabled=False), same, DEFAULT_ACTIONS))


# --- through the whole daemon: the violation path, the event, the evidence, the status -----------


def test_the_fault_takes_the_violation_path_to_the_bureau(mosquitto: Broker, tmp_path: Path, pins: object):
    config = load_config(write_config(tmp_path, mosquitto.port, relays=[
        {"id": "spray", "pin": SPRAY, "feedback": {"pin": FLOW, "confirm_s": CONFIRM_S,
                                                   "message": "喷淋已开启，但{confirm_s}秒内未检测到水流。"}}]))
    bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
    parts = build_agent(config)
    parts.start()
    try:
        assert bureau.wait_for(lambda: any(p.get("state") == "online" for p in bureau.payloads("status")))
        parts.actions.set_relay("spray", True)

        def fault_events(state: str) -> list[dict]:
            return [e for e in bureau.payloads("event") if e["kind"] == "device_fault" and e["state"] == state]

        started = bureau.wait_for(lambda: fault_events("started"))
        assert started, bureau.payloads("event")
        event = started[0]
        assert event["source"] == "relay:spray" and event["figures"]["reason"] == "spray not running"
        assert event["message"] == "喷淋已开启，但0.4秒内未检测到水流。" and event["evidence_expected"] is True

        def manifest() -> dict | None:
            for m in bureau.payloads("evidence"):
                if (m.get("violation") or {}).get("key") == event["key"]:
                    return m
            return None

        assert bureau.wait_for(manifest, timeout=15), "no evidence bundle for the feedback fault"
        parts.agent.publish_status()

        def feedback_in_status() -> dict | None:
            body = json.loads(retained(mosquitto.port, f"{BASE}/status", timeout=1) or b"{}")
            feedback = body.get("components", {}).get("actions", {}).get("relays", {}).get("spray", {}).get("feedback")
            return feedback if feedback and feedback["fault"] else None  # not the one retained at connect

        status = bureau.wait_for(feedback_in_status)
        assert status, "the retained status does not show the feedback fault"
        assert status["expected"] is True and status["seen"] is False and status["fault"] == "spray not running"
        assert status["pin"] == FLOW and status["confirm_s"] == CONFIRM_S and status["fault_key"] == event["key"]

        flow(pins, True)
        ended = bureau.wait_for(lambda: fault_events("ended"))
        assert ended and ended[0]["key"] == event["key"] and ended[0]["figures"]["ended_because"] == "feedback_returned"
        assert parts.violations.open_keys() == []
    finally:
        parts.stop(timeout=2)
        bureau.stop()
