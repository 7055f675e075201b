"""Bureau commands: only a signed, fresh, first-seen command for this box reaches a handler."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edge_agent.actions.speaker_queue import Outcome
from edge_agent.command_dispatch import AckResult, CommandDispatcher, build_dispatcher
from edge_agent.config.security import BureauConfig, EvidenceConfig, TrustedKey
from edge_agent.security.bureau_command import Command, CommandVerifier, Refused, VerifierPolicy, sign_command
from edge_agent.security.canonical import CanonicalError, canonical_bytes, format_number
from edge_agent.security.keys import Signer, key_id, public_b64, write_private_key
from edge_agent.security.nonces import NonceStore

SITE, DEVICE = "site-test", "box-1"
T0 = datetime(2026, 11, 23, 4, 0, 0, tzinfo=timezone.utc)
EDGE_FW = [sys.executable, "-c", "import sys; from firmware_tools.cli import main; sys.exit(main())"]
REASONS = {"oversize", "malformed", "invalid_field", "unknown_key", "bad_signature", "topic_mismatch",
           "wrong_target", "invalid_lifetime", "not_yet_valid", "expired", "unknown_command", "invalid_args",
           "replayed"}


class Clock:
    def __init__(self, moment: datetime = T0):
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


class FixedClock:
    """An agent clock whose wall time stands still at `moment`."""

    def __init__(self, moment: datetime):
        self.moment = moment

    def now(self) -> datetime:
        return self.moment

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(seconds)


class Acks:
    """Stands in for Agent.publish: records what would go to cmd/ack."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, leaf: str, payload: Any, *, kind: str) -> None:
        assert leaf == "cmd/ack" and kind == "ack"
        with self.lock:
            self.items.append(dict(payload))

    def results(self, result: str) -> list[dict[str, Any]]:
        with self.lock:
            return [a for a in self.items if a["result"] == result]


class Harness:
    def __init__(self, tmp: Path, *, acks_per_minute: int = 100_000, **policy: Any):
        self.bureau = Signer(Ed25519PrivateKey.generate())
        self.clock = Clock()
        self.nonce_path = tmp / "nonces.sqlite"
        self.policy = VerifierPolicy(site=SITE, device=DEVICE, trusted={self.bureau.key_id: self.bureau.public},
                                     commands=frozenset({"shout", "spray", "strobe", "snapshot", "ping"}),
                                     **policy)
        self.verifier = CommandVerifier(self.policy, NonceStore(self.nonce_path), now=self.clock)
        self.acks = Acks()
        self.ran: list[Command] = []
        self.dispatcher = CommandDispatcher(self.verifier, self.acks, refusal_acks_per_minute=acks_per_minute)
        self.dispatcher.register("shout", self._shout)
        self.dispatcher.start()

    def _shout(self, command: Command) -> AckResult:
        self.ran.append(command)
        return AckResult("done", data={"played": command.args.get("clip") or command.args.get("text")})

    def send(self, name: str, payload: bytes) -> None:
        self.dispatcher.on_message(f"edge/v1/{SITE}/{DEVICE}/cmd/{name}", payload)
        assert self.dispatcher.wait_idle(5)


def body(name: str = "shout", *, issued: datetime = T0, lifetime_s: int = 120, nonce: str | None = None,
         args: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "id": f"c-{random.getrandbits(32):08x}", "name": name, "site": SITE, "device": DEVICE,
            "issued_at": issued.isoformat(), "expires_at": (issued + timedelta(seconds=lifetime_s)).isoformat(),
            "nonce": nonce or f"{random.getrandbits(128):032x}",
            "args": {"clip": "stop_work"} if args is None and name == "shout" else (args or {}), **fields}


def signed(signer: Signer, name: str = "shout", **kw: Any) -> bytes:
    return json.dumps(sign_command(body(name, **kw), signer), ensure_ascii=False).encode("utf-8")


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


# --- the good path ----------------------------------------------------------------------------


