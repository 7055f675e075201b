"""`edge-agent eval-detector NAME DIR [DIR ...]`: check a detector's classifier on labelled photos.

DIR holds a `labels.csv` (file,label); labels are the model's own (e.g. smoke / no_smoke)
or names the model card maps to them. Prints precision, recall and F1 of the card's
positive label, the confusion matrix and ms per image, so a bureau can check a model on
its own photos. `--subset` restricts to a list such as the card's held-out split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "eval-detector"
HELP = "measure a detector's classifier on a folder of labelled images (labels.csv: file,label)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="detector (black_smoke, bare_soil) or model name (smoke_cls, soil_cls, ...)")
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="folder(s) with labels.csv")
    parser.add_argument("--model", type=Path, help="a .tflite model (card beside it) instead of the shipped one")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT threads (default 1)")
    parser.add_argument(
        "--subset", type=Path,
        help="CSV with a 'file' column (paths as DIRNAME/FILE): only these images, e.g. a model's .heldout.csv",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")


def run(args: argparse.Namespace) -> int:
    from detectors.card import ModelError
    from detectors.evaluate import DETECTOR_MODELS, evaluate_folders, read_subset
    from detectors.runtime import load_shipped

    model_name = DETECTOR_MODELS.get(args.name, args.name)
    try:
        classifier = load_shipped(model_name, args.model, threads=args.threads)
    except ModelError as exc:
        print(f"eval-detector: {exc}", file=sys.stderr)
        return 2
    for folder in args.dirs:
        if not (folder / "labels.csv").is_file():
            print(f"eval-detector: {folder}/labels.csv not found", file=sys.stderr)
            return 2
    try:
        subset = read_subset(args.subset) if args.subset else None
        result = evaluate_folders(classifier, args.dirs, subset)
    except (OSError, KeyError, ValueError) as exc:
        print(f"eval-detector: {exc}", file=sys.stderr)
        return 2
    card = classifier.card
    print(f"model {card.name} v{card.version} ({card.dtype}) from {classifier.path}")
    print(f"data  {', '.join(str(d) for d in args.dirs)}" + (f" (subset {args.subset})" if args.subset else ""))
    print(result.report())
    if args.json:
        print(json.dumps({"model": card.name, "version": card.version, **result.metrics(),
                          "ms_per_image": round(result.ms_per_image, 3)}))
    return 0 if result.n else 1
