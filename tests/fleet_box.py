"""A real `edge-agent run` process on a real Mosquitto, driven by signed fleet commands (tests/test_fleet_*.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from agent_config import BASE, write_config
from broker import Broker, Recorder
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.security.bureau_command import sign_command
from edge_agent.security.keys import Signer, public_b64


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class FleetBox:
    """The box under test (a subprocess), the bureau's recorder and a signed-command sender."""

    broker: Broker
    workdir: Path
    key: Signer
    config_path: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None
    recorder: Recorder | None = None
    sender: mqtt.Client | None = None
    env: dict[str, str] = field(default_factory=dict)

    def write(self, **sections: Any) -> Path:
        bureau = {"trusted_keys": [{"name": "test", "public_key": public_b64(self.key.public)}]}
        self.config_path = write_config(self.workdir, self.broker.port, bureau=bureau,
                                        telemetry={"interval_s": 60, "status_interval_s": 300}, **sections)
        return self.config_path

    def start(self) -> FleetBox:
        self.recorder = Recorder(self.broker.port, f"{BASE}/#", client_id=f"bureau-{time.monotonic_ns()}").start()
        self.sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sender-{time.monotonic_ns()}")
        self.sender.connect("127.0.0.1", self.broker.port)
        self.sender.loop_start()
        self.log = open(self.workdir / "agent.stderr", "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(self.config_path)],
                                     stdout=self.log, stderr=self.log, env=env)
        assert self.wait_status(lambda s: s.get("config", {}).get("sha256") == sha256(self.config_path), 20), \
            self.stderr()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.sender is not None:
            self.sender.loop_stop()
            self.sender.disconnect()
        if self.recorder is not None:
            self.recorder.stop()
        if getattr(self, "log", None) is not None:
            self.log.close()

    def stderr(self) -> str:
        return (self.workdir / "agent.stderr").read_text(errors="replace")[-4000:]

    def body(self, name: str, args: dict[str, Any], cid: str) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        return {"v": 1, "id": cid, "name": name, "site": "site-test", "device": "box-1",
                "issued_at": now.isoformat(), "expires_at": (now + timedelta(seconds=120)).isoformat(),
                "nonce": os.urandom(16).hex(), "args": args}

    def send(self, name: str, args: dict[str, Any], cid: str, key: Signer | None = None,
             tamper: dict[str, Any] | None = None) -> None:
        """Sign (with the bureau key unless told) and publish; `tamper` changes args after signing."""
        signed = sign_command(self.body(name, args, cid), key or self.key)
        if tamper:
            signed["args"] = {**signed["args"], **tamper}
        assert self.sender is not None
        self.sender.publish(f"{BASE}/cmd/{name}", json.dumps(signed, ensure_ascii=False), qos=1).wait_for_publish(5)

    def send_lines(self, name: str, lines: list[str]) -> None:
        """Publish lines from `edge-agent sign-command` as they are."""
        assert self.sender is not None
        for line in lines:
            self.sender.publish(f"{BASE}/cmd/{name}", line, qos=1).wait_for_publish(5)

    def acks(self, cid: str) -> list[dict[str, Any]]:
        assert self.recorder is not None
        return [a for a in self.recorder.payloads("cmd/ack") if a.get("id") == cid]

    def wait_ack(self, cid: str, results: tuple[str, ...], timeout: float = 15.0) -> dict[str, Any]:
        assert self.recorder is not None
        found = self.recorder.wait_for(lambda: [a for a in self.acks(cid) if a["result"] in results], timeout)
        assert found, f"no {results} ack for {cid}: {self.acks(cid)}\n{self.stderr()}"
        return found[-1]

    def statuses(self) -> list[dict[str, Any]]:
        assert self.recorder is not None
        return self.recorder.payloads("status")

    def wait_status(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any] | None:
        assert self.recorder is not None

        def match() -> dict[str, Any] | None:
            hits = [s for s in self.statuses() if s.get("state") == "online" and predicate(s)]
            return hits[-1] if hits else None

        return self.recorder.wait_for(match, timeout)
