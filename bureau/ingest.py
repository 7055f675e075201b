"""Ingest: the bureau's MQTT subscriber, and the writer that turns messages into store batches.

The paho network thread only queues what arrives (topic, bytes, arrival time); a writer
thread parses and applies up to `batch_max` messages per transaction; the verifier thread
(`verify.py`) checks bundles as they become complete. The subscription is `PREFIX/#`, or
`$share/GROUP/PREFIX/#` so several workers split one stream (MQTT 5); the session is
persistent (clean_session off, a session expiry under MQTT 5), so the broker keeps what
arrives while the bureau restarts. MQTT 5 where the broker speaks it, else 3.1.1 (amqtt).

Messages are acknowledged (PUBACK, paho's manual ack) only after the batch holding them is
committed: a worker killed at any moment has acknowledged only what is stored, and the
broker delivers the rest again (to it when it reconnects). What is delivered twice is
stored once (the store's `msg_id` key). A store outage stalls ingest, it loses nothing.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bureau.config.model import BureauConfig
from bureau.hub import Hub
from bureau.live import LiveNudges, live_topics
from bureau.messages import Refused, parse
from bureau.store import Applied, Store
from bureau.verify import Verifier
from edge_agent.config.mqtt import MqttConfig

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 86400
# QoS 1 messages the broker may have in flight to one worker, unacknowledged (MQTT 5 Receive Maximum).
RECEIVE_MAXIMUM = 2000


@dataclass(frozen=True)
class Delivery:
    """One message from the network thread: what it was, and how to acknowledge it once stored."""

    topic: str
    payload: bytes
    received: float
    mid: int = 0
    qos: int = 0
    link: int = 0  # the connection it came on: a PUBACK only means something on that one


def build_client(cfg: MqttConfig, client_id: str, protocol: int, manual_ack: bool = False) -> mqtt.Client:
    """A paho client with the box's credentials and TLS settings, on a persistent session."""
    if protocol == mqtt.MQTTv5:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                             manual_ack=manual_ack)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=False, manual_ack=manual_ack)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    if cfg.username is not None:
        password = cfg.password.resolve() if cfg.password is not None else None
        client.username_pw_set(cfg.username, password)
    if cfg.tls is not None:
        client.tls_set(ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
                       certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                       keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None, cert_reqs=ssl.CERT_REQUIRED)
        if cfg.tls.insecure_skip_verify:
            client.tls_insecure_set(True)
    client.reconnect_delay_set(max(1, round(cfg.reconnect_min_s)), max(1, round(cfg.reconnect_max_s)))
    return client


@dataclass
class IngestStats:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    refused: int = 0
    batches: int = 0
    connected: bool = False
    protocol: str = ""
    last_error: str = ""


