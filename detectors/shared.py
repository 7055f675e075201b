"""Per-frame work shared by the detectors of one camera.

The vision worker makes one `SharedFeatures` per analysed frame and passes it to every
detector of that camera (`analyse(..., shared=...)`). What one detector computed on that
frame is then reused by the next where the input is the same: the downscaled analysis copy
of a given width, and a backbone's feature map of a given input (the whole frame, a zone's
crop, a candidate's crop; the caller's key names the input exactly). `shared` may be None
when a detector runs alone: then it computes for itself.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from detectors.background import downscale, half
from detectors.pool import ModelPool


class SharedFeatures:
    """A cache of what has been computed on one frame, keyed by whatever names the input."""

    def __init__(self, image: Any, pool: ModelPool | None = None) -> None:
        self.image = image
        self.pool = pool
        self._cache: dict[Hashable, Any] = {}
        self.computed = 0  # feature maps actually computed (tests and health read it)
        self.reused = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """`compute()` once per key and frame."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def objects(self) -> list[Any]:
        """Every object the camera's COCO detector found on this frame so far, whichever detector asked
        (detectors.objects.detect_objects caches them here under ("objects", ...))."""
        return [o for key, found in self._cache.items()
                if isinstance(key, tuple) and key[:1] == ("objects",) for o in found]

    def downscaled(self, width: int) -> np.ndarray:
        """The frame at most `width` pixels wide (computed once per width and frame; the halvings
        it starts from are shared between widths)."""
        image: np.ndarray = self.get(("downscaled", int(width)), lambda: downscale(self.image, width, self.halved))
        return image

    def halved(self, times: int) -> np.ndarray:
        """The frame halved `times` times (once per frame)."""
        image: np.ndarray = self.get(("halved", int(times)), lambda: half(
            self.image if times <= 1 else self.halved(times - 1)))
        return image

    def feature_map(self, backbone: Any, key: Hashable, make_input: Callable[[], np.ndarray]) -> np.ndarray:
        """The backbone's map of the input that `key` names, computed once per frame."""
        full = ("feature_map", backbone.key, key)
        if full in self._cache:
            self.reused += 1
            fmap: np.ndarray = self._cache[full]
            return fmap
        self.computed += 1
        fmap = self._cache[full] = backbone.feature_map(make_input())
        return fmap


FRAME_KEY = ("frame",)  # the whole frame, resized straight to the backbone's input


def region_key(analysis: np.ndarray, box: tuple[int, int, int, int]) -> Hashable:
    """Names a crop of an analysis copy: same copy size and same box, same input."""
    return ("region", analysis.shape[:2], tuple(int(v) for v in box))


def downscaled(shared: SharedFeatures | None, image: np.ndarray, width: int) -> np.ndarray:
    """The analysis copy of `image`, shared with the camera's other detectors when possible."""
    if shared is not None and shared.image is image:
        return shared.downscaled(width)
    return downscale(image, width)
