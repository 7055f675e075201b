"""Every lost connection gives the bureau its own "offline" Last Will, with its own msg_id.

The bureau de-duplicates by msg_id; a Will that always said `"msg_id": "will"` was dropped
there after the first, so the second and later outages of a box went unseen.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from agent_config import BASE, write_config
from broker import Broker, Recorder

from edge_agent.config.mqtt import MqttConfig
from edge_agent.outbox import Outbox, encode_json
from edge_agent.uplink.mqtt import MqttUplink
from edge_agent.uplink.topics import Topics


def wills(bureau: Recorder) -> list[dict]:
    return [p for p in bureau.payloads("status") if p.get("reason") == "connection lost"]


def wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_two_sigkills_give_two_offline_wills_with_different_msg_ids(mosquitto: Broker, tmp_path: Path):
    config = write_config(tmp_path, mosquitto.port)
    bureau = Recorder(mosquitto.port, f"{BASE}/status", client_id="will-bureau").start()
    try:
        for n in (1, 2):
            online_before = sum(p.get("state") == "online" for p in bureau.payloads("status"))
            proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                assert wait(lambda before=online_before: sum(p.get("state") == "online"
                                                             for p in bureau.payloads("status")) > before, 30)
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert wait(lambda n=n: len(wills(bureau)) == n), f"no Last Will after kill {n}"
        first, second = wills(bureau)
        assert first["msg_id"] != second["msg_id"]
        assert first["state"] == second["state"] == "offline" and first["device"] == "box-1"
    finally:
        bureau.stop()


def test_each_reconnection_of_one_process_sets_a_fresh_will(mosquitto: Broker, tmp_path: Path):
    """Drops the broker detects (the TCP connection cut, no DISCONNECT) while the process lives on."""
    bureau = Recorder(mosquitto.port, f"{BASE}/status", client_id="will-bureau-2").start()
    outbox = Outbox(tmp_path / "outbox.sqlite", 10_000_000)
    uplink = MqttUplink(MqttConfig(port=mosquitto.port, reconnect_min_s=0.2, reconnect_max_s=0.5), Topics(
        "edge/v1", "site-test", "box-1"), outbox,
        will=lambda msg_id: encode_json({"device": "box-1", "state": "offline", "reason": "connection lost"},
                                        msg_id))
    uplink.start()
    seen: list[str] = []
    try:
        for n in (1, 2, 3):
            assert wait(lambda n=n: uplink.health.connected and uplink.health.connects == n)
            seen.append(uplink.will_msg_id)
            client = uplink._client
            assert client is not None
            sock = client.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)  # as a dead mobile link: the broker publishes the Will
            assert wait(lambda n=n: len(wills(bureau)) == n), f"no Last Will after drop {n}"
        got = [p["msg_id"] for p in wills(bureau)]
        assert got == seen and len(set(got)) == 3
    finally:
        uplink.stop(timeout=1)
        outbox.close()
        bureau.stop()
