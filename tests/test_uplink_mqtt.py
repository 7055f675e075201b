"""The outbox-to-broker path against a real Mosquitto on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_config import BASE, write_config
from broker import Broker, Recorder, free_port, make_password_file, make_tls_files, retained

from edge_agent.config import load_config
from edge_agent.daemon import build_agent

HERE = Path(__file__).resolve().parent


def dedupe(payloads: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for p in payloads:
        if p["msg_id"] not in seen:
            seen.add(p["msg_id"])
            out.append(p)
    return out


def test_backlog_while_broker_down_arrives_in_order_exactly_once(mosquitto: Broker, tmp_path: Path):
    bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
    mosquitto.stop()  # the bureau's session and subscription are persisted by the broker
    parts = build_agent(load_config(write_config(tmp_path, mosquitto.port)))
    agent = parts.agent
    agent.start()
    try:
        for seq in range(1000):
            agent.publish("event", {"seq": seq}, kind="event")
        assert agent.outbox.depth_by_kind().get("event") == 1000
        assert not agent.uplink.health.connected
        mosquitto.start()
        events = bureau.wait_for(lambda: len(dedupe(bureau.payloads("event"))) >= 1000 and
                                 dedupe(bureau.payloads("event")), timeout=30)
        unique = dedupe(bureau.payloads("event"))
        assert [p["seq"] for p in unique] == list(range(1000))
        assert len({p["msg_id"] for p in events}) == 1000
        assert bureau.wait_for(lambda: agent.outbox.depth_by_kind().get("event", 0) == 0, timeout=10)
    finally:
        agent.stop(timeout=2)
        bureau.stop()


def test_status_online_with_version_uptime_outbox_and_clock(mosquitto: Broker, tmp_path: Path):
    parts = build_agent(load_config(write_config(tmp_path, mosquitto.port)))
    agent = parts.agent
    agent.start()
    try:
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            raw = retained(mosquitto.port, f"{BASE}/status", timeout=1)
            status = json.loads(raw) if raw else None
            if status and status["state"] == "online":
                break
        assert status is not None and status["state"] == "online"
        assert status["version"]
        assert status["uptime_s"] >= 0
        assert "depth" in status["outbox"]
        assert "synchronized" in status["clock"]
        assert status["components"]["uplink"]["connected"] is True
        assert status["time"].endswith("+08:00")  # site time zone, with offset
    finally:
        agent.stop(timeout=2)


def test_producer_sigkilled_20_times_loses_nothing_it_acknowledged(mosquitto: Broker, tmp_path: Path):
    config = write_config(tmp_path, mosquitto.port)
    bureau = Recorder(mosquitto.port, f"{BASE}/event").start()
    rng = random.Random(20261123)
    acked: set[int] = set()
    total = 3000
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(HERE / "producer.py"), str(config)]

    def read_acks(proc: subprocess.Popen[str]) -> None:
        out = proc.stdout.read() if proc.stdout else ""
        for line in out.splitlines():
            if line.startswith("ACK "):
                acked.add(int(line.split()[1]))

    try:
        for _ in range(20):
            start = max(acked) + 1 if acked else 0
            proc = subprocess.Popen([*cmd, str(start), str(total)], stdout=subprocess.PIPE, text=True, env=env)
            time.sleep(rng.uniform(0.3, 1.2))  # start-up, then a random moment of producing/draining
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            read_acks(proc)
        start = max(acked) + 1 if acked else 0
        final = subprocess.run([*cmd, str(start), str(total)], capture_output=True, text=True, env=env,
                               timeout=120)
        assert "DONE" in final.stdout, final.stderr[-2000:]
        for line in final.stdout.splitlines():
            if line.startswith("ACK "):
                acked.add(int(line.split()[1]))
        assert len(acked) > 100  # the kills really hit a producer that was producing
        got = bureau.wait_for(lambda: acked <= {p["seq"] for p in bureau.payloads("event")} and True,
                              timeout=20)
        received = {p["seq"] for p in bureau.payloads("event")}
        missing = sorted(acked - received)
        assert got and not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:10]}"
    finally:
        bureau.stop()


@pytest.fixture
def tls_broker(tmp_path: Path):
    import shutil

    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd is not installed")
    work = tmp_path / "tlsbroker"
    work.mkdir()
    files = make_tls_files(work)
    broker = Broker(work, tls_port=free_port(), tls_files=files,
                    password_file=make_password_file(work, "site-test", "s3cret-口令"))
    broker.start()
    yield broker
    broker.stop()


def test_tls_with_test_ca_and_password_file(tls_broker: Broker, tmp_path: Path):
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret-口令\n", encoding="utf-8")
    assert tls_broker.tls_files and tls_broker.tls_port
    config = write_config(tmp_path, tls_broker.tls_port, mqtt={
        "host": "localhost", "tls": {"ca_file": str(tls_broker.tls_files["ca"])},
        "username": "site-test", "password": {"file": str(secret)}})
    bureau = Recorder(tls_broker.port, f"{BASE}/event").start()  # plain listener, same broker
    parts = build_agent(load_config(config))
    agent = parts.agent
    agent.start()
    try:
        agent.publish("event", {"seq": 1}, kind="event")
        assert bureau.wait_for(lambda: bureau.payloads("event"), timeout=10)
        assert agent.uplink.health.connected
    finally:
        agent.stop(timeout=2)
        bureau.stop()


def test_wrong_password_logs_clearly_and_retries(tls_broker: Broker, tmp_path: Path, caplog):
    assert tls_broker.tls_files and tls_broker.tls_port
    os.environ["EDGE_TEST_MQTT_PW"] = "Xyzzy-not-the-password"
    config = write_config(tmp_path, tls_broker.tls_port, mqtt={
        "host": "localhost", "tls": {"ca_file": str(tls_broker.tls_files["ca"])},
        "username": "site-test", "password": {"env": "EDGE_TEST_MQTT_PW"}})
    parts = build_agent(load_config(config))
    agent = parts.agent
    caplog.set_level(logging.INFO, logger="edge_agent")
    agent.start()
    try:
        time.sleep(3.0)
        refusals = [r for r in caplog.records if "refused login for user 'site-test'" in r.getMessage()]
        retries = [r for r in caplog.records if "next connection attempt" in r.getMessage()]
        assert refusals and refusals[0].levelno == logging.ERROR
        assert "Xyzzy" not in caplog.text  # the password itself never reaches the log
        assert len(retries) >= 2  # it keeps trying, with back-off
        assert agent.uplink._thread is not None and agent.uplink._thread.is_alive()
        assert not agent.uplink.health.connected
    finally:
        agent.stop(timeout=1)
        os.environ.pop("EDGE_TEST_MQTT_PW", None)


def _run_agent(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_status(port: int, state: str, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = retained(port, f"{BASE}/status", timeout=0.5)
        if raw and json.loads(raw)["state"] == state:
            return json.loads(raw)
        time.sleep(0.1)
    raise AssertionError(f"status never became {state}")


def test_killed_process_leaves_offline_on_retained_status(mosquitto: Broker, tmp_path: Path):
    proc = _run_agent(write_config(tmp_path, mosquitto.port))
    try:
        _wait_status(mosquitto.port, "online")
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        status = _wait_status(mosquitto.port, "offline", timeout=10)
        assert status["reason"] == "connection lost"  # the broker's Last Will, not our own goodbye
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_publishes_offline_itself_and_stops_quickly(mosquitto: Broker, tmp_path: Path):
    proc = _run_agent(write_config(tmp_path, mosquitto.port))
    try:
        _wait_status(mosquitto.port, "online")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(6) == 0
        assert time.monotonic() - t0 < 5
        status = _wait_status(mosquitto.port, "offline", timeout=5)
        assert "reason" not in status and "uptime_s" in status  # our own, orderly offline
    finally:
        if proc.poll() is None:
            proc.kill()


def test_telemetry_heartbeat_each_interval(mosquitto: Broker, tmp_path: Path):
    config = write_config(tmp_path, mosquitto.port, telemetry={"interval_s": 1, "status_interval_s": 10})
    bureau = Recorder(mosquitto.port, f"{BASE}/telemetry").start()
    parts = build_agent(load_config(config))
    agent = parts.agent
    agent.start()
    try:
        beats = bureau.wait_for(lambda: len(bureau.payloads("telemetry")) >= 3 and bureau.payloads("telemetry"),
                                timeout=8)
        assert beats, "no telemetry heartbeat"
        ends = [p["end"] for p in beats[:3]]
        assert len(set(ends)) == 3 and all(e.endswith(".000+08:00") for e in ends)  # on the second boundary
        assert all(p["interval_s"] == 1 and "measures" in p for p in beats)
    finally:
        agent.stop(timeout=2)
        bureau.stop()


def test_auto_protocol_falls_back_to_311_on_a_broker_without_mqtt5(tmp_path: Path):
    pytest.importorskip("amqtt")
    from edge_agent.demo.broker import EmbeddedBroker

    broker = EmbeddedBroker().start()  # amqtt speaks MQTT 3.1.1 only
    parts = build_agent(load_config(write_config(tmp_path, broker.port, mqtt={"protocol": "auto"})))
    agent = parts.agent
    agent.start()
    try:
        agent.publish("event", {"seq": 1}, kind="event")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and agent.outbox.depth_by_kind().get("event"):
            time.sleep(0.1)
        assert agent.uplink.health.protocol == "3.1.1"
        assert not agent.outbox.depth_by_kind().get("event")  # delivered and acknowledged
    finally:
        agent.stop(timeout=2)
        broker.stop()


def test_mosquitto_gets_mqtt5_with_msg_id_user_property(mosquitto: Broker, tmp_path: Path):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="v5-bureau", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append(m)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe(f"{BASE}/event", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    parts = build_agent(load_config(write_config(tmp_path, mosquitto.port)))
    agent = parts.agent
    agent.start()
    try:
        stored = agent.publish("event", {"seq": 7}, kind="event")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not got:
            time.sleep(0.05)
        assert agent.uplink.health.protocol == "5"
        props = dict(got[0].properties.UserProperty)
        assert props["msg_id"] == stored.msg_id == json.loads(got[0].payload)["msg_id"]
        assert props["kind"] == "event"
    finally:
        agent.stop(timeout=2)
        sub.loop_stop()
