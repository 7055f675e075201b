"""Hand one item to several consumers, none of which may stop the others.

Used wherever the core passes something on to more than one part (a reading to the history,
the rules and HJ 212; a closed block of figures to the telemetry and HJ 212): a consumer
that raises is logged with the item's description and counted, and the rest still get it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def guarded(what: str, call: Callable[[], object], failures: dict[str, int] | None = None,
            key: str = "") -> bool:
    """Run `call`; on an exception log it (naming `what`), count it under `key`, return False."""
    try:
        call()
        return True
    except Exception:
        log.exception("%s failed", what)
        if failures is not None:
            failures[key or what] = failures.get(key or what, 0) + 1
        return False


class FanOut(Generic[T]):
    """Calls each consumer in order with the item; failures are logged and counted by consumer."""

    def __init__(self, name: str, consumers: Sequence[tuple[str, Callable[[T], object]]]):
        self.name = name
        self.consumers = list(consumers)
        self.failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, item: T) -> None:
        for consumer, call in self.consumers:
            try:
                call(item)
            except Exception:
                log.exception("%s: %s failed", self.name, consumer)
                with self._lock:
                    self.failures[consumer] = self.failures.get(consumer, 0) + 1
