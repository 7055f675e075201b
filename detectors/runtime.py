"""Run a `.tflite` image classifier on CPU with LiteRT, quantising from the model's own parameters.

The input is quantised with the input tensor's scale/zero point and the output de-quantised
with the output tensor's, so float32, int8 and uint8 models all take BGR uint8 images and
give probabilities. The card beside the model is checked first (see card.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors.card import ModelCard, ModelError, load_card

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
_DTYPES: dict[str, Any] = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32}


def _interpreter_class() -> Any:
    """LiteRT first; tflite_runtime only for old images (it fails beside numpy 2)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError as exc:
        raise ModelError("no TFLite runtime: pip install ai-edge-litert") from exc


def default_model_path(name: str) -> Path:
    """Where a shipped model lives: detectors/models/NAME.tflite."""
    return MODELS_DIR / f"{name}.tflite"


class Classifier:
    """One loaded classifier. Not thread-safe: use one instance per camera thread."""

    def __init__(self, model_path: Path, card: ModelCard, threads: int = 1) -> None:
        self.path = model_path
        self.card = card
        try:
            interp = _interpreter_class()(model_path=str(model_path), num_threads=max(1, int(threads)))
            interp.allocate_tensors()
        except ModelError:
            raise
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError on corrupt files
            raise ModelError(f"cannot load model {model_path}: {exc}") from exc
        self._interp = interp
        inp = interp.get_input_details()[0]
        out = interp.get_output_details()[0]
        self._in_index = inp["index"]
        self._out_index = out["index"]
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_scale, self._in_zero = inp.get("quantization", (0.0, 0))
        self._out_scale, self._out_zero = out.get("quantization", (0.0, 0))
        self._check(list(inp["shape"]), list(out["shape"]))
        std = np.asarray(card.std, np.float32)
        self._mean = np.asarray(card.mean, np.float32)
        self._inv_std = 1.0 / std

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

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        """Resize, reorder colours, normalise and quantise one image into the input tensor's type."""
        card = self.card
        img = image_bgr
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
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
        """Probabilities, shape (len(images), len(labels)), one row per BGR uint8 image."""
        rows = []
        for image in images:
            self._interp.set_tensor(self._in_index, self.prepare(image))
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

    def positive_scores(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probability of the card's positive label for each image."""
        if not images:
            return np.zeros(0, np.float32)
        return self.classify(images)[:, self.card.labels.index(self.card.positive_label)]


def load_classifier(model_path: Path | str, card_path: Path | str | None = None, threads: int = 1) -> Classifier:
    """Load a model and its card (default: same name, `.yaml`); raises ModelError on any mismatch."""
    model_path = Path(model_path)
    card_file = Path(card_path) if card_path is not None else model_path.with_suffix(".yaml")
    card = load_card(card_file, model_path)
    classifier = Classifier(model_path, card, threads)
    log.info("loaded model %s v%s (%s, %d threads)", card.name, card.version, card.dtype, threads)
    return classifier


def load_shipped(name: str, override: Path | str | None = None, threads: int = 1) -> Classifier:
    """A shipped model by name, or the site's own model when `override` is given."""
    return load_classifier(Path(override) if override else default_model_path(name), threads=threads)
