"""`edge-agent doctor`: PASS against a working site; each broken part fails with its hint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent_config import write_config
from broker import Broker, free_port
from serial_helpers import socat_pair

from drivers.modbus.profile import load_profile
from firmware_tools.simulator import ConstantSource, SimMeter, Simulator


def doctor(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent", "doctor", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def line(output: str, name: str) -> str:
    return next((ln for ln in output.splitlines() if ln[6:].startswith(name)), "")


def test_doctor_passes_on_a_working_site_and_names_each_failure(mosquitto: Broker, tmp_path: Path):
    with socat_pair(tmp_path) as pty:
        sim = Simulator(pty.meter, [SimMeter(load_profile("renke_rs_zs_n01"), 1, ConstantSource(61.5))]).start()
        try:
            meters = [{"id": "noise-1", "port": pty.agent, "profile": "renke_rs_zs_n01"}]
            good = doctor(write_config(tmp_path, mosquitto.port, meters=meters))
            assert good.returncode == 0, good.stdout
            assert line(good.stdout, "broker").startswith("PASS")
            assert line(good.stdout, "meter noise-1").startswith("PASS") and "noise_la=61.5" in good.stdout

            wrong_port = doctor(write_config(tmp_path, mosquitto.port, meters=[
                {"id": "noise-1", "port": str(tmp_path / "ttyNOPE"), "profile": "renke_rs_zs_n01"}]))
            assert wrong_port.returncode == 1
            assert line(wrong_port.stdout, "meter noise-1").startswith("FAIL")
            assert "ttyNOPE" in wrong_port.stdout and "/dev/serial/by-id" in wrong_port.stdout

            wrong_address = doctor(write_config(tmp_path, mosquitto.port, meters=[
                {"id": "noise-1", "port": pty.agent, "profile": "renke_rs_zs_n01", "address": 9}]))
            assert line(wrong_address.stdout, "meter noise-1").startswith("FAIL")
            assert "edge-fw scan" in wrong_address.stdout

            no_broker = doctor(write_config(tmp_path, free_port(), meters=meters))
            assert no_broker.returncode == 1
            assert line(no_broker.stdout, "broker").startswith("FAIL")
            assert "mqtt.host" in no_broker.stdout
            assert line(no_broker.stdout, "meter noise-1").startswith("PASS")  # one failure hides no other check
        finally:
            sim.stop()


def test_doctor_with_a_broken_config_points_at_the_lines(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("site: {id: s}\ndevice: {id: d}\nmqtt: {prot: 1}\n")
    result = doctor(config)
    assert result.returncode == 2
    assert f"{config}:3:" in result.stderr and "mqtt.prot" in result.stderr


def test_doctor_checks_cameras_speaker_and_relays(mosquitto: Broker, tmp_path: Path):
    from rtsp_helpers import RtspServer, require_rtsp
    from rtsp_helpers import free_port as rtsp_port

    require_rtsp()
    server = RtspServer(rtsp_port(), "--clock", "--fps", "10", "--gop", "10").start()
    try:
        zone = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]
        config = write_config(tmp_path, mosquitto.port,
                              cameras=[{"id": "cam1", "url": server.url, "zones": {"gate": zone}},
                                       {"id": "dead", "url": f"rtsp://127.0.0.1:{rtsp_port()}/cam",
                                        "open_timeout_s": 2}],
                              relays=[{"id": "strobe", "pin": 27}])
        env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
        result = subprocess.run([sys.executable, "-m", "edge_agent", "doctor", "--config", str(config), "--actuate"],
                                capture_output=True, text=True, timeout=90, env=env)
    finally:
        server.kill()
    out = result.stdout
    assert line(out, "camera cam1").startswith("PASS"), out
    saved = tmp_path / "data" / "doctor" / "cam1.jpg"
    assert saved.exists() and str(saved) in out and "1 zone(s) drawn" in out
    assert line(out, "camera dead").startswith("FAIL") and "VLC" in out
    assert line(out, "relay strobe").startswith("PASS") and "switched on for 1 s" in out
    assert line(out, "speaker").startswith("SKIP")  # tests run with the speaker off
    assert result.returncode == 1  # the dead camera


def test_doctor_passes_against_the_demo_site(tmp_path: Path):
    import shutil

    from rtsp_helpers import require_rtsp

    require_rtsp()
    if not shutil.which("socat"):
        import pytest

        pytest.skip("socat is not installed")
    out = tmp_path / "demo"
    demo = subprocess.Popen([sys.executable, "-m", "edge_agent", "demo", "--hardware-only", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert demo.stdout is not None
        for text in demo.stdout:  # the first run encodes the demo videos (cached afterwards)
            if "simulated hardware only" in text:
                break
        env = {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{out.resolve()}/asound.conf",
               "GPIOZERO_PIN_FACTORY": "mock"}
        result = subprocess.run([sys.executable, "-m", "edge_agent", "doctor", "--config", str(out / "config.yaml"),
                                 "--actuate"], capture_output=True, text=True, timeout=120, env=env)
    finally:
        demo.terminate()
        demo.wait(20)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("broker", "meter noise-1", "meter dust-1", "camera cam-smoke", "camera cam-yard",
                 "camera cam-exit", "speaker", "relay strobe", "relay spray"):
        assert line(result.stdout, name).startswith("PASS"), (name, result.stdout)
