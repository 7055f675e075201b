"""A simulated fleet: N boxes speaking the agent's real formats (`SimBox`) at their real rates.

Each box has its own MQTT connection with its Last Will (the retained offline status, as the
agent sets it), publishes a minute of telemetry every 60 s, its retained status every 300 s,
and now and then a violation: the `started` event, a signed evidence bundle (files, then the
manifest), later the `ended` event. Outages cut a box's connection abruptly (the broker
publishes its will); while cut, its messages wait in an outbox and go out, in order, after
the online status when it reconnects, as the agent's outbox does. `speed` runs the boxes'
clock faster than real time, for load tests.

`backlog` makes the same messages without a broker or a clock, for tests and the bench.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bureau.simulate import Message, SimBox

log = logging.getLogger(__name__)

TELEMETRY_S = 60
STATUS_S = 300  # edge_agent telemetry.status_interval_s default


def box_ids(i: int) -> tuple[str, str]:
    """Box i: two cranes per site."""
    return f"sim-site-{i // 2:04d}", f"crane-{i % 2 + 1}"


def make_boxes(n: int, folder: Path, prefix: str = "edge/v1") -> list[SimBox]:
    """N boxes with their own device keys under FOLDER (kept between runs: same keys, same ids)."""
    return [SimBox(*box_ids(i), folder / f"box-{i:05d}", prefix=prefix) for i in range(n)]


def _reading(rng: random.Random, hour: int) -> tuple[float, float, float]:
    leq = (62.0 if 7 <= hour < 22 else 47.0) + rng.random() * 8
    return round(leq, 1), round(leq + 8 + rng.random() * 6, 1), round(50 + rng.random() * 90, 1)


def violation_messages(b: SimBox, at: datetime, rng: random.Random, *, snapshot: bool = True) -> tuple[
        list[Message], Message]:
    """A violation at `at`: the started event and its bundle's messages now, the ended event for later."""
    kind = rng.choice(["noise_over_limit", "dust_over_limit"])
    figures = {"leq": 66.0, "limit": 55} if kind == "noise_over_limit" else {"avg": 180.0, "limit": 150}
    source = "noise-1" if kind == "noise_over_limit" else "dust-1"
    started = b.violation(kind, "started", at, figures, source=source, when=at)
    _ev, files = b.bundle(started, snapshot=snapshot)
    end_at = at + timedelta(minutes=rng.randint(2, 10))
    ended = b.violation(kind, "ended", at, figures, source=source, when=end_at)
    return [b.event(started), *files], b.event(ended)


