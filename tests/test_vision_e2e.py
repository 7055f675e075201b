"""Camera to violation to evidence, on real parts: a GStreamer RTSP server on loopback serving a
synthetic scene in which a black plume appears, the whole daemon, a real Mosquitto. The
bureau must get a `black_smoke` event with a Ringelmann grade, and a bundle holding the
watermarked snapshot and a playable clip that verifies; `snapshot` from the bureau works too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agent_config import BASE, send_signed_command, write_config
from broker import Broker, Recorder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rtsp_helpers import RtspServer, free_port, require_ffmpeg, require_rtsp
from test_shout_stop_e2e import save_bundle

from edge_agent.config import load_config
from edge_agent.daemon import build_agent
from edge_agent.security.keys import Signer

FPS = 5


@pytest.fixture(scope="module")
def smoke_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_rtsp()
    require_ffmpeg()
    from camera_scenes import encode

    from detectors.training.synth import SmokeScene

    scene = SmokeScene(opacity=0.8, kind="sky", start=6, seed=3)  # the plume appears after 6 s
    path = tmp_path_factory.mktemp("video") / "smoke.mp4"
    return encode(path, (scene.frame(i // FPS) for i in range(45 * FPS)), fps=FPS, gop=FPS)


def test_black_plume_on_camera_gives_graded_event_and_verified_evidence(
        mosquitto: Broker, tmp_path: Path, smoke_video: Path):
    bureau_key = Signer(Ed25519PrivateKey.generate())
    server = RtspServer(free_port(), "--file", str(smoke_video)).start()
    config = write_config(tmp_path, mosquitto.port,
                          cameras=[{"id": "cam1", "url": server.url, "analysis_fps": 1, "clip_pre_s": 3,
                                    "clip_post_s": 3, "detectors": ["black_smoke"]}],
                          bureau={"trusted_keys": [{"name": "bureau", "public_key": bureau_key.public_b64}]})
    bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
    parts = build_agent(load_config(config))
    agent = parts.agent
    agent.start()
    try:
        started = bureau.wait_for(lambda: [e for e in bureau.payloads("event")
                                           if e["kind"] == "black_smoke" and e["state"] == "started"], timeout=40)
        assert started, f"no black_smoke event; events: {bureau.payloads('event')}"
        figures = started[0]["figures"]
        assert started[0]["source"] == "cam1"
        assert abs(float(figures["ringelmann"]) - 4.0) <= 1.0  # 80 % opacity is grade 4

        bundle = bureau.wait_for(lambda: save_bundle(bureau, tmp_path / "got", started[0]["key"]), timeout=30)
        assert bundle is not None, "no complete evidence bundle"
        names = {p.name for p in bundle.iterdir()}
        assert {"snapshot.jpg", "clip.mp4", "manifest.json"} <= names
        # What the detector saw: the plume outlined on a copy (the clean frame stays), its crop and
        # the background patch the Ringelmann grade was read against.
        assert {"snapshot_marked.jpg", "detector_crop.jpg", "detector_background.jpg"} <= names
        import cv2

        clean, marked = (cv2.imread(str(bundle / n)) for n in ("snapshot.jpg", "snapshot_marked.jpg"))
        assert clean.shape == marked.shape
        red = (marked[..., 2].astype(int) - marked[..., 1].astype(int) > 120) & (marked[..., 0] < 80)
        assert red.sum() > 100, "the marked snapshot outlines nothing"
        verify = subprocess.run([sys.executable, "-m", "edge_agent", "verify-evidence", str(bundle)],
                                capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        if shutil.which("ffprobe"):
            probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json",
                                    str(bundle / "clip.mp4")], capture_output=True, text=True)
            assert probe.returncode == 0 and float(json.loads(probe.stdout)["format"]["duration"]) >= 3

        # The bureau asks for a snapshot: it comes back as a signed bundle of its own.
        send_signed_command(mosquitto.port, bureau_key, "snapshot", {"camera": "cam1"}, "5" * 32)
        done = bureau.wait_for(lambda: [a for a in bureau.payloads("cmd/ack")
                                        if a["command"] == "snapshot" and a["result"] == "done"], timeout=15)
        assert done, bureau.payloads("cmd/ack")
        evidence_id = done[0]["data"]["evidence"]
        assert bureau.wait_for(lambda: any(m.topic.startswith(f"{BASE}/evidence/{evidence_id}/snapshot.jpg")
                                           for m in list(bureau.messages)), timeout=10)

        # The camera was re-aimed on purpose: the bureau tells the box to learn its new view.
        send_signed_command(mosquitto.port, bureau_key, "relearn_view", {"camera": "cam1"}, "6" * 32)
        assert bureau.wait_for(lambda: [a for a in bureau.payloads("cmd/ack")
                                        if a["command"] == "relearn_view" and a["result"] == "done"], timeout=15)
    finally:
        agent.stop(timeout=2)
        bureau.stop()
        server.kill()
