"""Running the console (ingest + web) in this process, and a headless Chromium to look at it."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bureau.app import Console
from bureau.auth import hash_password
from bureau.config import BureauConfig
from edge_agent.loopback import free_port

PASSWORDS = {"op": "operator-pass-1", "view": "viewer-pass-1", "adm": "admin-pass-12"}


class RunningConsole:
    def __init__(self, tmp: Path, mqtt_port: int, **extra: Any):
        import uvicorn

        from bureau.web.app import create_app

        self.port = free_port()
        self.config = BureauConfig.model_validate({
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "client_id": f"bureau-{time.time_ns()}"},
            "store": {"data_dir": str(tmp / "bureau")}, "web": {"port": self.port}, **extra})
        self.console = Console(self.config)
        for name, role in (("op", "operator"), ("view", "viewer"), ("adm", "admin")):
            self.console.store.add_user(name, role, hash_password(PASSWORDS[name]), time.time())
        self.console.start(connect_timeout=8)
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.console), host="127.0.0.1", port=self.port,
                                                    log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.console.stop()


def chromium(download_dir: Path | None = None):  # type: ignore[no-untyped-def]
    """Debian's chromium through its chromedriver (skips cleanly where they are not installed)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    driver_exe = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(exe) and os.path.exists(driver_exe)):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--lang=zh-CN",
                "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    if download_dir is not None:
        opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                               "download.prompt_for_download": False})
    return webdriver.Chrome(options=opts, service=Service(driver_exe))


def login(driver, url: str, name: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver.get(url + "/login")
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[name])
    driver.find_element(By.ID, "login-btn").click()
    wait(lambda: "/login" not in driver.current_url, 10, "login did not succeed")


def wait(predicate, timeout: float, message: str = "timed out"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # stale elements while a fragment is swapped
            last_exc = exc
        time.sleep(0.1)
    raise AssertionError(f"{message} (last error: {last_exc})")


def full_screenshot(driver, path: Path) -> None:  # type: ignore[no-untyped-def]
    """The whole page, not just the window."""
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 4000)")
    driver.set_window_size(1400, max(900, int(height) + 20))
    time.sleep(0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
