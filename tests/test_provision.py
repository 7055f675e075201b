"""`edge-fw provision` on a fresh (temporary) box: config, device key, registration record, doctor."""

from __future__ import annotations

import base64
import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from broker import Broker
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config import load_checked
from edge_agent.security.keys import key_id, load_private_key, public_b64


def provision(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from firmware_tools.cli import main; raise SystemExit(main())",
                           "provision", "--config",
                           str(tmp_path / "etc/config.yaml"), "--data-dir", str(tmp_path / "var"), *extra],
                          capture_output=True, text=True, timeout=60)


def record_of(out: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith("register "))
    return json.loads(line.removeprefix("register").strip())


def test_provision_writes_a_config_and_key_prints_the_record_and_runs_doctor(mosquitto: Broker, tmp_path: Path):
    bureau = Ed25519PrivateKey.generate().public_key()
    args = ("--site", "sz-test-0001", "--device", "crane-7", "--broker", f"mqtt://127.0.0.1:{mosquitto.port}",
            "--bureau-key", base64.b64encode(bureau.public_bytes_raw()).decode(), "--user", "nobody")
    first = provision(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    config = load_checked(tmp_path / "etc/config.yaml").config
    assert (config.site.id, config.device.id) == ("sz-test-0001", "crane-7")
    assert (config.mqtt.host, config.mqtt.port) == ("127.0.0.1", mosquitto.port)
    assert config.storage.data_dir == tmp_path / "var" and not config.meters and not config.cameras
    assert config.bureau.trusted_keys[0].public_key == base64.b64encode(bureau.public_bytes_raw()).decode()
    assert config.rules.noise.night_limit_db == 55  # the rest comes from the example

    key_path = tmp_path / "var/keys/device.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        assert key_path.stat().st_uid == pwd.getpwnam("nobody").pw_uid  # the service user's
    public = load_private_key(key_path).public_key()
    record = record_of(first.stdout)
    assert record["key_id"] == key_id(public) and record["public_key"] == public_b64(public)
    assert (record["site"], record["device"]) == ("sz-test-0001", "crane-7")
    assert f"key id      {key_id(public)}" in first.stdout
    assert "-- edge-agent doctor --" in first.stdout and "PASS  broker" in first.stdout

    # Idempotent: the same answers change nothing, and the key is kept.
    again = provision(tmp_path, *args, "--no-doctor")
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout and "kept" in again.stdout
    assert record_of(again.stdout)["key_id"] == record["key_id"]

    # Other answers: the existing config is not overwritten unless told; the key only with --replace-key.
    other = list(args)
    other[3] = "crane-8"
    refused = provision(tmp_path, *other, "--no-doctor")
    assert refused.returncode == 1 and "--force-config" in refused.stderr
    assert load_checked(tmp_path / "etc/config.yaml").config.device.id == "crane-7"
    forced = provision(tmp_path, *other, "--no-doctor", "--force-config", "--replace-key")
    assert forced.returncode == 0, forced.stderr
    assert load_checked(tmp_path / "etc/config.yaml").config.device.id == "crane-8"
    assert (tmp_path / "etc/config.yaml.bak").exists()
    assert record_of(forced.stdout)["key_id"] != record["key_id"]
    assert len(list((tmp_path / "var/keys").glob("device.key.replaced-*"))) == 1  # the old key is kept


def test_provision_refuses_a_password_in_the_broker_url(tmp_path: Path):
    result = provision(tmp_path, "--site", "s", "--device", "d", "--broker", "mqtt://u:secret@127.0.0.1",
                       "--no-doctor")
    assert result.returncode == 2 and "no password in the URL" in result.stderr
    assert not (tmp_path / "etc/config.yaml").exists()


@pytest.mark.parametrize("scheme,port", [("mqtts", 8883), ("mqtt", 1883)])
def test_broker_url_sets_tls_and_default_port(tmp_path: Path, scheme: str, port: int):
    from firmware_tools.cli.provision import broker_section

    section = broker_section(f"{scheme}://broker.example", tmp_path / "ca.crt", None, None)
    assert section["port"] == port and ("tls" in section) == (scheme == "mqtts")
