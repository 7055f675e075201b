"""Loaded models shared by the detectors of every camera of the box.

Each model is loaded once per box: one interpreter per backbone (however many heads, i.e.
detectors, read it and however many cameras run them), per classifier (name, override,
threads) and per object detector. Every camera's detectors run on that camera's own worker
thread and LiteRT interpreters are not thread-safe, so each interpreter has a lock held for
one pass (`InferenceLock`, detectors/backbone.py), which also counts the time a camera
waited for another. At 1 analysed frame per second and 10-20 ms per pass, waits are rare
and short (bench/shared_pool.py measures them); a second camera's copy of every
interpreter cost ~23 MB of RSS.

With `adapted_dir` (the agent's `storage.data_dir/models`), a shipped classifier follows the
head a site installed with `edge-agent adapt`: it looks at the store's active pointer at
most every `check_s` seconds and swaps the head without a restart.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detectors.adapted import ActiveHead, HeadStore
from detectors.backbone import Backbone, InferenceLock
from detectors.card import ModelError, load_card
from detectors.runtime import Classifier, card_backbone, card_path_for, default_model_path, load_classifier, load_head

if TYPE_CHECKING:
    from detectors.objects import ObjectDetector


class ModelPool:
    """The box's cache of loaded backbones, classifiers and object detectors (thread-safe)."""

    def __init__(self, adapted_dir: Path | str | None = None, check_s: float = 5.0,
                 cache_dir: Path | str | None = None) -> None:
        self.adapted_dir = Path(adapted_dir) if adapted_dir is not None else None
        # Where backbones re-pointed at their feature maps are kept as files, so that their pages
        # leave RAM once the runtime has packed them (detectors/model_pages.py); None: in memory.
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.check_s = check_s
        self._models: dict[tuple[str, str, int], Classifier] = {}
        self._backbones: dict[tuple[str, int], Backbone] = {}
        self._lock = threading.Lock()

    def backbone(self, path: Path, sha256: str, threads: int = 1, feature: str | None = None) -> Backbone:
        """A backbone by file, loaded once per pool (its sha256 checked against the card's)."""
        key = (str(Path(path).resolve()), int(threads))
        with self._lock:
            bb = self._backbones.get(key)
            if bb is None:
                bb = self._backbones[key] = Backbone(Path(path), sha256, threads, feature, self.cache_dir)
        if bb.sha256 != sha256.lower():
            raise ModelError(f"backbone {path}: sha256 is {bb.sha256}, the card says {sha256}")
        return bb

    def classifier(self, name: str, override: Path | str | None = None, threads: int = 1) -> Classifier:
        """A shipped classifier by name (following adapted heads), or the site's own model file."""
        key = (name, str(override or ""), int(threads))
        with self._lock:
            model = self._models.get(key)
        if model is not None:
            return model
        card_file = card_path_for(override) if override else default_model_path(name)
        card = load_card(card_file)
        backbone = card_backbone(card, card_file, threads, self.backbone) if card.is_head else None
        update = None
        if self.adapted_dir is not None and not override and card.is_head:
            update = ActiveHead(HeadStore(self.adapted_dir, name), load_head, card_file, self.check_s)
        model = load_classifier(override or card_file, threads=threads, backbone=backbone, update=update)
        if update is not None:
            model.refresh()  # type: ignore[attr-defined]  # an adapted head installed before start
        with self._lock:
            return self._models.setdefault(key, model)

    def loaded(self) -> list[str]:
        """Names of the models loaded so far (for health)."""
        with self._lock:
            return sorted({k[0] for k in self._models})

    def backbones(self) -> list[Backbone]:
        with self._lock:
            return list(self._backbones.values())

    def contention(self) -> dict[str, float]:
        """Passes and the waits for a busy interpreter, over every model loaded (health, benches)."""
        with self._lock:
            models: list[Any] = [*self._backbones.values(), *self._models.values(),
                                 *self.__dict__.get("_object_detectors", {}).values()]
        locks = [m.lock for m in models if isinstance(getattr(m, "lock", None), InferenceLock)]
        passes = sum(int(getattr(m, "passes", 0)) for m in models)
        return {"passes": passes, "waits": sum(lk.waits for lk in locks),
                "waited_ms": round(1000 * sum(lk.waited_s for lk in locks), 1),
                "max_wait_ms": round(1000 * max((lk.max_wait_s for lk in locks), default=0.0), 1)}

    # The COCO object detector (detectors/objects.py): one per box, shared by washing, uncovered_load
    # and site_activity of every camera. Kept apart from the classifiers (its own dict, made on first use).
    def objects(self, override: Path | str | None = None, threads: int = 1) -> ObjectDetector:
        """The shipped COCO object detector (SSD MobileNet V1), or the site's own SSD-style model."""
        from detectors.objects import load_objects

        key = (str(override or ""), int(threads))
        with self._lock:
            models: dict[tuple[str, int], ObjectDetector] = self.__dict__.setdefault("_object_detectors", {})
            model = models.get(key)
            if model is None:
                model = models[key] = load_objects(override, threads)
            return model
