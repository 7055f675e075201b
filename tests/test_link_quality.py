"""The broker link's quality in the retained status: reconnects, keepalive round trip, bytes, time up.

Against a real Mosquitto on 127.0.0.1: the box connects, the broker restarts, the box comes
back; the retained status must then say one reconnect in the last hour, a measured PINGREQ →
PINGRESP round trip, and byte counts no smaller than what the bureau actually received.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from agent_config import BASE, write_config
from broker import Broker, Recorder, retained

from edge_agent.config import load_config
from edge_agent.config.mqtt import MqttConfig
from edge_agent.daemon import build_agent
from edge_agent.uplink.link import LinkQuality

KEEPALIVE_S = 5  # the smallest allowed: a PINGREQ after 5 s without traffic


def test_after_a_broker_restart_the_status_shows_one_reconnect_a_round_trip_and_the_bytes(
        mosquitto: Broker, tmp_path: Path):
    config = load_config(write_config(tmp_path, mosquitto.port, mqtt={"keepalive_s": KEEPALIVE_S}))
    bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
    parts = build_agent(config)
    agent, uplink = parts.agent, parts.agent.uplink
    started = time.monotonic()
    parts.start()
    try:
        assert bureau.wait_for(lambda: uplink.health.connected)
        first = uplink.health.link.as_dict()
        assert first["reconnects_1h"] == 0 and first["bytes_sent_today"] > 0

        mosquitto.restart()
        restarted = time.monotonic()
        assert bureau.wait_for(lambda: uplink.health.connects == 2, timeout=15)
        # Idle for a keepalive: paho sends a PINGREQ, the broker answers, the round trip is measured.
        assert bureau.wait_for(lambda: uplink.health.link.rtt_at is not None, timeout=3 * KEEPALIVE_S)
        assert bureau.wait_for(lambda: uplink.outbox.depth() == 0)
        time.sleep(0.5)  # let the bureau's subscriber receive what the broker acked
        with bureau.lock:
            received = list(bureau.messages)
        lower = sum(len(m.topic) + len(m.payload) for m in received)

        agent.publish_status()
        up_for = time.monotonic() - restarted

        def status() -> dict | None:
            raw = retained(mosquitto.port, f"{BASE}/status", timeout=1)
            body = json.loads(raw) if raw else {}
            link = body.get("components", {}).get("uplink", {}).get("link", {})
            return body if link.get("rtt_ms") is not None and body.get("state") == "online" else None

        body = bureau.wait_for(status)
        assert body, "no retained status with a measured round trip"
        link = body["components"]["uplink"]["link"]
        assert link["reconnects_1h"] == 1
        assert 0.0 <= link["rtt_ms"] < 1000.0  # loopback: well under a second
        assert abs(link["rtt_at"] - time.time()) < 30
        assert link["pings_unanswered"] == 0
        # Every byte the bureau got went out through this connection's socket, wrapped in MQTT:
        # the count is at least that, and not wildly more (headers, CONNECTs with their Will).
        assert lower <= link["bytes_sent_today"] <= lower + 300 * len(received) + 8192, (lower, len(received))
        assert link["bytes_received_today"] > 0  # CONNACKs, PUBACKs, PINGRESPs, SUBACKs
        tz_day = datetime.now(timezone.utc).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).date()
        assert link["day"] == tz_day.isoformat()  # the site's local day
        assert 0 < link["connected_s"] <= up_for + 1
        assert link["connected_s"] <= link["connected_1h_s"] <= time.monotonic() - started + 1
        assert body["components"]["uplink"]["connects"] == 2
    finally:
        parts.stop(timeout=2)
        bureau.stop()


class FakeTime:
    def __init__(self, wall: float):
        self.mono = 1000.0
        self.wall = wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def test_counts_age_out_after_an_hour_and_bytes_restart_at_local_midnight():
    # 23:59:00 in Shanghai (UTC+8) is 15:59:00 UTC.
    t = FakeTime(datetime(2026, 5, 6, 15, 59, tzinfo=timezone.utc).timestamp())
    link = LinkQuality("Asia/Shanghai", monotonic=lambda: t.mono, wall=lambda: t.wall)
    link.connected()
    link.sent(1000)
    link.received(10)
    t.advance(30)
    link.disconnected()
    t.advance(5)
    link.connect_failed()
    link.connected()
    link.ping_sent()
    t.advance(0.25)
    link.pong_received()
    report = link.as_dict()
    assert report["reconnects_1h"] == 1 and report["failed_connects_1h"] == 1
    assert report["rtt_ms"] == 250.0 and report["bytes_sent_today"] == 1000 and report["day"] == "2026-05-06"
    assert report["connected_1h_s"] == 30.2  # 30 s, a 5 s gap, then 0.25 s
    t.advance(60)  # past local midnight
    link.sent(7)
    report = link.as_dict()
    assert report["day"] == "2026-05-07" and report["bytes_sent_today"] == 7 and report["bytes_received_today"] == 0
    link.ping_sent()
    link.disconnected()  # a PINGREQ never answered: the NAT forgot us
    t.advance(3600)
    report = link.as_dict()
    assert report["reconnects_1h"] == 0 and report["failed_connects_1h"] == 0 and report["connected_1h_s"] == 0
    assert report["pings_unanswered"] == 1 and report["connected_s"] == 0


def test_keepalive_default_survives_a_60_s_carrier_nat():
    assert MqttConfig().keepalive_s == 45
