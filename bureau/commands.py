"""Signed commands from the console to a box: built, signed with the bureau key, stored, published.

The form and the signature are the agent's (`edge_agent.security.bureau_command`): the box
verifies exactly what `sign_command` makes. The bureau's key is a file (0600), made on first
start if absent; its public half goes into each box's `bureau.trusted_keys`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bureau.store import Store
from edge_agent.security.bureau_command import FORMAT_VERSION, args_problem, sign_command
from edge_agent.security.canonical import canonical_bytes
from edge_agent.security.keys import Signer, load_private_key, write_private_key

NAMES = ("shout", "spray", "strobe", "snapshot", "relearn_view", "ping")
PRESET_CLIPS = ("shout", "noise_stop", "noise_warning", "dust", "night_work", "black_smoke", "bare_soil",
                "unwashed_vehicle")


class CommandError(ValueError):
    pass


def bureau_signer(path: Path) -> Signer:
    """The console's command-signing key: loaded, or made 0600 on first start."""
    if not path.exists():
        write_private_key(path, Ed25519PrivateKey.generate())
    return Signer(load_private_key(path))


class CommandSender:
    def __init__(self, store: Store, signer: Signer, publish: Callable[[str, bytes], bool], prefix: str,
                 lifetime_s: int = 120):
        self.store = store
        self.signer = signer
        self.publish = publish
        self.prefix = prefix.strip("/")
        self.lifetime_s = lifetime_s

    def build(self, site: str, device: str, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        if name not in NAMES:
            raise CommandError(f"unknown command {name!r}")
        return self.sign(site, device, name, args)

    def sign(self, site: str, device: str, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """A signed command (any the agent knows: `talk` comes from bureau/talk.py, with its audio)."""
        problem = args_problem(name, args)
        if problem:
            raise CommandError(problem)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        body = {"v": FORMAT_VERSION, "id": f"c-{secrets.token_hex(8)}", "name": name, "site": site,
                "device": device, "issued_at": now.isoformat(),
                "expires_at": (now + timedelta(seconds=self.lifetime_s)).isoformat(),
                "nonce": secrets.token_hex(16), "args": dict(args)}
        return sign_command(body, self.signer)

    def send(self, user: str, site: str, device: str, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """Sign, record (the audit log), publish. Raises CommandError for bad input."""
        signed = self.build(site, device, name, args)
        self.store.add_command(signed, user)
        topic = f"{self.prefix}/{site}/{device}/cmd/{name}"
        ok = self.publish(topic, canonical_bytes(signed))
        self.store.audit(user, "command", f"{site}/{device}", f"{name} {signed['id']} "
                         f"{'published' if ok else 'NOT published (broker unreachable)'}", time.time())
        if not ok:
            raise CommandError("the broker did not take the command (not connected?); it was recorded, not sent")
        return signed
