"""Push-to-talk end to end: a signed `talk` over a real Mosquitto, played by the whole daemon.

The speaker plays through PortAudio into ALSA's file sink (test_speaker), so what reached the
"sound card" is compared sample for sample with the WAV the bureau sent. The ack timeline is
read from `cmd/ack` as the bureau would: accepted, queued, then played with the times.
Forged, oversized, truncated-part and replayed talks are refused and play nothing.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from agent_config import BASE, write_config
from broker import Broker, Recorder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from test_speaker import AlsaSink, alsa_file_sink

from edge_agent.config import load_config
from edge_agent.daemon import Parts, build_agent
from edge_agent.security.bureau_command import sign_command, talk_args, talk_part_leaf
from edge_agent.security.keys import Signer, write_private_key
from edge_agent.voice.audio import encode_opus

RATE = 22050


def voice_wav(seconds: float, seed: int = 1) -> tuple[bytes, np.ndarray]:
    """A WAV at the speaker's rate (no resampling: the capture must match sample for sample)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    ints = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(ints.tobytes())
    return buf.getvalue(), ints


def body(name: str, args: dict, *, nonce: str | None = None, lifetime_s: int = 60) -> dict:
    now = datetime.now(timezone.utc)
    return {"v": 1, "id": f"c-{name}-{time.monotonic_ns() % 10**9}", "name": name, "site": "site-test",
            "device": "box-1", "issued_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=lifetime_s)).isoformat(),
            "nonce": nonce or f"{time.monotonic_ns():032d}", "args": args}


