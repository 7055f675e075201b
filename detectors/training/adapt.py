"""Adapt a shipped head to one site from the site's own labelled photos, on the box (numpy only).

The site's photos (a folder with labels.csv: file,label, e.g. from `edge-agent collect`) are
split into training and held-out parts (grouped: near-identical frames stay together),
run through the frozen backbone (image and mirror), and a new head is fitted starting from
the head in use, its weights pulled towards that head's (the strength chosen by
cross-validation on the training part), so a few dozen photos adjust what the head knows
rather than replace it. The new head is compared with the head in use on the held-out part
before it may be installed (see edge_agent/cli/adapt.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from detectors.adapted import HeadStore
from detectors.card import sha256_file
from detectors.evaluate import EvalResult
from detectors.heads import FitSettings, Head, fit, pool
from detectors.runtime import HeadClassifier
from detectors.training.catalog import Item, assign_groups, folds, split

MIN_PER_CLASS = 20
HELDOUT = 0.25
SEED = 7
PRIOR_STRENGTHS = (0.01, 0.1, 1.0)


class AdaptError(Exception):
    """The site's folder cannot train a head; the message says what to fix."""


@dataclass(frozen=True)
class SiteData:
    items: list[Item]  # target = model label; group = near-duplicate group
    root: Path


def read_site_folder(folder: Path, classifier: HeadClassifier, min_per_class: int = MIN_PER_CLASS) -> SiteData:
    """The labelled photos of FOLDER/labels.csv in the model's terms; refuses too few per class."""
    labels_csv = folder / "labels.csv"
    if not labels_csv.is_file():
        raise AdaptError(f"{labels_csv} not found: label the photos first (file,label per row)")
    card = classifier.card
    items, unknown, missing, unlabelled = [], Counter[str](), [], 0
    with labels_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
            if not name:
                continue
            if not label:
                unlabelled += 1
                continue
            target = card.map_label(label)
            if target is None:
                unknown[label] += 1
                continue
            if not (folder / name).is_file():
                missing.append(name)
                continue
            items.append(Item(folder.name, name, label, target, "site"))
    if unknown:
        known = ", ".join(card.labels)
        raise AdaptError(f"labels the model does not know: {dict(unknown)}; use {known} "
                         f"(or a name its card maps to them)")
    if missing:
        raise AdaptError(f"{len(missing)} file(s) in labels.csv not found, e.g. {missing[0]}")
    counts = Counter(it.target for it in items)
    short = {label: counts.get(label, 0) for label in card.labels if counts.get(label, 0) < min_per_class}
    if short:
        have = ", ".join(f"{k} {counts.get(k, 0)}" for k in card.labels)
        raise AdaptError(f"need at least {min_per_class} labelled photos of every class ({have}; "
                         f"{unlabelled} without a label): label more of: {', '.join(short)}")
    return SiteData(assign_groups(folder.parent, items), folder)


def _maps(classifier: HeadClassifier, root: Path, items: Sequence[Item],
          views: Sequence[str]) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for it in items:
        img = cv2.imread(str(root / it.file), cv2.IMREAD_COLOR)
        if img is None:
            raise AdaptError(f"{root / it.file} is not a readable image")
        out[it.key] = [classifier.backbone.feature_map(img if v == "full" else np.ascontiguousarray(img[:, ::-1]))
                       for v in views]
    return out


