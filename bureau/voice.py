"""The crew's replies (and `listen` recordings) at the bureau: checked, kept as files, played in the console.

A box publishes each on `…/voice`, signed with its device key (edge_agent/voice/message.py).
The inbox checks it with the box's registered key (`valid`), or keeps it as `unverified` while
no key is registered; one that fails the check is dropped and logged. Each is kept as
`DATA_DIR/voice/<site>/<device>/<id>.ogg` with its message (without the audio) beside it as
JSON, newest listed first; files older than `keep_days` are deleted by `prune`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.security.keys import KeyFileError, parse_public_key
from edge_agent.voice.message import VoiceMessageError, verify_voice_message

log = logging.getLogger(__name__)

_ID = re.compile(r"v-[0-9a-f]{16}")
_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_BYTES = 1_000_000


class VoiceInbox:
    def __init__(self, root: Path, device_key: Callable[[str, str], str | None], keep_days: float = 30.0):
        """`device_key(site, device)`: the registered key (base64), None while there is none."""
        self.root = Path(root)
        self.device_key = device_key
        self.keep_days = keep_days
        self.refused = 0

    def accept(self, site: str, device: str, payload: bytes) -> dict[str, Any] | None:
        """Check and keep one message; None (logged, counted) when it is refused."""
        try:
            if not (_TARGET.fullmatch(site) and _TARGET.fullmatch(device)) or len(payload) > MAX_BYTES:
                raise VoiceMessageError("bad topic or oversize")
            body = json.loads(payload)
            message = body.get("message") if isinstance(body, dict) else None
            if not isinstance(message, dict) or not _ID.fullmatch(str(message.get("id"))):
                raise VoiceMessageError("no message with a valid id")
            if (message.get("site"), message.get("device")) != (site, device):
                raise VoiceMessageError("the message names another site/device than its topic")
            registered = self.device_key(site, device)
            key_b64 = registered or str(body.get("public_key", ""))
            checked, audio = verify_voice_message(body, parse_public_key(key_b64))
        except (ValueError, KeyFileError, VoiceMessageError) as exc:
            self.refused += 1
            log.warning("voice message from %s/%s refused: %s", site[:64], device[:64], str(exc)[:200])
            return None
        folder = self.root / site / device
        folder.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in checked.items() if k != "data"}
        meta["verification"] = "valid" if registered else "unverified"
        meta["received"] = time.time()
        if audio is not None:
            (folder / f"{meta['id']}.ogg").write_bytes(audio)
        (folder / f"{meta['id']}.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        return meta

    def recent(self, site: str, device: str, limit: int = 10) -> list[dict[str, Any]]:
        folder = self.root / site / device
        if not (_TARGET.fullmatch(site) and _TARGET.fullmatch(device)) or not folder.is_dir():
            return []
        metas = []
        for path in folder.glob("v-*.json"):
            try:
                metas.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        metas.sort(key=lambda m: m.get("received", 0), reverse=True)
        return metas[:limit]

    def audio_path(self, site: str, device: str, voice_id: str) -> Path | None:
        if not (_TARGET.fullmatch(site) and _TARGET.fullmatch(device) and _ID.fullmatch(voice_id)):
            return None
        path = self.root / site / device / f"{voice_id}.ogg"
        return path if path.is_file() else None

    def prune(self) -> None:
        cutoff = time.time() - self.keep_days * 86400
        for path in self.root.glob("*/*/v-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue


def registered_key(store: Any) -> Callable[[str, str], str | None]:
    """The lookup a VoiceInbox checks replies with: the box's registered key (base64), None while none is."""

    def key(site: str, device: str) -> str | None:
        dev = store.device(site, device) or {}
        return dev.get("key_b64") if dev.get("key_state") in ("registered", "changed") else None

    return key


def voice_dir(config: Any) -> Path:
    """Where replies are kept: DATA_DIR/voice, a folder every ingest worker and the console share in a city."""
    return Path(config.store.data_dir) / "voice"
