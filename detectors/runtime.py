"""Image classifiers on CPU with LiteRT: a small numpy head on a frozen pretrained backbone,
or a self-contained `.tflite` classifier (a site's own model).

Both take BGR uint8 images and give probabilities over the card's labels (`classify`,
`positive_scores`, `labels`, `card`), so detectors and `eval-detector` do not care which.
The card beside the model is checked first (see card.py): hashes of the head and of the
backbone it was trained on, input, labels.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors.backbone import Backbone, FeatureExtractor, InferenceLock, StackedBackbone, open_interpreter
from detectors.card import ModelCard, ModelError, load_card
from detectors.heads import Head, cell_vectors, pool

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
_DTYPES: dict[str, Any] = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32}

HeadUpdate = Callable[[], "tuple[Head, ModelCard, Path] | None"]


def default_model_path(name: str) -> Path:
    """Where a shipped model's card lives: detectors/models/NAME.yaml."""
    return MODELS_DIR / f"{name}.yaml"


class Classifier:
    """What detectors and eval-detector use: probabilities over `labels` for BGR images."""

    path: Path
    card: ModelCard

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    def classify(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities, shape (len(images), len(labels)), one row per BGR uint8 image."""
        raise NotImplementedError

    def positive_scores(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probability of the card's positive label for each image."""
        if not images:
            return np.zeros(0, np.float32)
        return self.classify(images)[:, self.card.labels.index(self.card.positive_label)]


class HeadClassifier(Classifier):
    """A numpy head on a shared frozen backbone; every camera's thread may use it (the backbone locks its pass).

    `update`, when given, is asked before each use whether a newer head is installed (the
    on-box adaptation's active pointer; it rate-limits itself), so a running daemon picks up
    `edge-agent adapt` without a restart.
    """

    def __init__(self, card: ModelCard, head_path: Path, head: Head, backbone: FeatureExtractor,
                 update: HeadUpdate | None = None) -> None:
        _check_head(card, head, head_path, backbone)
        self.card = card
        self.path = head_path
        self.head = head
        self.backbone = backbone
        self._update = update
        self._refresh_lock = threading.Lock()

    def refresh(self) -> None:
        """Swap in a newly installed head, if any (cheap when nothing changed)."""
        if self._update is None:
            return
        if not self._refresh_lock.acquire(blocking=False):
            return  # another camera's thread is looking: it swaps the head for both
        try:
            self._refresh()
        finally:
            self._refresh_lock.release()

    def _refresh(self) -> None:
        assert self._update is not None
        try:
            new = self._update()
        except ModelError as exc:
            log.error("model %s: new head not used: %s", self.card.name, exc)
            return
        if new is None:
            return
        head, card, path = new
        try:
            _check_head(card, head, path, self.backbone)
        except ModelError as exc:
            log.error("model %s: new head not used: %s", self.card.name, exc)
            return
        self.head, self.card, self.path = head, card, path
        log.info("model %s: now using head %s v%s", card.name, path, card.version)

    def feature_map(self, image_bgr: np.ndarray, shared: Any = None, key: Any = None) -> np.ndarray:
        """The backbone's map of an image; through `shared` (SharedFeatures) when the input has a key."""
        if shared is not None and key is not None:
            fmap: np.ndarray = shared.feature_map(self.backbone, key, lambda: image_bgr)
            return fmap
        return self.backbone.feature_map(image_bgr)

    def classify_maps(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        self.refresh()
        if not maps:
            return np.zeros((0, len(self.labels)), np.float32)
        x = np.stack([pool(m, self.head.pooling) for m in maps])
        return self.head.probs(x).astype(np.float32)

    def cell_probs(self, fmap: np.ndarray, smooth: int = 3) -> np.ndarray:
        """Probabilities per map cell, shape (grid_h, grid_w, labels): one pass, every patch.

        Each cell's logits are averaged with its neighbours' (`smooth`×`smooth`, edges
        repeated): ground cover is spatially coherent, and on the held-out aerial and
        ground-level photos this raised per-cell agreement with the photo's label by 2-4 points.
        """
        self.refresh()
        h, w = fmap.shape[:2]
        logits = self.head.logits(cell_vectors(fmap, self.head.pooling)).reshape(h, w, -1)
        if smooth > 1:
            r = smooth // 2
            padded = np.pad(logits, ((r, r), (r, r), (0, 0)), mode="edge")
            logits = np.mean([padded[dy:dy + h, dx:dx + w] for dy in range(smooth) for dx in range(smooth)], axis=0)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)

    def classify(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.classify_maps([self.backbone.feature_map(_bgr(img)) for img in images])


def _check_head(card: ModelCard, head: Head, path: Path, backbone: FeatureExtractor) -> None:
    where = f"head {path} vs its card"
    if card.backbone_key != backbone.sha256:
        raise ModelError(f"{where}: trained on backbone sha256 {card.backbone_key}, "
                         f"but the backbone loaded is {backbone.sha256} ({backbone.path.name}); a head trained "
                         f"before a backbone upgrade must be trained again: edge-agent adapt DETECTOR FOLDER")
    if head.backbone_sha256 and head.backbone_sha256 != backbone.sha256:
        raise ModelError(f"{where}: the head was trained on backbone sha256 {head.backbone_sha256}, "
                         f"not on {backbone.sha256} ({backbone.path.name})")
    if head.labels != card.labels:
        raise ModelError(f"{where}: head labels {list(head.labels)} but the card lists {list(card.labels)}")
    expected = backbone.channels * (2 if head.pooling == "mean+ground" else 1)
    if head.dim != expected:
        raise ModelError(f"{where}: head takes {head.dim} features, the backbone gives {expected}")
    if (card.width, card.height) != (backbone.width, backbone.height):
        raise ModelError(f"{where}: card input {card.width}x{card.height}, backbone {backbone.width}x{backbone.height}")


def _bgr(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img


class TfliteClassifier(Classifier):
    """A self-contained `.tflite` classifier (float32, int8 or uint8), quantised from its own parameters."""

    def __init__(self, model_path: Path, card: ModelCard, threads: int = 1) -> None:
        self.path = model_path
        self.card = card
        interp = open_interpreter(f"model {model_path}", threads, path=model_path)
        self._interp = interp
        self.lock = InferenceLock()  # one interpreter for every camera (ModelPool)
        inp = interp.get_input_details()[0]
        out = interp.get_output_details()[0]
        self._in_index = inp["index"]
        self._out_index = out["index"]
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_scale, self._in_zero = inp.get("quantization", (0.0, 0))
        self._out_scale, self._out_zero = out.get("quantization", (0.0, 0))
        self._check(list(inp["shape"]), list(out["shape"]))
        self._mean = np.asarray(card.mean, np.float32)
        self._inv_std = 1.0 / np.asarray(card.std, np.float32)

    def _check(self, in_shape: list[int], out_shape: list[int]) -> None:
        card, where = self.card, f"model {self.path} vs its card"
        expected = [card.height, card.width, card.channels]
        if in_shape[1:] != expected:
            raise ModelError(f"{where}: input shape {in_shape[1:]} (HWC) but the card says {expected}")
        if self._in_dtype != np.dtype(_DTYPES[card.dtype]):
            raise ModelError(f"{where}: input dtype {self._in_dtype} but the card says {card.dtype}")
        if out_shape[-1] != len(card.labels):
            raise ModelError(f"{where}: {out_shape[-1]} outputs but the card lists {len(card.labels)} labels")
        if self._in_dtype != np.float32 and not self._in_scale:
            raise ModelError(f"{where}: integer input without quantisation parameters")

    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        """Resize, reorder colours, normalise and quantise one image into the input tensor's type."""
        card = self.card
        img = _bgr(image_bgr)
        if img.shape[0] != card.height or img.shape[1] != card.width:
            area = img.shape[0] > card.height and img.shape[1] > card.width
            img = cv2.resize(img, (card.width, card.height), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)
        if card.channels == 1:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None]
        elif card.color == "rgb":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        x = (img.astype(np.float32) - self._mean) * self._inv_std
        if self._in_dtype == np.float32:
            return x[None]
        info = np.iinfo(self._in_dtype)
        q = np.round(x / self._in_scale + self._in_zero)
        return np.clip(q, info.min, info.max).astype(self._in_dtype)[None]

    def classify(self, images: Sequence[np.ndarray]) -> np.ndarray:
        rows = []
        for image in images:
            x = self.prepare(image)
            with self.lock:
                self._interp.set_tensor(self._in_index, x)
                self._interp.invoke()
                raw = self._interp.get_tensor(self._out_index)[0]
            y = raw.astype(np.float32)
            if raw.dtype != np.float32:
                y = (y - self._out_zero) * self._out_scale
            if self.card.output == "logits":
                e = np.exp(y - y.max())
                y = e / e.sum()
            rows.append(y)
        return np.asarray(rows, np.float32).reshape(len(rows), len(self.card.labels))


def card_path_for(model_path: Path | str) -> Path:
    """A card is NAME.yaml beside NAME.tflite / NAME.npz; a .yaml path is the card itself."""
    path = Path(model_path)
    return path if path.suffix in (".yaml", ".yml") else path.with_suffix(".yaml")


def load_head(card_path: Path) -> tuple[Head, ModelCard, Path]:
    """A head and its card, the head's bytes checked against the card's sha256."""
    card = load_card(card_path)
    if not card.is_head:
        raise ModelError(f"{card_path}: not a head card (no backbone)")
    head_path = card_path.parent / card.file
    load_card(card_path, head_path)  # checks the head's hash
    return Head.load(head_path), card, head_path


def card_backbone(card: ModelCard, card_file: Path, threads: int = 1,
                  load: Callable[[Path, str, int, str | None], Backbone] = Backbone) -> FeatureExtractor:
    """The backbone(s) a head card names, files beside the card; stacked when it names more than one.
    `load` (path, sha256, threads, feature) lets a pool hand out its shared instances."""
    assert card.backbone_file is not None and card.backbone_sha256 is not None
    refs = [(card.backbone_file, card.backbone_sha256, card.backbone_feature), *card.extra_backbones]
    parts = [load(card_file.parent / file, sha, threads, feature) for file, sha, feature in refs]
    return parts[0] if len(parts) == 1 else StackedBackbone(parts)


def load_classifier(model_path: Path | str, card_path: Path | str | None = None, threads: int = 1,
                    backbone: FeatureExtractor | None = None, update: HeadUpdate | None = None) -> Classifier:
    """Load a model and its card (default: same name, `.yaml`); raises ModelError on any mismatch.

    `model_path` may be the card, a head (.npz) or a .tflite classifier. A head card's
    backbone(s) are loaded from beside the card unless an already loaded `backbone` is given.
    """
    card_file = Path(card_path) if card_path is not None else card_path_for(model_path)
    card = load_card(card_file)
    if card.is_head:
        head, card, head_path = load_head(card_file)
        if backbone is None:
            backbone = card_backbone(card, card_file, threads)
        elif backbone.sha256 != card.backbone_key:
            raise ModelError(f"{card_file}: the head was trained on backbone {card.backbone_key}, "
                             f"not {backbone.sha256}")
        classifier: Classifier = HeadClassifier(card, head_path, head, backbone, update)
        log.info("loaded model %s v%s (head on %s)", card.name, card.version, backbone.path.name)
        return classifier
    path = card_file.parent / card.file if Path(model_path).suffix in (".yaml", ".yml") else Path(model_path)
    card = load_card(card_file, path)
    classifier = TfliteClassifier(path, card, threads)
    log.info("loaded model %s v%s (%s, %d threads)", card.name, card.version, card.dtype, threads)
    return classifier


def load_shipped(name: str, override: Path | str | None = None, threads: int = 1) -> Classifier:
    """A shipped model by name, or the site's own model when `override` is given (no pool: own backbone)."""
    return load_classifier(Path(override) if override else default_model_path(name), threads=threads)
