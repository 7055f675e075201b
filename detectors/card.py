"""Model cards: the YAML beside every model that says what it expects and how good it is.

Two kinds of card. A plain classifier card describes one `.tflite` (`file`, `sha256`). A head
card describes a small numpy head (`file`, `sha256`: the `.npz`) on a frozen pretrained
backbone, named with its own hash under `backbone:` (file, sha256, feature tensor,
provenance), and optionally `extra_backbones:` (same fields) whose maps are stacked after
its channels. A card is checked at load (file hashes, input size, labels, dtype), so a site
can drop in its own model and card without code changes, and a model that does not match its
card (a wrong backbone included) is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

COLOR_ORDERS = ("rgb", "bgr")
DTYPES = ("int8", "uint8", "float32")


class ModelError(Exception):
    """A model or its card is missing, corrupt or inconsistent; the message says which and why."""


@dataclass(frozen=True)
class ModelCard:
    """The parsed card. `mean`/`std` apply to 0..255 pixel values before quantisation."""

    name: str
    version: str
    file: str
    sha256: str
    width: int
    height: int
    channels: int
    color: str  # rgb or bgr
    dtype: str  # int8, uint8 or float32: the model's input tensor type
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: tuple[str, ...]
    positive_label: str
    output: str = "probabilities"  # or logits (softmax is applied)
    label_map: Mapping[str, str] = field(default_factory=dict)  # dataset label -> model label, for eval
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    backbone_file: str | None = None  # head cards: the frozen backbone the head reads
    backbone_sha256: str | None = None
    backbone_feature: str | None = None  # name of the feature-map tensor in the backbone graph
    # More backbones on the same input whose maps are stacked after the first's channels: (file, sha256, feature)
    extra_backbones: tuple[tuple[str, str, str | None], ...] = ()

    @property
    def is_head(self) -> bool:
        """A head on a frozen backbone (rather than a self-contained .tflite classifier)."""
        return self.backbone_file is not None

    @property
    def backbone_key(self) -> str | None:
        """The sha256 of every backbone the head reads, joined by '+' (what a loaded stack's `sha256` is)."""
        if self.backbone_sha256 is None:
            return None
        return "+".join([self.backbone_sha256, *(sha for _, sha, _ in self.extra_backbones)])

    def map_label(self, label: str) -> str | None:
        """A dataset label in model terms, or None when the card does not know it."""
        if label in self.labels:
            return label
        return self.label_map.get(label)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _need(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data or data[key] is None:
        raise ModelError(f"{where}: missing '{key}'")
    return data[key]


def _triple(value: Any, channels: int, what: str, where: str) -> tuple[float, ...]:
    values = [float(value)] * channels if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != channels:
        raise ModelError(f"{where}: normalisation.{what} needs {channels} values, got {len(values)}")
    return tuple(values)


def parse_card(data: Any, where: str) -> ModelCard:
    """Validate a card dict; raises ModelError naming the first problem."""
    if not isinstance(data, Mapping):
        raise ModelError(f"{where}: a model card must be a YAML mapping")
    inp = _need(data, "input", where)
    norm = data.get("normalisation") or {}
    try:
        channels = int(_need(inp, "channels", where))
        labels = tuple(str(x) for x in _need(data, "labels", where))
        card = ModelCard(
            name=str(_need(data, "name", where)),
            version=str(_need(data, "version", where)),
            file=str(_need(data, "file", where)),
            sha256=str(_need(data, "sha256", where)).lower(),
            width=int(_need(inp, "width", where)),
            height=int(_need(inp, "height", where)),
            channels=channels,
            color=str(inp.get("color", "rgb")).lower(),
            dtype=str(_need(inp, "dtype", where)).lower(),
            mean=_triple(norm.get("mean", 0.0), channels, "mean", where),
            std=_triple(norm.get("std", 1.0), channels, "std", where),
            labels=labels,
            positive_label=str(data.get("positive_label", labels[-1] if labels else "")),
            output=str(data.get("output", "probabilities")),
            label_map={str(k): str(v) for k, v in (data.get("label_map") or {}).items()},
            raw=dict(data),
            **_backbone(data, where),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{where}: malformed card: {exc}") from exc
    if card.color not in COLOR_ORDERS:
        raise ModelError(f"{where}: input.color must be one of {COLOR_ORDERS}")
    if card.dtype not in DTYPES:
        raise ModelError(f"{where}: input.dtype must be one of {DTYPES}")
    if card.output not in ("probabilities", "logits"):
        raise ModelError(f"{where}: output must be 'probabilities' or 'logits'")
    if len(card.labels) < 2 or len(set(card.labels)) != len(card.labels):
        raise ModelError(f"{where}: labels must be at least two distinct names")
    if card.positive_label not in card.labels:
        raise ModelError(f"{where}: positive_label {card.positive_label!r} is not one of the labels")
    if any(s == 0 for s in card.std):
        raise ModelError(f"{where}: normalisation.std must not be 0")
    if min(card.width, card.height, card.channels) <= 0:
        raise ModelError(f"{where}: input sizes must be positive")
    return card


def _backbone_ref(bb: Any, what: str, where: str) -> tuple[str, str, str | None]:
    if not isinstance(bb, Mapping):
        raise ModelError(f"{where}: {what} must be a mapping (file, sha256, feature_tensor)")
    feature = bb.get("feature_tensor")
    return str(_need(bb, "file", where)), str(_need(bb, "sha256", where)).lower(), str(feature) if feature else None


def _backbone(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    bb = data.get("backbone")
    extra = data.get("extra_backbones") or []
    if bb is None:
        if extra:
            raise ModelError(f"{where}: extra_backbones without a backbone")
        return {}
    file, sha, feature = _backbone_ref(bb, "backbone", where)
    if not isinstance(extra, list):
        raise ModelError(f"{where}: extra_backbones must be a list of mappings (file, sha256, feature_tensor)")
    refs = tuple(_backbone_ref(e, f"extra_backbones[{i}]", where) for i, e in enumerate(extra))
    return {"backbone_file": file, "backbone_sha256": sha, "backbone_feature": feature, "extra_backbones": refs}


def load_card(card_path: Path, model_path: Path | None = None) -> ModelCard:
    """Read a card and, when a model path is given, check that the model's bytes match its hash."""
    if not card_path.is_file():
        raise ModelError(f"model card {card_path} not found: every model needs a card beside it")
    try:
        data = yaml.safe_load(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelError(f"cannot read model card {card_path}: {exc}") from exc
    card = parse_card(data, str(card_path))
    if model_path is not None:
        if not model_path.is_file():
            raise ModelError(f"model file {model_path} not found")
        actual = sha256_file(model_path)
        if actual != card.sha256:
            raise ModelError(
                f"model {model_path} does not match its card {card_path}: sha256 is {actual}, "
                f"the card says {card.sha256}; retrain or fix the card"
            )
    return card