def _weights(y: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return (1.0 / np.maximum(counts[y], 1)).astype(np.float32)


def _fit(prior: Head, x: np.ndarray, y: np.ndarray, strength: float) -> Head:
    return fit(x, y, prior.labels, prior.pooling, FitSettings(l2=strength, steps=300, lr=0.01, seed=SEED),
               _weights(y, len(prior.labels)), prior=prior)


def score(labels: Sequence[str], positive: str, truth: Sequence[int], pred: Sequence[int]) -> EvalResult:
    cm = np.zeros((len(labels), len(labels)), np.int64)
    for t, p in zip(truth, pred, strict=True):
        cm[t, p] += 1
    return EvalResult(tuple(labels), positive, tuple(tuple(int(v) for v in r) for r in cm), int(cm.sum()), 0, 0, 0.0)


def better_or_equal(new: EvalResult, old: EvalResult) -> bool:
    """F1 of the positive label first, then accuracy."""
    return (round(new.f1, 6), round(new.accuracy, 6)) >= (round(old.f1, 6), round(old.accuracy, 6))


@dataclass
class Adapted:
    head: Head
    strength: float
    new: EvalResult  # on the site's held-out part
    current: EvalResult
    train: list[Item]
    heldout: list[Item]
    seconds: float


def adapt(classifier: HeadClassifier, data: SiteData, log: Callable[[str], None] = lambda m: None,
          heldout: set[str] | None = None) -> Adapted:
    """Fit a new head for the site; figures of the new and the current head on the site's held-out part.

    `heldout` (file names) fixes the held-out part, e.g. to compare successive heads on the
    same photos; by default a grouped, stratified quarter is held out.
    """
    t0 = time.process_time()
    current = classifier.head
    labels, positive = current.labels, classifier.card.positive_label
    if heldout is not None:
        train = [it for it in data.items if it.file not in heldout]
        held = [it for it in data.items if it.file in heldout]
    else:
        train, held = split(data.items, HELDOUT, SEED, stratum=lambda it: it.target)
    if not held or not train:
        raise AdaptError("too few distinct photos to keep a held-out part: collect more (different moments)")
    maps = _maps(classifier, data.root, data.items, ("full", "flip"))
    x = np.stack([pool(m, current.pooling) for it in train for m in maps[it.key]])
    y = np.array([labels.index(it.target) for it in train for _ in maps[it.key]])
    group_of = [it for it in train for _ in maps[it.key]]

    best, best_acc = PRIOR_STRENGTHS[0], -1.0
    fold = folds(train, 3, SEED)
    fold_of = {it.key: f for it, f in zip(train, fold, strict=True)}
    rows_fold = np.array([fold_of[it.key] for it in group_of])
    for strength in PRIOR_STRENGTHS:
        hits, total = 0, 0
        for f in range(3):
            fit_rows, test_rows = rows_fold != f, rows_fold == f
            if not test_rows.any() or len(set(y[fit_rows])) < 2:
                continue
            head = _fit(current, x[fit_rows], y[fit_rows], strength)
            hits += int((head.probs(x[test_rows]).argmax(1) == y[test_rows]).sum())
            total += int(test_rows.sum())
        acc = hits / total if total else 0.0
        log(f"  prior strength {strength}: cross-validated accuracy {acc:.3f}")
        if acc > best_acc:
            best, best_acc = strength, acc
    head = _fit(current, x, y, best)
    xh = np.stack([pool(maps[it.key][0], current.pooling) for it in held])
    truth = [labels.index(it.target) for it in held]
    new = score(labels, positive, truth, [int(r.argmax()) for r in head.probs(xh)])
    cur = score(labels, positive, truth, [int(r.argmax()) for r in current.probs(xh)])
    return Adapted(head, best, new, cur, train, held, time.process_time() - t0)


def install(store: HeadStore, classifier: HeadClassifier, result: Adapted, source: Path, activate: bool = True) -> str:
    """Write the new head, its card and held-out list as the store's next version; make it active."""
    version = store.next_version()
    vdir = store.dir / version
    vdir.mkdir(parents=True, exist_ok=False)
    head_path = vdir / "head.npz"
    result.head.save(head_path)
    with (vdir / "heldout.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "target"])
        for it in result.heldout:
            w.writerow([it.file, it.label, it.target])
    base: dict[str, Any] = dict(classifier.card.raw)
    card: dict[str, Any] = {
        **{k: base[k] for k in ("task", "detector", "description", "backbone", "extra_backbones", "input",
                                "normalisation", "labels", "positive_label", "output", "label_map") if k in base},
        "name": classifier.card.name,
        "version": f"{classifier.card.version.split('+')[0]}+site.{version}",
        "file": head_path.name,
        "sha256": sha256_file(head_path),
        "head": {"type": result.head.kind, "pooling": result.head.pooling, "features": result.head.dim,
                 "adapted_from": {"version": classifier.card.version, "sha256": classifier.card.sha256,
                                  "file": str(classifier.path)},
                 "prior_strength": result.strength},
        "training": {"command": f"edge-agent adapt {base.get('detector', classifier.card.name)} {source}",
                     "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "site_photos": str(source), "real_images": len(result.train),
                     "per_label": dict(Counter(it.target for it in result.train)),
                     "synthetic_fraction": 0.0, "cpu_seconds": round(result.seconds, 1)},
        "heldout": {"split": f"the site's photos, grouped by near-duplicate, stratified, seed {SEED}, "
                             f"{int(HELDOUT * 100)} %; list in heldout.csv",
                    **result.new.metrics(),
                    "head_it_replaced": {"version": classifier.card.version, **result.current.metrics()}},
    }
    (vdir / f"{store.name}.yaml").write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True),
                                             encoding="utf-8")
    if activate:
        store.activate(version)
    return version
