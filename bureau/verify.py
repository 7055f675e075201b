"""Checking received bundles with the device's registered key, off the network thread.

The check itself is the agent's (`edge_agent.evidence.verify.verify_bundle`): every file's
SHA-256 against the manifest, the manifest's canonical form, the Ed25519 signature. Which key
proves origin is the registry's business: a registered key gives `valid` or `failed`; with
none registered yet an intact bundle is `unverified` (it proves integrity, not who signed),
and a broken one is `failed` whatever the key.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from bureau.store import EvidenceFiles, Store
from edge_agent.evidence.verify import verify_bundle
from edge_agent.security.keys import KeyFileError, key_id, parse_public_key

log = logging.getLogger(__name__)


def verify_one(store: Store, files: EvidenceFiles, site: str, device: str, bundle: str) -> str:
    """Verify one complete bundle and record the result; returns it."""
    dev = store.device(site, device) or {}
    key = None
    if dev.get("key_b64"):
        try:
            key = parse_public_key(dev["key_b64"])
        except KeyFileError as exc:
            log.error("registered key of %s/%s unreadable: %s", site, device, exc)
    report = verify_bundle(files.bundle_dir(site, device, bundle), key)
    problems = list(report.problems)
    if problems:
        result = "failed"
    elif key is None:
        result = "unverified"
        problems = ["intact, but this device has no registered key yet: its origin is not proven "
                    "(an admin registers or approves the key)"]
    else:
        result = "valid"
    store.set_verification(site, device, bundle, result, problems, key_id(key) if key else None, time.time())
    return result


class Verifier:
    """A thread that verifies bundles as they become complete (and whatever is pending at start)."""

    def __init__(self, store: Store, files: EvidenceFiles,
                 on_result: Callable[[str, str, str, str], None] | None = None):
        self.store = store
        self.files = files
        self.on_result = on_result
        self._queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="bureau-verifier", daemon=True)
        self.verified = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, items: list[tuple[str, str, str]]) -> None:
        for item in items:
            self._queue.put(item)

    def wake(self) -> None:
        """Look for pending bundles again (after a key was registered)."""
        self._queue.put(("", "", ""))

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        self._sweep()
        while True:
            item = self._queue.get()
            if item is None:
                return
            if item == ("", "", ""):
                self._sweep()
                continue
            self._verify(*item)

    def _sweep(self) -> None:
        while True:
            todo = self.store.bundles_to_verify(200)
            if not todo:
                return
            for item in todo:
                self._verify(*item)

    def _verify(self, site: str, device: str, bundle: str) -> None:
        try:
            result = verify_one(self.store, self.files, site, device, bundle)
        except Exception as exc:
            log.exception("verifying %s/%s/%s failed", site, device, bundle)
            result = "failed"
            self.store.set_verification(site, device, bundle, result, [f"could not be checked: {exc}"], None,
                                        time.time())
        self.verified += 1
        if self.on_result is not None:
            self.on_result(site, device, bundle, result)
