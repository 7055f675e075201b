"""The console's live feed when ingest workers, not the console, store what arrives.

The web page only needs to know *that* something of a kind changed (it then fetches its
fragments from the store), so the console listens to the small topics itself (status, event,
evidence manifest, command acks; QoS 0, not shared) and, a moment later (the workers commit in
well under a second), tells the page's listeners once per kind. Nothing is stored here.
"""

from __future__ import annotations

import threading
import time

from bureau.hub import Hub

LEAVES = {"status": "status", "event": "event", "evidence": "evidence", "cmd/ack": "ack"}


def live_topics(prefix: str) -> list[tuple[str, int]]:
    return [(f"{prefix}/+/+/{leaf}", 0) for leaf in LEAVES]


class LiveNudges:
    """Coalesces arrivals into at most one hub item per kind per `delay_s`."""

    def __init__(self, hub: Hub, prefix: str, delay_s: float = 0.8):
        self.hub = hub
        self.prefix = prefix.strip("/") + "/"
        self.delay_s = delay_s
        self._due: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bureau-live", daemon=True)
        self._thread.start()

    def note(self, topic: str) -> None:
        """A message arrived on `topic` (network thread: cheap)."""
        parts = topic[len(self.prefix):].split("/", 2) if topic.startswith(self.prefix) else []
        kind = LEAVES.get(parts[2]) if len(parts) == 3 else None
        if kind is None:
            return
        with self._lock:
            self._due.setdefault(kind, time.monotonic() + self.delay_s)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                ready = [k for k, t in self._due.items() if t <= now]
                for k in ready:
                    del self._due[k]
                wait = min(self._due.values(), default=now + 0.5) - now
            for kind in ready:
                self.hub.publish({"type": kind})
            if wait > 0:
                self._stop.wait(min(wait, 0.5))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(2)
