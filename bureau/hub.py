"""Fan-out of what ingest applied to the web console's live listeners (Server-Sent Events).

Ingest runs on threads, the web on an asyncio loop: `publish` may be called from any thread;
each listener is an asyncio queue fed through its loop. A slow listener loses its oldest
items (bounded queue), never slows ingest.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = []

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=500)
        with self._lock:
            self._listeners.append((asyncio.get_running_loop(), q))
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._listeners = [(loop, x) for loop, x in self._listeners if x is not q]

    def publish(self, item: dict[str, Any]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for loop, q in listeners:
            try:
                loop.call_soon_threadsafe(_put, q, item)
            except RuntimeError:  # its loop is closed
                self.unsubscribe(q)

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._listeners)


def _put(q: asyncio.Queue[dict[str, Any]], item: dict[str, Any]) -> None:
    if q.full():
        try:
            q.get_nowait()
        except asyncio.QueueEmpty:
            pass
    q.put_nowait(item)
