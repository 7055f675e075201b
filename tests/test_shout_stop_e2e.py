"""The shout-stop loop end to end, on real parts.

A simulated noise meter on a socat pty pair, the whole daemon, a real Mosquitto, the speaker
through PortAudio into the ALSA file sink, and gpiozero's mock pins. Noise over the night
limit must give a `noise_over_limit` event, the warning clip (checked sample by sample in
the captured audio), the strobe, and a signed evidence bundle that verifies at the bureau;
when the noise drops, `ended` and the strobe goes low. A signed bureau `shout` plays.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from agent_config import BASE, send_signed_command, write_config
from broker import Broker, Recorder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from serial_helpers import socat_pair
from test_actions import levels
from test_speaker import AlsaSink, alsa_file_sink, espeak_cache, read_int16

from drivers.modbus.profile import load_profile
from edge_agent.clock import SkippingClock
from edge_agent.config import load_config
from edge_agent.daemon import build_agent
from edge_agent.evidence.publish import Reassembly
from edge_agent.security.keys import Signer
from firmware_tools.simulator import ConstantSource, SimMeter, Simulator

STROBE, SPRAY = 27, 17
ALWAYS_NIGHT = {"night": [{"start": "00:00", "end": "00:00"}], "quiet": []}


def events(bureau: Recorder, kind: str, state: str) -> list[dict]:
    return [e for e in bureau.payloads("event") if e["kind"] == kind and e["state"] == state]


def save_bundle(bureau: Recorder, folder: Path, violation_key: str) -> Path | None:
    """Rebuild, from what the bureau received, the bundle whose manifest names this violation."""
    with bureau.lock:
        msgs = list(bureau.messages)
    for msg in msgs:
        if not msg.topic.endswith("/evidence"):
            continue
        manifest = json.loads(msg.payload)
        if (manifest.get("violation") or {}).get("key") != violation_key:
            continue
        joined = Reassembly()  # a file over 256 kB (a clip) comes in parts
        for m in msgs:
            if m.topic.startswith(f"{BASE}/evidence/{manifest['id']}/"):
                joined.add(m.topic[len(BASE) + 1:], m.payload)
        files = {name: data for (_, name), data in joined.files(manifest["id"]).items()}
        if set(files) != {f["name"] for f in manifest["files"]}:
            return None  # not all of it has arrived yet
        out = folder / manifest["id"]
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_bytes(msg.payload)
        for name, data in files.items():
            (out / name).write_bytes(data)
        return out
    return None


def test_noise_over_night_limit_warns_strobes_and_sends_verified_evidence(
        mosquitto: Broker, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, pins: object):
    sink: AlsaSink = alsa_file_sink(tmp_path_factory)
    espeak_cache(tmp_path_factory)  # skips without espeak-ng
    bureau_key = Signer(Ed25519PrivateKey.generate())
    with socat_pair(tmp_path) as pty:
        sim = Simulator(pty.meter, [SimMeter(load_profile("renke_rs_zs_n01"), 1, ConstantSource(45.0))]).start()
        config = write_config(
            tmp_path, mosquitto.port,
            meters=[{"id": "noise-1", "port": pty.agent, "profile": "renke_rs_zs_n01", "poll_interval_s": 0.5}],
            schedule=ALWAYS_NIGHT,
            speaker={"enabled": True, "sample_rate": 22050, "volume": 1.0},
            relays=[{"id": "strobe", "pin": STROBE}, {"id": "spray", "pin": SPRAY}],
            rules={"figure_validity": 0.1,  # the 60 s window counts after 6 s, to keep the test short
                   "noise": {"window_s": 60, "timing": {"min_duration_s": 2, "clear_s": 1, "cooldown_s": 0}},
                   "early_warning": {"enabled": False}, "night_lmax": {"enabled": False},
                   "night_work": {"enabled": False}},
            bureau={"trusted_keys": [{"name": "test-bureau", "public_key": bureau_key.public_b64}]},
        )
        bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
        clock = SkippingClock()
        parts = build_agent(load_config(config), clock=clock)
        agent = parts.agent
        agent.start()
        actions = parts.actions
        try:
            # Let the 60 s LAeq become valid at a quiet 45 dB(A): no violation.
            engine = parts.figures.engine
            assert bureau.wait_for(lambda: any(m.figure == "leq" and m.window_s == 60 and m.valid
                                               for m in engine.rolling(clock.now())), timeout=20)
            assert not bureau.payloads("event")

            sim.set_value("noise_la", 75.0)  # over the night limit of 55
            ramp = datetime.now(timezone.utc)
            started = bureau.wait_for(lambda: events(bureau, "noise_over_limit", "started"), timeout=15)
            assert started, "no noise_over_limit event"
            began = datetime.fromisoformat(started[0]["started"])
            assert started[0]["figures"]["limit"] == 55 and started[0]["figures"]["leq"] > 55
            # Published within the configured minimum duration (2 s) plus one poll and one evaluation.
            assert began - ramp < timedelta(seconds=2) and datetime.fromisoformat(started[0]["time"]) - began >= \
                timedelta(seconds=2)
            assert levels(pins, STROBE) == [True] and levels(pins, SPRAY) == []
            assert actions.queue.wait_for(lambda evs: any(e.event == "played" and e.clip_id == "noise_stop"
                                                          for e in evs), 30)
            # ... and the bureau learns the warning was really given (all 3 repeats): an announcement event.
            given = bureau.wait_for(lambda: [e for e in events(bureau, "announcement", "ended")
                                             if e["figures"]["violation_key"] == started[0]["key"]], 30)
            assert given and given[0]["figures"]["result"] == "played", given
            assert given[0]["figures"]["started"] < given[0]["figures"]["ended"]

            bundle = bureau.wait_for(lambda: save_bundle(bureau, tmp_path / "received", started[0]["key"]),
                                     timeout=15)
            assert bundle is not None, "no complete evidence bundle for the violation"
            verify = subprocess.run([sys.executable, "-m", "edge_agent", "verify-evidence", str(bundle)],
                                    capture_output=True, text=True)
            assert verify.returncode == 0, verify.stdout + verify.stderr
            readings = json.loads((bundle / "readings.json").read_bytes())["readings"]
            assert any(r["value"] == 75.0 for r in readings) and any(r["value"] == 45.0 for r in readings)

            sim.set_value("noise_la", 30.0)  # the loud samples must leave the 60 s window:
            clock.skip(60)  # move the agent's clock on rather than wait a minute
            ended = bureau.wait_for(lambda: events(bureau, "noise_over_limit", "ended"), timeout=30)
            assert ended and ended[0]["key"] == started[0]["key"]
            assert levels(pins, STROBE) == [True, False]

            # A signed shout from the bureau plays (in the same daemon, same speaker).
            send_signed_command(mosquitto.port, bureau_key, "shout", {"clip": "shout"}, "9" * 32)
            played = bureau.wait_for(lambda: [a for a in bureau.payloads("cmd/ack") if a["result"] == "played"], 30)
            assert played and played[0]["data"]["started"] < played[0]["data"]["ended"], bureau.payloads("cmd/ack")
            assert actions.queue.wait_for(lambda evs: any(e.event == "played" and e.clip_id == "shout"
                                                          for e in evs), 30)
        finally:
            agent.stop(timeout=2)
            bureau.stop()
            sim.stop()

    # A clip reached the sound card sample for sample, after its onset. The capture file holds
    # the last stream the speaker opened: the shout, and the warning clip if the shout came in
    # the same stream (the warning may have been cut when its violation ended: a cut clip's
    # first samples match, the rest not, so every onset is tried).
    captured, _rate = sink.captured()
    for clip_id in ("shout", "noise_stop"):
        reference = read_int16(actions.clips.get(clip_id).path)
        first = int(np.flatnonzero(reference)[0])
        whole = reference[first:]
        if any(np.array_equal(captured[i:i + len(whole)], whole) for i in _onsets(captured, whole[:2000])):
            return
    pytest.fail("neither the shout nor the warning clip was found whole in the captured audio")


def _onsets(haystack: np.ndarray, needle: np.ndarray) -> list[int]:
    """Every exact position of `needle` in `haystack` (the ALSA file path is bit-exact)."""
    if len(needle) == 0 or len(haystack) < len(needle):
        return []
    candidates = np.flatnonzero(haystack[: len(haystack) - len(needle) + 1] == needle[0])
    return [int(i) for i in candidates if np.array_equal(haystack[i:i + len(needle)], needle)]