@dataclass
class Box:
    parts: Parts
    bureau: Recorder
    key: Signer
    private: Ed25519PrivateKey
    sender: mqtt.Client
    sink: AlsaSink

    def publish(self, leaf: str, payload: bytes) -> None:
        self.sender.publish(f"{BASE}/{leaf}", payload, qos=1).wait_for_publish(5)

    def talk(self, audio: bytes, fmt: str, *, extra: dict | None = None, cut: int | None = None) -> dict:
        """Publish the parts (optionally one cut short), then the signed command."""
        args, parts = talk_args(audio, fmt)
        signed = sign_command(body("talk", {**args, **(extra or {})}), self.key)
        for i, part in enumerate(parts):
            self.publish(talk_part_leaf(args["sha256"], i), part[: len(part) // 2] if i == cut else part)
        self.publish("cmd/talk", json.dumps(signed).encode())
        return signed

    def acks(self, cid: str) -> list[dict]:
        return [a for a in self.bureau.payloads("cmd/ack") if a.get("id") == cid]

    def final(self, cid: str, timeout: float = 20) -> dict:
        got = self.bureau.wait_for(lambda: [a for a in self.acks(cid) if a["result"] not in ("accepted", "queued")],
                                   timeout)
        assert got, self.acks(cid)
        return got[0]


@pytest.fixture
def box(mosquitto: Broker, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    sink = alsa_file_sink(tmp_path_factory)
    private = Ed25519PrivateKey.generate()
    key = Signer(private)
    config = write_config(tmp_path, mosquitto.port,
                          speaker={"enabled": True, "sample_rate": RATE, "volume": 1.0},
                          bureau={"trusted_keys": [{"name": "test-bureau", "public_key": key.public_b64}]},
                          voice={"parts_timeout_s": 1.0, "reply_after_talk_s": 0})
    bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
    parts = build_agent(load_config(config))
    parts.agent.start()
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bureau-sender")
    sender.connect("127.0.0.1", mosquitto.port)
    sender.loop_start()
    # The box subscribes before it sends its first status: once that is here, commands reach it.
    assert bureau.wait_for(lambda: bureau.payloads("status"), 10)
    try:
        yield Box(parts, bureau, key, private, sender, sink)
    finally:
        sender.loop_stop()
        sender.disconnect()
        parts.agent.stop(timeout=2)
        bureau.stop()


def locate(haystack: np.ndarray, needle: np.ndarray) -> int | None:
    probe = needle[:64]
    for i in np.flatnonzero(haystack == probe[0]):
        start = int(i)
        if np.array_equal(haystack[start:start + len(needle)], needle):
            return start
    return None


def test_a_signed_talk_in_parts_is_played_sample_exact_and_acked_played(box: Box):
    audio, samples = voice_wav(2.0)  # 88 kB: two parts
    signed = box.talk(audio, "wav")
    assert len(signed["args"]["parts"]) == 2
    final = box.final(signed["id"])
    assert [a["result"] for a in box.acks(signed["id"])] == ["accepted", "queued", "played"]
    started, ended = (datetime.fromisoformat(final["data"][k]) for k in ("started", "ended"))
    assert timedelta(seconds=1.9) <= ended - started <= timedelta(seconds=3.0), (started, ended)
    queue = box.parts.actions.queue
    assert queue is not None
    talk_start = next(e for e in queue.events() if e.event == "started" and e.clip_id.startswith("talk:"))
    assert talk_start.priority.name == "TALK"
    box.parts.agent.stop(timeout=2)  # closes the speaker: the WAV header is final
    captured, rate = box.sink.captured()
    assert rate == RATE
    assert locate(captured, samples) is not None, "the talk is not in the captured audio sample for sample"


def test_parts_that_come_after_the_command_are_waited_for(box: Box):
    audio, _ = voice_wav(1.5, seed=6)
    args, parts = talk_args(audio, "wav")
    signed = sign_command(body("talk", args), box.key)
    box.publish("cmd/talk", json.dumps(signed).encode())
    queued = box.bureau.wait_for(lambda: [a for a in box.acks(signed["id"]) if a["result"] == "queued"], 5)
    assert queued and "waiting for 2 part(s)" in queued[0]["detail"]
    # The dispatcher is not held meanwhile: two more commands (as many as it has workers) are answered.
    pings = [sign_command(body("ping", {}), box.key) for _ in range(2)]
    for ping in pings:
        box.publish("cmd/ping", json.dumps(ping).encode())
    for ping in pings:
        assert box.final(ping["id"], timeout=3)["result"] == "done"
    for i, part in enumerate(parts):
        box.publish(talk_part_leaf(args["sha256"], i), part)
    assert box.final(signed["id"])["result"] == "played"


def test_an_opus_talk_inline_is_decoded_resampled_and_played(box: Box):
    t = np.arange(48000) / 48000
    opus = encode_opus((0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000)
    signed = box.talk(opus, "ogg")
    assert "data" in signed["args"]
    final = box.final(signed["id"])
    assert final["result"] == "played", final
    box.parts.agent.stop(timeout=2)
    captured, _ = box.sink.captured()
    loud = captured[np.flatnonzero(np.abs(captured) > 1000)[0]:][: RATE]
    spectrum = np.abs(np.fft.rfft(loud.astype(np.float64)))
    assert abs(np.argmax(spectrum) * RATE / len(loud) - 440) < 5  # the tone, at the device's 22.05 kHz


def test_forged_oversized_truncated_and_replayed_talks_are_refused(box: Box):
    audio, _ = voice_wav(2.0, seed=2)
    # Forged: a valid talk whose signed audio hash was swapped afterwards.
    args, _ = talk_args(audio, "wav")
    forged = sign_command(body("talk", args), box.key)
    forged["args"] = {**forged["args"], "sha256": "0" * 64}
    box.publish("cmd/talk", json.dumps(forged).encode())
    # Forged by another key.
    stranger = sign_command(body("talk", talk_args(audio[:40000], "wav")[0]), Signer(Ed25519PrivateKey.generate()))
    box.publish("cmd/talk", json.dumps(stranger).encode())
    # Oversized: more audio than a talk may carry, signed and all.
    big = sign_command(body("talk", {"format": "wav", "size": 400_000, "sha256": "a" * 64,
                                     "parts": ["b" * 64] * 7}), box.key)
    box.publish("cmd/talk", json.dumps(big).encode())
    # Truncated part: the second part arrives cut in half; it never matches its signed hash.
    truncated = box.talk(audio, "wav", cut=1)
    # Replayed: the very same signed talk twice.
    small, _ = voice_wav(0.5, seed=3)
    once = box.talk(small, "wav")
    box.publish("cmd/talk", json.dumps(once).encode())

    assert box.final(forged["id"])["reason"] == "bad_signature"
    assert box.final(stranger["id"])["reason"] == "unknown_key"
    assert box.final(big["id"])["reason"] == "oversize"
    cut = box.final(truncated["id"])
    assert (cut["result"], cut["reason"]) == ("refused", "incomplete_audio"), cut
    results = box.bureau.wait_for(lambda: [a["result"] for a in box.acks(once["id"])].count("refused") == 1
                                  and [a for a in box.acks(once["id"]) if a["result"] == "played"], 15)
    assert results, box.acks(once["id"])
    assert [a.get("reason") for a in box.acks(once["id"]) if a["result"] == "refused"] == ["replayed"]
    # Only the one genuine talk reached the speaker.
    queue = box.parts.actions.queue
    assert queue is not None
    played = [e.clip_id for e in queue.events() if e.event == "started" and e.clip_id.startswith("talk:")]
    assert played == [f"talk:{once['args']['sha256'][:16]}"]
    assert box.parts.agent.status_payload()["components"]["voice"]["talk"]["incomplete_audio"] == 1


def test_the_cli_signs_a_talk_with_its_parts(box: Box, tmp_path: Path):
    audio, _ = voice_wav(1.5, seed=4)
    wav = tmp_path / "officer.wav"
    wav.write_bytes(audio)
    key_file = tmp_path / "bureau.key"
    write_private_key(key_file, box.private)
    tool = subprocess.run([sys.executable, "-m", "edge_agent", "sign-command", "talk", "--key", str(key_file),
                           "--site", "site-test", "--device", "box-1", "--audio", str(wav),
                           "--parts-dir", str(tmp_path / "parts")], capture_output=True, check=True, timeout=30)
    lines = tool.stderr.decode().splitlines()
    part_lines = [line for line in lines if line.startswith("part ")]
    assert len(part_lines) == 2 and f"topic: {BASE}/cmd/talk" in lines
    for line in part_lines:  # what an operator runs, with the test broker's port
        cmd = line.split(": ", 1)[1].split()
        assert cmd[0] == "mosquitto_pub"
        subprocess.run([cmd[0], "-p", str(box.bureau.port), *cmd[1:]], check=True, timeout=10)
    subprocess.run(["mosquitto_pub", "-p", str(box.bureau.port), "-q", "1", "-t", f"{BASE}/cmd/talk", "-s"],
                   input=tool.stdout, check=True, timeout=10)
    signed = json.loads(tool.stdout)
    assert box.final(signed["id"])["result"] == "played"
