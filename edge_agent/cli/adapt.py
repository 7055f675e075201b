"""`edge-agent adapt DETECTOR DIR`: train a detector's head on this site's own labelled photos.

DIR holds the photos and a labels.csv (file,label), e.g. from `edge-agent collect`, with at
least 20 photos of every class the model knows. A quarter of them (grouped, so near-identical
frames stay together) is held out; the new head must do at least as well there as the head
in use, or it is not installed (`--force` installs it anyway). Installed heads are versioned
under `storage.data_dir/models/<model>/` with their own card; the running agent picks the new
one up within seconds, without a restart. `--rollback` goes back to the head used before.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.cli._common import DEFAULT_CONFIG, EXIT_CONFIG, load_or_report

NAME = "adapt"
HELP = "retrain a detector's head on this site's labelled photos (or --rollback to the previous head)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("detector", help="detector whose head to adapt (black_smoke, bare_soil) or its model name")
    parser.add_argument("dir", nargs="?", type=Path, help="folder of photos with labels.csv (file,label)")
    parser.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help="config file (for storage.data_dir)")
    parser.add_argument("--data-dir", type=Path, help="the agent's data dir, instead of the config's storage.data_dir")
    parser.add_argument("--force", action="store_true", help="install even if it scores worse than the head in use")
    parser.add_argument("--rollback", action="store_true", help="go back to the head in use before the current one")
    parser.add_argument("--heldout", type=Path,
                        help="CSV with a 'file' column: hold out these photos (default: a grouped quarter), e.g. to "
                        "compare successive heads on the same photos")


def _data_dir(args: argparse.Namespace) -> Path | None:
    if args.data_dir is not None:
        return Path(args.data_dir)
    config = load_or_report(args.config)
    return None if config is None else Path(config.storage.data_dir)


def _model_name(detector: str) -> str:
    from detectors import registry
    from detectors.pool import ModelPool

    spec = registry.specs().get(detector)
    if spec is None:
        return detector
    if spec.classifier is None:
        raise ValueError(f"detector '{detector}' has no classifier head to adapt")
    return spec.classifier(spec.default_params(), ModelPool()).card.name


def _report(label: str, result: object) -> str:
    r = result
    return (f"{label}: precision {r.precision:.3f}  recall {r.recall:.3f}  F1 {r.f1:.3f}  "  # type: ignore[attr-defined]
            f"accuracy {r.accuracy:.3f}  (n {r.n})")  # type: ignore[attr-defined]


def run(args: argparse.Namespace) -> int:
    from detectors.adapted import HeadStore
    from detectors.card import ModelError
    from detectors.pool import ModelPool
    from detectors.runtime import HeadClassifier
    from detectors.training.adapt import MIN_PER_CLASS, AdaptError, adapt, better_or_equal, install, read_site_folder

    data_dir = _data_dir(args)
    if data_dir is None:
        return EXIT_CONFIG
    models_dir = data_dir / "models"
    try:
        name = _model_name(args.detector)
    except (ModelError, ValueError) as exc:
        print(f"adapt: {exc}", file=sys.stderr)
        return 2
    store = HeadStore(models_dir, name)
    if args.rollback:
        try:
            before = store.active()
            now = store.rollback()
        except ModelError as exc:
            print(f"adapt: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: rolled back from {before} to {now}; the running agent switches within seconds")
        return 0
    if args.dir is None:
        print("adapt: give the folder of labelled photos (or --rollback)", file=sys.stderr)
        return 2
    try:
        classifier = ModelPool(adapted_dir=models_dir).classifier(name)
        if not isinstance(classifier, HeadClassifier):
            print(f"adapt: model {name} is not a head on a backbone; nothing to adapt", file=sys.stderr)
            return 2
        data = read_site_folder(args.dir, classifier, MIN_PER_CLASS)
        print(f"{name}: {len(data.items)} labelled photos from {args.dir}; head in use: {store.active()}")
        heldout = None
        if args.heldout is not None:
            from detectors.evaluate import read_subset

            heldout = read_subset(args.heldout)
        result = adapt(classifier, data, log=print, heldout=heldout)
    except (AdaptError, ModelError, OSError) as exc:
        print(f"adapt: {exc}", file=sys.stderr)
        return 2
    print(f"trained on {len(result.train)} photos in {result.seconds:.1f} s of CPU; held out {len(result.heldout)}")
    print(_report("new head   ", result.new))
    print(_report("head in use", result.current))
    if not better_or_equal(result.new, result.current) and not args.force:
        print("adapt: the new head scores worse than the head in use on this site's held-out photos; "
              "not installed (--force to install anyway)", file=sys.stderr)
        return 1
    version = install(store, classifier, result, args.dir.resolve())
    print(f"{name}: installed {version} in {store.dir} and made it active; "
          f"the running agent switches within seconds (edge-agent adapt {args.detector} --rollback to undo)")
    return 0