def test_valid_signed_shout_reaches_handler_and_is_acked_accepted_then_done(h: Harness):
    h.send("shout", signed(h.bureau, "shout", args={"text": "请停止作业"}))
    assert len(h.ran) == 1 and h.ran[0].args["text"] == "请停止作业"
    assert [a["result"] for a in h.acks.items] == ["accepted", "done"]
    assert h.acks.items[1]["id"] == h.ran[0].id and h.acks.items[1]["data"] == {"played": "请停止作业"}
    assert h.acks.items[1]["time"].endswith("+00:00")


def test_builtin_ping_is_done_and_snapshot_refuses_without_camera(h: Harness):
    h.send("ping", signed(h.bureau, "ping"))
    h.send("snapshot", signed(h.bureau, "snapshot"))
    final = [a for a in h.acks.items if a["result"] != "accepted"]
    assert final[0]["command"] == "ping" and final[0]["result"] == "done"
    assert final[1] == {**final[1], "command": "snapshot", "result": "refused", "detail": "no camera configured"}
    h.dispatcher.register("snapshot", lambda c: AckResult("done"))
    h.send("snapshot", signed(h.bureau, "snapshot"))
    assert h.acks.items[-1]["result"] == "done"


# --- 1,000 hostile commands -----------------------------------------------------------------------


def hostile_commands(h: Harness, rng: random.Random) -> list[tuple[str, bytes, str | None]]:
    """(topic name, payload, expected reason or None for 'any refusal') x 1000."""
    stranger = Signer(Ed25519PrivateKey.generate())
    out: list[tuple[str, bytes, str | None]] = []

    def tampered(field: str, value: Any) -> bytes:
        cmd = sign_command(body(), h.bureau)
        cmd[field] = value
        return json.dumps(cmd).encode()

    def forged_with_trusted_id() -> bytes:
        cmd = sign_command(body(), stranger)
        cmd["key_id"] = h.bureau.key_id  # claims the bureau's key, signed with another
        return json.dumps(cmd).encode()

    cases: list[tuple[Any, str]] = [
        (lambda: tampered("device", "box-2"), "bad_signature"),
        (lambda: tampered("expires_at", (T0 + timedelta(seconds=200)).isoformat()), "bad_signature"),
        (lambda: tampered("args", {"text": "随便喊"}), "bad_signature"),
        (lambda: tampered("nonce", f"{rng.getrandbits(128):032x}"), "bad_signature"),
        (forged_with_trusted_id, "bad_signature"),
        (lambda: signed(stranger), "unknown_key"),
        (lambda: signed(h.bureau, issued=T0 - timedelta(minutes=10)), "expired"),
        (lambda: signed(h.bureau, issued=T0 + timedelta(minutes=10)), "not_yet_valid"),
        (lambda: signed(h.bureau, lifetime_s=3600), "invalid_lifetime"),
        (lambda: signed(h.bureau, lifetime_s=-5), "invalid_lifetime"),
        (lambda: json.dumps(sign_command({**body(), "device": "box-2"}, h.bureau)).encode(), "wrong_target"),
        (lambda: json.dumps(sign_command({**body(), "site": "other-site"}, h.bureau)).encode(), "wrong_target"),
        (lambda: signed(h.bureau, args={"clip": "a", "text": "b"}), "invalid_args"),
        (lambda: b"x" * 9000, "oversize"),
        (lambda: b"\xff\xfe not utf-8", "malformed"),
        (lambda: b'{"v":1,"v":1}', "malformed"),
        (lambda: b"[1,2,3]", "malformed"),
        (lambda: b'{"v": NaN}', "malformed"),
        (lambda: b"[" * 4000 + b"]" * 4000, "malformed"),
        (lambda: json.dumps({**sign_command(body(), h.bureau), "id": 7}).encode(), "invalid_field"),
        (lambda: json.dumps({**sign_command(body(), h.bureau), "args": []}).encode(), "invalid_field"),
        (lambda: json.dumps({**sign_command(body(), h.bureau), "v": "1"}).encode(), "invalid_field"),
        (lambda: json.dumps({**sign_command(body(), h.bureau), "extra": 1}).encode(), "invalid_field"),
        (lambda: json.dumps({**sign_command(body(), h.bureau), "issued_at": "2026-11-23T04:00:00"}).encode(),
         "invalid_field"),
        (lambda: json.dumps({k: v for k, v in sign_command(body(), h.bureau).items() if k != "signature"}).encode(),
         "invalid_field"),
    ]
    per_case = 16
    for make, reason in cases:  # 25 x 16 = 400 deterministic forgeries
        out += [("shout", make(), reason) for _ in range(per_case)]
    for _ in range(100):  # a signed ping moved to cmd/shout
        out.append(("shout", signed(h.bureau, "ping"), "topic_mismatch"))
    for _ in range(50):  # signed, but a command this box does not know
        out.append(("launch", json.dumps(sign_command(body("launch", args={}), h.bureau)).encode(), None))
    valid_template = sign_command(body(args={"text": "停止"}), h.bureau)
    valid = json.dumps(valid_template, ensure_ascii=False).encode()
    while len(out) < 800:  # one byte of a valid, unused command changed
        data = bytearray(valid)
        pos = rng.randrange(len(data))
        data[pos] = (data[pos] + rng.randrange(1, 256)) % 256
        out.append(("shout", bytes(data), None))
    while len(out) < 900:  # random bytes and random JSON
        if rng.random() < 0.5:
            out.append(("shout", rng.randbytes(rng.randrange(0, 300)), None))
        else:
            junk = {rng.choice([*valid_template, "x"]): rng.choice([None, 1, "s", [], {}, 1.5, True])
                    for _ in range(rng.randrange(0, 12))}
            out.append(("shout", json.dumps(junk).encode(), None))
    return out


