"""The systemd unit verifies, and the daemon speaks the notify protocol (READY, WATCHDOG, STOPPING)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_config import write_config
from broker import Broker

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path):
    exe = Path(sys.executable).with_name("edge-agent")
    assert exe.exists(), "edge-agent console script not installed in this environment"
    unit = (ROOT / "systemd/edge-agent.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "ProtectSystem=strict" in unit
    (tmp_path / "edge-agent.service").write_text(unit.replace("/opt/edge-agent/venv/bin/edge-agent", str(exe)))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "edge-agent.service")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ready_then_watchdog_then_stopping(mosquitto: Broker, tmp_path: Path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config",
                             str(write_config(tmp_path, mosquitto.port))], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got: list[str] = []
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and got.count("WATCHDOG=1") < 2:
            try:
                got.append(sock.recv(256).decode())
            except TimeoutError:
                pass
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "STOPPING=1" not in got:
            try:
                got.append(sock.recv(256).decode())
            except TimeoutError:
                pass
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert got[0] == "READY=1"
    assert got.count("WATCHDOG=1") >= 2
    assert "STOPPING=1" in got
