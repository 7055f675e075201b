"""Push-to-talk from the console, in a real browser, to a real box, and the crew's reply back.

Headless Chromium with a fake microphone that plays a WAV (`--use-file-for-fake-audio-capture`);
the operator holds "按住说话" for 2.5 s. The console (bureau/talk.py) re-encodes Chromium's
WebM/Opus as Ogg/Opus and signs a `talk`; the box (the whole daemon, real Mosquitto, speaker into
ALSA's file sink) verifies and plays it; the command's history reaches `played`, and what the
box's speaker played is the 440 Hz tone the fake microphone heard. The box's own microphone (ALSA's
file plugin reading a 660 Hz "crew" tone, test_microphone) then records the reply; the console
checks it with the box's registered key and the page plays it in the browser.
"""

from __future__ import annotations

import os
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from agent_config import write_config
from broker import Broker
from bureau_web import RunningConsole, login, wait
from test_microphone import alsa_mic_source

from edge_agent.config import load_config
from edge_agent.daemon import build_agent
from edge_agent.security.keys import key_id, load_private_key, public_b64
from edge_agent.voice.audio import decode_audio

SITE, DEVICE = "site-test", "box-1"
RATE = 22050


def _sink(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from test_speaker import alsa_file_sink

    return alsa_file_sink(tmp_path_factory)  # the one alsa_mic_source's playback side writes into


def fake_mic_wav(path: Path, seconds: float = 10.0) -> None:
    t = np.arange(int(seconds * 48000)) / 48000
    x = np.round(0.4 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(x.tobytes())


def browser(fake_wav: Path):  # type: ignore[no-untyped-def]
    """Chromium with a fake microphone; without the tests' ALSA sink, so it never writes into it."""
    webdriver = pytest.importorskip("selenium.webdriver")
    import shutil

    from selenium.webdriver.chrome.service import Service

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    driver_exe = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(exe) and os.path.exists(driver_exe)):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--lang=zh-CN",
                "--disable-dev-shm-usage", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={fake_wav}"):
        opts.add_argument(arg)
    env = {k: v for k, v in os.environ.items() if k != "ALSA_CONFIG_PATH"}
    return webdriver.Chrome(options=opts, service=Service(driver_exe, env=env))


def test_operator_holds_push_to_talk_and_the_box_plays_it(mosquitto: Broker, tmp_path: Path,
                                                        tmp_path_factory: pytest.TempPathFactory):
    source = alsa_mic_source(tmp_path_factory)  # the box's microphone, and the speaker's sink
    sink = _sink(tmp_path_factory)
    t = np.arange(60 * 16000) / 16000
    source.feed((0.3 * np.sin(2 * np.pi * 660 * t)).astype(np.float32))  # the crew answers
    running = RunningConsole(tmp_path, mosquitto.port)
    box = None
    driver = None
    try:
        config = write_config(tmp_path, mosquitto.port,
                              speaker={"enabled": True, "sample_rate": RATE, "volume": 1.0},
                              bureau={"trusted_keys": [{"name": "console",
                                                        "public_key": running.console.signer.public_b64}]},
                              microphone={"enabled": True, "sample_rate": 16000},
                              voice={"reply_after_talk_s": 2},
                              # The crew's loud tone must not start a warning of its own (at night, Lmax
                              # would): the only thing the speaker plays here is the operator's talk.
                              rules={"noise": {"enabled": False}, "early_warning": {"enabled": False},
                                     "night_lmax": {"enabled": False}, "night_work": {"enabled": False}})
        box = build_agent(load_config(config))
        box.agent.start()
        store = running.console.store
        wait(lambda: store.device(SITE, DEVICE), 20, "the box never reached the console")
        device_key = load_private_key(tmp_path / "data" / "keys" / "device.key").public_key()
        store.register_key(SITE, DEVICE, public_b64(device_key), key_id(device_key), "adm", time.time())
        fake = tmp_path / "officer.wav"
        fake_mic_wav(fake)
        driver = browser(fake)
        login(driver, running.url, "op")
        driver.get(f"{running.url}/device/{SITE}/{DEVICE}")
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        button = driver.find_element(By.ID, "btn-talk")
        ActionChains(driver).click_and_hold(button).pause(2.5).release().perform()
        talk = wait(lambda: next((c for c in store.commands(site=SITE, device=DEVICE) if c["name"] == "talk"), None),
                    20, "the recording never reached the console as a talk")
        final = wait(lambda: (c := store.command(talk["id"])) and c["state"] in ("played", "failed", "refused") and c,
                     30, "no final ack for the talk")
        assert final["state"] == "played", final
        assert [a["result"] for a in final["acks"]][:3] == ["accepted", "queued", "played"]
        assert final["args"]["format"] == "ogg" and 1.5 <= final["args"]["size"] / 3000 <= 30  # Opus, ~3 kB/s
        queue = box.actions.queue
        assert queue is not None
        heard = [e for e in queue.events() if e.event == "played" and e.clip_id.startswith("talk:")]
        assert heard and heard[0].priority.name == "TALK"

        # The crew's reply: recorded by the box, checked with its registered key, played on the page.
        reply = wait(lambda: running.console.voice.recent(SITE, DEVICE), 20, "no reply reached the console")[0]
        assert reply["kind"] == "reply" and reply["command_id"] == talk["id"] and reply["verification"] == "valid"
        driver.get(f"{running.url}/device/{SITE}/{DEVICE}")
        audio = driver.find_element(By.CSS_SELECTOR, f"#replies li[data-voice='{reply['id']}'] audio")
        played = driver.execute_script(
            "const a = arguments[0]; return a.play().then(() => new Promise(r => setTimeout(() => "
            "r([a.readyState, a.currentTime, a.duration]), 800))).catch(e => String(e));", audio)
        assert isinstance(played, list) and played[0] >= 2 and played[1] > 0, played
        assert abs(played[2] - reply["seconds"]) < 0.2, (played, reply)
        ogg = running.console.voice.audio_path(SITE, DEVICE, reply["id"])
        assert ogg is not None
        pcm = decode_audio(ogg.read_bytes(), "ogg", rate=None, max_s=60)
        spectrum = np.abs(np.fft.rfft(pcm.samples.astype(np.float64) * np.hanning(len(pcm.samples))))
        assert abs(np.argmax(spectrum) * pcm.rate / len(pcm.samples) - 660) < 5  # what the box's microphone heard
    finally:
        if driver is not None:
            driver.quit()
        if box is not None:
            box.agent.stop(timeout=2)
        running.stop()
    captured, rate = sink.captured()
    loud = np.flatnonzero(np.abs(captured) > 2000)
    assert loud.size > rate, "the box played less than a second of the talk"
    segment = captured[loud[0]:loud[0] + rate].astype(np.float64)
    peak_hz = np.argmax(np.abs(np.fft.rfft(segment * np.hanning(len(segment))))) * rate / len(segment)
    assert abs(peak_hz - 440) < 5, peak_hz
