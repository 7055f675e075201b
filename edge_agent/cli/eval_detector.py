"""`edge-agent eval-detector NAME DIR [DIR ...]`: check a detector's classifier on labelled photos.

DIR holds a `labels.csv` (file,label); labels are the model's own (e.g. smoke / no_smoke)
or names the model card maps to them. Each photo is classified whole (resized to the
model's input). Prints precision, recall and F1 of the card's positive label, the confusion
matrix and ms per image, so a bureau can check a model on its own photos. NAME is a
detector (its classifier is looked up through the detector registry) or a model name
(smoke_cls, soil_cls, ...). `--subset` restricts to a list such as a card's held-out split;
`--labels` reads the labels from another CSV (paths relative to DIR), e.g.
`eval-detector bare_soil ../shared/datasets --labels detectors/models/soil_cls.heldout.csv`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detectors.card import ModelCard

NAME = "eval-detector"
HELP = "measure a detector's classifier on a folder of labelled images (labels.csv: file,label)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="detector (black_smoke, bare_soil) or model name (smoke_cls, soil_cls, ...)")
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="folder(s) with labels.csv")
    parser.add_argument("--model", type=Path,
                        help="a model card (.yaml), head (.npz) or .tflite with its card beside it, "
                        "instead of the shipped one")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT threads (default 1)")
    parser.add_argument(
        "--subset", type=Path,
        help="CSV with a 'file' column (paths as DIRNAME/FILE): only these images, e.g. a model's .heldout.csv",
    )
    parser.add_argument("--labels", type=Path,
                        help="CSV with file,label columns (paths relative to DIR) to use instead of DIR/labels.csv")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")


def _classifier(name: str, model: Path | None, threads: int) -> object:
    """Through the detector registry (as the daemon builds it), or by model name."""
    from detectors import registry
    from detectors.pool import ModelPool

    pool = ModelPool()
    spec = registry.specs().get(name)
    if spec is None:
        return pool.classifier(name, model, threads)
    if spec.classifier is None:
        raise ValueError(f"detector '{name}' has no image classifier to evaluate")
    fields = spec.params.model_fields
    overrides = {k: v for k, v in (("model", model), ("threads", threads)) if k in fields and v is not None}
    if model is not None and "model" not in fields:
        raise ValueError(f"detector '{name}' takes no --model")
    return spec.classifier(spec.params(type=name, **overrides), pool)


def _trained_on_heldout(card: ModelCard, path: Path, lists: list[Path]) -> str | None:
    """A shipped head learnt from its own held-out list after it was measured (train_heads, step 8):
    figures on that list are then not held-out ones, and the split head is what to pass instead."""
    split_head = (card.raw.get("heldout") or {}).get("head")
    if not split_head or split_head == card.file or f"{card.name}.heldout.csv" not in {p.name for p in lists}:
        return None
    split_card = Path(path).parent / str(split_head).replace(".npz", ".yaml")
    return (f"note  {card.file} was trained on these photos too, after its card's held-out figures were measured "
            f"on {split_head}: for held-out figures, add --model {split_card}")


def run(args: argparse.Namespace) -> int:
    from detectors.card import ModelError
    from detectors.evaluate import evaluate, evaluate_folders, read_label_file, read_subset
    from detectors.runtime import Classifier

    try:
        classifier = _classifier(args.name, args.model, args.threads)
    except (ModelError, ValueError) as exc:
        print(f"eval-detector: {exc}", file=sys.stderr)
        return 2
    assert isinstance(classifier, Classifier)
    if args.labels is not None:
        if not args.labels.is_file():
            print(f"eval-detector: {args.labels} not found", file=sys.stderr)
            return 2
        if len(args.dirs) != 1:
            print("eval-detector: --labels takes exactly one DIR (the folder its paths are relative to)",
                  file=sys.stderr)
            return 2
    else:
        for folder in args.dirs:
            if not (folder / "labels.csv").is_file():
                print(f"eval-detector: {folder}/labels.csv not found", file=sys.stderr)
                return 2
    try:
        subset = read_subset(args.subset) if args.subset else None
        if args.labels is not None:
            samples = read_label_file(args.labels, args.dirs[0])
            if subset is not None:
                samples = [s for s in samples if str(s.path.relative_to(args.dirs[0])) in subset]
            result = evaluate(classifier, samples)
        else:
            result = evaluate_folders(classifier, args.dirs, subset)
    except (OSError, KeyError, ValueError) as exc:
        print(f"eval-detector: {exc}", file=sys.stderr)
        return 2
    card = classifier.card
    print(f"model {card.name} v{card.version} ({card.dtype}) from {classifier.path}")
    source = ", ".join(str(d) for d in args.dirs) + (f" (labels {args.labels})" if args.labels else "")
    print(f"data  {source}" + (f" (subset {args.subset})" if args.subset else ""))
    note = _trained_on_heldout(card, classifier.path, [p for p in (args.labels, args.subset) if p is not None])
    if note:
        print(note)
    print(result.report())
    if args.json:
        print(json.dumps({"model": card.name, "version": card.version, **result.metrics(),
                          "ms_per_image": round(result.ms_per_image, 3)}))
    return 0 if result.n else 1
