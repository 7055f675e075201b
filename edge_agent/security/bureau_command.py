"""Bureau commands: the message format, and the checks a command passes before it runs.

A command is one JSON object on `PREFIX/SITE/DEVICE/cmd/<name>`:

    {"v": 1, "id": "c-0001", "name": "shout", "site": "sz-nanshan-0001", "device": "crane-1",
     "issued_at": "2026-11-23T12:00:00+08:00", "expires_at": "2026-11-23T12:02:00+08:00",
     "nonce": "4f9c1d0e8b7a6f5e4d3c2b1a09f8e7d6", "args": {"clip": "stop_work"},
     "key_id": "1a2b3c4d5e6f7081", "signature": "<base64 of 64 bytes>"}

`signature` is Ed25519 over the canonical form (`canonical.py`, RFC 8785) of the object
without its `signature` member, made with the bureau key whose id is `key_id`. The name,
the target site and device, the times and the nonce are all inside what is signed, so a
signature cannot be moved to another topic, another box, another time or a second use.

Checks, in order; the first that fails is the refusal reason: `oversize`, `malformed`,
`invalid_field`, `unknown_key`, `bad_signature`, `topic_mismatch`, `wrong_target`,
`invalid_lifetime`, `clock_unsynchronized` (only if configured), `not_yet_valid`,
`expired`, `unknown_command`, `invalid_args`, `relay_not_allowed` (a relay command for a
relay outside `bureau.relays_allowed`), `replayed`. The nonce is recorded last, only for a
command that passed everything else, so forgeries cannot use up nonces.

Talk (push-to-talk, edge_agent/voice/talk.py): `talk` with `{"format": "ogg"|"wav", "size": N,
"sha256": HEX}` and either `"data"` (base64 of the whole file, up to 48 kB) or `"parts"`: the
SHA-256 of each part, in order. Parts are raw bytes (at most 64 kB each) published on
`cmd/talk/<sha256 of the whole>/<index>`, before or after the command; each is taken only if
its hash is the one signed, so a forged or cut part is never played, and the assembled file
must have the signed size and SHA-256. At most 300 kB and 30 s of audio (`oversize` above
that); `reply_s` (0..60) asks for a shorter reply, or none. The talk topic takes messages up
to 72 kB (`max_payload_bytes` if larger). `listen` with `{"seconds": 1..120}`.

Relay commands: `relay` with `{"relay": ID, "state": "on"|"off"|"auto", "duration_s": 1..3600}`
(`duration_s` with `on` only; without it `on` and `off` hold until the next command, `on`
within the relay's `max_on_s`; `auto` hands the relay back to the violations); `spray` and
`strobe` are the same without `relay`, for those two relays.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.config.security import RELAY_ALIASES
from edge_agent.security.canonical import CanonicalError, canonical_bytes, loads_strict
from edge_agent.security.keys import Signer, key_id, verify
from edge_agent.security.nonces import NonceStore

FORMAT_VERSION = 1
FIELDS = ("v", "id", "name", "site", "device", "issued_at", "expires_at", "nonce", "args", "key_id", "signature")

_ID = re.compile(r"[\x21-\x7e]{1,128}")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NONCE = re.compile(r"[A-Za-z0-9+/=_-]{16,128}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{86}==")
_SHA256 = re.compile(r"[0-9a-f]{64}")

MAX_TALK_BYTES = 300_000  # the whole voice message
MAX_TALK_S = 30.0
TALK_INLINE_MAX = 48_000  # audio bytes carried in the command itself; more goes in parts
TALK_PART_BYTES = 64_000  # largest part
TALK_MAX_PARTS = 16
TALK_COMMAND_MAX_BYTES = 72_000  # the talk topic's message limit (48 kB as base64, and the rest)
TALK_FORMATS = ("ogg", "wav")


@dataclass(frozen=True)
class Command:
    """A command that passed every check; handlers get exactly this."""

    id: str
    name: str
    site: str
    device: str
    issued_at: datetime
    expires_at: datetime
    nonce: str
    key_id: str
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Ack:
    """The box's answer on `cmd/ack`: accepted, then done/failed/refused; or refused at once."""

    id: str | None  # None when the message was too broken to carry a usable id
    command: str  # the name from the topic
    result: str  # accepted, refused, done, failed
    reason: str = ""  # a code, e.g. bad_signature, expired, replayed (for refused/failed)
    detail: str = ""  # one line for people
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "command": self.command, "result": self.result}
        if self.reason:
            body["reason"] = self.reason
        if self.detail:
            body["detail"] = self.detail
        if self.data:
            body["data"] = dict(self.data)
        return body


