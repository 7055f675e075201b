"""Model updates: a signed `model` command installs a detector head, self-tests it, keeps it or rolls back.

The content travels in parts (`transfer.py`): the card's YAML followed by the head's bytes,
`card_bytes` saying where the card ends; the whole package's sha256 is in every signed part,
and the card names the head's own sha256, so both the package and the file are checked. The
head is checked like any shipped one (its card, its hash, its backbone: the box's), installed
beside the heads already there as the next version of the model's `HeadStore`
(`DATA_DIR/models/<name>/vNNNN`), activated, and picked up through the same path the
running detectors use (the active pointer, `request_reload`). Then it is self-tested on
stored frames: `DATA_DIR/fleet/selftest/<name>/` with a `labels.csv` (file,label), e.g. photos
from `edge-agent collect`, labelled. The new head must give finite probabilities and, where
labelled frames exist, score no worse than the head it replaced (F1 of the positive label and
accuracy, within `tolerance`) and at least `min_accuracy` when given. If it does not, the
store rolls back to the previous head and the ack says so, with the figures.

A whole `.tflite` model (not a head on the shipped backbone) is refused as `unsupported`: point
the detector's model override at it with a `config` change instead.

Acks: `accepted`; `done` with `data.stage: part` for each part but the last; for the last one
`queued` (`data.stage: installing`), then `done` with `data.outcome: applied`, or `failed` with
reason `rolled_back` (`data.cause: selftest_failed`, the figures in `data.selftest`); or `refused`:
`invalid_args`, `hash_mismatch`, `invalid_card`, `unsupported`, `wrong_backbone`, `busy`.
"""

from __future__ import annotations

import csv
import logging
import re
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge_agent.command_dispatch import AckResult
from edge_agent.fleet.transfer import TRANSFER_KEYS, TransferError, Transfers
from edge_agent.security.bureau_command import Command

log = logging.getLogger(__name__)

ARGS = frozenset({*TRANSFER_KEYS, "model", "card_bytes", "tolerance", "min_accuracy"})
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_SELFTEST_FRAMES = 200


def _refused(reason: str, detail: str) -> AckResult:
    return AckResult("refused", reason, detail[:400])


@dataclass(frozen=True)
class SelfTest:
    """What the self-test found: `ok`, and the figures behind it."""

    ok: bool
    detail: str
    figures: Mapping[str, Any]


def package(card_yaml: bytes, head: bytes) -> bytes:
    """The bureau side: the content of a `model` transfer (send `card_bytes=len(card_yaml)` with it)."""
    return card_yaml + head


