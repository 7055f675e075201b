"""`edge-bureau` from the command line: config errors with their lines, users, keys, the evidence zip."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from bureau_helpers import box, feed, verify_ready

from bureau.config import load_config
from bureau.store import open_store


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bureau", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_check_config_reports_every_problem_at_its_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  host: 127.0.0.1\n  prot: 1883\nweb:\n  port: 0\nlimits:\n  night: [{start: '24:00', "
                   "end: '06:00'}]\nstroe: {}\n", encoding="utf-8")
    r = cli("check-config", str(bad))
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"{bad}:3:3: mqtt.prot: unknown key 'prot'; did you mean 'port'?",
        f"{bad}:5:3: web.port: Input should be greater than or equal to 1 (got 0)",
        f"{bad}:7:12: limits.night[0].start: expected HH:MM (00:00..23:59) (got '24:00')",
        f"{bad}:8:1: stroe: unknown key 'stroe'; did you mean 'store'?",
    ]
    good = tmp_path / "good.yaml"
    good.write_text(f"store: {{data_dir: {tmp_path / 'data'}}}\nsites: {{sz-1: {{name: 南山一号}}}}\n",
                    encoding="utf-8")
    r = cli("check-config", str(good))
    assert r.returncode == 0 and "OK" in r.stdout


def test_users_keys_and_export_from_the_command_line(tmp_path: Path):
    cfg = tmp_path / "bureau.yaml"
    cfg.write_text(f"store: {{data_dir: {tmp_path / 'data'}}}\n", encoding="utf-8")
    r = cli("user", "add", "alice", "--role", "operator", "--config", str(cfg), env={"BUREAU_PASSWORD": "s3cret-pass"})
    assert r.returncode == 0, r.stderr
    assert cli("user", "add", "bob", "--role", "admin", "--config", str(cfg),
               env={"BUREAU_PASSWORD": "short"}).returncode == 1
    assert cli("user", "list", "--config", str(cfg)).stdout.split() == ["alice", "operator"]
    r = cli("keys", "bureau", "--config", str(cfg))
    assert r.returncode == 0 and "trusted_keys" in r.stdout
    key_file = tmp_path / "data" / "keys" / "bureau.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"

    config = load_config(cfg)
    store, files = open_store(config)
    b = box(tmp_path)
    v = b.violation("noise_over_limit", "started", datetime.now(timezone.utc), {"leq": 66.0, "limit": 55.0})
    ev, msgs = b.bundle(v)
    assert verify_ready(store, files, feed(store, msgs)) == {ev.id: "unverified"}
    pub = tmp_path / f"box-{b.site}-{b.device}" / "keys" / "device.key.pub"
    r = cli("keys", "register", f"{b.site}/{b.device}", str(pub), "--config", str(cfg))
    assert r.returncode == 0 and b.signer.key_id in r.stdout
    assert "registered" in cli("keys", "list", "--config", str(cfg)).stdout
    assert cli("keys", "register", "bad/../x", "AAAA", "--config", str(cfg)).returncode == 1

    out = tmp_path / "e.zip"
    r = cli("export-evidence", f"{b.site}/{b.device}", ev.id, "-o", str(out), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    unz = tmp_path / "unz"
    zipfile.ZipFile(io.BytesIO(out.read_bytes())).extractall(unz)
    assert sorted(p.name for p in unz.iterdir()) == sorted(["README.txt", ev.id, "summary.html"])
    verify = subprocess.run([sys.executable, "-m", "edge_agent", "verify-evidence", str(unz / ev.id), "--key",
                             b.signer.public_b64], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout
    # The summary says what the registered key proves (checked again at export time).
    assert "VALID" in (unz / "summary.html").read_text(encoding="utf-8")
