"""Ingest from a real broker: Mosquitto (MQTT 5 and 3.1.1) and amqtt (3.1.1 only, as in the demo)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker import Broker, wait_port
from bureau_helpers import box
from paho.mqtt.enums import CallbackAPIVersion

from bureau.app import Console
from bureau.config import BureauConfig


def console_for(tmp: Path, port: int, protocol: str = "auto", **extra) -> Console:
    config = BureauConfig.model_validate({
        "mqtt": {"host": "127.0.0.1", "port": port, "protocol": protocol, "client_id": f"bureau-{time.time_ns()}"},
        "store": {"data_dir": str(tmp / "bureau")}, **extra})
    return Console(config)


def publisher(port: int, protocol: int = mqtt.MQTTv311) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"box-{time.time_ns()}", protocol=protocol)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def send(client: mqtt.Client, messages) -> None:
    infos = [client.publish(t, p, qos=1, retain=r) for t, p, r in messages]
    for info in infos:
        info.wait_for_publish(5)


def until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    return predicate()


def _exercise(console: Console, tmp: Path, port: int) -> None:
    b = box(tmp)
    pub = publisher(port)
    try:
        send(pub, [b.status()])
        now = datetime.now(timezone.utc)
        v = b.violation("noise_over_limit", "started", now, {"leq": 63.0, "limit": 55})
        _ev, bundle_msgs = b.bundle(v)
        send(pub, [b.telemetry(now.replace(second=0, microsecond=0), 61.0, 75.0, 90.0), b.event(v), *bundle_msgs])
        dev = until(lambda: (d := console.store.device(b.site, b.device)) and d["open_violations"] and d)
        assert dev and dev["state"] == "online" and dev["open_violations"] == 1
        bundles = until(lambda: [x for x in console.store.bundles(b.site, b.device)
                                 if x["verification"] == "unverified"])
        assert bundles and bundles[0]["violation_key"] == v.key
        assert console.store.events()[0]["bundle"] == bundles[0]["bundle"]
        # A forged status (another device's name in the payload) is refused and shown as such.
        topic, payload, _ = b.status()
        send(pub, [(topic, json.dumps({**json.loads(payload), "device": "crane-2"}).encode(), False)])
        assert until(lambda: console.store.refused())[0]["reason"].startswith("forged")
    finally:
        pub.loop_stop()
        pub.disconnect()


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_ingest_from_mosquitto(mosquitto: Broker, tmp_path: Path, protocol: str):
    console = console_for(tmp_path, mosquitto.port, protocol)
    console.start(connect_timeout=5)
    try:
        assert console.ingest.stats.connected
        assert console.ingest.stats.protocol == ("5" if protocol == "auto" else "3.1.1")
        _exercise(console, tmp_path, mosquitto.port)
    finally:
        console.stop()


def test_a_retained_status_and_what_came_while_the_bureau_was_down(mosquitto: Broker, tmp_path: Path):
    b = box(tmp_path)
    pub = publisher(mosquitto.port)
    console = console_for(tmp_path, mosquitto.port)
    console.config = console.config.model_copy(update={"mqtt": console.config.mqtt.model_copy(
        update={"client_id": "bureau-fixed"})})
    console.ingest.config = console.config
    try:
        send(pub, [b.status()])  # before the bureau ever ran: retained
        console.start(connect_timeout=5)
        assert until(lambda: (d := console.store.device(b.site, b.device)) and d["state"] == "online")
        console.stop()
        end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        send(pub, [b.telemetry(end - timedelta(minutes=i), 60.0, 70.0, 80.0) for i in range(5)])  # bureau down
        again = console_for(tmp_path, mosquitto.port)
        again.config = console.config
        again.ingest.config = console.config
        again.start(connect_timeout=5)
        try:
            rows = until(lambda: len(again.store.telemetry(b.site, b.device, 0, 2e9)) == 5)
            assert rows, "telemetry published while the bureau was down was lost"
        finally:
            again.stop()
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_ingest_from_amqtt_which_speaks_only_mqtt_3_1_1(tmp_path: Path):
    pytest.importorskip("amqtt")
    from edge_agent.demo.broker import EmbeddedBroker

    broker = EmbeddedBroker().start()
    wait_port(broker.port)
    console = console_for(tmp_path, broker.port, "auto")
    try:
        console.start(connect_timeout=8)
        assert console.ingest.stats.connected and console.ingest.stats.protocol == "3.1.1"
        _exercise(console, tmp_path, broker.port)
    finally:
        console.stop()
        broker.stop()
