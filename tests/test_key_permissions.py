"""Private keys stay private whatever the umask; an exposed one is loaded with a warning and fails `doctor`."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_config import write_config
from broker import free_port
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.security.keys import device_signer, load_private_key, write_private_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_000() -> Iterator[None]:
    """The umask of a careless shell or unit: without explicit modes everything would be 0777/0666."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_device_key_folders_0700_key_0600_pub_0644_under_umask_000(tmp_path: Path, umask_000: None):
    key = tmp_path / "data" / "keys" / "device.key"
    signer = device_signer(key)
    assert mode(tmp_path / "data") == 0o700 and mode(key.parent) == 0o700
    assert mode(key) == 0o600
    pub = key.with_name("device.key.pub")
    assert mode(pub) == 0o644 and pub.read_text().strip() == signer.public_b64
    assert not [p for p in key.parent.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_write_private_key_is_0600_under_umask_000_and_leaves_existing_folders_alone(tmp_path: Path,
                                                                                       umask_000: None):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    write_private_key(shared / "bureau.key", Ed25519PrivateKey.generate())
    assert mode(shared / "bureau.key") == 0o600
    assert mode(shared) == 0o755  # e.g. the current directory of `edge-fw keys`: not ours to change


def test_exposed_private_key_loads_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    key = tmp_path / "device.key"
    write_private_key(key, Ed25519PrivateKey.generate())
    caplog.set_level(logging.WARNING, logger="edge_agent")
    load_private_key(key)
    assert not caplog.records
    os.chmod(key, 0o644)
    load_private_key(key)
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "0644" in record.getMessage()
    assert f"chmod 600 {key}" in record.getMessage()


def doctor_lines(config: Path) -> dict[str, str]:
    result = subprocess.run([sys.executable, "-m", "edge_agent", "doctor", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    lines = {}
    for line in result.stdout.splitlines():
        if line[:4] in ("PASS", "WARN", "FAIL", "SKIP"):
            lines[line[6:24].strip()] = line
    return lines


def test_doctor_fails_on_group_or_world_readable_private_keys(tmp_path: Path):
    data = tmp_path / "data"
    device = data / "keys" / "device.key"
    device_signer(device)
    bureau = tmp_path / "bureau.key"  # someone copied the bureau's private key, not its public half
    write_private_key(bureau, Ed25519PrivateKey.generate())
    config = write_config(tmp_path, free_port(), bureau={"trusted_keys": [{"name": "szeb", "file": str(bureau)}]})

    os.chmod(device, 0o644)
    os.chmod(bureau, 0o640)
    lines = doctor_lines(config)
    assert lines["device key"].startswith("FAIL") and "0644" in lines["device key"], lines
    assert lines["bureau key szeb"].startswith("FAIL") and "0640" in lines["bureau key szeb"], lines

    os.chmod(device, 0o600)
    os.chmod(bureau, 0o600)
    lines = doctor_lines(config)
    assert lines["device key"].startswith("PASS"), lines
    assert lines["bureau key szeb"].startswith("WARN"), lines  # 0600, but the box needs only the public key


def test_doctor_passes_a_key_not_yet_made(tmp_path: Path):
    lines = doctor_lines(write_config(tmp_path, free_port()))
    assert lines["device key"].startswith("PASS") and "first start" in lines["device key"], lines
