"""Any allowed relay can be switched by the bureau: signed `relay` commands over a real Mosquitto.

The whole daemon runs against Mosquitto on 127.0.0.1 with gpiozero's mock pins; the bureau
side signs with a test key. `bureau.relays_allowed` lists the relays the bureau may switch;
`spray` and `strobe` stay as aliases of `relay`, under the same list, and the relays' own
protection (max_on_s, min_off_s) applies to bureau commands as to violations.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_config import BASE, send_signed_command, write_config
from broker import Broker, Recorder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config import load_config
from edge_agent.daemon import Parts, build_agent
from edge_agent.security.bureau_command import args_problem
from edge_agent.security.keys import Signer, private_pem

pytest.importorskip("gpiozero", reason="pip install gpiozero")

SPRAY, STROBE, PUMP, GATE = 17, 27, 5, 6


@dataclass
class Box:
    parts: Parts
    bureau: Recorder
    key: Signer
    key_file: Path
    port: int
    pins: Any

    def send(self, name: str, args: dict[str, Any]) -> str:
        nonce = secrets.token_hex(16)
        send_signed_command(self.port, self.key, name, args, nonce)
        return f"c-{name}-{nonce[:6]}"

    def answer(self, command_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The final ack (done, failed or refused) of one command."""
        def final() -> list[dict[str, Any]]:
            return [a for a in self.bureau.payloads("cmd/ack") if a["id"] == command_id and a["result"] != "accepted"]
        found = self.bureau.wait_for(final, timeout)
        assert found, f"no answer to {command_id}: {self.bureau.payloads('cmd/ack')}"
        return found[0]

    def levels(self, pin: int) -> list[bool]:
        return [s.state for s in self.pins.pin(pin).states[1:]]


@pytest.fixture
def box(mosquitto: Broker, tmp_path: Path, pins: object) -> Iterator[Box]:
    key = Signer(Ed25519PrivateKey.generate())
    key_file = tmp_path / "bureau.key"
    key_file.write_bytes(private_pem(key.private))
    config = load_config(write_config(
        tmp_path, mosquitto.port,
        bureau={"trusted_keys": [{"name": "test-bureau", "public_key": key.public_b64}],
                "relays_allowed": ["spray", "pump", "fan"]},  # "fan" is allowed but not on this box
        relays=[{"id": "spray", "pin": SPRAY}, {"id": "strobe", "pin": STROBE},
                {"id": "pump", "pin": PUMP, "max_on_s": 0.6, "min_off_s": 0.8},
                {"id": "gate", "pin": GATE}]))
    parts = build_agent(config)
    bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
    parts.start()
    assert bureau.wait_for(lambda: any(p.get("state") == "online" for p in bureau.payloads("status")))
    try:
        yield Box(parts, bureau, key, key_file, mosquitto.port, pins)
    finally:
        parts.stop(timeout=2)
        bureau.stop()


def test_an_allowed_relay_switches_and_one_not_on_the_list_is_refused(box: Box):
    done = box.answer(box.send("relay", {"relay": "pump", "state": "on"}))
    assert done["result"] == "done" and done["data"]["relay"] == "pump" and done["data"]["on"] is True
    assert box.levels(PUMP)[:1] == [True]

    refused = box.answer(box.send("relay", {"relay": "gate", "state": "on"}))
    assert refused["result"] == "refused" and refused["reason"] == "relay_not_allowed"
    assert "gate" in refused["detail"] and "relays_allowed" in refused["detail"]
    refused = box.answer(box.send("strobe", {"state": "on"}))  # the alias obeys the same list
    assert refused["result"] == "refused" and refused["reason"] == "relay_not_allowed"
    assert box.levels(GATE) == [] and box.levels(STROBE) == []  # never switched
    # Refused before "accepted": the bureau sees one answer, no handler ran.
    assert not any(a["result"] == "accepted" and a["command"] == "strobe" for a in box.bureau.payloads("cmd/ack"))

    alias = box.answer(box.send("spray", {"state": "on", "duration_s": 1}))
    assert alias["result"] == "done" and alias["data"]["relay"] == "spray"
    assert box.bureau.wait_for(lambda: box.levels(SPRAY) == [True, False], timeout=5)  # off after its second
    assert box.pins.pin(SPRAY).states[-1].timestamp >= 1.0

    missing = box.answer(box.send("relay", {"relay": "fan", "state": "on"}))
    assert missing["result"] == "failed" and "no relay 'fan'" in missing["detail"]

    status = box.parts.agent.status_payload()
    assert status["components"]["commands"]["refused"] == {"relay_not_allowed": 2}


