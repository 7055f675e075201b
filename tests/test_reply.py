"""The crew's reply and the bureau's `listen`, end to end, from a file playing as the microphone.

The whole daemon with its microphone on ALSA's file plugin reading a raw file (test_microphone's
`alsa_mic_source`; playback goes to the speaker's file sink in the same asound.conf) and a real
Mosquitto. A talk plays; the box then records the "crew" (a 440 Hz voice-band tone in the file)
and publishes a signed `voice` message that the bureau verifies with the device key and decodes.
`listen` is refused while off, and records N seconds when on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from agent_config import BASE, write_config
from broker import Broker, Recorder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from test_microphone import alsa_mic_source
from test_talk import body, voice_wav

from edge_agent.config import load_config
from edge_agent.daemon import Parts, build_agent
from edge_agent.security.bureau_command import sign_command, talk_args
from edge_agent.security.keys import Signer, load_private_key
from edge_agent.voice.audio import decode_audio, trim_silence
from edge_agent.voice.message import VoiceMessageError, verify_voice_message

MIC_RATE = 16000


@dataclass
class Box:
    parts: Parts
    bureau: Recorder
    key: Signer
    sender: mqtt.Client
    data_dir: Path

    def send(self, name: str, args: dict) -> dict:
        signed = sign_command(body(name, args), self.key)
        self.sender.publish(f"{BASE}/cmd/{name}", json.dumps(signed), qos=1).wait_for_publish(5)
        return signed

    def final(self, cid: str, timeout: float = 20) -> dict:
        got = self.bureau.wait_for(lambda: [a for a in self.bureau.payloads("cmd/ack") if a.get("id") == cid
                                            and a["result"] not in ("accepted", "queued")], timeout)
        assert got, [a for a in self.bureau.payloads("cmd/ack") if a.get("id") == cid]
        return got[0]

    def voices(self, kind: str) -> list[dict]:
        return [v for v in self.bureau.payloads("voice") if v["message"]["kind"] == kind]


def crew_voice(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * MIC_RATE)) / MIC_RATE
    return (0.25 * np.sin(2 * np.pi * 440 * t) * (0.7 + 0.3 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)


@pytest.fixture
def box(mosquitto: Broker, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> Iterator[Box]:
    source = alsa_mic_source(tmp_path_factory)
    source.feed(crew_voice(90.0))  # more than the test reads: past its end the plugin repeats stale data
    key = Signer(Ed25519PrivateKey.generate())
    listen = getattr(request, "param", True)  # voice.listen_enabled (False: the default)
    config = write_config(tmp_path, mosquitto.port,
                          speaker={"enabled": True, "sample_rate": 22050, "volume": 1.0},
                          microphone={"enabled": True, "sample_rate": MIC_RATE},
                          bureau={"trusted_keys": [{"name": "test-bureau", "public_key": key.public_b64}]},
                          voice={"reply_after_talk_s": 3, "listen_enabled": listen, "listen_max_s": 2})
    bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
    parts = build_agent(load_config(config))
    parts.agent.start()
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bureau-sender")
    sender.connect("127.0.0.1", mosquitto.port)
    sender.loop_start()
    assert bureau.wait_for(lambda: bureau.payloads("status"), 10)
    try:
        yield Box(parts, bureau, key, sender, tmp_path / "data")
    finally:
        sender.loop_stop()
        sender.disconnect()
        parts.agent.stop(timeout=2)
        bureau.stop()


def device_key(data_dir: Path):
    return load_private_key(data_dir / "keys" / "device.key").public_key()


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def test_after_a_talk_the_reply_is_recorded_signed_and_decodes_at_the_bureau(box: Box):
    audio, _ = voice_wav(0.6, seed=5)
    args, _ = talk_args(audio, "wav")
    talk = box.send("talk", args)
    assert box.final(talk["id"])["result"] == "played"
    replies = box.bureau.wait_for(lambda: box.voices("reply"), 15)
    assert replies, box.bureau.payloads("voice")
    reply = replies[0]
    message, ogg = verify_voice_message(reply, device_key(box.data_dir))
    assert message["command_id"] == talk["id"] and message["site"] == "site-test" and not message["silent"]
    assert ogg is not None and message["format"] == "ogg" and message["codec"] == "opus"
    assert 2.5 <= message["seconds"] <= 3.05  # the crew spoke throughout: nothing to trim, capped at reply_s
    pcm = decode_audio(ogg, "ogg", rate=None, max_s=60)
    assert abs(pcm.duration_s - message["seconds"]) < 0.1
    assert abs(dominant_hz(pcm.samples, pcm.rate) - 440) < 3  # what the microphone heard
    # Tampering with the audio breaks the signature.
    bad = json.loads(json.dumps(reply))
    bad["message"]["seconds"] = 1.0
    with pytest.raises(VoiceMessageError):
        verify_voice_message(bad, device_key(box.data_dir))

    # `listen` is on in this box: 5 s asked, capped to listen_max_s (2), acked done with the message id.
    listen = box.send("listen", {"seconds": 5})
    final = box.final(listen["id"])
    assert final["result"] == "done", final
    heard = box.bureau.wait_for(lambda: box.voices("listen"), 10)
    assert heard and heard[0]["message"]["id"] == final["data"]["voice_id"]
    message, ogg = verify_voice_message(heard[0], device_key(box.data_dir))
    assert message["command_id"] == listen["id"] and 1.8 <= message["seconds"] <= 2.05
    assert ogg is not None and abs(dominant_hz(decode_audio(ogg, "ogg", rate=None, max_s=60).samples, 48000) - 440) < 3


@pytest.mark.parametrize("box", [False], indirect=True)
def test_listen_is_refused_while_it_is_off(box: Box):
    time.sleep(0.2)
    listen = box.send("listen", {"seconds": 2})
    final = box.final(listen["id"])
    assert (final["result"], final["reason"]) == ("refused", "listen_disabled")
    time.sleep(1.0)
    assert not box.bureau.payloads("voice")


def test_silence_is_trimmed_around_what_was_said():
    rate = 16000
    speech = crew_voice(1.0)
    x = np.concatenate([np.zeros(rate * 2, np.float32), speech, np.zeros(rate * 3, np.float32)])
    kept = trim_silence(x, rate, threshold_dbfs=-45, margin_s=0.2)
    assert abs(len(kept) / rate - 1.4) < 0.05  # the second of speech and 0.2 s either side
    assert trim_silence(np.zeros(rate * 2, np.float32), rate, threshold_dbfs=-45).size == 0
