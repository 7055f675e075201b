"""`edge-agent doctor`: PASS against a working site; each broken part fails with its hint."""

from __future__ import annotations

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
