"""Remote configuration end to end: the real agent process, a real Mosquitto, signed `config` commands."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from broker import Broker, retained
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_box import FleetBox, sha256

from edge_agent.fleet.transfer import split
from edge_agent.loopback import free_port
from edge_agent.security.keys import Signer, private_pem

BASE = "edge/v1/site-test/box-1"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """systemd's side of the notify protocol, to see what the agent tells it across a restart."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    yield sock
    sock.close()


@pytest.fixture
def box(mosquitto: Broker, tmp_path: Path, notify_socket: socket.socket) -> Iterator[FleetBox]:
    fleet = FleetBox(mosquitto, tmp_path, Signer(Ed25519PrivateKey.generate()),
                     env={"NOTIFY_SOCKET": notify_socket.getsockname()})
    fleet.write()
    yield fleet.start()
    fleet.stop()


def notified(sock: socket.socket) -> list[str]:
    got = []
    while True:
        try:
            got.append(sock.recv(512).decode())
        except TimeoutError:
            return got


def edited(path: Path, **changes: dict) -> bytes:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values}
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8")


def test_valid_config_is_applied_and_its_hash_is_in_the_status(box: FleetBox, tmp_path: Path,
                                                               notify_socket: socket.socket):
    old = sha256(box.config_path)
    new_file = tmp_path / "new.yaml"
    new_file.write_bytes(edited(box.config_path, site={"name": "新名字工地"}))
    new = sha256(new_file)
    pid = box.proc.pid if box.proc else 0
    key_file = tmp_path / "bureau.key"
    key_file.write_bytes(private_pem(box.key.private))
    # The bureau's own tool signs it: one line per part (small parts to send three).
    out = subprocess.run([sys.executable, "-m", "edge_agent", "sign-command", "config", "--key", str(key_file),
                          "--site", "site-test", "--device", "box-1", "--id", "cfg-1", "--file", str(new_file),
                          "--expect-file", str(box.config_path), "--part-bytes", "300", "--arg", "confirm_s=20"],
                         capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == -(-new_file.stat().st_size // 300) >= 2
    box.send_lines("config", lines)

    ack = box.wait_ack("cfg-1-p" + str(len(lines) - 1), ("done", "failed", "refused"), 30)
    assert ack["result"] == "done" and ack["data"]["outcome"] == "applied", ack
    assert ack["data"]["sha256"] == new and ack["data"]["previous_sha256"] == old
    restarting = box.acks("cfg-1-p" + str(len(lines) - 1))
    assert [a["result"] for a in restarting] == ["accepted", "queued", "done"]
    assert restarting[1]["data"]["stage"] == "restarting"
    assert all(box.acks(f"cfg-1-p{i}")[-1]["data"]["stage"] == "part" for i in range(len(lines) - 1))
    status = box.wait_status(lambda s: s.get("config", {}).get("sha256") == new
                             and s["config"].get("last_change", {}).get("command") == "cfg-1-p" + str(len(lines) - 1))
    assert status is not None and status["location"]["name"] == "新名字工地"
    assert status["config"]["last_change"]["result"] == "applied"
    assert sha256(box.config_path) == new
    assert box.config_path.with_name("config.yaml.prev").read_bytes() != box.config_path.read_bytes()
    assert not box.config_path.with_name("config.yaml.pending").exists()
    assert box.proc is not None and box.proc.poll() is None and box.proc.pid == pid  # restarted in place
    got = retained(box.broker.port, f"{BASE}/status")
    assert got is not None and sha256(box.config_path)[:16] in got.decode()
    # systemd was told: ready, then a reload (not a stop: it would wait for an exit), then ready again.
    states = [m.split("\n")[0] for m in notified(notify_socket) if not m.startswith("WATCHDOG")]
    assert states == ["READY=1", "RELOADING=1", "READY=1"], states


def test_config_that_breaks_the_broker_link_is_rolled_back_within_the_deadline(box: FleetBox):
    old = sha256(box.config_path)
    dead = free_port()
    new = edited(box.config_path, mqtt={"port": dead})
    args = {"expect_sha256": old, "confirm_s": 6, **split(new, 1 << 20)[0]}
    sent = time.monotonic()
    box.send("config", args, "cfg-bad")
    restarting = box.wait_ack("cfg-bad", ("queued", "refused"))
    assert restarting["result"] == "queued" and restarting["data"]["stage"] == "restarting", restarting
    ack = box.wait_ack("cfg-bad", ("done", "failed", "refused"), 30)
    took = time.monotonic() - sent
    assert (ack["result"], ack["reason"], ack["data"]["cause"]) == ("failed", "rolled_back", "broker_unreachable"), ack
    assert str(dead) not in ack["detail"] or "uplink" in ack["detail"]
    assert took < 6 + 15, took  # the deadline, plus two restarts of the process
    assert sha256(box.config_path) == old  # the old file is back
    status = box.wait_status(lambda s: s.get("config", {}).get("last_change", {}).get("result") == "rolled_back")
    assert status is not None and status["config"]["sha256"] == old  # reachable again, on the old config
    box.send("ping", {}, "ping-after")
    assert box.wait_ack("ping-after", ("done",))["data"] == {"pong": True}


def test_inline_secret_wrong_hash_and_bad_signature_are_refused(box: FleetBox):
    old = sha256(box.config_path)
    secret = edited(box.config_path, mqtt={"username": "box", "password": "hunter2-inline"})
    box.send("config", {"expect_sha256": old, **split(secret, 1 << 20)[0]}, "cfg-secret")
    ack = box.wait_ack("cfg-secret", ("refused", "done"))
    assert (ack["result"], ack["reason"]) == ("refused", "inline_secret") and "mqtt.password" in ack["detail"]
    assert "hunter2" not in str(box.acks("cfg-secret"))

    fine = edited(box.config_path, site={"name": "另一个"})
    box.send("config", {"expect_sha256": "0" * 64, **split(fine, 1 << 20)[0]}, "cfg-hash")
    ack = box.wait_ack("cfg-hash", ("refused", "done"))
    assert (ack["result"], ack["reason"]) == ("refused", "config_changed") and old in ack["detail"]

    box.send("config", {"expect_sha256": old, **split(fine, 1 << 20)[0]}, "cfg-forged",
             tamper={"confirm_s": 7})  # changed after signing
    ack = box.wait_ack("cfg-forged", ("refused", "done"))
    assert (ack["result"], ack["reason"]) == ("refused", "bad_signature")

    other = Signer(Ed25519PrivateKey.generate())
    box.send("config", {"expect_sha256": old, **split(fine, 1 << 20)[0]}, "cfg-stranger", key=other)
    assert box.wait_ack("cfg-stranger", ("refused", "done"))["reason"] == "unknown_key"

    broken = edited(box.config_path, telemetry={"interval_s": "soon"})
    box.send("config", {"expect_sha256": old, **split(broken, 1 << 20)[0]}, "cfg-invalid")
    ack = box.wait_ack("cfg-invalid", ("refused", "done"))
    assert ack["reason"] == "invalid_config" and "telemetry.interval_s" in ack["detail"]

    locked_out = edited(box.config_path, bureau={"trusted_keys": [
        {"name": "other", "public_key": other.public_b64}]})
    box.send("config", {"expect_sha256": old, **split(locked_out, 1 << 20)[0]}, "cfg-lockout")
    assert box.wait_ack("cfg-lockout", ("refused", "done"))["reason"] == "would_lock_out"

    assert sha256(box.config_path) == old  # nothing was written, nothing restarted
    assert box.proc is not None and box.proc.poll() is None
    assert not box.config_path.with_name("config.yaml.pending").exists()


def test_patch_of_sections_is_applied(box: FleetBox):
    old = sha256(box.config_path)
    box.send("config", {"expect_sha256": old, "confirm_s": 20,
                        "sections": {"telemetry": {"interval_s": 60, "status_interval_s": 120}}}, "cfg-patch")
    ack = box.wait_ack("cfg-patch", ("done", "failed", "refused"), 30)
    assert ack["result"] == "done" and ack["data"]["outcome"] == "applied", ack
    assert yaml.safe_load(box.config_path.read_text())["telemetry"]["status_interval_s"] == 120
    assert yaml.safe_load(box.config_path.read_text())["site"]["id"] == "site-test"  # the rest is kept


def test_new_config_that_cannot_start_is_rolled_back_by_run_itself(mosquitto: Broker, tmp_path: Path):
    """A change whose file does not even load (here: mangled on disk after the swap) never keeps the box
    down: `edge-agent run` puts the previous file back, starts on it, and acks the change rolled_back."""
    import json

    from edge_agent.fleet.remote_config import Pending, boot

    fleet = FleetBox(mosquitto, tmp_path, Signer(Ed25519PrivateKey.generate()))
    good = fleet.write()
    old = sha256(good)
    prev = good.with_name("config.yaml.prev")
    prev.write_bytes(good.read_bytes())
    good.write_text("site: {id: [unclosed\n")
    Pending("cfg-dead", sha256(good), old, 10, ["uplink"], ["uplink"]).save(good.with_name("config.yaml.pending"))
    try:
        fleet.start()  # waits for an online status on the file now in place: the old one
        ack = fleet.wait_ack("cfg-dead", ("done", "failed"), 20)
        assert (ack["result"], ack["reason"], ack["data"]["cause"]) == ("failed", "rolled_back", "did_not_start"), ack
        assert sha256(good) == old and not good.with_name("config.yaml.pending").exists()
    finally:
        fleet.stop()

    # A change that starts but dies before it is confirmed, MAX_ATTEMPTS times: the next start rolls back.
    bad = tmp_path / "other.yaml"
    bad.write_bytes(edited(good, site={"name": "x"}))
    prev.write_bytes(good.read_bytes())
    good.write_bytes(bad.read_bytes())
    marker = good.with_name("config.yaml.pending")
    Pending("cfg-loop", sha256(good), old, 10, [], [], attempts=3).save(marker)
    boot(good)
    assert sha256(good) == old
    assert json.loads(marker.read_text())["stage"] == "rolled_back"
    assert json.loads(marker.read_text())["reason"] == "did_not_start"


def test_config_with_a_broken_meter_section_is_rolled_back(box: FleetBox, tmp_path: Path):
    """A meter added on a port that is not there: the link is fine, the new meter never comes up."""
    old = sha256(box.config_path)
    data = yaml.safe_load(box.config_path.read_text(encoding="utf-8"))
    data["meters"] = [{"id": "noise-1", "port": str(tmp_path / "no-such-tty"), "profile": "renke_rs_zs_n01",
                       "address": 1, "baud": 4800, "poll_interval_s": 1}]
    new = yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8")
    box.send("config", {"expect_sha256": old, "confirm_s": 5, **split(new, 1 << 20)[0]}, "cfg-meter")
    ack = box.wait_ack("cfg-meter", ("done", "failed", "refused"), 30)
    assert (ack["result"], ack["reason"], ack["data"]["cause"]) == ("failed", "rolled_back", "component_down"), ack
    assert "noise-1" in ack["detail"]
    assert sha256(box.config_path) == old