def backlog(boxes: list[SimBox], minutes: int, *, start: datetime | None = None, violations: int = 0,
            seed: int = 0, snapshot: bool = True) -> list[Message]:
    """`minutes` of every box's messages in time order: an online status, telemetry each minute, and
    `violations` violations per box (event, bundle, ended event) spread over the span."""
    rng = random.Random(seed)
    t0 = (start or datetime.now(timezone.utc) - timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    timed: list[tuple[float, int, list[Message]]] = []
    n = 0
    for b in boxes:
        clock = [t0]
        b.now = lambda c=clock: c[0]  # type: ignore[misc]
        timed.append((t0.timestamp(), n, [b.status()]))
        n += 1
        for m in range(1, minutes + 1):
            end = t0 + timedelta(minutes=m)
            clock[0] = end
            timed.append((end.timestamp(), n, [b.telemetry(end, *_reading(rng, end.hour))]))
            n += 1
        for _ in range(violations):
            at = t0 + timedelta(seconds=rng.uniform(0, max(1, minutes - 10) * 60))
            clock[0] = at
            now_msgs, ended = violation_messages(b, at, rng, snapshot=snapshot)
            timed.append((at.timestamp(), n, now_msgs))
            timed.append((at.timestamp() + 120, n + 1, [ended]))
            n += 2
    timed.sort(key=lambda x: (x[0], x[1]))
    return [m for _, _, msgs in timed for m in msgs]


@dataclass
class _Box:
    sim: SimBox
    client: mqtt.Client
    next_telemetry: float
    next_status: float
    online: bool = False
    offline_until: float = 0.0
    outbox: list[Message] = field(default_factory=list)
    pending_end: list[tuple[float, Message]] = field(default_factory=list)


@dataclass
class FleetStats:
    published: int = 0
    outages: int = 0
    reconnects: int = 0
    violations: int = 0
    queued: int = 0


class FleetSim:
    """Drives the boxes from one thread: each tick, what is due is published, then every link is serviced."""

    def __init__(self, boxes: list[SimBox], host: str, port: int, *, speed: float = 1.0,
                 outages_per_hour: float = 0.2, outage_s: float = 120.0, violations_per_hour: float = 0.3,
                 seed: int = 0, start: datetime | None = None):
        self.host, self.port = host, port
        self.speed = speed
        self.outages_per_hour = outages_per_hour
        self.outage_s = outage_s
        self.violations_per_hour = violations_per_hour
        self.rng = random.Random(seed)
        self.stats = FleetStats()
        self.t0_real = time.monotonic()
        self.t0_sim = (start or datetime.now(timezone.utc)).timestamp()
        self.boxes: list[_Box] = []
        for i, b in enumerate(boxes):
            b.now = self._now_dt
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{b.site}-{b.device}-{i}",
                                 protocol=mqtt.MQTTv311)
            client.max_inflight_messages_set(200)
            client.max_queued_messages_set(0)
            # Spread the boxes over the minute, as real boxes started at different times are.
            phase = self.rng.uniform(0, TELEMETRY_S)
            self.boxes.append(_Box(b, client, self.t0_sim + phase, self.t0_sim + self.rng.uniform(0, STATUS_S)))

    def now(self) -> float:
        return self.t0_sim + (time.monotonic() - self.t0_real) * self.speed

    def _now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), timezone.utc)

    def _connect(self, bx: _Box) -> bool:
        topic, will, _ = bx.sim.status(will=True)  # built now, as the box builds it when it connects
        bx.client.will_set(topic, will, qos=1, retain=True)
        try:
            bx.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            log.warning("%s/%s cannot connect: %s", bx.sim.site, bx.sim.device, exc)
            return False
        bx.online = True
        self._send(bx, bx.sim.status())
        backlog, bx.outbox = bx.outbox, []
        for msg in backlog:
            self._send(bx, msg)
        return True

    def _cut(self, bx: _Box) -> None:
        """The link drops without a goodbye: the broker publishes the will."""
        sock = bx.client.socket()
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        bx.client.loop(timeout=0.05)
        bx.online = False
        self.stats.outages += 1

    def _send(self, bx: _Box, msg: Message) -> None:
        if not bx.online:
            bx.outbox.append(msg)
            self.stats.queued += 1
            return
        topic, payload, retain = msg
        bx.client.publish(topic, payload, qos=1, retain=retain)
        self.stats.published += 1

    def start(self) -> None:
        for bx in self.boxes:
            self._connect(bx)
            bx.client.loop(timeout=0)

    def tick(self) -> None:
        now = self.now()
        p_outage = self.outages_per_hour * (TELEMETRY_S / 3600)
        p_violation = self.violations_per_hour * (TELEMETRY_S / 3600)
        for bx in self.boxes:
            if not bx.online and now >= bx.offline_until and self._connect(bx):
                self.stats.reconnects += 1
            while bx.next_telemetry <= now:
                end = datetime.fromtimestamp(bx.next_telemetry, timezone.utc)
                self._send(bx, bx.sim.telemetry(end, *_reading(self.rng, end.hour)))
                bx.next_telemetry += TELEMETRY_S
                # Once a box-minute: an outage or a violation may begin.
                if bx.online and self.rng.random() < p_outage:
                    self._cut(bx)
                    bx.offline_until = now + self.rng.expovariate(1 / self.outage_s)
                if self.rng.random() < p_violation:
                    msgs, ended = violation_messages(bx.sim, end, self.rng)
                    for msg in msgs:
                        self._send(bx, msg)
                    bx.pending_end.append((now + self.rng.uniform(120, 600), ended))
                    self.stats.violations += 1
            if bx.next_status <= now:
                self._send(bx, bx.sim.status(outbox_depth=len(bx.outbox)))
                bx.next_status += STATUS_S
            for item in [x for x in bx.pending_end if x[0] <= now]:
                bx.pending_end.remove(item)
                self._send(bx, item[1])
            if bx.online:
                bx.client.loop(timeout=0)

    def run(self, duration_s: float | None = None, tick_s: float = 0.2) -> Iterator[FleetStats]:
        """Tick until `duration_s` (real seconds) has passed; yields the stats about once a second."""
        self.start()
        end = None if duration_s is None else time.monotonic() + duration_s
        last = time.monotonic()
        while end is None or time.monotonic() < end:
            started = time.monotonic()
            self.tick()
            if started - last >= 1.0:
                last = started
                yield self.stats
            time.sleep(max(0.0, tick_s - (time.monotonic() - started)))
        self.stop()
        yield self.stats

    def stop(self) -> None:
        for bx in self.boxes:
            if bx.online:
                for _ in range(20):  # let QoS 1 publishes finish
                    bx.client.loop(timeout=0.01)
                    if not bx.client.want_write():
                        break
                bx.client.disconnect()
                bx.online = False
