"""The signed audio message on `…/voice`: a crew's reply or a `listen` recording.

    {"message": {"v": 1, "id": "v-…", "kind": "reply"|"listen", "command_id": …, "site": …,
                 "device": …, "started": ISO, "ended": ISO, "seconds": 3.2, "silent": false,
                 "format": "ogg", "codec": "opus", "size": N, "sha256": HEX, "data": BASE64},
     "key_id": …, "public_key": …, "signature": Ed25519 over the RFC 8785 form of `message`}

The device key signs it, as it signs evidence: the bureau checks it with the box's registered
key. (The agent's outbox adds `msg_id`, `time`, … beside `message`; they are not signed.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.security.canonical import canonical_bytes
from edge_agent.security.keys import Signer, verify
from edge_agent.timefmt import iso
from edge_agent.uplink.topics import Topics

VOICE_LEAF = Topics.VOICE
KINDS = ("reply", "listen")


class VoiceMessageError(ValueError):
    """A voice message that does not verify or is malformed."""


def voice_message(signer: Signer, *, kind: str, command_id: str, site: str, device: str,
                  started: datetime | None, ended: datetime | None, seconds: float, audio: bytes | None,
                  tz: str) -> dict[str, Any]:
    """The signed body; `audio` None means nobody spoke (`silent`)."""
    message: dict[str, Any] = {
        "v": 1, "id": f"v-{secrets.token_hex(8)}", "kind": kind, "command_id": command_id, "site": site,
        "device": device, "started": iso(started, tz) if started else None,
        "ended": iso(ended, tz) if ended else None, "seconds": round(seconds, 2), "silent": audio is None,
    }
    if audio is not None:
        message.update(format="ogg", codec="opus", size=len(audio), sha256=hashlib.sha256(audio).hexdigest(),
                       data=base64.b64encode(audio).decode("ascii"))
    return {"message": message, "key_id": signer.key_id, "public_key": signer.public_b64,
            "signature": signer.sign(canonical_bytes(message))}


def verify_voice_message(body: Mapping[str, Any], public: Ed25519PublicKey) -> tuple[dict[str, Any], bytes | None]:
    """The message and its audio bytes, if the signature verifies with `public` and the audio its hash."""
    message, signature = body.get("message"), body.get("signature")
    if not isinstance(message, dict) or not isinstance(signature, str):
        raise VoiceMessageError("no 'message' object or 'signature'")
    if not verify(public, signature, canonical_bytes(message)):
        raise VoiceMessageError("the signature does not verify with this key")
    if message.get("silent"):
        return dict(message), None
    try:
        audio = base64.b64decode(str(message.get("data")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VoiceMessageError(f"'data' is not base64: {exc}") from None
    if len(audio) != message.get("size") or hashlib.sha256(audio).hexdigest() != message.get("sha256"):
        raise VoiceMessageError("the audio does not have its signed size and sha256")
    return dict(message), audio