class Ingest:
    def __init__(self, config: BureauConfig, store: Store, verifier: Verifier, hub: Hub | None = None,
                 on_applied: Callable[[Applied], None] | None = None, subscribe: bool = True):
        self.config = config
        self.store = store
        self.verifier = verifier
        self.hub = hub
        self.on_applied = on_applied
        self.voice: Any = None  # bureau.voice.VoiceInbox: the crews' replies, kept as files (set by the Console)
        self.subscribe = subscribe  # False: connected to publish (commands) and for the live feed; workers ingest
        self.prefix = config.mqtt.topic_prefix.strip("/")
        self.live = LiveNudges(hub, self.prefix) if hub is not None and not subscribe else None
        self.stats = IngestStats()
        self._queue: queue.Queue[Delivery | None] = queue.Queue(config.ingest.queue_max)
        self._link = 0
        self._abandon = False
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="bureau-writer", daemon=True)
        self.client: mqtt.Client | None = None
        self._connected = threading.Event()
        self.subscribed = threading.Event()  # the broker confirmed the subscription (SUBACK)

    # --- network ------------------------------------------------------------------------------

    @property
    def subscription(self) -> str:
        group = self.config.ingest.shared_group
        return f"$share/{group}/{self.prefix}/#" if group else f"{self.prefix}/#"

    def start(self, connect_timeout: float = 10.0) -> None:
        self._writer.start()
        cfg = self.config.mqtt
        protocols = {"auto": [mqtt.MQTTv5, mqtt.MQTTv311], "5": [mqtt.MQTTv5], "3.1.1": [mqtt.MQTTv311]}[cfg.protocol]
        for n, protocol in enumerate(protocols):
            last = n == len(protocols) - 1
            client = self._make(protocol)
            self.client = client
            try:
                self._connect(client, protocol)
            except OSError as exc:
                self.stats.last_error = f"cannot reach the broker {cfg.host}:{cfg.port}: {exc}"
                log.error("%s; retrying in the background", self.stats.last_error)
            client.loop_start()
            if last or (self._connected.wait(3.0 if cfg.protocol == "auto" else connect_timeout)
                        and self.stats.connected):
                break
            # MQTT 5 was not answered (an MQTT 3.1.1-only broker such as amqtt): try 3.1.1.
            client.loop_stop()
            try:
                client.disconnect()
            except Exception:
                pass
        if not self._connected.wait(connect_timeout):
            log.warning("not connected to the broker yet (%s); ingest starts when it answers", self.stats.last_error)

    def _make(self, protocol: int) -> mqtt.Client:
        cfg = self.config.mqtt
        client = build_client(cfg, cfg.client_id or "edge-bureau", protocol, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect(self, client: mqtt.Client, protocol: int) -> None:
        cfg = self.config.mqtt
        if protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.ReceiveMaximum = min(RECEIVE_MAXIMUM, self.config.ingest.queue_max)
            client.connect_async(cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=props)
        else:
            client.connect_async(cfg.host, cfg.port, cfg.keepalive_s)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            self.stats.last_error = f"broker refused the connection: {reason}"
            log.error("%s", self.stats.last_error)
            return
        self._link += 1
        self.stats.connected = True
        self.stats.protocol = "5" if client.protocol == mqtt.MQTTv5 else "3.1.1"
        self.stats.last_error = ""
        if self.subscribe:
            client.subscribe(self.subscription, qos=1)
        else:
            # A session kept from when this console ingested itself would still deliver everything.
            client.unsubscribe(sorted({f"{self.prefix}/#", self.subscription}))
            if self.live is not None:
                client.subscribe(live_topics(self.prefix))
        log.info("ingest connected (MQTT %s), %s", self.stats.protocol,
                 f"subscribed to {self.subscription}" if self.subscribe else "not subscribed (workers ingest)")
        self._connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        if any(getattr(r, "is_failure", False) for r in reasons):
            self.stats.last_error = f"the broker refused the subscription {self.subscription}: {reasons}"
            log.error("%s", self.stats.last_error)
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was_connected, self.stats.connected = self.stats.connected, False
        if was_connected and not self._stop.is_set():
            self.stats.last_error = f"disconnected: {reason}"
            log.warning("ingest %s; reconnecting", self.stats.last_error)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # The network thread only queues: parsing, storing and verifying happen elsewhere.
        if self._stop.is_set():
            return  # not acknowledged: the broker keeps it for the next start
        if not self.subscribe:
            if self.live is not None:
                self.live.note(message.topic)
            if message.qos:
                client.ack(message.mid, message.qos)  # heard, not stored: the workers store it
            return
        self._queue.put(Delivery(message.topic, bytes(message.payload), time.time(), message.mid, message.qos,
                                 self._link))

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> bool:
        """Publish one message (QoS 1) and wait for the broker's PUBACK."""
        client = self.client
        if client is None or not self.stats.connected:
            return False
        info = client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def stop(self) -> None:
        """Store and acknowledge what was received, then leave (the session stays with the broker)."""
        self._stop.set()
        self._queue.put(None)
        self._writer.join(30)
        if self.client is not None:
            try:
                self.client.disconnect()
            except Exception:
                pass
            self.client.loop_stop()
        if self.live is not None:
            self.live.stop()

    # --- the writer ---------------------------------------------------------------------------

    def submit(self, topic: str, payload: bytes) -> None:
        """Queue a message as if it came from the broker (tests, replays)."""
        self._queue.put(Delivery(topic, payload, time.time()))

    def _write_loop(self) -> None:
        cfg = self.config.ingest
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + cfg.batch_ms / 1000
            stop = False
            while len(batch) < cfg.batch_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            if self._store(batch):
                self._ack(batch)
            if stop:
                return

    def _ack(self, batch: list[Delivery]) -> None:
        client = self.client
        if client is None:
            return
        for d in batch:
            if d.qos > 0 and d.link == self._link:
                client.ack(d.mid, d.qos)

    def _store(self, batch: list[Delivery]) -> bool:
        """Apply the batch; True once every message in it is stored (or refused with a reason).

        An unreachable store is waited for; a message that breaks the batch otherwise is kept
        apart as refused, so one bad message cannot hold the others back."""
        if self._abandon:
            return False
        delay = 0.5
        parts = [batch]
        while parts:
            part = parts[0]
            try:
                self._apply(part)
                parts.pop(0)
                delay = 0.5
                continue
            except Exception as exc:
                self.stats.last_error = f"store: {exc}"
                if not self.store.outage(exc) and len(part) > 1:
                    log.warning("a batch of %d message(s) failed (%s); storing them one by one", len(part), exc)
                    parts[:1] = [[d] for d in part]
                    continue
                if not self.store.outage(exc):
                    log.exception("a message on %s cannot be stored; kept as refused", part[0].topic)
                    try:
                        self.store.apply([Refused(part[0].topic[:200], f"could not be stored: {str(exc)[:200]}",
                                                  len(part[0].payload))], part[0].received)
                        self.stats.refused += 1
                        parts.pop(0)
                        continue
                    except Exception as exc2:
                        exc = exc2
                log.error("store unavailable (%s); ingest waits %.1f s and tries again", exc, delay)
            if self._stop.wait(delay):
                self._abandon = True  # stopping with the store away: what is left waits at the broker
                return False  # not acknowledged: the broker delivers it again
            delay = min(delay * 2, 30.0)
        return True

    def _apply(self, batch: list[Delivery]) -> None:
        cfg = self.config.ingest
        records = []
        for d in batch:
            if self.voice is not None and d.topic.endswith("/voice"):  # PREFIX/SITE/DEVICE/voice: signed audio
                bits = d.topic.split("/")
                if len(bits) >= 3:
                    self.voice.accept(bits[-3], bits[-2], d.payload)
                continue
            rec = parse(d.topic, d.payload, self.prefix, max_json=cfg.max_json_kb * 1024,
                        max_bytes=cfg.max_message_kb * 1024)
            if rec is not None:
                records.append(rec)
        applied = self.store.apply(records, batch[-1].received)
        s = self.stats
        s.received += len(batch)
        s.applied += applied.applied
        s.duplicates += applied.duplicates
        s.refused += applied.refused
        s.batches += 1
        if applied.bundles_ready:
            for site, device, bundle in applied.bundles_ready:  # committed: their files' parts are done with
                self.verifier.files.remove_parts(site, device, bundle)
            self.verifier.submit(applied.bundles_ready)
        if self.hub is not None:
            for ev in applied.events:
                self.hub.publish({"type": "event", **ev})
            for ack in applied.acks:
                self.hub.publish({"type": "ack", **ack})
            for st in applied.statuses:
                self.hub.publish({"type": "status", **st})
        if self.on_applied is not None:
            self.on_applied(applied)
