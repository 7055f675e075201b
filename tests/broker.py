"""A real Mosquitto broker on 127.0.0.1 for tests, plus a subscriber that records what arrives."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.loopback import free_port


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Broker:
    """One mosquitto process; `restart()` keeps its port and its persistent sessions."""

    workdir: Path
    port: int = field(default_factory=free_port)
    tls_port: int | None = None
    tls_files: dict[str, Path] | None = None
    password_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        lines = [
            "user root",  # only takes effect as root; keeps temp files readable in CI
            "per_listener_settings true",
            f"persistence true\npersistence_location {self.workdir}/",
            "log_dest stderr",
            "max_queued_messages 100000",
            "log_type error\nlog_type warning\nlog_type notice",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
        ]
        if self.tls_port and self.tls_files:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls_files['ca']}",
                f"certfile {self.tls_files['cert']}",
                f"keyfile {self.tls_files['key']}",
                "allow_anonymous false",
                f"password_file {self.password_file}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> Broker:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self.log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=self.log, stderr=self.log)
        wait_port(self.port)
        if self.tls_port:
            wait_port(self.tls_port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for localhost / 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-agent test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": directory / "ca.crt", "cert": directory / "server.crt", "key": directory / "server.key"}
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    for path in files.values():
        os.chmod(path, 0o644)
    return files


def make_password_file(directory: Path, user: str, password: str) -> Path:
    path = directory / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True,
                   capture_output=True)
    os.chmod(path, 0o644)
    return path


class Recorder:
    """A bureau-side subscriber with a persistent session, so nothing is missed across restarts."""

    def __init__(self, port: int, topic: str = "#", client_id: str = "test-bureau"):
        self.port = port
        self.topic = topic
        self.messages: list[mqtt.MQTTMessage] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)

    def _on_connect(self, client, userdata, flags, reason, properties):
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append(message)

    def start(self) -> Recorder:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(5):
            raise TimeoutError("subscriber did not get SUBACK")
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def payloads(self, suffix: str) -> list[dict]:
        with self.lock:
            msgs = [m for m in self.messages if m.topic.endswith("/" + suffix)]
        return [json.loads(m.payload) for m in msgs]

    def wait_for(self, predicate, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(0.05)
        return predicate()


def retained(port: int, topic: str, timeout: float = 3.0, tls: dict | None = None) -> bytes | None:
    """Read the retained message on a topic with a fresh client."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"peek-{time.monotonic_ns()}")

    def on_message(c, u, m):
        if m.retain:
            got.append(m.payload)
            done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    if tls:
        client.tls_set(ca_certs=str(tls["ca"]), cert_reqs=ssl.CERT_REQUIRED)
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(timeout)
    client.loop_stop()
    client.disconnect()
    return got[-1] if got else None
