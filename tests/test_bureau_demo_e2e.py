"""The whole loop in a real browser: the agent's demo site (a real box: simulated meters and cameras,
the speaker into a WAV through ALSA's file plugin) publishing into a real Mosquitto, the console
ingesting it. An operator sees the box online, a violation appear live, its evidence verified with
the registered key, and presses "shout": the ack reaches played and the box's speaker records the clip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from broker import Broker
from bureau_web import RunningConsole, chromium, full_screenshot, login, wait
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_bureau_web import shots_dir

from edge_agent.security.keys import write_private_key

pytestmark = pytest.mark.slow
SITE, DEVICE = "demo-site", "crane-1"


def samples(path: Path) -> tuple[np.ndarray, int]:
    """Mono 16-bit samples; everything after the data chunk's start, since ALSA's file plugin writes the
    header's sizes only when the stream closes (the speaker keeps it open while it plays)."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
    data = path.read_bytes()
    start = data.index(b"data") + 8
    body = data[start:start + (len(data) - start) // 2 * 2]
    return np.frombuffer(body, "<i2").astype(np.float64), rate


def played(speaker: Path, clip: Path) -> float:
    """Best normalised correlation of the clip (resampled to the device rate) inside what the speaker
    recorded (the file holds the stream opened last): about 1 when it played, well below when not."""
    got, rate = samples(speaker)
    ref, ref_rate = samples(clip)
    if ref_rate != rate:
        t = np.arange(int(len(ref) * rate / ref_rate)) / rate
        ref = np.interp(t, np.arange(len(ref)) / ref_rate, ref)
    voiced = np.flatnonzero(np.abs(ref) > 0.05 * np.abs(ref).max())
    # The last 1.5 s of the voice: warnings all begin alike ("请注意"), their ends differ.
    ref = ref[max(voiced[0], voiced[-1] - int(1.5 * rate)):voiced[-1]]
    if len(got) < len(ref) or not len(ref):
        return 0.0
    n = 1 << int(np.ceil(np.log2(len(got) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(got, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(got) - len(ref) + 1]
    at = int(np.argmax(corr))
    seg = got[at:at + len(ref)]
    return float(np.dot(seg, ref) / (np.linalg.norm(seg) * np.linalg.norm(ref) + 1e-9))


def test_operator_sees_the_demo_box_live_and_shouts(mosquitto: Broker, tmp_path: Path):
    import shutil

    from selenium.webdriver.common.by import By

    for tool in ("socat", "espeak-ng"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    shots = shots_dir(tmp_path)
    out = tmp_path / "demo"
    # The demo trusts the bureau key it finds in OUT/keys: give it the console's.
    write_private_key(out / "keys" / "bureau.key", Ed25519PrivateKey.generate())
    demo = subprocess.Popen([sys.executable, "-m", "edge_agent", "demo", "--quiet", "--out", str(out),
                             "--mqtt", f"127.0.0.1:{mosquitto.port}"], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    running = RunningConsole(tmp_path, mosquitto.port, commands={"key_file": str(out / "keys" / "bureau.key")})
    driver = chromium()
    try:
        # An admin registers the box's key from its own public key file (as `edge-fw keys` prints it).
        pub = out / "data" / "keys" / "device.key.pub"
        wait(pub.exists, 120, "the demo box made no device key")
        cfg = tmp_path / "bureau.yaml"
        cfg.write_text(f"store: {{data_dir: {running.config.store.data_dir}}}\n", encoding="utf-8")
        reg = subprocess.run([sys.executable, "-m", "bureau", "keys", "register", f"{SITE}/{DEVICE}", str(pub),
                              "--config", str(cfg)], capture_output=True, text=True)
        assert reg.returncode == 0, reg.stderr
        running.console.verifier.wake()

        login(driver, running.url, "op")
        driver.get(running.url + "/")
        wait(lambda: "在线" in driver.find_element(By.CSS_SELECTOR, f'tr[data-device="{SITE}/{DEVICE}"]').text, 120,
             "the demo box never showed online")

        # A violation appears on the live page without a reload.
        driver.get(running.url + "/live")
        wait(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-stream") == "open", 10, "no stream")
        driver.execute_script("window.__noReload = 1")
        # The feed re-renders as events arrive: read the ids in one script call, never through elements
        # that the next render may have replaced (a stale element between find and read failed CI once).
        feed_ids = ("return Array.from(document.querySelectorAll('#feed .feed-item'))"
                    ".map(e => e.getAttribute('data-event'));")
        before = set(driver.execute_script(feed_ids))
        wait(lambda: set(driver.execute_script(feed_ids)) - before, 240, "no violation appeared live")
        assert driver.execute_script("return window.__noReload") == 1
        full_screenshot(driver, shots / "demo-live.png")

        # Its evidence, verified with the registered key: an event whose bundle has a picture and a clip.
        store = running.console.store
        ev = wait(lambda: next((e for e in store.events(limit=100) if e["verification"] == "valid"
                                and e["snapshot"]), None), 240, "no verified camera evidence")
        driver.get(f"{running.url}/event/{ev['id']}")
        # The verification fragment refreshes itself: read it through `wait`, which re-finds a swapped element.
        wait(lambda: driver.find_element(By.ID, "checks").get_attribute("data-verification") == "valid", 15,
             "the event page does not say valid")
        wait(lambda: "签名有效" in driver.find_element(By.ID, "check-signature").text, 15, "no valid signature shown")
        dev_key = store.device(SITE, DEVICE)["key_id"]
        wait(lambda: driver.find_element(By.ID, "fingerprint").text.replace(" ", "").startswith(dev_key), 15,
             "the fingerprint is not the registered key's")
        if driver.find_elements(By.ID, "clip"):
            ready = driver.execute_script(
                "const v = document.getElementById('clip'); return v.play().then(() => new Promise(r => "
                "setTimeout(() => r([v.readyState, v.currentTime, v.videoWidth]), 1500))).catch(e => String(e));")
            assert isinstance(ready, list) and ready[0] >= 2 and ready[1] > 0 and ready[2] > 0, ready
        full_screenshot(driver, shots / "demo-event.png")
        driver.get(f"{running.url}/site/{SITE}")
        full_screenshot(driver, shots / "demo-site.png")

        # Shout: the ack timeline reaches played (heard, not just queued) and the speaker records the clip.
        speaker = out / "speaker.wav"
        driver.get(f"{running.url}/device/{SITE}/{DEVICE}")
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.ID, "shout-clip")).select_by_value("shout")
        driver.find_element(By.ID, "btn-shout").click()
        final = wait(lambda: next((c for c in store.commands(site=SITE, device=DEVICE)
                                   if c["state"] in ("played", "failed", "refused")), None), 60, "no final ack")
        assert final["state"] == "played", final
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "tr.hl .ack.played"), 10, "played not shown live")
        steps = ["sent", "accepted", "queued", "played"]  # the row is re-rendered on live updates: re-found each try
        wait(lambda: [li.get_attribute("class").split()[-1] for li in driver.find_element(
            By.CSS_SELECTOR, "tr.hl").find_elements(By.CSS_SELECTOR, ".ack")][:4] == steps, 10,
            f"the ack timeline is not {steps}")
        full_screenshot(driver, shots / "demo-device.png")
        from edge_agent.actions.clips import cache_key
        from edge_agent.config import load_config

        speaker_cfg = load_config(out / "config.yaml").speaker
        clip = speaker_cfg.clips["shout"]
        key = cache_key(clip.tts_text or clip.text, speaker_cfg.voice, speaker_cfg.tts_rate_wpm)
        wav = out / "data" / "clips" / f"{key}.wav"
        assert wav.exists(), sorted(p.name for p in (out / "data" / "clips").iterdir())
        score = wait(lambda: (s := played(speaker, wav)) > 0.8 and s, 30, "the shout clip was not played")
        assert score > 0.8
        others = [played(speaker, w) for w in (out / "data" / "clips").glob("*.wav") if w != wav]
        assert others and min(others) < 0.5, (score, others)  # the measure does tell clips apart
        audit = store.commands(site=SITE, device=DEVICE)
        assert audit[0]["issued_by"] == "op" and audit[0]["state"] == "played"
    finally:
        driver.quit()
        running.stop()
        demo.send_signal(signal.SIGINT)
        try:
            demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.communicate()