def test_1000_forged_expired_replayed_and_fuzzed_commands_are_all_refused_with_reasons(h: Harness):
    rng = random.Random(4)
    original = signed(h.bureau, "shout")
    h.send("shout", original)  # the one genuine command
    assert len(h.ran) == 1
    hostile = hostile_commands(h, rng)
    hostile += [("shout", original, "replayed")] * 100  # the genuine one, replayed
    assert len(hostile) == 1000
    h.acks.items.clear()
    for name, payload, _expected in hostile:
        h.send(name, payload)
    assert len(h.ran) == 1, "a hostile command reached the shout handler"
    assert len(h.acks.items) == 1000
    assert all(a["result"] == "refused" and a["reason"] in REASONS and a["detail"] for a in h.acks.items)
    for (name, _payload, expected), ack in zip(hostile, h.acks.items, strict=True):
        if expected is not None:
            assert ack["reason"] == expected, (name, ack)
    seen = {a["reason"] for a in h.acks.items}
    assert seen >= REASONS - {"unknown_command"} and "unknown_command" in seen
    assert sum(h.dispatcher.refused.values()) == 1000 and h.dispatcher.accepted == 1


# --- one property at a time -------------------------------------------------------------------------


def test_replay_after_restart_is_refused(tmp_path: Path):
    first = Harness(tmp_path)
    payload = signed(first.bureau)
    first.send("shout", payload)
    assert len(first.ran) == 1
    first.dispatcher.stop()
    second = Harness(tmp_path)  # a new process: same data dir, same bureau key below
    second.bureau = first.bureau
    second.verifier.policy = first.policy
    second.send("shout", payload)
    assert second.ran == []
    assert second.acks.items[-1]["reason"] == "replayed"


def test_command_for_another_box_is_refused_even_when_validly_signed(h: Harness):
    for target in ({"device": "box-2"}, {"site": "site-other"}):
        h.send("shout", json.dumps(sign_command({**body(), **target}, h.bureau)).encode())
        assert h.acks.items[-1]["reason"] == "wrong_target"
    assert h.ran == []


def test_signature_for_ping_does_not_work_on_cmd_shout(h: Harness):
    payload = signed(h.bureau, "ping")
    h.send("shout", payload)
    assert h.acks.items[-1] == {**h.acks.items[-1], "result": "refused", "reason": "topic_mismatch"}
    h.send("ping", payload)  # the same message on its own topic is fine: its nonce was not used up
    assert h.acks.items[-1]["result"] == "done"


