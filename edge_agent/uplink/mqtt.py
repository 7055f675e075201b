"""MQTT uplink: drains the outbox to the bureau's broker, oldest first, QoS 1.

One thread owns the paho client (connect, network loop, publish), so no paho call ever
races another. Producers never talk to paho: they write to the outbox and wake this
thread. A row leaves the outbox only after the broker's PUBACK for it.

If the link drops while messages are in flight, paho re-sends them itself on the next
connection with the same packet ids, so our map of packet id -> outbox row stays valid. A
process restart re-sends whatever is still in the outbox: delivery is at-least-once and
consumers de-duplicate by `msg_id`.

A local storage error (a full disk: the outbox refusing a write, or even a delete) never
takes the link down: each reconnection would make the broker publish our Last Will. Every
paho callback is guarded; such an error is logged once when it starts and once when it ends,
and rows the broker acknowledged but the outbox could not yet delete are held back from
sending and deleted again later.

The link's quality as the box sees it (reconnects in the last hour, keepalive round trip,
bytes today, time connected) is kept by `LinkQuality` (edge_agent/uplink/link.py) and goes
into the status as `components.uplink.link`. The round trip is paho's own PINGREQ/PINGRESP,
seen through its `on_log` callback (paho has no ping callback); the bytes are counted where
paho reads and writes its socket.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config.mqtt import MqttConfig
from edge_agent.outbox import Message, Outbox, StorageFull, new_msg_id
from edge_agent.uplink.link import LinkQuality
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

# CONNACK reason codes (MQTT 5 names, and the 3.1.1 return codes paho maps onto them)
# that mean "fix the config", as opposed to "try again later".
_AUTH_FAILURES = {"Bad user name or password", "Not authorized", "Client identifier not valid"}


@dataclass
class UplinkHealth:
    connected: bool = False
    protocol: str = ""
    since: float = field(default_factory=time.time)
    connects: int = 0
    last_error: str = ""
    published: int = 0
    acked: int = 0
    link: LinkQuality = field(default_factory=LinkQuality)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": "ok" if self.connected else "down",
            "connected": self.connected,
            "protocol": self.protocol,
            "since": self.since,
            "connects": self.connects,
            "last_error": self.last_error,
            "published": self.published,
            "acked": self.acked,
            "link": self.link.as_dict(),
        }


MessageHandler = Callable[[str, bytes], None]

# What a full, read-only or broken local disk raises from the outbox: never a reason to disconnect.
LOCAL_ERRORS = (StorageFull, sqlite3.Error, OSError)


class _CountingClient(mqtt.Client):
    """A paho client that counts the bytes it writes to and reads from its socket.

    paho has no public byte counters; `_sock_send` / `_sock_recv` are where every packet goes
    through (paho 2.x, and 1.6 before it). With TLS these are the bytes inside the TLS records.
    """

    def __init__(self, *args: Any, link: LinkQuality, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._edge_link = link

    def _sock_send(self, buf: bytes | bytearray) -> int:
        sent = super()._sock_send(buf)
        self._edge_link.sent(sent)
        return sent

    def _sock_recv(self, bufsize: int) -> bytes:
        data = super()._sock_recv(bufsize)
        self._edge_link.received(len(data))
        return data


def build_client(
    cfg: MqttConfig,
    client_id: str,
    protocol: int,
    *,
    will: tuple[str, bytes] | None = None,
    on_secret_error: Callable[[str], None] | None = None,
    link: LinkQuality | None = None,
) -> mqtt.Client:
    """A paho client set up from the config: protocol, credentials, TLS, Last Will; with `link`,
    its bytes are counted there."""
    extra: dict[str, Any] = {} if link is None else {"link": link}
    make = mqtt.Client if link is None else _CountingClient
    if protocol == mqtt.MQTTv5:
        client = make(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **extra)
    else:
        client = make(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                      clean_session=True, **extra)
    client.max_inflight_messages_set(cfg.max_inflight)
    client.max_queued_messages_set(0)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    if cfg.username is not None:
        password = None
        if cfg.password is not None:
            try:
                password = cfg.password.resolve()
            except ValueError as exc:
                if on_secret_error is not None:
                    on_secret_error(f"mqtt.password: {exc}")
        client.username_pw_set(cfg.username, password)
    if cfg.tls is not None:
        tls = cfg.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        if tls.insecure_skip_verify:
            client.tls_insecure_set(True)
    return client


def probe(cfg: MqttConfig, client_id: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Connect once (TLS and login included) and disconnect: for `doctor`. Returns (ok, detail)."""
    result: dict[str, Any] = {}
    protocols = [mqtt.MQTTv5, mqtt.MQTTv311] if cfg.protocol == "auto" else (
        [mqtt.MQTTv5] if cfg.protocol == "5" else [mqtt.MQTTv311])
    detail = ""
    for protocol in protocols:
        errors: list[str] = []
        try:
            client = build_client(cfg, f"{client_id}-doctor", protocol, on_secret_error=errors.append)
        except (OSError, ssl.SSLError, ValueError) as exc:
            return False, f"TLS set-up failed: {exc}"
        if errors:
            return False, errors[0]
        client.on_connect = lambda c, u, f, reason, p: result.__setitem__("rc", reason)
        try:
            client.connect(cfg.host, cfg.port, keepalive=10)
        except (OSError, ssl.SSLError) as exc:
            return False, f"cannot reach {cfg.host}:{cfg.port}: {exc}"
        deadline = time.monotonic() + (timeout if protocol == protocols[-1] else min(timeout, 3.0))
        result.clear()
        while "rc" not in result and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS and "rc" not in result:
                break
        rc = result.get("rc")
        try:
            client.disconnect()
        except Exception:
            pass
        name = "5" if protocol == mqtt.MQTTv5 else "3.1.1"
        if rc is None:
            detail = f"no answer to MQTT {name} CONNECT from {cfg.host}:{cfg.port}"
            continue
        if getattr(rc, "is_failure", False):
            return False, f"broker refused the connection: {rc}"
        tls = "TLS, " if cfg.tls else ""
        return True, f"{cfg.host}:{cfg.port}, {tls}MQTT {name}" + (f", user {cfg.username}" if cfg.username else "")
    return False, detail