class Refused(Exception):
    """A command refused with a reason code and a line for people."""

    def __init__(self, reason: str, detail: str, command_id: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.command_id = command_id


@dataclass(frozen=True)
class VerifierPolicy:
    site: str
    device: str
    trusted: Mapping[str, Ed25519PublicKey]  # key id -> key
    commands: frozenset[str]
    max_lifetime_s: int = 300
    clock_skew_s: int = 30
    max_payload_bytes: int = 8192
    require_synchronized_clock: bool = False
    relays_allowed: frozenset[str] = frozenset(RELAY_ALIASES.values())
    # Commands whose messages may be larger than max_payload_bytes (a talk carries audio).
    payload_limits: Mapping[str, int] = field(default_factory=lambda: MappingProxyType(
        {"talk": TALK_COMMAND_MAX_BYTES}))


def parse_time(text: str) -> datetime:
    """ISO 8601 with an offset (or Z); naive times are refused: whose midnight would it be?"""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("time has no UTC offset")
    if not 2000 <= moment.year <= 2999:  # keeps the arithmetic below far from datetime's limits
        raise ValueError("time out of range")
    return moment.astimezone(timezone.utc)


def _str_field(body: Mapping[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Refused("invalid_field", f"'{name}' is missing or not a valid string")
    return value


def args_problem(name: str, args: Mapping[str, Any]) -> str | None:
    """What is wrong with a known command's arguments, or None."""

    def duration_ok(key: str) -> bool:
        value = args.get(key)
        return value is None or (type(value) is int and 1 <= value <= 3600)

    def only(*allowed: str) -> str | None:
        extra = sorted(set(args) - set(allowed))
        return f"unexpected argument(s) {', '.join(extra)}" if extra else None

    if name == "shout":
        clip, text = args.get("clip"), args.get("text")
        if (clip is None) == (text is None):
            return "give exactly one of 'clip' (a clip id) or 'text'"
        if clip is not None and not (isinstance(clip, str) and _TARGET.fullmatch(clip)):
            return "'clip' must be a clip id"
        if text is not None and not (isinstance(text, str) and 0 < len(text) <= 500):
            return "'text' must be 1..500 characters"
        return only("clip", "text", "repeat") or (
            None if args.get("repeat") is None or (type(args["repeat"]) is int and 1 <= args["repeat"] <= 10)
            else "'repeat' must be 1..10")
    if name == "relay" or name in RELAY_ALIASES:
        if name == "relay":
            relay = args.get("relay")
            if not (isinstance(relay, str) and _TARGET.fullmatch(relay)):
                return "'relay' (a relay id) is required"
        if args.get("state") not in ("on", "off", "auto"):
            return "'state' must be 'on', 'off' or 'auto'"
        if not duration_ok("duration_s"):
            return "'duration_s' must be an integer 1..3600"
        if args["state"] != "on" and "duration_s" in args:
            return "'duration_s' goes with 'on' only"
        return only("relay", "state", "duration_s") if name == "relay" else only("state", "duration_s")
    if name == "snapshot":
        camera = args.get("camera")
        if camera is not None and not (isinstance(camera, str) and _TARGET.fullmatch(camera)):
            return "'camera' must be a camera id"
        return only("camera")
    if name == "relearn_view":
        camera = args.get("camera")
        if not (isinstance(camera, str) and _TARGET.fullmatch(camera)):
            return "'camera' (a camera id) is required"
        return only("camera")
    if name == "ping":
        return only()
    if name == "talk":
        return talk_problem(args) or only("format", "size", "sha256", "data", "parts", "reply_s")
    if name == "listen":
        seconds = args.get("seconds")
        if type(seconds) is not int or not 1 <= seconds <= 120:
            return "'seconds' must be an integer 1..120"
        return only("seconds")
    return None


def talk_problem(args: Mapping[str, Any]) -> str | None:
    """What is wrong with a talk's audio fields (shape only; `talk_oversize` judges the size)."""
    if args.get("format") not in TALK_FORMATS:
        return f"'format' must be one of {', '.join(TALK_FORMATS)}"
    size, sha = args.get("size"), args.get("sha256")
    if type(size) is not int or size < 1:
        return "'size' must be a positive integer (bytes of audio)"
    if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        return "'sha256' must be 64 lower-case hex digits"
    data, parts = args.get("data"), args.get("parts")
    if (data is None) == (parts is None):
        return "give exactly one of 'data' (base64 audio) or 'parts' (the SHA-256 of each part)"
    if data is not None:
        if not isinstance(data, str):
            return "'data' must be base64 text"
        try:
            audio = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return "'data' is not valid base64"
        if len(audio) != size or hashlib.sha256(audio).hexdigest() != sha:
            return "'data' does not have the signed size and sha256"
    if parts is not None and not (isinstance(parts, list) and 1 <= len(parts) <= TALK_MAX_PARTS
                                  and all(isinstance(p, str) and _SHA256.fullmatch(p) for p in parts)):
        return f"'parts' must list 1..{TALK_MAX_PARTS} SHA-256 hex digests"
    reply = args.get("reply_s")
    if reply is not None and not (type(reply) is int and 0 <= reply <= 60):
        return "'reply_s' must be an integer 0..60"
    return None


def talk_oversize(args: Mapping[str, Any]) -> str | None:
    """A talk whose audio is larger than the box plays (300 kB), or inline audio that belongs in parts."""
    size = args.get("size")
    if type(size) is int and size > MAX_TALK_BYTES:
        return f"{size} bytes of audio, at most {MAX_TALK_BYTES}"
    if isinstance(args.get("data"), str) and len(args["data"]) > (TALK_INLINE_MAX + 2) // 3 * 4:
        return f"more than {TALK_INLINE_MAX} bytes of audio inline: send it in parts"
    parts = args.get("parts")
    if type(size) is int and isinstance(parts, list) and parts and size > len(parts) * TALK_PART_BYTES:
        return f"{size} bytes in {len(parts)} part(s) of at most {TALK_PART_BYTES}"
    return None


def talk_args(audio: bytes, fmt: str, *, inline_max: int = TALK_INLINE_MAX,
              part_bytes: int = TALK_PART_BYTES) -> tuple[dict[str, Any], list[bytes]]:
    """The bureau side of a talk: its args, and the parts to publish on `cmd/talk/<sha256>/<i>`
    (none when the audio travels inline)."""
    if not 1 <= part_bytes <= TALK_PART_BYTES:
        raise ValueError(f"part_bytes must be 1..{TALK_PART_BYTES}")
    sha = hashlib.sha256(audio).hexdigest()
    args: dict[str, Any] = {"format": fmt, "size": len(audio), "sha256": sha}
    if len(audio) <= inline_max:
        return {**args, "data": base64.b64encode(audio).decode("ascii")}, []
    parts = [audio[i:i + part_bytes] for i in range(0, len(audio), part_bytes)]
    return {**args, "parts": [hashlib.sha256(p).hexdigest() for p in parts]}, parts


def talk_part_leaf(sha256: str, index: int) -> str:
    """The topic leaf of one part of a talk's audio (under PREFIX/SITE/DEVICE/)."""
    return f"cmd/talk/{sha256}/{index}"


# For the bureau side (`edge-agent sign-command`): refuse to sign what the box would refuse.


def relay_of(name: str, args: Mapping[str, Any]) -> str | None:
    """The relay a (checked) command switches, or None for commands that switch none."""
    if name == "relay":
        relay = args.get("relay")
        return relay if isinstance(relay, str) else None
    return RELAY_ALIASES.get(name)


def sign_command(body: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """The bureau side: add `key_id` and `signature` to a command body."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    unsigned["key_id"] = signer.key_id
    return {**unsigned, "signature": signer.sign(canonical_bytes(unsigned))}


class CommandVerifier:
    """Turns the raw bytes from `cmd/<name>` into a `Command`, or raises `Refused`."""

    def __init__(self, policy: VerifierPolicy, nonces: NonceStore, *,
                 now: Callable[[], datetime], clock_synchronized: Callable[[], bool | None] = lambda: None):
        self.policy = policy
        self.nonces = nonces
        self.now = now
        self.clock_synchronized = clock_synchronized

    def verify(self, topic_name: str, payload: bytes) -> Command:
        p = self.policy
        limit = max(p.max_payload_bytes, p.payload_limits.get(topic_name, 0))
        if len(payload) > limit:
            raise Refused("oversize", f"{len(payload)} bytes, the limit is {limit}")
        try:
            body = loads_strict(payload)
        except (ValueError, RecursionError) as exc:
            raise Refused("malformed", f"not a JSON document: {str(exc)[:120]}") from None
        if not isinstance(body, dict):
            raise Refused("malformed", "a command is a JSON object")
        cid = body.get("id") if isinstance(body.get("id"), str) and _ID.fullmatch(body["id"]) else None
        try:
            return self._check(topic_name, body)
        except Refused as exc:
            exc.command_id = cid
            raise

    def _check(self, topic_name: str, body: dict[str, Any]) -> Command:
        p = self.policy
        extra = sorted(set(body) - set(FIELDS))
        if extra:
            raise Refused("invalid_field", f"unknown field(s) {', '.join(extra)[:120]}")
        if type(body.get("v")) is not int or body["v"] != FORMAT_VERSION:
            raise Refused("invalid_field", f"'v' must be {FORMAT_VERSION}")
        command_id = _str_field(body, "id", _ID)
        name = _str_field(body, "name", _NAME)
        site = _str_field(body, "site", _TARGET)
        device = _str_field(body, "device", _TARGET)
        nonce = _str_field(body, "nonce", _NONCE)
        kid = _str_field(body, "key_id", _KEY_ID)
        signature = _str_field(body, "signature", _SIGNATURE)
        args = body.get("args")
        if not isinstance(args, dict):
            raise Refused("invalid_field", "'args' must be an object ({} for none)")
        times = []
        for key in ("issued_at", "expires_at"):
            try:
                times.append(parse_time(body[key]) if isinstance(body.get(key), str) else None)
            except (ValueError, OverflowError):
                times.append(None)
            if times[-1] is None:
                raise Refused("invalid_field", f"'{key}' must be ISO 8601 with a UTC offset")
        issued, expires = times[0], times[1]
        assert issued is not None and expires is not None
        try:
            signed = canonical_bytes({k: v for k, v in body.items() if k != "signature"})
        except CanonicalError as exc:
            raise Refused("malformed", f"no canonical form: {exc}") from None

        public = p.trusted.get(kid)
        if public is None:
            raise Refused("unknown_key", f"key {kid} is not among the trusted bureau keys")
        if not verify(public, signature, signed):
            raise Refused("bad_signature", f"signature does not verify with key {kid}")
        # From here on the bureau really said this.
        if name != topic_name:
            raise Refused("topic_mismatch", f"command '{name}' arrived on cmd/{topic_name}")
        if (site, device) != (p.site, p.device):
            raise Refused("wrong_target", f"for {site}/{device}, this box is {p.site}/{p.device}")
        lifetime = (expires - issued).total_seconds()
        if not 0 < lifetime <= p.max_lifetime_s:
            raise Refused("invalid_lifetime", f"lifetime {lifetime:g} s, allowed 0 < lifetime <= {p.max_lifetime_s}")
        if p.require_synchronized_clock and self.clock_synchronized() is False:
            raise Refused("clock_unsynchronized", "the box clock is not synchronised; expiry cannot be judged")
        now = self.now()
        skew = timedelta(seconds=p.clock_skew_s)
        if now < issued - skew:
            raise Refused("not_yet_valid", f"issued {issued.isoformat()}, box time {now.isoformat()}")
        if now > expires + skew:
            raise Refused("expired", f"expired {expires.isoformat()}, box time {now.isoformat()}")
        if name not in p.commands:
            raise Refused("unknown_command", f"'{name}' is not a command this box takes")
        too_big = talk_oversize(args) if name == "talk" else None
        if too_big:
            raise Refused("oversize", too_big)
        problem = args_problem(name, args)
        if problem:
            raise Refused("invalid_args", problem)
        relay = relay_of(name, args)
        if relay is not None and relay not in p.relays_allowed:
            raise Refused("relay_not_allowed", f"relay '{relay}' is not in bureau.relays_allowed on this box")
        forget_at = (expires + skew).timestamp()
        if not self.nonces.record(nonce, command_id, max(forget_at, now.timestamp()), now.timestamp()):
            raise Refused("replayed", f"nonce {nonce[:16]}... was already used")
        return Command(command_id, name, site, device, issued, expires, nonce, kid, MappingProxyType(dict(args)))


def trusted_key_map(keys: list[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    return {key_id(k): k for k in keys}