def test_bureau_commands_keep_the_relays_protection(box: Box):
    # max_on_s 0.6: an hour asked, cut off after 0.6 s.
    box.answer(box.send("relay", {"relay": "pump", "state": "on", "duration_s": 3600}))
    assert box.bureau.wait_for(lambda: box.levels(PUMP) == [True, False], timeout=5)
    assert 0.6 <= box.pins.pin(PUMP).states[-1].timestamp < 2.0
    # min_off_s 0.8: switched on again at once, it waits out the rest, and the ack says so.
    again = box.answer(box.send("relay", {"relay": "pump", "state": "on", "duration_s": 5}))
    assert again["result"] == "done"
    if box.levels(PUMP) == [True, False]:  # the ack came while resting (usual): it says how long is left
        assert again["data"]["on"] is False and 0 < again["data"]["resting_s"] <= 0.8 and "min_off_s" in again["detail"]
    assert box.bureau.wait_for(lambda: box.levels(PUMP)[:3] == [True, False, True], timeout=5)
    assert box.pins.pin(PUMP).states[3].timestamp >= 0.79  # seconds since it went off
    assert box.bureau.wait_for(lambda: box.levels(PUMP) == [True, False, True, False], timeout=5)
    assert box.pins.pin(PUMP).states[4].timestamp >= 0.6  # and cut off again after max_on_s
    # "auto" hands it back to the violations (none holds it): off.
    auto = box.answer(box.send("relay", {"relay": "pump", "state": "auto"}))
    assert auto["data"]["mode"] == "auto"
    assert box.bureau.wait_for(lambda: box.levels(PUMP)[-1] is False, timeout=5)


def test_bad_relay_arguments_are_refused_with_a_reason(box: Box):
    for args, says in [({"state": "on"}, "'relay'"), ({"relay": "pump", "state": "open"}, "'state'"),
                       ({"relay": "pump", "state": "off", "duration_s": 5}, "'duration_s'"),
                       ({"relay": "pump", "state": "on", "duration_s": 0}, "'duration_s'"),
                       ({"relay": "pump", "state": "on", "pin": 5}, "unexpected")]:
        ack = box.answer(box.send("relay", args))
        assert ack["result"] == "refused" and ack["reason"] == "invalid_args" and says in ack["detail"], (args, ack)
    assert box.levels(PUMP) == []


def test_sign_command_tool_signs_relay_commands_and_checks_their_arguments(box: Box):
    tool = subprocess.run(
        [sys.executable, "-m", "edge_agent", "sign-command", "relay", "--key", str(box.key_file),
         "--site", "site-test", "--device", "box-1", "--arg", "relay=pump", "--arg", "state=on",
         "--arg", "duration_s=1", "--id", "c-tool-1"], capture_output=True, check=True)
    assert f"topic: {BASE}/cmd/relay" in tool.stderr.decode()
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(box.port), "-q", "1",
                    "-t", f"{BASE}/cmd/relay", "-s"], input=tool.stdout, check=True, timeout=10)
    assert box.answer("c-tool-1")["result"] == "done"
    assert box.bureau.wait_for(lambda: box.levels(PUMP) == [True, False], timeout=5)

    bad = subprocess.run(
        [sys.executable, "-m", "edge_agent", "sign-command", "relay", "--key", str(box.key_file),
         "--site", "site-test", "--device", "box-1", "--arg", "state=on"], capture_output=True)
    assert bad.returncode == 1 and b"'relay'" in bad.stderr and bad.stdout == b""
    helptext = subprocess.run([sys.executable, "-m", "edge_agent", "sign-command", "--help"],
                              capture_output=True, check=True).stdout.decode()
    assert "relays_allowed" in helptext and "relay=ID" in helptext


def test_args_problem_for_relay_commands():
    assert args_problem("relay", {"relay": "pump", "state": "on", "duration_s": 60}) is None
    assert args_problem("relay", {"relay": "pump", "state": "auto"}) is None
    assert args_problem("spray", {"state": "off"}) is None
    assert args_problem("spray", {"relay": "pump", "state": "off"}) == "unexpected argument(s) relay"
    assert args_problem("relay", {"relay": "../x", "state": "on"}) == "'relay' (a relay id) is required"
    assert args_problem("relay", {"relay": "pump", "state": "on", "duration_s": 3601}) is not None
    assert args_problem("relay", {"relay": "pump", "state": "on", "duration_s": 1.5}) is not None


def test_config_refuses_a_bad_relay_id_in_the_allow_list():
    from edge_agent.config.security import BureauConfig

    assert BureauConfig().relays_allowed == ["spray", "strobe"]  # what the box obeyed before
    assert "relay" in BureauConfig().commands
    with pytest.raises(ValueError):
        BureauConfig(relays_allowed=["pump/1"])
