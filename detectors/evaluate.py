"""Measure a classifier on labelled images: confusion matrix, precision/recall/F1, ms per image.

Shared by `edge-agent eval-detector` and the training script, so the figures in a model
card are computed by the same code a bureau runs on its own photos.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detectors.runtime import Classifier


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


@dataclass(frozen=True)
class Prediction:
    sample: Sample
    truth: int | None  # index into the card's labels; None: unknown label or unreadable image
    predicted: int | None
    ms: float
    unreadable: bool = False


def predict(classifier: Classifier, samples: Iterable[Sample]) -> Iterator[Prediction]:
    """The classifier's argmax for each sample whose label the card knows (whole image, as given)."""
    card = classifier.card
    for sample in samples:
        truth = card.map_label(sample.label)
        if truth is None:
            yield Prediction(sample, None, None, 0.0)
            continue
        image = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
        if image is None:
            yield Prediction(sample, None, None, 0.0, unreadable=True)
            continue
        t0 = time.perf_counter()
        probs = classifier.classify([image])[0]
        ms = (time.perf_counter() - t0) * 1000.0
        yield Prediction(sample, card.labels.index(truth), int(np.argmax(probs)), ms)


def result(classifier: Classifier, predictions: Iterable[Prediction]) -> EvalResult:
    labels = classifier.card.labels
    cm = np.zeros((len(labels), len(labels)), np.int64)
    skipped = unreadable = 0
    spent = 0.0
    for p in predictions:
        if p.truth is None or p.predicted is None:
            unreadable += int(p.unreadable)
            skipped += int(not p.unreadable)
            continue
        cm[p.truth, p.predicted] += 1
        spent += p.ms
    n = int(cm.sum())
    return EvalResult(
        labels=labels,
        positive=classifier.card.positive_label,
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
        n=n,
        skipped_unknown_label=skipped,
        unreadable=unreadable,
        ms_per_image=spent / n if n else 0.0,
    )


def evaluate(classifier: Classifier, samples: Iterable[Sample]) -> EvalResult:
    return result(classifier, predict(classifier, samples))


def read_label_file(path: Path, root: Path) -> list[Sample]:
    """Samples from a CSV with file,label columns whose paths are relative to `root`
    (e.g. a card's NAME.heldout.csv against the datasets folder)."""
    with path.open(newline="", encoding="utf-8") as fh:
        return [Sample(root / row["file"].strip(), (row.get("label") or "").strip())
                for row in csv.DictReader(fh) if (row.get("file") or "").strip()]


def read_subset(path: Path) -> set[str]:
    """A held-out list: CSV with a `file` column, paths relative to the datasets folder."""
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["file"].strip() for row in csv.DictReader(fh) if row.get("file")}


def evaluate_folders(classifier: Classifier, folders: Sequence[Path], subset: set[str] | None = None) -> EvalResult:
    samples: list[Sample] = []
    for folder in folders:
        samples.extend(read_labels(folder, subset))
    return evaluate(classifier, samples)
