"""Loaded models shared by the detectors of one camera.

LiteRT interpreters are not thread-safe, and each camera's detectors run on that camera's
own worker thread: so one pool per camera, and within it each model is loaded once, however
many detectors use it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from detectors.runtime import Classifier, load_shipped


class ModelPool:
    """Per-camera cache of loaded models, keyed by (name, override path, threads)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, int], Any] = {}
        self._lock = threading.Lock()

    def classifier(self, name: str, override: Path | str | None = None, threads: int = 1) -> Classifier:
        """A shipped classifier by name, or the site's own model file when `override` is given."""
        key = (name, str(override or ""), int(threads))
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._models[key] = load_shipped(name, override, threads)
            return model  # type: ignore[no-any-return]

    def loaded(self) -> list[str]:
        """Names of the models loaded so far (for health)."""
        with self._lock:
            return sorted({k[0] for k in self._models})
