"""Bureau commands end to end: a test bureau, a real Mosquitto on 127.0.0.1, the real agent."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from agent_config import BASE, write_config
from broker import Broker, Recorder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.app import Agent
from edge_agent.command_dispatch import AckResult, CommandDispatcher
from edge_agent.config import load_config
from edge_agent.daemon import build_agent
from edge_agent.security.bureau_command import Command, sign_command
from edge_agent.security.keys import Signer, private_pem


@dataclass
class Box:
    agent: Agent
    dispatcher: CommandDispatcher
    bureau: Recorder
    key: Signer
    key_file: Path
    shouts: list[Command]
    release: threading.Event


@pytest.fixture
def sender(mosquitto: Broker) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bureau-sender")
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def send(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(5)


def command(key: Signer, name: str, args: dict[str, Any], **over: Any) -> bytes:
    now = datetime.now(timezone.utc)
    body = {"v": 1, "id": f"c-{name}-{now.timestamp()}", "name": name, "site": "site-test", "device": "box-1",
            "issued_at": now.isoformat(), "expires_at": (now + timedelta(seconds=60)).isoformat(),
            "nonce": Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex(), "args": args, **over}
    return json.dumps(sign_command(body, key), ensure_ascii=False).encode()


def acks(box: Box, result: str | None = None) -> list[dict[str, Any]]:
    return [a for a in box.bureau.payloads("cmd/ack") if result is None or a["result"] == result]


@pytest.fixture
def box(mosquitto: Broker, tmp_path: Path) -> Iterator[Box]:
    key = Signer(Ed25519PrivateKey.generate())
    key_file = tmp_path / "bureau.key"
    key_file.write_bytes(private_pem(key.private))
    config = load_config(write_config(tmp_path, mosquitto.port, bureau={
        "trusted_keys": [{"name": "test-bureau", "public_key": key.public_b64}]}))
    parts = build_agent(config)
    agent = parts.agent
    dispatcher: CommandDispatcher = parts.commands  # wired by the daemon
    shouts: list[Command] = []
    release = threading.Event()
    release.set()

    def shout(cmd: Command) -> AckResult:
        shouts.append(cmd)
        release.wait(10)
        return AckResult("done", data={"clip": cmd.args.get("clip")})

    dispatcher.register("shout", shout)  # a stand-in for the speaker, to hold and count shouts
    bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
    agent.start()
    # The agent subscribes before it publishes "online": once that arrives, commands will too.
    assert bureau.wait_for(lambda: any(p.get("state") == "online" for p in bureau.payloads("status")))
    try:
        yield Box(agent, dispatcher, bureau, key, key_file, shouts, release)
    finally:
        release.set()
        agent.stop(timeout=2)
        bureau.stop()


def test_signed_shout_over_mosquitto_reaches_the_handler_and_is_acked(box: Box, sender: mqtt.Client):
    send(sender, f"{BASE}/cmd/shout", command(box.key, "shout", {"clip": "stop_work"}))
    done = box.bureau.wait_for(lambda: acks(box, "done"))
    assert done and done[0]["command"] == "shout" and done[0]["data"] == {"clip": "stop_work"}
    assert [c.args["clip"] for c in box.shouts] == ["stop_work"]
    assert [a["result"] for a in acks(box)] == ["accepted", "done"]
    assert done[0]["site"] == "site-test" and done[0]["time"].endswith("+08:00")
    assert "clock_synchronized" in done[0]


def test_signed_by_the_sign_command_tool_piped_to_mosquitto_pub(box: Box, mosquitto: Broker):
    tool = subprocess.run(
        [sys.executable, "-m", "edge_agent", "sign-command", "shout", "--key", str(box.key_file),
         "--site", "site-test", "--device", "box-1", "--arg", "clip=dust_warning"],
        capture_output=True, check=True)
    assert f"topic: {BASE}/cmd/shout" in tool.stderr.decode()
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1",
                    "-t", f"{BASE}/cmd/shout", "-s"], input=tool.stdout, check=True, timeout=10)
    assert box.bureau.wait_for(lambda: acks(box, "done"))
    assert [c.args["clip"] for c in box.shouts] == ["dust_warning"]
    # The same bytes again: a replay.
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1",
                    "-t", f"{BASE}/cmd/shout", "-s"], input=tool.stdout, check=True, timeout=10)
    refused = box.bureau.wait_for(lambda: acks(box, "refused"))
    assert refused and refused[0]["reason"] == "replayed" and len(box.shouts) == 1


def test_forged_and_garbage_commands_over_mqtt_are_refused_and_never_play(box: Box, sender: mqtt.Client):
    stranger = Signer(Ed25519PrivateKey.generate())
    send(sender, f"{BASE}/cmd/shout", command(stranger, "shout", {"clip": "stop_work"}))
    send(sender, f"{BASE}/cmd/shout", b"\x00\xff garbage")
    send(sender, f"{BASE}/cmd/shout", command(box.key, "shout", {"clip": "x"}, device="box-2"))
    refused = box.bureau.wait_for(lambda: len(acks(box, "refused")) >= 3 and acks(box, "refused"))
    assert [a["reason"] for a in refused] == ["unknown_key", "malformed", "wrong_target"]
    assert box.shouts == []
    assert box.agent.uplink.health.connected
    status = box.agent.status_payload()
    assert status["components"]["commands"]["refused"] == {"unknown_key": 1, "malformed": 1, "wrong_target": 1}


def test_a_long_shout_does_not_hold_up_a_ping(box: Box, sender: mqtt.Client):
    box.release.clear()
    send(sender, f"{BASE}/cmd/shout", command(box.key, "shout", {"clip": "stop_work"}))
    assert box.bureau.wait_for(lambda: box.shouts)  # the shout is playing (blocked)
    send(sender, f"{BASE}/cmd/ping", command(box.key, "ping", {}))
    done = box.bureau.wait_for(lambda: acks(box, "done"))
    assert [a["command"] for a in done] == ["ping"]
    box.release.set()
    assert box.bureau.wait_for(lambda: len(acks(box, "done")) == 2)
