"""An operator accepts a camera's new view from the console (`relearn_view`), in a real headless
Chromium against a real Mosquitto: the button sits on a "moved" tamper event and on the device
page; what reaches the box's command topic passes the agent's own verifier and names the
event's camera; a viewer gets no button, and a camera id the agent would refuse is not sent."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

import paho.mqtt.client as mqtt
import pytest
from broker import Broker
from bureau_helpers import box
from bureau_web import RunningConsole, chromium, full_screenshot, login, wait
from paho.mqtt.enums import CallbackAPIVersion
from test_bureau_web import http, publish_all, session_cookie, shots_dir

from edge_agent.security.bureau_command import CommandVerifier, VerifierPolicy
from edge_agent.security.nonces import NonceStore

pytestmark = pytest.mark.slow
SITE, DEVICE = "sz-nanshan-0001", "crane-1"


class CommandTopic:
    """Everything the console publishes to the box's command topics, as the box's broker session sees it."""

    def __init__(self, port: int, prefix: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"box-{time.time_ns()}")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/{SITE}/{DEVICE}/cmd/#", qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10), "no subscription"

    def _message(self, _c, _u, msg) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.got.append((msg.topic, msg.payload))

    def messages(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.got)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_operator_accepts_a_moved_cameras_new_view(mosquitto: Broker, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    running = RunningConsole(tmp_path, mosquitto.port)
    driver = chromium()
    topic = CommandTopic(mosquitto.port, running.console.sender.prefix)
    try:
        b = box(tmp_path, SITE, DEVICE)
        status = b.status(components={
            "uplink": {"state": "ok", "connected": True},
            "cameras": {"state": "degraded", "cameras": {
                "cam-exit": {"state": "degraded", "tamper": ["moved"], "detectors": ["washing"]},
                "cam-site": {"state": "ok", "tamper": [], "detectors": ["black_smoke"]}}}})
        t0 = datetime.now(timezone.utc) - timedelta(minutes=5)
        moved = b.violation("camera_tamper", "started", t0, {"reason": "moved", "shift": 0.31},
                            source="cam-exit", message="camera cam-exit moved", when=t0)
        publish_all(mosquitto.port, [status, b.event(moved, evidence_expected=False)])
        store = running.console.store
        ev = wait(lambda: next((e for e in store.events(site=SITE, device=DEVICE) if e["kind"] == "camera_tamper"),
                               None), 30, "the tamper event was not ingested")
        wait(lambda: (store.device(SITE, DEVICE) or {}).get("status"), 30, "no status")

        # A viewer sees the event but cannot re-aim anything.
        login(driver, running.url, "view")
        driver.get(f"{running.url}/event/{ev['id']}")
        wait(lambda: "cam-exit" in driver.find_element(By.TAG_NAME, "body").text, 10, "the event page")
        assert not driver.find_elements(By.ID, "btn-relearn_view")
        driver.delete_all_cookies()

        # The operator accepts the new view from the event itself.
        login(driver, running.url, "op")
        driver.get(f"{running.url}/event/{ev['id']}")
        button = wait(lambda: driver.find_element(By.ID, "btn-relearn_view"), 10, "no relearn button on the event")
        full_screenshot(driver, shots_dir(tmp_path) / "relearn-event.png")
        assert "cam-exit" in button.text
        button.click()
        wait(lambda: "/device/" in driver.current_url and "cmd=" in driver.current_url, 10, "no redirect")
        sent = wait(lambda: [m for m in topic.messages() if m[0].endswith("/cmd/relearn_view")], 10,
                    "nothing reached the box's command topic")
        assert len(sent) == 1
        # The box's own verifier, trusting the console's key, accepts it: the camera is the event's.
        signer = running.console.signer
        policy = VerifierPolicy(site=SITE, device=DEVICE, trusted={signer.key_id: signer.public},
                                commands=frozenset({"relearn_view"}))
        command = CommandVerifier(policy, NonceStore(tmp_path / "box-nonces.sqlite"),
                                  now=lambda: datetime.now(timezone.utc)).verify("relearn_view", sent[0][1])
        assert command.name == "relearn_view" and dict(command.args) == {"camera": "cam-exit"}
        cmd_id = json.loads(sent[0][1])["id"]
        assert f"cmd={cmd_id}" in driver.current_url
        wait(lambda: "relearn_view" in driver.find_element(By.ID, "command-history").text, 10,
             "the command history does not show it")

        full_screenshot(driver, shots_dir(tmp_path) / "relearn-device.png")
        # The device page offers every camera the box reported, the moved one first choice.
        select = Select(driver.find_element(By.ID, "relearn-camera"))
        values = [o.get_attribute("value") for o in select.options]
        assert values == ["cam-exit", "cam-site"]
        assert select.first_selected_option.get_attribute("value") == "cam-exit"
        assert "移位" in select.first_selected_option.text  # the box's "moved", in the console's language
        select.select_by_value("cam-site")
        driver.find_element(By.ID, "btn-relearn_view").click()
        second = wait(lambda: [m for m in topic.messages() if m[0].endswith("/cmd/relearn_view")][1:], 10,
                      "the device page's command was not sent")
        assert json.loads(second[0][1])["args"] == {"camera": "cam-site"}

        # A camera id the agent would refuse is refused here, and nothing is published.
        cookie = session_cookie(driver)
        csrf = driver.find_element(By.CSS_SELECTOR, "#form-relearn_view input[name=csrf]").get_attribute("value")
        before = len(topic.messages())
        code, page = http(f"{running.url}/device/{SITE}/{DEVICE}/command", cookie,
                          urlencode({"csrf": csrf, "name": "relearn_view", "camera": "../etc"}).encode())
        assert code == 200 and b'id="command-error"' in page and b"camera" in page  # the redirect, followed
        time.sleep(1.0)
        assert len(topic.messages()) == before
    finally:
        topic.stop()
        driver.quit()
        running.stop()
