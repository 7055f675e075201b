"""Measure a classifier on labelled images: confusion matrix, precision/recall/F1, ms per image.

Shared by `edge-agent eval-detector` and the training script, so the figures in a model
card are computed by the same code a bureau runs on its own photos.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detectors.runtime import Classifier

# which classifier each detector runs
DETECTOR_MODELS = {"black_smoke": "smoke_cls", "bare_soil": "soil_cls"}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str  # as written in labels.csv


@dataclass(frozen=True)
class EvalResult:
    labels: tuple[str, ...]
    positive: str
    confusion: tuple[tuple[int, ...], ...]  # rows = true, columns = predicted
    n: int
    skipped_unknown_label: int
    unreadable: int
    ms_per_image: float

    def _counts(self) -> tuple[int, int, int]:
        p = self.labels.index(self.positive)
        cm = np.asarray(self.confusion)
        tp = int(cm[p, p])
        return tp, int(cm[:, p].sum()) - tp, int(cm[p, :].sum()) - tp

    @property
    def precision(self) -> float:
        tp, fp, _ = self._counts()
        return tp / (tp + fp) if tp + fp else 0.0

    @property
    def recall(self) -> float:
        tp, _, fn = self._counts()
        return tp / (tp + fn) if tp + fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        cm = np.asarray(self.confusion)
        return float(np.trace(cm) / cm.sum()) if cm.sum() else 0.0

    def metrics(self) -> dict[str, object]:
        return {
            "n": self.n,
            "positive_label": self.positive,
            "precision": round(self.precision, 3),
            "recall": round(self.recall, 3),
            "f1": round(self.f1, 3),
            "accuracy": round(self.accuracy, 3),
            "confusion": {"labels": list(self.labels), "rows_true_cols_predicted": [list(r) for r in self.confusion]},
        }

    def report(self) -> str:
        width = max(10, *(len(x) for x in self.labels)) + 2
        lines = [
            f"images {self.n} (skipped: {self.skipped_unknown_label} unknown label, {self.unreadable} unreadable)",
            f"positive '{self.positive}': precision {self.precision:.3f}  recall {self.recall:.3f}  "
            f"F1 {self.f1:.3f}  accuracy {self.accuracy:.3f}",
            "confusion (rows = true, columns = predicted):",
            " " * width + "".join(f"{x:>{width}}" for x in self.labels),
        ]
        for name, row in zip(self.labels, self.confusion, strict=True):
            lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
        lines.append(f"ms per image {self.ms_per_image:.2f} (resize + inference, decoding excluded)")
        return "\n".join(lines)


def read_labels(folder: Path, subset: set[str] | None = None) -> list[Sample]:
    """Rows of FOLDER/labels.csv (file,label[,...]); with `subset`, only files named in it."""
    out = []
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = (row.get("file") or "").strip()
            if not name or (subset is not None and f"{folder.name}/{name}" not in subset and name not in subset):
                continue
            out.append(Sample(folder / name, (row.get("label") or "").strip()))
    return out


def evaluate(classifier: Classifier, samples: Iterable[Sample]) -> EvalResult:
    card = classifier.card
    labels = card.labels
    cm = np.zeros((len(labels), len(labels)), np.int64)
    skipped = unreadable = 0
    spent = 0.0
    for sample in samples:
        truth = card.map_label(sample.label)
        if truth is None:
            skipped += 1
            continue
        image = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
        if image is None:
            unreadable += 1
            continue
        t0 = time.perf_counter()
        probs = classifier.classify([image])[0]
        spent += time.perf_counter() - t0
        cm[labels.index(truth), int(np.argmax(probs))] += 1
    n = int(cm.sum())
    return EvalResult(
        labels=labels,
        positive=card.positive_label,
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
        n=n,
        skipped_unknown_label=skipped,
        unreadable=unreadable,
        ms_per_image=1000.0 * spent / n if n else 0.0,
    )


def read_subset(path: Path) -> set[str]:
    """A held-out list: CSV with a `file` column, paths relative to the datasets folder."""
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["file"].strip() for row in csv.DictReader(fh) if row.get("file")}


def evaluate_folders(classifier: Classifier, folders: Sequence[Path], subset: set[str] | None = None) -> EvalResult:
    samples: list[Sample] = []
    for folder in folders:
        samples.extend(read_labels(folder, subset))
    return evaluate(classifier, samples)
