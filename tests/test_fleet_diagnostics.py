"""`logs` and `doctor` on request: the real agent, a real Mosquitto, signed commands, secrets redacted."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker import Broker
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_box import FleetBox

from edge_agent.fleet.diagnostics import decode_logs
from edge_agent.fleet.logring import tail
from edge_agent.security.keys import Signer

SECRET = "S3cr3t"  # the HJ 212 PW, kept in a file the config refers to


class FakePlatform:
    """An HJ 212 platform on loopback that answers the box with a packet the box must reject (bad CRC)
    and whose text carries the password: the agent logs such packets as they came."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.sent = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.sendall(f"##0060QN=20260101000000000;ST=91;CN=9014;PW={SECRET};MN=X;Flag=4;CP=&&&&ABCD\r\n".encode())
            self.sent.set()
            self.sent.wait(30)


@pytest.fixture
def box(mosquitto: Broker, tmp_path: Path) -> Iterator[tuple[FleetBox, FakePlatform]]:
    platform = FakePlatform()
    pw = tmp_path / "hj212-pw"
    pw.write_text(SECRET + "\n")
    fleet = FleetBox(mosquitto, tmp_path, Signer(Ed25519PrivateKey.generate()))
    fleet.write(hj212={"host": "127.0.0.1", "port": platform.port, "mn": "MN0001", "pw_secret": {"file": str(pw)}})
    yield fleet.start(), platform
    fleet.stop()
    platform.sock.close()


def test_logs_come_back_gzipped_with_the_logged_password_redacted(box: tuple[FleetBox, FakePlatform], tmp_path: Path):
    fleet, platform = box
    assert platform.sent.wait(10)
    data_dir = tmp_path / "data"
    assert fleet.recorder is not None
    seen = fleet.recorder.wait_for(lambda: [ln for ln in tail(data_dir, 500) if "bad packet" in ln], 10)
    assert seen and SECRET in seen[0]  # the agent really logged the password...

    fleet.send("logs", {"lines": 300}, "logs-1")
    ack = fleet.wait_ack("logs-1", ("done", "failed", "refused"))
    assert ack["result"] == "done" and ack["data"]["source"] == "ring" and ack["data"]["encoding"] == "gzip+base64"
    lines = decode_logs(ack["data"])
    assert len(lines) == ack["data"]["lines"] > 3
    assert any("bad packet" in ln and "PW=***" in ln for ln in lines)  # ...and it does not leave the box
    assert not any(SECRET in ln for ln in lines)
    assert ack["data"]["redacted_lines"] >= 1
    assert any("edge-agent 0.1.0 starting" in ln for ln in lines)

    fleet.send("logs", {"lines": 1000, "minutes": 5}, "logs-2")
    recent = decode_logs(fleet.wait_ack("logs-2", ("done", "failed", "refused"))["data"])
    assert recent and not any(SECRET in ln for ln in recent)
    fleet.send("logs", {"lines": 0}, "logs-3")
    assert fleet.wait_ack("logs-3", ("done", "failed", "refused"))["reason"] == "invalid_args"


def test_doctor_returns_the_table_as_json(box: tuple[FleetBox, FakePlatform]):
    fleet, _ = box
    fleet.send("doctor", {}, "doc-1")
    ack = fleet.wait_ack("doc-1", ("done", "failed", "refused"))
    assert ack["result"] == "done", ack
    checks = {c["name"]: c for c in ack["data"]["checks"]}
    assert {"config", "data dir", "free disk", "clock", "uplink", "commands"} <= set(checks)
    assert checks["uplink"]["status"] == "PASS" and "connected to 127.0.0.1" in checks["uplink"]["detail"]
    assert checks["data dir"]["status"] == "PASS" and checks["commands"]["status"] == "PASS"
    assert ack["data"]["failed"] == sum(1 for c in ack["data"]["checks"] if c["status"] == "FAIL")
    assert all(set(c) == {"name", "status", "detail", "hint"} for c in ack["data"]["checks"])


@pytest.mark.parametrize("line,gone", [
    ("mqtt login failed: password=hunter22 rejected", "hunter22"),
    ('{"user": "box", "token": "tok-123456"}', "tok-123456"),
    ("connecting to rtsp://admin:cam-pass9@10.0.0.5/stream1", "cam-pass9"),
    ("Authorization: Bearer eyJhbGciOiJFZERTQSJ9", "eyJhbGciOiJFZERTQSJ9"),
    ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA\n-----END PRIVATE KEY-----", "MC4CAQAwBQYDK2VwBCIEIA"),
    ("resolved the broker secret as s3kr1t-value for user box", "s3kr1t-value"),  # by value only
])
def test_redactor_removes_secrets_by_shape_and_by_value(line: str, gone: str):
    from edge_agent.fleet.redact import Redactor

    cleaned, hit = Redactor(["s3kr1t-value"])(line)
    assert gone not in cleaned and hit and "***" in cleaned


def test_inline_secrets_are_found_and_references_are_not():
    from edge_agent.fleet.remote_config import inline_secrets

    config = {"mqtt": {"username": "u", "password": {"file": "/etc/edge-agent/pw"}},
              "hj212": {"pw": "123456", "pw_secret": {"env": "PW"}},
              "cameras": [{"id": "c", "url": "rtsp://admin:x1@10.0.0.5/s"}], "bureau": {"api_key": "abc"}}
    assert sorted(inline_secrets(config)) == ["bureau.api_key", "cameras.0.url (a password in a URL)", "hj212.pw"]