def test_validity_window_with_clock_skew(tmp_path: Path):
    h = Harness(tmp_path, clock_skew_s=30, max_lifetime_s=300)
    cases = [(T0 + timedelta(seconds=20), 120, "done"),  # issued slightly in our future: within skew
             (T0 + timedelta(seconds=40), 120, "not_yet_valid"),
             (T0 - timedelta(seconds=140), 120, "done"),  # expired 20 s ago: within skew
             (T0 - timedelta(seconds=160), 120, "expired"),
             (T0, 300, "done"),
             (T0, 301, "invalid_lifetime")]
    for issued, lifetime, outcome in cases:
        h.send("shout", signed(h.bureau, issued=issued, lifetime_s=lifetime))
        final = h.acks.items[-1]
        assert (final["result"] if final["result"] == "done" else final["reason"]) == outcome, (issued, lifetime)


def test_nonces_are_forgotten_after_expiry_and_the_replay_is_then_refused_as_expired(h: Harness):
    payload = signed(h.bureau, lifetime_s=60)
    h.send("shout", payload)
    assert len(h.verifier.nonces) == 1
    h.clock.moment = T0 + timedelta(seconds=60 + 31)
    h.send("ping", signed(h.bureau, "ping", issued=h.clock.moment))  # any insert prunes
    assert len(h.verifier.nonces) == 1  # only the ping's
    h.send("shout", payload)
    assert h.acks.items[-1]["reason"] == "expired" and len(h.ran) == 1


def test_unsynchronised_clock_refuses_only_when_configured(tmp_path: Path):
    strict = Harness(tmp_path / "a", require_synchronized_clock=True)
    strict.verifier.clock_synchronized = lambda: False
    strict.send("shout", signed(strict.bureau))
    assert strict.acks.items[-1]["reason"] == "clock_unsynchronized" and strict.ran == []
    lenient = Harness(tmp_path / "b")
    lenient.verifier.clock_synchronized = lambda: False
    lenient.send("shout", signed(lenient.bureau))
    assert len(lenient.ran) == 1


def test_failing_handler_acks_failed_and_the_dispatcher_goes_on(h: Harness):
    def broken(command: Command) -> AckResult:
        raise RuntimeError("amplifier on fire")

    h.dispatcher.register("spray", broken)
    h.send("spray", signed(h.bureau, "spray", args={"state": "on", "duration_s": 60}))
    assert h.acks.items[-1] == {**h.acks.items[-1], "result": "failed", "reason": "handler_error"}
    assert "amplifier on fire" in h.acks.items[-1]["detail"]
    h.send("shout", signed(h.bureau))
    assert h.acks.items[-1]["result"] == "done"


def test_long_handler_runs_off_the_mqtt_thread(h: Harness):
    release = threading.Event()
    h.dispatcher.register("spray", lambda c: AckResult("done") if release.wait(10) else AckResult("failed"))
    start = time.monotonic()
    h.dispatcher.on_message(f"edge/v1/{SITE}/{DEVICE}/cmd/spray",
                            signed(h.bureau, "spray", args={"state": "on", "duration_s": 30}))
    h.dispatcher.on_message(f"edge/v1/{SITE}/{DEVICE}/cmd/ping", signed(h.bureau, "ping"))
    returned_in = time.monotonic() - start
    assert h.acks.results("accepted") and returned_in < 5  # on_message did not wait for the spray
    assert Harness_wait(lambda: any(a["command"] == "ping" for a in h.acks.results("done")))
    assert not any(a["command"] == "spray" for a in h.acks.results("done"))
    release.set()
    assert h.dispatcher.wait_idle(5)
    assert any(a["command"] == "spray" for a in h.acks.results("done"))


