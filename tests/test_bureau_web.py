"""The console in a real headless Chromium against a real Mosquitto, fed by simulated boxes that speak
the agent's own formats: log in, fleet, site charts, live feed, evidence verified and tampered,
roles, CSRF, login limits, the penalty-file zip. Screenshots go to $BUREAU_SCREENSHOTS (or the
test's temp dir)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from broker import Broker
from bureau_helpers import box
from bureau_web import RunningConsole, chromium, full_screenshot, login, wait
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.slow


def shots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("BUREAU_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def publish_all(port: int, messages) -> None:  # type: ignore[no-untyped-def]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{time.time_ns()}")
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=1, retain=r) for t, p, r in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def http(url: str, cookie: str, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers={"Cookie": cookie})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def session_cookie(driver) -> str:  # type: ignore[no-untyped-def]
    c = driver.get_cookie("bureau_session")
    assert c and c["httpOnly"] and c["sameSite"] == "Strict" and c["secure"]
    return f"bureau_session={c['value']}"


def test_console_in_a_real_browser(mosquitto: Broker, tmp_path: Path):
    from selenium.webdriver.common.by import By

    shots = shots_dir(tmp_path)
    running = RunningConsole(tmp_path, mosquitto.port)
    driver = chromium()
    tz = ZoneInfo("Asia/Shanghai")
    try:
        b = box(tmp_path, "sz-nanshan-0001", "crane-1")
        other = box(tmp_path, "sz-futian-0007", "crane-2")
        now = datetime.now(timezone.utc)
        day_start = datetime.combine(now.astimezone(tz).date(), datetime.min.time(), tz).astimezone(timezone.utc)
        if now - day_start < timedelta(minutes=2):  # the site page shows today: give today a few telemetry minutes
            time.sleep((day_start + timedelta(minutes=2) - now).total_seconds())
            now = datetime.now(timezone.utc)
        minutes = int((now - day_start).total_seconds() // 60)
        msgs = [b.status(), other.status()]
        for i in range(minutes):
            end = day_start + timedelta(minutes=i + 1)
            hour = end.astimezone(tz).hour + end.astimezone(tz).minute / 60
            loud = 8 <= hour < 18
            leq = (64 if loud else 48) + 6 * ((i * 7919) % 100) / 100
            msgs.append(b.telemetry(end, round(leq, 1), round(leq + 9, 1), round(60 + 50 * ((i * 31) % 17) / 17, 1)))
        # 40 min ago, lasting 25 min; within today when today is younger than that (the site page's
        # timeline shows today: the hour after local midnight, it failed with the event in yesterday).
        t0 = max(now - timedelta(minutes=40), day_start + (now - day_start) / 4)
        lasted = min(timedelta(minutes=25), (now - t0) / 2)
        v1 = b.violation("noise_over_limit", "started", t0, {"leq": 72.4, "limit": 70.0, "period": "day",
                                                             "unit": "dB(A)"},
                         message="20 min LAeq 72.4 dB(A) over 70 dB(A)", when=t0)
        _ev1, bundle1 = b.bundle(v1)
        v1_end = b.violation("noise_over_limit", "ended", t0, {"leq": 66.0, "limit": 70.0},
                             when=t0 + lasted)
        msgs += [b.event(v1), *bundle1, b.event(v1_end)]
        publish_all(mosquitto.port, msgs)
        store = running.console.store
        wait(lambda: len(store.telemetry(b.site, b.device, 0, 2e9)) == minutes and store.events(), 30, "ingest")

        login(driver, running.url, "adm")
        # The key the box signs with is pending: an admin approves it (trust on first use).
        driver.get(running.url + "/admin/keys")
        driver.find_element(By.ID, "approve-crane-1").click()
        wait(lambda: store.device(b.site, b.device)["key_state"] == "registered", 5, "key not approved")
        wait(lambda: store.bundles(b.site, b.device)[0]["verification"] == "valid", 10, "bundle not verified")
        driver.delete_all_cookies()

        login(driver, running.url, "op")
        cookie = session_cookie(driver)
        driver.get(running.url + "/")
        # The fleet table refreshes itself: read the row through `wait` (it re-finds a swapped element).

        def row_text() -> str:
            return str(driver.find_element(By.CSS_SELECTOR, f'tr[data-device="{b.site}/{b.device}"]').text)

        wait(lambda: "在线" in row_text() and "已同步" in row_text(), 10, "device not shown online and synced")
        full_screenshot(driver, shots / "fleet.png")

        driver.get(f"{running.url}/site/{b.site}")
        # LAeq, Lmax and the limit line; read through `wait` too, in case a live update swaps the chart
        wait(lambda: len(driver.find_element(By.ID, "noise-crane-1").find_elements(By.TAG_NAME, "path")) >= 3, 10,
             "noise chart incomplete")
        assert driver.find_elements(By.CSS_SELECTOR, "svg.timeline rect")
        full_screenshot(driver, shots / "site.png")

        # The live feed: a new violation appears without a reload.
        driver.get(running.url + "/live")
        wait(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-stream") == "open", 10,
             "no event stream")
        driver.execute_script("window.__noReload = 1")
        before = len(driver.find_elements(By.CSS_SELECTOR, "#feed .feed-item"))
        t1 = datetime.now(timezone.utc)
        v2 = b.violation("dust_over_limit", "started", t1, {"avg": 212.0, "limit": 150.0, "unit": "ug/m3"},
                         source="dust-1", message="PM10 1 h mean 212 ug/m3 over 150", when=t1)
        ev2, bundle2 = b.bundle(v2, readings=[{"sensor": "dust-1", "quantity": "pm10", "value": 150 + i,
                                               "unit": "ug/m3", "time": (t1 - timedelta(seconds=60 - i)).isoformat(),
                                               "quality": "ok"} for i in range(60)])
        publish_all(mosquitto.port, [b.event(v2), *bundle2])
        wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#feed .feed-item")) == before + 1, 10,
             "the new event did not appear live")
        assert driver.execute_script("return window.__noReload") == 1
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#feed .feed-item img.thumb"), 10, "no snapshot thumb")
        full_screenshot(driver, shots / "live.png")

        # Its evidence page says verified, with the key fingerprint.
        event_id = store.events(limit=1)[0]["id"]
        driver.get(f"{running.url}/event/{event_id}")
        wait(lambda: driver.find_element(By.ID, "checks").get_attribute("data-verification") == "valid", 10,
             "evidence not shown as valid")
        # The verification fragment refreshes on live updates: read it through `wait` (re-finds a swapped element).
        wait(lambda: "签名有效" in driver.find_element(By.ID, "check-signature").text, 10, "no valid signature shown")
        wait(lambda: "证据链完整" in driver.find_element(By.ID, "check-chain").text, 10, "chain not shown intact")
        wait(lambda: driver.find_element(By.ID, "fingerprint").text.replace(" ", "").startswith(b.signer.key_id), 10,
             "the fingerprint is not the box's key")
        assert driver.execute_script("return document.getElementById('snapshot').naturalWidth") > 0
        assert driver.find_element(By.ID, "readings-chart")
        full_screenshot(driver, shots / "event.png")

        # The zip for a penalty file: verify-evidence accepts the bundle after unzipping.
        status, data = http(f"{running.url}/evidence/{b.site}/{b.device}/{ev2.id}.zip", cookie)
        assert status == 200
        out = tmp_path / "unzipped"
        zipfile.ZipFile(io.BytesIO(data)).extractall(out)
        summary = (out / "summary.html").read_text(encoding="utf-8")
        assert "有效 VALID" in summary and "212" in summary and b.signer.key_id in summary.replace(" ", "")
        check = subprocess.run([sys.executable, "-m", "edge_agent", "verify-evidence", str(out / ev2.id),
                                "--key", b.signer.public_b64], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr

        # A tampered file (the snapshot changed in transit) is kept and shown as failed, never valid.
        t2 = datetime.now(timezone.utc)
        v3 = b.violation("black_smoke", "started", t2, {"ringelmann": 3.0, "limit": 1.0}, source="cam-1",
                         message="black smoke, Ringelmann grade 3", when=t2)
        _ev3, bundle3 = b.bundle(v3)
        bundle3 = [(t, p[:200] + bytes([p[200] ^ 0xFF]) + p[201:] if t.endswith("/snapshot.jpg") else p, r)
                   for t, p, r in bundle3]
        publish_all(mosquitto.port, [b.event(v3), *bundle3])
        wait(lambda: store.events(limit=1)[0]["kind"] == "black_smoke", 10, "no smoke event")
        driver.get(f"{running.url}/event/{store.events(limit=1)[0]['id']}")
        wait(lambda: driver.find_element(By.ID, "checks").get_attribute("data-verification") == "failed", 10,
             "tampered evidence not shown as failed")
        wait(lambda: "snapshot.jpg: SHA-256 does not match" in driver.find_element(By.ID, "problems").text, 10,
             "the mismatching file is not named")
        full_screenshot(driver, shots / "event-tampered.png")

        # CSRF: a POST without the session's token is refused and sends nothing.
        status, _ = http(f"{running.url}/device/{b.site}/{b.device}/command", cookie, b"name=ping")
        assert status == 403 and store.commands() == []

        # A viewer sees no command panel, and a forged POST with its own valid token is refused.
        driver.delete_all_cookies()
        login(driver, running.url, "view")
        driver.get(f"{running.url}/device/{b.site}/{b.device}")
        assert driver.find_element(By.ID, "viewer-note") and not driver.find_elements(By.ID, "btn-shout")
        csrf = driver.find_element(By.CSS_SELECTOR, "form.inline input[name=csrf]").get_attribute("value")
        status, _ = http(f"{running.url}/device/{b.site}/{b.device}/command", session_cookie(driver),
                         f"name=ping&csrf={csrf}".encode())
        assert status == 403 and store.commands() == []
        full_screenshot(driver, shots / "device-viewer.png")
        driver.get(running.url + "/admin/keys")
        assert driver.find_element(By.ID, "message")  # not for viewers

        # Login is rate-limited.
        driver.delete_all_cookies()
        for _ in range(5):
            driver.get(running.url + "/login")
            driver.find_element(By.ID, "username").send_keys("op")
            driver.find_element(By.ID, "password").send_keys("wrong password")
            driver.find_element(By.ID, "login-btn").click()
            wait(lambda: "错误" in driver.find_element(By.ID, "login-error").text, 5, "no login error shown")
        driver.get(running.url + "/login")
        driver.find_element(By.ID, "username").send_keys("op")
        driver.find_element(By.ID, "password").send_keys("operator-pass-1")
        driver.find_element(By.ID, "login-btn").click()
        wait(lambda: "尝试次数过多" in driver.find_element(By.ID, "login-error").text, 5, "login not rate-limited")
        assert "/login" in driver.current_url

        # Nothing came from anywhere but this console.
        hosts = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).host)")
        assert set(hosts) <= {f"127.0.0.1:{running.port}"}, hosts
        assert json.loads(json.dumps(store.refused())) == []
    finally:
        driver.quit()
        running.stop()
