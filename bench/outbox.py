"""Outbox throughput against a real local Mosquitto.

Measures (1) the durable enqueue rate (each message committed and flushed before the
producer continues), (2) the drain rate to the broker with PUBACKs, and (3) the time to drain
a day's backlog: 1,440 telemetry messages + 200 evidence messages of 200 KB.
Targets (issue 2): enqueue >= 2,000 msg/s; the day's backlog drained in <= 30 s on loopback.

Run: .venv/bin/python bench/outbox.py        (needs mosquitto installed; ends with one JSON line)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the packages before bench/ (bench/detectors.py)

import paho.mqtt.client as mqtt
from broker import Broker
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config.mqtt import MqttConfig
from edge_agent.outbox import Outbox
from edge_agent.uplink.mqtt import MqttUplink
from edge_agent.uplink.topics import Topics

TELEMETRY = {"interval_s": 60, "measures": [{"sensor": "noise-1", "quantity": "noise_la", "window_s": 60,
                                             "figure": "leq", "value": 63.2, "samples": 60}] * 8}


class Counter:
    """Counts messages arriving at a bureau-side subscriber."""

    def __init__(self, port: int, topic: str):
        self.count = 0
        self.bytes = 0
        self.done = threading.Event()
        self.target = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bureau")
        self.client.on_message = self._on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        ready.wait(5)

    def _on_message(self, client, userdata, msg):
        self.count += 1
        self.bytes += len(msg.payload)
        if self.count >= self.target:
            self.done.set()


def drain(outbox: Outbox, port: int, counter: Counter, expected: int) -> float:
    counter.count, counter.target = 0, expected
    counter.done.clear()
    topics = Topics("edge/v1", "bench", "box")
    uplink = MqttUplink(MqttConfig(port=port, max_inflight=50), topics, outbox, will_payload=b"{}")
    t0 = time.perf_counter()
    uplink.start()
    while outbox.depth() > 0:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    counter.done.wait(30)
    uplink.stop(timeout=1)
    if counter.count < expected:
        raise SystemExit(f"only {counter.count} of {expected} messages reached the subscriber")
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(work).start()
        counter = Counter(broker.port, "edge/v1/bench/box/#")
        try:
            # 1. durable enqueue, one message per transaction (fsync on, as in production)
            box = Outbox(work / "enqueue.sqlite", 512 * 1024 * 1024, fsync=True)
            n = 5000
            t0 = time.perf_counter()
            for _ in range(n):
                box.put("telemetry", TELEMETRY, kind="telemetry")
            enqueue_rate = n / (time.perf_counter() - t0)

            # 2. drain rate of those small messages
            drain_s = drain(box, broker.port, counter, n)
            drain_rate = n / drain_s
            box.close()

            # 3. a day's backlog: 1,440 telemetry + 200 evidence files of 200 KB
            day = Outbox(work / "day.sqlite", 512 * 1024 * 1024, fsync=True)
            blob = os.urandom(200 * 1024)
            for _ in range(1440):
                day.put("telemetry", TELEMETRY, kind="telemetry")
            for i in range(200):
                day.put(f"evidence/ev{i}/snapshot.jpg", blob, kind="evidence")
            backlog_mb = day.bytes_used() / 1e6
            day_s = drain(day, broker.port, counter, 1640)
            day.close()
        finally:
            counter.client.loop_stop()
            broker.stop()
    figures = {
        "enqueue_msg_per_s": round(enqueue_rate),
        "enqueue_target_msg_per_s": 2000,
        "drain_msg_per_s": round(drain_rate),
        "day_backlog_messages": 1640,
        "day_backlog_mb": round(backlog_mb, 1),
        "day_backlog_drain_s": round(day_s, 2),
        "day_backlog_target_s": 30,
        "fsync": True,
    }
    print(f"durable enqueue: {figures['enqueue_msg_per_s']} msg/s (target >= 2000)")
    print(f"drain to local mosquitto: {figures['drain_msg_per_s']} msg/s")
    print(f"day's backlog ({figures['day_backlog_mb']} MB) drained in "
          f"{figures['day_backlog_drain_s']} s (target <= 30)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
