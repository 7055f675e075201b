"""Talk latency: from the bureau publishing a signed `talk` to its first sample reaching the sound device.

Real parts, all on loopback: a real Mosquitto, the whole daemon, the speaker through PortAudio
into ALSA's file sink (as bench/alarm_latency.py; the sink does not pace, the driver does, so
"first sample out" is the moment the first block was written to the device). Two kinds of
talk, alternating: a 4-s Ogg/Opus message (~12 kB, inline in the command: what the console's
push-to-talk sends) and a 3-s 22.05 kHz WAV (~130 kB: three parts published before the
command). t0 is taken just before the first publish (the first part, or the command). Each
trial waits until the talk has played before the next. Target (issue 16): p95 <= 1.0 s.

Run: .venv/bin/python bench/talk_latency.py [--trials 20]   (needs mosquitto, libportaudio2;
ends with one JSON line)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import wave
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))  # the packages, not bench/detectors.py, answer `import detectors`

RATE = 22050


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def voice(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (180 + seed) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            + 0.03 * rng.standard_normal(t.size)).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2").tobytes())
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20, help="talks of each kind")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="talk-latency-"))
    # The ALSA file sink must be chosen before PortAudio starts.
    (work / "asound.conf").write_text(
        'pcm.!default { type plug; slave.pcm "tee_to_file" }\n'
        f'pcm.tee_to_file {{ type file; slave.pcm "null"; file "{work}/played.wav"; format "wav"; perm 0644 }}\n')
    os.environ["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{work}/asound.conf"

    import paho.mqtt.client as mqtt
    from agent_config import BASE, write_config
    from broker import Broker
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_agent.config import load_config
    from edge_agent.daemon import build_agent
    from edge_agent.security.bureau_command import sign_command, talk_args, talk_part_leaf
    from edge_agent.security.keys import Signer
    from edge_agent.voice.audio import encode_opus

    key = Signer(Ed25519PrivateKey.generate())
    (work / "broker").mkdir()
    broker = Broker(work / "broker").start()
    config = write_config(work, broker.port, speaker={"enabled": True, "sample_rate": RATE, "volume": 1.0},
                          bureau={"trusted_keys": [{"name": "bench", "public_key": key.public_b64}]},
                          voice={"reply_after_talk_s": 0})
    parts = build_agent(load_config(config))
    parts.agent.start()
    queue = parts.actions.queue
    assert queue is not None
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bureau")
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    time.sleep(2.0)  # the box is connected and subscribed
    results: dict[str, list[float]] = {"opus_inline": [], "wav_parts": []}
    missed = 0
    try:
        for trial in range(2 * args.trials):
            kind = "opus_inline" if trial % 2 == 0 else "wav_parts"
            if kind == "opus_inline":
                audio, fmt = encode_opus(voice(4.0, 48000, trial), 48000), "ogg"
            else:
                audio, fmt = wav_bytes(voice(3.0, RATE, trial), RATE), "wav"
            talk, pieces = talk_args(audio, fmt)
            now = datetime.now(timezone.utc)
            body = {"v": 1, "id": f"bench-{trial}", "name": "talk", "site": "site-test", "device": "box-1",
                    "issued_at": now.isoformat(), "expires_at": (now + timedelta(seconds=60)).isoformat(),
                    "nonce": f"{trial:08d}{time.time_ns():024d}", "args": talk}
            command = json.dumps(sign_command(body, key))  # signing is the bureau's time, not the link's
            clip_id = f"talk:{talk['sha256'][:16]}"
            t0 = time.monotonic()
            for i, piece in enumerate(pieces):
                sender.publish(f"{BASE}/{talk_part_leaf(talk['sha256'], i)}", piece, qos=1)
            sender.publish(f"{BASE}/cmd/talk", command, qos=1)
            if not queue.wait_for(lambda evs, c=clip_id: any(e.clip_id == c and e.event in ("played", "failed")
                                                             for e in evs), 20):
                missed += 1
                continue
            start = next((e.audio_start for e in queue.events() if e.clip_id == clip_id and e.audio_start), None)
            if start is None:
                missed += 1
                continue
            results[kind].append(start - t0)
    finally:
        sender.loop_stop()
        sender.disconnect()
        parts.agent.stop(timeout=2)
        broker.stop()
    both = results["opus_inline"] + results["wav_parts"]
    figures = {
        "bench": "talk_latency",
        "trials": len(both),
        "missed": missed,
        **{f"{k}_p50_s": round(percentile(v, 50), 3) for k, v in results.items() if v},
        **{f"{k}_p95_s": round(percentile(v, 95), 3) for k, v in results.items() if v},
        "p95_s": round(percentile(both, 95), 3) if both else None,
        "max_s": round(max(both), 3) if both else None,
        "target_p95_s": 1.0,
        "load_1min": round(os.getloadavg()[0], 2),
    }
    print(f"talk publish -> first sample out: p95 {figures['p95_s']} s over {len(both)} talks "
          f"(opus inline p50 {figures.get('opus_inline_p50_s')}, wav parts p50 {figures.get('wav_parts_p50_s')})",
          file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
