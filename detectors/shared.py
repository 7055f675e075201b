"""Per-frame features shared by the detectors of one camera.

The vision worker makes one `SharedFeatures` per analysed frame and passes it to every
detector of that camera (`analyse(..., shared=...)`), so a backbone pass over the same input
(the whole frame, a zone crop) is computed once and reused.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from detectors.pool import ModelPool


class SharedFeatures:
    """A cache of what has been computed on one frame, keyed by whatever names the input."""

    def __init__(self, image: Any, pool: ModelPool) -> None:
        self.image = image
        self.pool = pool
        self._cache: dict[Hashable, Any] = {}

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """`compute()` once per key and frame."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]