class MqttUplink:
    """Owns the broker connection; publishes only what the outbox holds."""

    def __init__(
        self,
        config: MqttConfig,
        topics: Topics,
        outbox: Outbox,
        *,
        will: Callable[[str], bytes] | None = None,
        will_payload: bytes | None = None,
        on_connected: Callable[[], None] | None = None,
        timezone: str = "UTC",
    ):
        """`will(msg_id)` builds the Last Will for one connection; it is called before each CONNECT
        with a new msg_id, so a bureau that de-duplicates by msg_id sees every "connection lost".
        (`will_payload`, a fixed Will, is for benchmarks only.) `timezone` is the site's: the
        link's byte counts are per local day."""
        if will is None:
            if will_payload is None:
                raise TypeError("MqttUplink needs will= (or a fixed will_payload=)")
            fixed = will_payload
            will = lambda msg_id: fixed  # noqa: E731
        self.config = config
        self.topics = topics
        self.outbox = outbox
        self.health = UplinkHealth(link=LinkQuality(timezone))
        self._will = will
        self.will_msg_id = ""  # of the Will the broker holds for the current connection
        self._on_connected = on_connected
        self._subscriptions: dict[str, MessageHandler] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row_id
        self._inflight_bytes: dict[int, int] = {}  # paho mid -> payload size
        self._held: set[int] = set()  # rows the broker refused; retried on the next connection
        self._unsaved: set[int] = set()  # rows the broker acknowledged that the outbox could not delete yet
        self._unsaved_retry = 0.0
        self._local_errors: dict[str, str] = {}  # what failed -> why, while it lasts (logged at start and end)
        self._connected_hook_due: float | None = None  # when to retry on_connected after the disk refused it
        self._callback_error = ""
        self._acked_mids: list[int] = []
        self._acked_lock = threading.Lock()
        self._protocol = mqtt.MQTTv5 if config.protocol in ("auto", "5") else mqtt.MQTTv311
        self._client: mqtt.Client | None = None
        self._connack: ReasonCode | int | None = None
        self._disconnected = threading.Event()

    # --- public ----------------------------------------------------------------------------

    def alive(self) -> bool:
        """The uplink thread runs (True before start and after stop)."""
        return self._thread is None or self._stop.is_set() or self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uplink-mqtt", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A producer stored something: look at the outbox now rather than at the next tick."""
        self._wake.set()

    def subscribe(self, relative_topic: str, handler: MessageHandler) -> None:
        """Receive `PREFIX/SITE/DEVICE/<relative_topic>`; handlers run on the uplink thread."""
        self._subscriptions[self.topics.full(relative_topic)] = handler

    def stop(self, timeout: float = 5.0, drain: Callable[[], bool] | None = None) -> None:
        """Stop; first give `drain()` (e.g. "the offline status was acked") up to `timeout` s."""
        deadline = time.monotonic() + timeout
        if drain is not None:
            self.wake()
            while time.monotonic() < deadline and not drain() and self.health.connected:
                time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.5, deadline - time.monotonic()))

    # --- the uplink thread -------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client_id = self.config.client_id or f"{self.topics.site}-{self.topics.device}"
        client = build_client(self.config, client_id, self._protocol, on_secret_error=self._note_error,
                              link=self.health.link)
        client.on_log = self._on_log
        client.on_connect = self._guard(self._on_connect)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_publish = self._guard(self._on_publish)
        client.on_message = self._guard(self._on_message)
        client.suppress_exceptions = True  # a last line: paho logs instead of raising out of loop()
        return client

    def _guard(self, callback: Callable[..., None]) -> Callable[..., None]:
        """An exception out of a paho callback would escape loop() and drop the link: keep it here."""
        name = callback.__name__.strip("_")

        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except LOCAL_ERRORS as exc:
                self._local_failed(name, exc)
                return
            except Exception as exc:
                key = f"{name}: {type(exc).__name__}: {exc}"
                if key != self._callback_error:
                    self._callback_error = key
                    log.exception("mqtt: %s failed (the link stays up): %s", name, exc)
                return
            self._local_ok(name)
        return guarded

    def _local_failed(self, what: str, exc: BaseException) -> None:
        """Log a local storage error when `what` starts failing; repeats are silent."""
        if what not in self._local_errors:
            log.error("mqtt: %s: local storage error (%s); the link stays up and sends what is stored",
                      what, exc)
        self._local_errors[what] = str(exc)

    def _local_ok(self, what: str) -> None:
        if self._local_errors.pop(what, None) is not None:
            log.info("mqtt: %s works again", what)

    def _run(self) -> None:
        delay = self.config.reconnect_min_s
        while not self._stop.is_set():
            try:
                if not self.health.connected:
                    if self._connect():
                        delay = self.config.reconnect_min_s
                    else:
                        # Exponential back-off with full jitter, so a city's worth of boxes
                        # does not reconnect in lock-step after a broker restart.
                        wait = random.uniform(delay / 2, delay)
                        log.info("mqtt: next connection attempt in %.1f s", wait)
                        self._stop.wait(wait)
                        delay = min(delay * 2, self.config.reconnect_max_s)
                        continue
                self._pump()
            except (StorageFull, sqlite3.Error) as exc:  # the disk, not the link: keep the connection
                self._local_failed("outbox", exc)
                self._stop.wait(0.2)
            except Exception as exc:  # never let the uplink thread die silently
                log.exception("mqtt uplink error: %s", exc)
                self._note_error(str(exc))
                self._drop_connection()
                self._stop.wait(1.0)
        self._shutdown()

    def _connect(self) -> bool:
        cfg = self.config
        if self._client is None:
            self._client = self._make_client()
            self._inflight.clear()
            self._inflight_bytes.clear()
        client = self._client
        self._connack = None
        self._disconnected.clear()
        # A new Will for each connection: the broker publishes it if this one dies without DISCONNECT.
        self.will_msg_id = new_msg_id()
        client.will_set(self.topics.full("status"), self._will(self.will_msg_id), qos=1, retain=True)
        try:
            if self._protocol == mqtt.MQTTv5:
                client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=True)
            else:
                client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._note_error(f"cannot reach broker {cfg.host}:{cfg.port}: {exc}")
            self.health.link.connect_failed()
            return False
        # A broker that does not speak MQTT 5 may just sit on a v5 CONNECT: try 3.1.1 soon.
        wait = 3.0 if (self._protocol == mqtt.MQTTv5 and cfg.protocol == "auto") else max(5.0, cfg.keepalive_s / 2)
        deadline = time.monotonic() + wait
        while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
            rc = client.loop(timeout=0.1)
            if rc != mqtt.MQTT_ERR_SUCCESS and self._connack is None:
                break
        code = self._connack
        if code is None or getattr(code, "is_failure", code != 0):
            self.health.link.connect_failed()
        if code is None:
            self._note_error(f"broker {cfg.host}:{cfg.port} closed the connection before answering CONNECT")
            if self._protocol == mqtt.MQTTv5 and cfg.protocol == "auto":
                self._fall_back_to_311()
            self._drop_connection()
            return False
        failed = code.is_failure if isinstance(code, ReasonCode) else code != 0
        if failed:
            name = str(code)
            if name in ("Unsupported protocol version",) and cfg.protocol == "auto":
                self._fall_back_to_311()
            elif name in _AUTH_FAILURES:
                self._note_error(
                    f"broker refused login for user {cfg.username!r}: {name}; "
                    "check mqtt.username and mqtt.password", level=logging.ERROR)
            else:
                self._note_error(f"broker refused the connection: {name}")
            self._drop_connection()
            return False
        return True

    def _fall_back_to_311(self) -> None:
        log.warning("mqtt: broker does not speak MQTT 5; falling back to 3.1.1")
        self._protocol = mqtt.MQTTv311
        self._client = None

    def _pump(self) -> None:
        client = self._client
        assert client is not None
        self._settle_acks()
        self._fill_window()
        rc = client.loop(timeout=0.05)
        self._settle_acks()
        if rc != mqtt.MQTT_ERR_SUCCESS or self._disconnected.is_set():
            if self.health.connected:
                self._note_error(f"connection lost: {mqtt.error_string(rc)}")
            self._drop_connection()
            return
        self._run_connected_hook()
        if self.health.link.ping_pending():
            return  # a PINGRESP is due: keep select()ing on the socket so its round trip is measured
        if not self._inflight and self.outbox.depth() == 0:
            # Idle: sleep until a producer wakes us, but keep the network loop ticking.
            self._wake.wait(0.2)
            self._wake.clear()

    def _fill_window(self) -> None:
        client = self._client
        room = self.config.max_inflight - len(self._inflight)
        budget = int(self.config.max_inflight_mb * 1024 * 1024) - sum(self._inflight_bytes.values())
        if room <= 0 or client is None:
            return
        if budget <= 0 and self._inflight:
            return
        try:
            batch = self.outbox.pending(room, exclude=set(self._inflight.values()) | self._held | self._unsaved,
                                        max_bytes=max(budget, 1))
        except LOCAL_ERRORS as exc:
            self._local_failed("reading the outbox", exc)
            return
        self._local_ok("reading the outbox")
        for msg in batch:
            info = client.publish(self.topics.full(msg.topic), msg.payload, qos=msg.qos, retain=msg.retain,
                                  properties=self._properties(msg))
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self._note_error(f"publish failed: {mqtt.error_string(info.rc)}")
                break
            if msg.qos == 0:
                # Nothing will acknowledge it; it is as delivered as it will ever be.
                self._unsaved.add(msg.row_id)
                self._delete_delivered([])
            else:
                self._inflight[info.mid] = msg.row_id
                self._inflight_bytes[info.mid] = msg.size
            self.health.published += 1
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                break

    def _properties(self, msg: Message) -> Properties | None:
        if self._protocol != mqtt.MQTTv5:
            return None
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("msg_id", msg.msg_id), ("kind", msg.kind)]
        if msg.payload[:1] in (b"{", b"["):
            props.ContentType = "application/json"
        return props

    def _settle_acks(self) -> None:
        with self._acked_lock:
            mids, self._acked_mids = self._acked_mids, []
        rows = [self._inflight.pop(mid) for mid in mids if mid in self._inflight]
        for mid in mids:
            self._inflight_bytes.pop(mid, None)
        self.health.acked += len(rows)
        self._delete_delivered(rows)

    def _delete_delivered(self, rows: list[int]) -> None:
        """Delete acknowledged rows; those the outbox cannot delete now wait (unsent) and are tried again."""
        if not rows and (not self._unsaved or time.monotonic() < self._unsaved_retry):
            return
        todo = [*self._unsaved, *rows]
        try:
            self.outbox.ack(todo)
        except LOCAL_ERRORS as exc:
            self._unsaved.update(todo)
            self._unsaved_retry = time.monotonic() + 1.0
            self._local_failed("deleting delivered messages", exc)
            return
        self._unsaved.clear()
        self._local_ok("deleting delivered messages")

    def _drop_connection(self) -> None:
        """Abandon a connection that failed to come up or broke; paho keeps unacked messages."""
        if self._client is not None and not self.health.connected and self._client.socket() is not None:
            try:
                self._client.disconnect()
            except Exception:
                pass
        if self.health.connected:
            self.health.connected = False
            self.health.since = time.time()
            self.health.link.disconnected()

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self.health.connected:
            try:
                client.disconnect()
                client.loop(timeout=0.2)
            except Exception:
                pass
        self.health.connected = False
        self.health.link.disconnected()

    def _note_error(self, text: str, level: int = logging.WARNING) -> None:
        if text != self.health.last_error or level >= logging.ERROR:
            log.log(level, "mqtt: %s", text)
        self.health.last_error = text

    # --- paho callbacks (run inside client.loop on this same thread) ------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        self._connack = reason
        if reason.is_failure:
            return
        self.health.connected = True
        self.health.since = time.time()
        self.health.connects += 1
        self.health.link.connected()
        self.health.protocol = "5" if self._protocol == mqtt.MQTTv5 else "3.1.1"
        self.health.last_error = ""
        self._held.clear()
        log.info("mqtt: connected to %s:%d (MQTT %s)", self.config.host, self.config.port,
                 self.health.protocol)
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        self._connected_hook_due = 0.0
        self._run_connected_hook()

    def _run_connected_hook(self) -> None:
        """`on_connected` (the agent stores "online"); if the disk refuses it, again every 5 s until it works."""
        what = "on_connected"
        if self._on_connected is None or self._connected_hook_due is None:
            return
        if time.monotonic() < self._connected_hook_due:
            return
        try:
            self._on_connected()
        except LOCAL_ERRORS as exc:
            self._connected_hook_due = time.monotonic() + 5.0
            self._local_failed(what, exc)
            return
        except Exception as exc:  # a bug, not the disk: say so once, and do not retry it
            self._connected_hook_due = None
            log.exception("mqtt: on_connected failed (the link stays up): %s", exc)
            return
        self._connected_hook_due = None
        self._local_ok(what)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        self._disconnected.set()
        if self.health.connected and not self._stop.is_set():
            self._note_error(f"disconnected: {reason}")
        self.health.connected = False
        self.health.since = time.time()
        self.health.link.disconnected()

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        """paho's packet log: the only place a keepalive PINGREQ and its PINGRESP can be seen."""
        if buf.startswith("Sending PINGREQ"):
            self.health.link.ping_sent()
        elif buf.startswith("Received PINGRESP"):
            self.health.link.pong_received()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            # The broker refused this message (e.g. not authorised for the topic). Keep it in
            # the outbox; it will be retried on the next connection.
            log.error("mqtt: broker refused message %d: %s", mid, reason)
            row = self._inflight.pop(mid, None)
            self._inflight_bytes.pop(mid, None)
            if row is not None:
                self._held.add(row)
            return
        with self._acked_lock:
            self._acked_mids.append(mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # paho reads one packet per loop when idle: more may be waiting (a talk's parts, then the
        # command), so do not take the idle 0.2 s nap before the next loop (4 messages: 0.8 s).
        self._wake.set()
        for pattern, handler in self._subscriptions.items():
            if mqtt.topic_matches_sub(pattern, message.topic):
                try:
                    handler(message.topic, bytes(message.payload))
                except Exception:
                    log.exception("handler for %s failed", message.topic)
