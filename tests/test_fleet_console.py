"""The console's push page in a real browser: a config and a head to a real box, applied; an inline secret, refused."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import yaml
from broker import Broker
from bureau_web import RunningConsole, chromium, full_screenshot, login, wait
from fleet_box import FleetBox, sha256

from detectors.runtime import default_model_path


def test_push_page_applies_a_config_and_a_head_and_shows_a_refusal(mosquitto: Broker, tmp_path: Path):
    console = RunningConsole(tmp_path, mosquitto.port)
    box = FleetBox(mosquitto, tmp_path, console.console.signer)  # the box trusts the console's key
    box.write()
    driver = None
    try:
        box.start()
        store = console.console.store
        wait(lambda: ((store.device("site-test", "box-1") or {}).get("status") or {}).get("config"), 15,
             "the console never saw the box's config hash")
        driver = chromium()
        login(driver, console.url, "adm")

        def push(text: str, confirm_s: int) -> None:
            from selenium.webdriver.common.by import By

            driver.get(console.url + "/admin/push?lang=en")
            driver.find_element(By.CSS_SELECTOR, 'input[name="box"][value="site-test/box-1"]').click()
            confirm = driver.find_element(By.NAME, "confirm_s")
            confirm.clear()
            confirm.send_keys(str(confirm_s))
            driver.find_element(By.ID, "push-yaml").send_keys(text)
            driver.find_element(By.ID, "push-send").click()
            wait(lambda: driver.find_elements(By.ID, "push-sent"), 10, "the push was not sent")

        def outcome() -> str:
            from selenium.webdriver.common.by import By

            driver.get(console.url + "/admin/push?lang=en")
            return str(driver.find_element(By.CSS_SELECTOR, 'tr[data-box="site-test/box-1"]').get_attribute(
                "data-outcome"))

        data = yaml.safe_load(box.config_path.read_text(encoding="utf-8"))
        data["site"]["name"] = "控制台推送的工地"
        push(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), 30)
        wait(lambda: outcome() == "applied", 30, "the box did not apply the pushed config")
        assert yaml.safe_load(box.config_path.read_text(encoding="utf-8"))["site"]["name"] == "控制台推送的工地"
        applied = sha256(box.config_path)

        data["mqtt"]["username"], data["mqtt"]["password"] = "box", "hunter2"  # an inline secret
        push(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), 30)
        wait(lambda: outcome() == "refused", 20, "the config with an inline secret was not shown refused")
        from selenium.webdriver.common.by import By

        row = driver.find_element(By.CSS_SELECTOR, 'tr[data-box="site-test/box-1"] td.outcome').text
        assert "refused" in row and "inline_secret" in row and "hunter2" not in row
        assert sha256(box.config_path) == applied
        assert any(a["action"] == "config" for a in store.audit_log())

        # A head, to the same box: the shipped smoke head as a new version, with its card.
        card_path = default_model_path("smoke_cls")
        card = yaml.safe_load(card_path.read_text())
        head = (card_path.parent / card["file"]).read_bytes()
        card.update(version="9.3.0", sha256=hashlib.sha256(head).hexdigest())
        (tmp_path / "head.npz").write_bytes(head)
        (tmp_path / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True))
        driver.get(console.url + "/admin/push?lang=en")
        form = driver.find_element(By.ID, "push-model-form")
        form.find_element(By.CSS_SELECTOR, 'input[name="box"][value="site-test/box-1"]').click()
        driver.find_element(By.ID, "push-head").send_keys(str(tmp_path / "head.npz"))
        driver.find_element(By.ID, "push-card").send_keys(str(tmp_path / "card.yaml"))
        driver.find_element(By.ID, "push-model-send").click()
        wait(lambda: driver.find_elements(By.ID, "push-sent"), 10, "the head was not sent")
        wait(lambda: outcome() == "applied", 40, "the pushed head was not applied")
        assert (tmp_path / "data/models/smoke_cls/active").read_text().strip() == "v0001"
        full_screenshot(driver, tmp_path / "push.png")  # to look at: pytest --basetemp
    finally:
        if driver is not None:
            driver.quit()
        box.stop()
        console.stop()
        time.sleep(0.1)