class ModelUpdates:
    """The `model` command's handler; the install and self-test run on a thread of their own."""

    def __init__(self, models_dir: Path, transfers: Transfers, *, selftest_dir: Path):
        self.models_dir = Path(models_dir)
        self.transfers = transfers
        self.selftest_dir = Path(selftest_dir)
        self._lock = threading.Lock()
        self._busy = False
        self.threads: list[threading.Thread] = []

    def __call__(self, c: Command) -> AckResult:
        args = c.args
        extra = sorted(set(args) - ARGS)
        if extra:
            return _refused("invalid_args", f"unexpected argument(s) {', '.join(extra)}")
        name, card_bytes = args.get("model"), args.get("card_bytes")
        if not (isinstance(name, str) and _NAME.fullmatch(name)):
            return _refused("invalid_args", "'model' (the model's name, e.g. smoke_cls) is required")
        if type(card_bytes) is not int or card_bytes < 1:
            return _refused("invalid_args", "'card_bytes' (the card's length at the start of the content) is required")
        tolerance = args.get("tolerance", 0.02)
        min_accuracy = args.get("min_accuracy")
        if not isinstance(tolerance, (int, float)) or not 0 <= tolerance <= 1:
            return _refused("invalid_args", "'tolerance' must be 0..1")
        if min_accuracy is not None and (not isinstance(min_accuracy, (int, float)) or not 0 <= min_accuracy <= 1):
            return _refused("invalid_args", "'min_accuracy' must be 0..1")
        try:
            progress = self.transfers.add(args)
        except TransferError as exc:
            return _refused(exc.reason, exc.detail)
        if progress.content is None:
            return AckResult("done", detail=f"part {progress.received} of {progress.parts} stored",
                             data={"stage": "part", "received": progress.received, "parts": progress.parts})
        checked = self.check(name, progress.content, card_bytes)
        if isinstance(checked, AckResult):
            return checked
        card, head_bytes, classifier = checked
        with self._lock:
            if self._busy:
                return _refused("busy", "another model update is being installed")
            self._busy = True
        final: Future[AckResult] = Future()
        thread = threading.Thread(target=self._install, args=(c, name, card, head_bytes, classifier,
                                                              float(tolerance), min_accuracy, final),
                                  name=f"model-{name}", daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()
        return AckResult("queued", detail="installing; the outcome follows as done (applied) or failed "
                         "(rolled_back)", data={"stage": "installing", "model": name, "sha256": card.sha256},
                         final=final)

    def check(self, name: str, content: bytes, card_bytes: int) -> AckResult | tuple[Any, bytes, Any]:
        """The card and the head as a shipped model is checked, before anything is written."""
        from detectors.card import ModelError, parse_card, sha256_bytes
        from detectors.pool import ModelPool
        from detectors.runtime import HeadClassifier

        if card_bytes > len(content):
            return _refused("invalid_args", f"'card_bytes' {card_bytes} is beyond the {len(content)} bytes sent")
        try:
            card = parse_card(yaml.safe_load(content[:card_bytes].decode("utf-8")), f"card of {name}")
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            return _refused("invalid_card", f"the card is not YAML: {str(exc)[:200]}")
        except ModelError as exc:
            return _refused("invalid_card", str(exc))
        head = content[card_bytes:]
        if card.name != name:
            return _refused("invalid_card", f"the card is for model {card.name!r}, the command for {name!r}")
        if not _FILE.fullmatch(card.file) or card.file.endswith((".yaml", ".yml")):
            return _refused("invalid_card", f"the card's file {card.file!r} is not a plain file name")
        actual = sha256_bytes(head)
        if actual != card.sha256:
            return _refused("hash_mismatch", f"the head's sha256 is {actual}, its card says {card.sha256}")
        if not card.is_head:
            return _refused("unsupported", "only heads on the box's backbone are installed by `model`; point the "
                            "detector's model override at a whole model with a `config` change")
        try:
            classifier = ModelPool(adapted_dir=self.models_dir).classifier(name)
        except ModelError as exc:
            return _refused("invalid_card", f"no shipped model {name!r} on this box to take a head: {exc}")
        if not isinstance(classifier, HeadClassifier):
            return _refused("unsupported", f"model {name} is not a head on a backbone")
        if card.backbone_key != classifier.backbone.sha256:
            return _refused("wrong_backbone", f"the head was trained on backbone {card.backbone_key}, the box "
                            f"runs {classifier.backbone.sha256}")
        return card, head, classifier

    def _install(self, c: Command, name: str, card: Any, head: bytes, classifier: Any, tolerance: float,
                 min_accuracy: float | None, final: Future[AckResult]) -> None:
        from detectors.adapted import HeadStore, request_reload

        store = HeadStore(self.models_dir, name)
        previous = store.active()
        version = ""
        try:
            frames = self.frames(name, classifier.card.labels)
            maps = [classifier.backbone.feature_map(img) for img, _ in frames]
            before = classifier.classify_maps(maps)
            version = store.next_version()
            vdir = store.dir / version
            vdir.mkdir(parents=True, exist_ok=False)
            (vdir / card.file).write_bytes(head)
            raw = dict(card.raw)
            raw.setdefault("installed_by", {"command": c.id, "key_id": c.key_id})
            store.card_path(version).write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True),
                                                encoding="utf-8")
            store.activate(version)
            request_reload()  # the running detectors look at the pointer on their next frame
            classifier.refresh()  # the same path: the active pointer, the card, the hash, the backbone
            if Path(classifier.path).parent != vdir:
                result = SelfTest(False, "the installed head was not taken up (see the box's log)", {})
            else:
                result = self.selftest(classifier, maps, before, [label for _, label in frames], tolerance,
                                       min_accuracy)
        except Exception as exc:
            log.exception("model %s: install failed", name)
            result = SelfTest(False, f"install failed: {type(exc).__name__}: {exc}", {})
        if result.ok:
            outcome, reason = "applied", ""
            log.info("model %s: %s installed and active (%s)", name, version, result.detail)
        else:
            outcome, reason = "rolled_back", "selftest_failed"
            if version and store.active() == version:
                store.rollback()
                request_reload()
            log.error("model %s: %s rolled back to %s: %s", name, version or "(not installed)", previous,
                      result.detail)
        data = {"outcome": outcome, "model": name, "version": version, "active": store.active(),
                "previous": previous, "sha256": card.sha256, "selftest": dict(result.figures),
                **({"cause": reason} if reason else {})}
        with self._lock:
            self._busy = False
        final.set_result(AckResult("done", "", result.detail[:400], data) if result.ok else
                         AckResult("failed", "rolled_back", f"{reason}: {result.detail}"[:400], data))

    def frames(self, name: str, labels: tuple[str, ...]) -> list[tuple[np.ndarray, str | None]]:
        """The stored frames for the self-test: labelled ones from labels.csv, else any image there; at
        least a plain grey frame, so a head that cannot even run is caught."""
        import cv2

        folder = self.selftest_dir / name
        out: list[tuple[np.ndarray, str | None]] = []
        labelled: dict[str, str] = {}
        csv_path = folder / "labels.csv"
        if csv_path.is_file():
            with csv_path.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    file, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
                    if file and label in labels:
                        labelled[file] = label
        files = sorted(labelled) or (sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (
            ".jpg", ".jpeg", ".png")) if folder.is_dir() else [])
        for file in files[:MAX_SELFTEST_FRAMES]:
            if "/" in file or file.startswith("."):
                continue
            img = cv2.imread(str(folder / file), cv2.IMREAD_COLOR)
            if img is not None:
                out.append((img, labelled.get(file)))
        if not out:
            out.append((np.full((224, 224, 3), 128, np.uint8), None))
        return out

    def selftest(self, classifier: Any, maps: list[np.ndarray], before: np.ndarray, truth: list[str | None],
                 tolerance: float, min_accuracy: float | None) -> SelfTest:
        after = classifier.classify_maps(maps)
        if after.shape != before.shape or not np.all(np.isfinite(after)) or not np.allclose(after.sum(1), 1.0,
                                                                                            atol=1e-3):
            return SelfTest(False, "the new head gives no valid probabilities on the stored frames",
                            {"frames": len(maps)})
        rows = [i for i, t in enumerate(truth) if t is not None]
        if not rows:
            return SelfTest(True, f"runs on {len(maps)} stored frame(s); no labelled frames to score",
                            {"frames": len(maps), "labelled": 0})
        labels = classifier.card.labels
        positive = labels.index(classifier.card.positive_label)
        y = np.array([labels.index(t) for t in truth if t is not None])
        new = _scores(after[rows].argmax(1), y, positive)
        old = _scores(before[rows].argmax(1), y, positive)
        figures = {"frames": len(maps), "labelled": len(rows), "new": new, "previous": old}
        worse = [k for k in ("f1", "accuracy") if new[k] < old[k] - tolerance]
        if worse:
            return SelfTest(False, f"scores worse than the head it replaced on {len(rows)} labelled frames: "
                            + ", ".join(f"{k} {new[k]:.3f} < {old[k]:.3f}" for k in worse), figures)
        if min_accuracy is not None and new["accuracy"] < min_accuracy:
            return SelfTest(False, f"accuracy {new['accuracy']:.3f} below the required {min_accuracy}", figures)
        return SelfTest(True, f"accuracy {new['accuracy']:.3f} (was {old['accuracy']:.3f}), F1 {new['f1']:.3f} "
                        f"(was {old['f1']:.3f}) on {len(rows)} labelled frames", figures)

    def stop(self) -> None:
        for t in self.threads:
            t.join(5.0)


def _scores(pred: np.ndarray, truth: np.ndarray, positive: int) -> dict[str, float]:
    tp = int(((pred == positive) & (truth == positive)).sum())
    fp = int(((pred == positive) & (truth != positive)).sum())
    fn = int(((pred != positive) & (truth == positive)).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"accuracy": round(float((pred == truth).mean()), 4), "f1": round(f1, 4)}

