"""Small classifier heads on frozen backbone features: numpy only, to train and to run.

A head is a standardisation, an optional hidden layer (ReLU) and a softmax layer, stored as
one `.npz` beside its YAML card. Fitting is plain full-batch gradient descent (Adam) on a
weighted cross-entropy with L2: a few thousand cached feature vectors train in seconds on
one core, so a box can retrain a head from a site's own photos without TensorFlow.

How a feature map becomes the head's input (`pooling`):
- `mean`: the mean over all cells (the usual pooled embedding);
- `mean+ground`: that mean and the mean over the lower half of the map side by side. In a
  ground-level photo the lower half is the ground, so a whole-site photo is judged on its
  ground as well as on the scene; for a patch or a zone cell both halves are the same cell.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from detectors.card import ModelError

POOLINGS = ("mean", "mean+ground")


def pool(fmap: np.ndarray, pooling: str) -> np.ndarray:
    """One feature vector from a (h, w, c) map."""
    whole = fmap.mean(axis=(0, 1))
    if pooling == "mean":
        return whole
    if pooling == "mean+ground":
        h = fmap.shape[0]
        return np.concatenate([whole, fmap[h // 2:].mean(axis=(0, 1))])
    raise ModelError(f"unknown pooling {pooling!r}; one of {POOLINGS}")


def cell_vectors(fmap: np.ndarray, pooling: str) -> np.ndarray:
    """One head input per map cell, (h*w, dim): a cell stands for itself in every pooled part."""
    cells = fmap.reshape(-1, fmap.shape[-1])
    if pooling == "mean":
        return cells
    if pooling == "mean+ground":
        return np.concatenate([cells, cells], axis=1)
    raise ModelError(f"unknown pooling {pooling!r}; one of {POOLINGS}")


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


@dataclass
class Head:
    """Standardise → [hidden ReLU layer] → softmax over `labels`."""

    labels: tuple[str, ...]
    pooling: str
    mean: np.ndarray  # (dim,)
    inv_std: np.ndarray  # (dim,)
    w_out: np.ndarray  # (hidden or dim, k)
    b_out: np.ndarray  # (k,)
    w_hidden: np.ndarray | None = None  # (dim, hidden)
    b_hidden: np.ndarray | None = None  # (hidden,)
    backbone_sha256: str = ""  # the backbone whose features it was trained on (a card edit cannot hide it)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def kind(self) -> str:
        return "mlp" if self.w_hidden is not None else "logistic"

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float32) - self.mean) * self.inv_std
        if self.w_hidden is not None and self.b_hidden is not None:
            z = np.maximum(z @ self.w_hidden + self.b_hidden, 0.0)
        out: np.ndarray = z @ self.w_out + self.b_out
        return out

    def probs(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.logits(x))

    def to_bytes(self) -> bytes:
        """Deterministic .npz bytes (same head, same bytes, same sha256)."""
        arrays: dict[str, Any] = {
            "labels": np.asarray(self.labels), "pooling": np.asarray(self.pooling),
            "mean": self.mean.astype(np.float32), "inv_std": self.inv_std.astype(np.float32),
            "w_out": self.w_out.astype(np.float32), "b_out": self.b_out.astype(np.float32),
        }
        if self.backbone_sha256:
            arrays["backbone_sha256"] = np.asarray(self.backbone_sha256)
        if self.w_hidden is not None and self.b_hidden is not None:
            arrays["w_hidden"] = self.w_hidden.astype(np.float32)
            arrays["b_hidden"] = self.b_hidden.astype(np.float32)
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # uncompressed: no zlib timestamps, byte-stable
        return buf.getvalue()

    def save(self, path: Path) -> None:
        path.write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> Head:
        try:
            with np.load(path, allow_pickle=False) as data:
                hidden = "w_hidden" in data.files
                head = cls(
                    labels=tuple(str(x) for x in data["labels"]), pooling=str(data["pooling"]),
                    mean=data["mean"].astype(np.float32), inv_std=data["inv_std"].astype(np.float32),
                    w_out=data["w_out"].astype(np.float32), b_out=data["b_out"].astype(np.float32),
                    w_hidden=data["w_hidden"].astype(np.float32) if hidden else None,
                    b_hidden=data["b_hidden"].astype(np.float32) if hidden else None,
                    backbone_sha256=str(data["backbone_sha256"]) if "backbone_sha256" in data.files else "",
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"cannot read head {path}: {exc}") from exc
        if head.pooling not in POOLINGS:
            raise ModelError(f"head {path}: unknown pooling {head.pooling!r}")
        k = len(head.labels)
        inner = head.w_hidden.shape[1] if head.w_hidden is not None else head.dim
        if head.w_out.shape != (inner, k) or head.b_out.shape != (k,) or head.inv_std.shape != head.mean.shape:
            raise ModelError(f"head {path}: inconsistent array shapes")
        return head


@dataclass(frozen=True)
class FitSettings:
    """Hyper-parameters of `fit` (the card records them)."""

    hidden: int = 0  # 0: logistic regression
    l2: float = 1e-3
    steps: int = 400
    lr: float = 0.01
    seed: int = 0


def fit(x: np.ndarray, y: np.ndarray, labels: Sequence[str], pooling: str, settings: FitSettings = FitSettings(),
        weights: np.ndarray | None = None, prior: Head | None = None) -> Head:
    """Train a head on feature vectors `x` (n, dim) with integer targets `y`.

    `weights` (n,) weigh the samples (e.g. class balance); they are normalised to mean 1.
    With `prior` (a head over the same labels and features), training starts from it, keeps
    its standardisation, and the L2 term pulls towards its weights instead of towards zero: a
    site's few photos adjust the shipped head rather than replace what it learnt.
    """
    x = np.asarray(x, np.float32)
    n, dim = x.shape
    k = len(labels)
    w = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
    w = w / w.mean()
    if prior is not None:
        if prior.labels != tuple(labels) or prior.dim != dim or prior.pooling != pooling:
            raise ModelError("prior head: different labels, features or pooling")
        mean, inv_std = prior.mean.astype(np.float32), prior.inv_std.astype(np.float32)
    else:
        mean = ((w[:, None] * x).sum(0) / w.sum()).astype(np.float32)
        std = np.sqrt((w[:, None] * (x - mean) ** 2).sum(0) / w.sum()) + 1e-3
        inv_std = (1.0 / std).astype(np.float32)
    z = np.ascontiguousarray((x - mean) * inv_std, np.float32)
    zt = np.ascontiguousarray(z.T)
    onehot = np.eye(k, dtype=np.float32)[y]
    rng = np.random.default_rng(settings.seed)
    hidden = prior.w_hidden.shape[1] if prior is not None and prior.w_hidden is not None else (
        0 if prior is not None else settings.hidden)
    params: list[np.ndarray]
    if prior is not None:
        params = [p.astype(np.float32).copy() for p in (prior.w_hidden, prior.b_hidden) if p is not None]
        params += [prior.w_out.astype(np.float32).copy(), prior.b_out.astype(np.float32).copy()]
    elif hidden:
        params = [rng.normal(0, np.sqrt(2.0 / dim), (dim, hidden)).astype(np.float32), np.zeros(hidden, np.float32),
                  rng.normal(0, np.sqrt(1.0 / hidden), (hidden, k)).astype(np.float32), np.zeros(k, np.float32)]
    else:
        params = [np.zeros((dim, k), np.float32), np.zeros(k, np.float32)]
    anchor = [p.copy() if prior is not None else np.zeros_like(p) for p in params]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, settings.steps + 1):
        if hidden:
            wh, bh, wo, bo = params
            a = z @ wh + bh
            h = np.maximum(a, 0.0)
            p = softmax(h @ wo + bo)
            g = (p - onehot) * w[:, None] / n
            gh = (g @ wo.T) * (a > 0)
            grads = [zt @ gh + settings.l2 * (wh - anchor[0]), gh.sum(0),
                     h.T @ g + settings.l2 * (wo - anchor[2]), g.sum(0)]
        else:
            wo, bo = params
            p = softmax(z @ wo + bo)
            g = (p - onehot) * w[:, None] / n
            grads = [zt @ g + settings.l2 * (wo - anchor[0]), g.sum(0)]
        lr = float(settings.lr * 0.5 * (1 + np.cos(np.pi * step / settings.steps)))  # a Python float: no float64 upcast
        for i, gr in enumerate(grads):
            m1[i] = b1 * m1[i] + (1 - b1) * gr
            m2[i] = b2 * m2[i] + (1 - b2) * gr * gr
            params[i] = params[i] - lr * (m1[i] / (1 - b1**step)) / (np.sqrt(m2[i] / (1 - b2**step)) + eps)
    if hidden:
        head = Head(tuple(labels), pooling, mean, inv_std, params[2], params[3], params[0], params[1])
    else:
        head = Head(tuple(labels), pooling, mean, inv_std, params[0], params[1])
    return replace(head, backbone_sha256=prior.backbone_sha256) if prior is not None else head