def Harness_wait(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_own_acks_coming_back_on_cmd_plus_are_ignored(h: Harness):
    h.dispatcher.on_message(f"edge/v1/{SITE}/{DEVICE}/cmd/ack", b'{"id":"x","result":"done"}')
    assert h.acks.items == [] and h.dispatcher.refused == {}


def test_refusal_acks_are_rate_limited_and_counted(tmp_path: Path):
    h = Harness(tmp_path, acks_per_minute=10)
    for _ in range(50):
        h.send("shout", b"garbage")
    assert len(h.acks.items) == 10
    health = h.dispatcher.health()
    assert health["acks_suppressed"] == 40 and health["refused"] == {"malformed": 50}


def test_refusal_logging_is_rate_limited(h: Harness, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="edge_agent.command_dispatch")
    for _ in range(200):
        h.send("shout", signed(Signer(Ed25519PrivateKey.generate())))
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and "unknown_key" in lines[0].getMessage()


def test_verifier_raises_only_refused_on_any_bytes(h: Harness):
    rng = random.Random(7)
    for _ in range(300):
        try:
            h.verifier.verify("shout", rng.randbytes(rng.randrange(0, 64)))
        except Refused as exc:
            assert exc.reason in REASONS
        else:
            raise AssertionError("random bytes were accepted")


# --- canonical form ---------------------------------------------------------------------------------


def test_canonical_form_matches_rfc8785_example():
    source = ('{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],'
              '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
              '"literals":[null,true,false]}')
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert canonical_bytes(json.loads(source)) == expected.encode("utf-8")


def test_canonical_numbers_and_key_order():
    assert [format_number(x) for x in (1e21, 1e20, 1e-7, 1e-6, 0.1, -0.0, 100.0, 123.456)] == \
        ["1e+21", "100000000000000000000", "1e-7", "0.000001", "0.1", "0", "100", "123.456"]
    # keys sort by UTF-16 code units: U+E000 comes after U+1F600 (a surrogate pair, 0xD83D...)
    assert canonical_bytes({"\ue000": 1, "\U0001f600": 2, "a": 3}) == '{"a":3,"😀":2,"\ue000":1}'.encode()
    for bad in (float("nan"), 2**53, {1: "x"}, b"bytes"):
        with pytest.raises(CanonicalError):
            canonical_bytes(bad)


# --- config and tools -------------------------------------------------------------------------------


def test_config_sections_validate_keys_and_commands():
    key = Signer(Ed25519PrivateKey.generate())
    ok = BureauConfig.model_validate({"trusted_keys": [{"name": "szeb", "public_key": key.public_b64}]})
    assert ok.max_command_lifetime_s == 300 and "shout" in ok.commands
    with pytest.raises(ValidationError, match="32 bytes"):
        TrustedKey.model_validate({"name": "x", "public_key": "AAAA"})
    with pytest.raises(ValidationError, match="exactly one"):
        TrustedKey.model_validate({"name": "x"})
    with pytest.raises(ValidationError, match="unknown command"):
        BureauConfig.model_validate({"commands": ["self_destruct"]})
    for model in (BureauConfig, EvidenceConfig, TrustedKey):
        assert all(f.description for f in model.model_fields.values()), model


def test_build_dispatcher_from_config_trusts_inline_and_file_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    sys.path.insert(0, str(Path(__file__).parent))
    from agent_config import write_config

    from edge_agent.config import load_config

    inline, on_file = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    (tmp_path / "bureau.pub").write_text(on_file.public_b64 + "\n")
    config = load_config(write_config(tmp_path, 1883, bureau={"trusted_keys": [
        {"name": "inline", "public_key": inline.public_b64},
        {"name": "file", "file": str(tmp_path / "bureau.pub")},
        {"name": "gone", "file": str(tmp_path / "missing.pub")}]}))
    acks = Acks()
    dispatcher = build_dispatcher(config, acks, clock=FixedClock(T0))
    dispatcher.start()
    assert set(dispatcher.health()["trusted_keys"]) == {inline.key_id, on_file.key_id}
    assert "'gone' is unusable" in caplog.text
    for signer in (inline, on_file):
        dispatcher.on_message(f"edge/v1/{SITE}/{DEVICE}/cmd/ping", signed(signer, "ping"))
    assert dispatcher.wait_idle(5)
    # each command acked accepted, then done; the two commands' acks may interleave (they run apart)
    by_command: dict[str, list[str]] = {}
    for ack in acks.items:
        by_command.setdefault(ack["id"], []).append(ack["result"])
    assert list(by_command.values()) == [["accepted", "done"]] * 2, acks.items
    assert (tmp_path / "data" / "nonces.sqlite").exists()
    dispatcher.stop()


def test_edge_fw_keys_makes_a_0600_key_with_the_daemons_key_id(tmp_path: Path):
    path = tmp_path / "bureau.key"
    out = subprocess.run([*EDGE_FW, "keys", "generate", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert path.stat().st_mode & 0o777 == 0o600
    from edge_agent.security.keys import load_private_key

    signer = Signer(load_private_key(path))
    assert f"key_id:     {signer.key_id}" in out and f"public_key: {signer.public_b64}" in out
    assert (tmp_path / "bureau.key.pub").read_text().strip() == signer.public_b64
    again = subprocess.run([*EDGE_FW, "keys", "generate", str(path)],
                           capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr  # never overwrites a key silently
    shown = subprocess.run([*EDGE_FW, "keys", "show-public", str(path)],
                           capture_output=True, text=True, check=True).stdout
    assert signer.key_id in shown


def test_key_id_is_first_8_bytes_of_sha256_of_raw_key(tmp_path: Path):
    import hashlib

    key = Ed25519PrivateKey.generate()
    write_private_key(tmp_path / "k", key)
    raw = Signer(key).public.public_bytes_raw()
    assert key_id(key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]
    assert public_b64(key.public_key()) == Signer(key).public_b64


def test_busy_and_stopping_boxes_refuse_instead_of_queueing_forever(h: Harness):
    release = threading.Event()
    h.dispatcher.max_pending = 1
    h.dispatcher.register("spray", lambda c: AckResult("done") if release.wait(10) else AckResult("failed"))
    topic = f"edge/v1/{SITE}/{DEVICE}/cmd/"
    h.dispatcher.on_message(topic + "spray", signed(h.bureau, "spray", args={"state": "off"}))
    h.dispatcher.on_message(topic + "ping", signed(h.bureau, "ping"))
    assert h.acks.items[-1] == {**h.acks.items[-1], "command": "ping", "result": "refused", "reason": "busy"}
    release.set()
    h.dispatcher.stop()
    h.dispatcher.on_message(topic + "ping", signed(h.bureau, "ping"))  # after the nonce store closed
    assert h.acks.items[-1]["reason"] == "shutting_down"


def test_action_handlers_drive_speaker_and_relays_and_report_their_errors(h: Harness):
    from edge_agent.command_dispatch import action_handlers

    calls: list[tuple[Any, ...]] = []

    class FakeActions:
        def shout(self, clip_id: str | None = None, text: str | None = None, repeats: int = 1, *,
                  deadline: float | None = None, done: Any = None) -> None:
            if clip_id == "nope":
                raise ValueError("clip 'nope' is not available")
            calls.append(("shout", clip_id, text, repeats))
            assert deadline is not None and deadline > time.monotonic()  # the command's expiry, on the speaker
            done(Outcome("played", "text", started=T0, ended=T0 + timedelta(seconds=4), repeats=repeats))

        def set_relay(self, relay_id: str, on: bool | None, duration_s: float | None = None) -> None:
            if relay_id == "strobe":
                raise ValueError("no relay 'strobe' on this box")
            calls.append((relay_id, on, duration_s))

    for name, handler in action_handlers(FakeActions(), now=h.clock).items():
        h.dispatcher.register(name, handler)
    h.send("shout", signed(h.bureau, args={"text": "请停止作业", "repeat": 3}))
    h.send("spray", signed(h.bureau, "spray", args={"state": "on", "duration_s": 90}))
    assert calls == [("shout", None, "请停止作业", 3), ("spray", True, 90)]
    shout_acks = [a for a in h.acks.items if a.get("command") == "shout"]
    assert [a["result"] for a in shout_acks] == ["accepted", "queued", "played"]  # heard, not just queued
    assert shout_acks[-1]["data"]["ended"] == (T0 + timedelta(seconds=4)).isoformat()
    h.send("shout", signed(h.bureau, args={"clip": "nope"}))
    assert h.acks.items[-1] == {**h.acks.items[-1], "result": "failed", "reason": "action_error",
                                "detail": "clip 'nope' is not available"}
    h.send("strobe", signed(h.bureau, "strobe", args={"state": "off"}))
    assert h.acks.items[-1]["detail"] == "no relay 'strobe' on this box"
