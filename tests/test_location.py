"""Where and what: the site's location and each camera's pose go into the retained status and every
evidence manifest (一工地一码 / 一张图: the bureau's city map places the box), and the status carries
the config's warnings, with their lines, as the daemon logged them at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from agent_config import BASE, write_config
from broker import Broker, Recorder

from drivers.types import Reading
from edge_agent.config import load_checked, load_config
from edge_agent.evidence.bundle import open_store
from edge_agent.loopback import free_port
from edge_agent.types import Violation

LOCATION = {"latitude": 22.5333, "longitude": 113.9304, "datum": "GCJ-02", "address": "深圳市南山区"}
POSE = "east hoarding, facing the exit, 12 m up"


def site_config(tmp_path: Path, port: int) -> Path:
    return write_config(
        tmp_path, port,
        site={"location": LOCATION},
        # One camera (nothing listens on its port: the stream is down, its place is still known) and one
        # switched off, which is not on the map.
        cameras=[{"id": "cam-exit", "url": f"rtsp://127.0.0.1:{free_port()}/cam", "pose": POSE},
                 {"id": "cam-old", "url": "rtsp://127.0.0.1:1/old", "pose": "taken down", "enabled": False}],
        rules={"dust": {"quantity": "tsp"}},  # no meter gives it: a warning, at this line
    )


def test_location_cameras_and_warnings_in_the_retained_status(mosquitto: Broker, tmp_path: Path):
    config = site_config(tmp_path, mosquitto.port)
    line = next(i + 1 for i, text in enumerate(config.read_text(encoding="utf-8").splitlines())
                if "quantity: tsp" in text)
    bureau = Recorder(mosquitto.port, f"{BASE}/status").start()
    daemon = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        online = bureau.wait_for(lambda: [s for s in bureau.payloads("status") if s["state"] == "online"],
                                 timeout=30)
        assert online, "no online status"
    finally:
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=30)
        bureau.stop()
    status = online[0]
    assert status["location"] == {"name": "测试工地", **LOCATION}
    assert status["cameras"] == [{"id": "cam-exit", "pose": POSE}]
    warning = next(w for w in status["config_warnings"] if w["path"] == "rules.dust.quantity")
    assert warning["line"] == line and "no enabled meter gives 'tsp'" in warning["reason"]
    # Logged at start, as check-config prints it.
    assert f"config: {config}:{line}:" in output and "warning: rules.dust.quantity" in output, output[-2000:]
    # The retained copy a bureau that connects later gets is the same.
    late = Recorder(mosquitto.port, f"{BASE}/status", client_id="late-bureau").start()
    try:
        assert late.wait_for(lambda: late.payloads("status"), timeout=10)
        assert late.payloads("status")[-1]["location"]["latitude"] == 22.5333
    finally:
        late.stop()


def test_status_of_a_config_not_from_a_file_still_carries_its_warnings(tmp_path: Path):
    from edge_agent.app import Agent

    agent = Agent(load_config(site_config(tmp_path, free_port())))  # as the demo builds it: no lines
    try:
        status = agent.status_payload()
    finally:
        agent.outbox.close()
        agent.archive.close()
    warning = next(w for w in status["config_warnings"] if w["path"] == "rules.dust.quantity")
    assert set(warning) == {"path", "reason"} and "'tsp'" in warning["reason"]
    assert status["location"]["datum"] == "GCJ-02"


def test_location_and_poses_in_every_manifest_and_it_still_verifies(tmp_path: Path):
    config = load_checked(site_config(tmp_path, free_port())).config
    store = open_store(config)
    t = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
    violation = Violation(kind="dust_early_warning", state="started", key="dust_early_warning:dust-1:1", time=t,
                          started=t, source="dust-1", figures={"avg": 70.0, "warn_at": 64.0})
    readings = [Reading("dust-1", "pm10", 70.0, "ug/m3", t)]
    bundles = [store.for_violation(violation, readings), store.create([], subject={"command": "snapshot"})]
    for bundle in bundles:
        assert bundle.manifest["location"] == {"name": "测试工地", **LOCATION}
        assert bundle.manifest["cameras"] == [{"id": "cam-exit", "pose": POSE}]
        result = subprocess.run([sys.executable, "-m", "edge_agent", "verify-evidence", str(bundle.path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    chain = subprocess.run([sys.executable, "-m", "edge_agent", "verify-evidence", "--chain",
                            str(bundles[0].path.parent)], capture_output=True, text=True)
    assert chain.returncode == 0, chain.stdout + chain.stderr


def test_status_carries_the_limits_the_box_judges_by(tmp_path: Path) -> None:
    from agent_config import write_config

    from edge_agent.app import Agent
    from edge_agent.config import load_config
    from edge_agent.loopback import free_port

    config = load_config(write_config(tmp_path, free_port(), rules={
        "noise": {"day_limit_db": 65, "night_limit_db": 50, "indoor_offset_db": -10},
        "dust": {"quantity": "pm10", "limit": 80, "unit": "ug/m3"}}))
    limits = Agent(config).status_payload()["limits"]
    assert limits["noise"]["day_db"] == 55 and limits["noise"]["night_db"] == 40  # indoor: 10 dB lower
    assert limits["dust"] == {"quantity": "pm10", "window_s": config.rules.dust.window_s, "limit": 80,
                              "unit": "ug/m3", "enabled": True}
