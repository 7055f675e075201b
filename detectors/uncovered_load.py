"""Muck trucks leaving with an open load (DOMAIN.md §4: 渣土车辆 100 % 密闭运输, transport enclosed).

Each vehicle found by the shared COCO detector is tracked (detectors/objects.py) towards the
exit line. While it is on the site's side and big enough in the frame, the load area is cut
from its box (`load_region`, relative to the box: from an elevated exit camera facing
oncoming trucks, the bed is above and behind the cab, so above the box's top edge) and
classified covered / partial (net over a heap) / uncovered / empty by the project's frozen
ImageNet backbone (MobileNet V1, detectors/backbone.py; the smoke and soil heads read it too,
so a camera loads it once) and a small numpy head (detectors/heads.py).
The last few classifications are averaged; when the track crosses the exit line outwards,
one detection is emitted: `uncovered_load` (confirmed) when the averaged share of the
violation labels reaches `violation_share`, else `load_checked`.

The shipped head rests on 17 real gantry photos (22 labelled, 5-6 per class; in 5 the SSD
finds no vehicle): leave-one-out it is no better than always answering "violation" (card:
figures and limits). Treat its violations as leads for a person to check, and retrain on a
site's own photos with one command:
`python -m detectors.uncovered_load train --data DIR --out detectors/models` (DIR holds a
labels.csv of file,label or one folder per label).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from collections import deque
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import yaml
from pydantic import Field, model_validator

from detectors.background import valid_image
from detectors.card import sha256_file
from detectors.geometry import as_line, centroid, side
from detectors.objects import (
    MODELS_DIR,
    BoxTracker,
    ObjectDetector,
    ObjectParams,
    ObjectTrack,
    box_px,
    detect_objects,
    for_groups,
    load_objects,
)
from detectors.pool import ModelPool
from detectors.registry import CameraView, DetectorSpec, ViolationKind
from detectors.types import Detection, box_polygon

if TYPE_CHECKING:
    from detectors.runtime import Classifier

log = logging.getLogger(__name__)
NAME = "uncovered_load"
HEAD_NAME = "load_cover_head"
LABELS = ("covered", "partial", "uncovered", "empty")
DATASET_LABELS = {"covered_load": "covered", "partial_cover": "partial", "uncovered_load": "uncovered",
                  "empty_load": "empty"}
DEFAULT_REGION = (-0.05, -0.6, 1.05, 0.25)
BACKBONE_FILE = "mobilenet_v1_1.0_224_embedding_int8.tflite"  # the smoke and soil heads' too

Point = tuple[float, float]
Box4 = tuple[float, float, float, float]


def load_box(vehicle: Box4, region: Sequence[float] = DEFAULT_REGION) -> Box4:
    """The load area of a vehicle box: `region` is (x0, y0, x1, y1) in box widths/heights from its top left."""
    x0, y0, x1, y1 = vehicle
    w, h = x1 - x0, y1 - y0
    box = (x0 + region[0] * w, y0 + region[1] * h, x0 + region[2] * w, y0 + region[3] * h)
    bx0, by0, bx1, by1 = (min(1.0, max(0.0, v)) for v in box)
    return bx0, by0, max(bx1, bx0 + 1e-3), max(by1, by0 + 1e-3)


def crop(image: np.ndarray, box: Box4) -> np.ndarray:
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box_px(box, w, h)
    return image[y0:y1, x0:x1]


def load_cover_classifier(override: Path | str | None = None, threads: int = 1) -> Classifier:
    """The shipped load head on its backbone (a project head card), or a site's own head card; hash-checked.

    Within the daemon the camera's ModelPool loads it (`pool.classifier`), sharing the backbone.
    """
    from detectors.runtime import load_shipped

    return load_shipped(HEAD_NAME, override, threads)


def region_of(classifier: Any) -> tuple[float, ...]:
    """The load region the head was trained with (its card's `load_region`)."""
    raw = getattr(getattr(classifier, "card", None), "raw", None) or {}
    return tuple(float(v) for v in raw.get("load_region", DEFAULT_REGION))


class LoadParams(ObjectParams):
    """The exit camera's load check (`detectors.uncovered_load` in the config)."""

    type: Literal["uncovered_load"] = "uncovered_load"
    model: Path | None = Field(
        None, description="A load head's card (.yaml, with its .npz beside it); omit for the shipped head.",
    )
    exit_line: tuple[Point, Point] | None = Field(
        None, description="The exit line [[x, y], [x, y]] in normalised coordinates; required.",
    )
    inside_zone: str = Field(
        "wash_bay", description="A zone on the site's side of the exit line (its centre tells the sides apart).",
    )
    inside_point: Point | None = Field(
        None, description="Or a point [x, y] on the site's side of the line (overrides inside_zone).",
    )
    load_region: tuple[float, float, float, float] | None = Field(
        None, description="Load area relative to the vehicle box [x0, y0, x1, y1] in box widths/heights from its "
        "top left; omit for the head's own (its card: above the cab, for a camera facing oncoming trucks).",
    )
    violation_labels: tuple[str, ...] = Field(
        ("uncovered", "partial"), description="Head labels that are a violation ('partial' is a net over a heap: "
        "not enclosed transport in Shenzhen's reading of 100 % 密闭运输; UNCONFIRMED, check the local rule).",
    )
    violation_share: float = Field(
        0.6, gt=0, lt=1, description="Mean probability of the violation labels that confirms a violation.",
    )
    samples: int = Field(3, ge=1, le=20, description="The last N load classifications before the line are averaged.")
    classify_every_s: float = Field(1.0, ge=0, le=60, description="Seconds between classifications of one vehicle.")
    min_box_height: float = Field(
        0.15, gt=0, le=1, description="Classify only when the vehicle box is at least this share of the image height.",
    )
    min_area: float = Field(0.01, gt=0, lt=1, description="Smallest vehicle box, share of the image.")
    anchor: Literal["bottom", "centre"] = Field(
        "bottom", description="Which point of a vehicle box is its position (see washing).",
    )
    max_coast_s: float = Field(8.0, gt=0, le=60, description="How long an unseen vehicle is still followed.")

    @model_validator(mode="after")
    def _check(self) -> LoadParams:
        if self.exit_line is not None:
            a, b = self.exit_line
            if a == b or not all(0.0 <= v <= 1.0 for v in (*a, *b)):
                raise ValueError("exit_line needs two different points with coordinates in 0..1")
        if not self.violation_labels:
            raise ValueError("violation_labels must name at least one head label")
        return self


class UncoveredLoadDetector:
    """One per exit camera: follows vehicles, classifies their load, judges each once at the exit line."""

    name = NAME

    def __init__(self, exit_line: Sequence[Sequence[float]], inside_point: Sequence[float],
                 params: LoadParams | None = None, camera: str = "", objects: ObjectDetector | None = None,
                 classifier: Any = None) -> None:
        self.params = p = params or LoadParams()
        self.line = as_line(exit_line)
        inside = (float(inside_point[0]), float(inside_point[1]))
        s = side(inside, self.line)
        if s == 0:
            raise ValueError("the site-side point lies on the exit line: which side is inside?")
        self._inside_sign = 1.0 if s > 0 else -1.0
        self.camera = camera
        self.objects = objects if objects is not None else load_objects(p.objects_model, p.threads)
        self.classifier = classifier if classifier is not None else load_cover_classifier(p.model, p.threads)
        labels = tuple(self.classifier.labels)
        if not any(v in labels for v in p.violation_labels):  # a site's head may know fewer labels
            raise ValueError(f"violation_labels {list(p.violation_labels)} name no label of the load head {labels}")
        self._violation = np.asarray([lab in p.violation_labels for lab in labels])
        self.region = tuple(p.load_region) if p.load_region is not None else region_of(self.classifier)
        self.tracker = BoxTracker(min_score=p.min_score, keep_score=p.keep_score, max_coast_s=p.max_coast_s,
                                  max_missed=max(3, int(p.max_coast_s)))

    def analyse(self, image_bgr: np.ndarray, time: datetime, *, motion: float | None = None,
                shared: Any = None) -> list[Detection]:
        """A detection for each vehicle that crossed the exit line in this analysis."""
        if not valid_image(image_bgr):
            return []
        p = self.params
        objects = detect_objects(self.objects, image_bgr, time, shared, p)
        out = []
        for tr in self.tracker.update(for_groups(objects, ("vehicle",), p.min_area), time):
            if tr.observed:
                found = self._follow(tr, image_bgr, time)
                if found is not None:
                    out.append(found)
        return out

    def _follow(self, tr: ObjectTrack, image: np.ndarray, time: datetime) -> Detection | None:
        p = self.params
        st = tr.state
        if "probs" not in st:
            st.update(probs=deque(maxlen=p.samples), side=None, reported=False, last_classified=None,
                      best=None)
        x = (tr.box[0] + tr.box[2]) / 2
        point = (x, tr.box[3]) if p.anchor == "bottom" else (x, (tr.box[1] + tr.box[3]) / 2)
        now_side = side(point, self.line) * self._inside_sign
        last = st["last_classified"]
        due = last is None or (time - last).total_seconds() >= p.classify_every_s
        if now_side > 0 and due and (tr.box[3] - tr.box[1]) >= p.min_box_height:
            lbox = load_box(tr.box, self.region)
            patch = crop(image, lbox)
            if patch.shape[0] >= 8 and patch.shape[1] >= 8:
                probs = self.classifier.classify([patch])[0]
                st["probs"].append(probs)
                st["last_classified"] = time
                size = (tr.box[2] - tr.box[0]) * (tr.box[3] - tr.box[1])
                if st["best"] is None or size >= st["best"][0]:
                    st["best"] = (size, patch.copy(), lbox)
        crossed = st["side"] is not None and st["side"] > 0 >= now_side
        st["side"] = now_side
        if not crossed or st["reported"] or not self.tracker.confirmed(tr):
            return None
        st["reported"] = True
        return self._judge(tr, image, time)

    def _judge(self, tr: ObjectTrack, image: np.ndarray, time: datetime) -> Detection:
        p = self.params
        st = tr.state
        labels = tuple(self.classifier.labels)
        history = list(st["probs"])
        metrics: dict[str, float | str] = {"samples": float(len(history)), "track": float(tr.id),
                                           "vehicle": tr.label, "vehicle_score": round(tr.mean_score, 3)}
        vehicle = tuple(min(1.0, max(0.0, v)) for v in tr.box)
        regions = [box_polygon(*vehicle)]
        if not history:  # never seen big enough on the site's side: no judgement
            metrics.update(load="unknown", p_violation=0.0)
            return Detection(detector=NAME, camera=self.camera, time=time, kind="load_checked",
                             key=f"{NAME}:{self.camera}:{tr.id}", score=0.0, regions=tuple(regions),
                             metrics=metrics, confirmed=False)
        mean = np.mean(np.asarray(history), axis=0)
        p_violation = float(mean[self._violation].sum())
        for lab, v in zip(labels, mean, strict=True):
            metrics[f"p_{lab}"] = round(float(v), 3)
        metrics["load"] = labels[int(np.argmax(mean))]
        metrics["p_violation"] = round(p_violation, 3)
        metrics["violation_share"] = p.violation_share
        violation = p_violation >= p.violation_share
        _, patch, lbox = st["best"]
        regions.append(box_polygon(*lbox))
        images: dict[str, object] = {}
        if violation:
            h, w = image.shape[:2]
            x0, y0, x1, y1 = box_px(tr.box, w, h)
            # The frame itself, not a 6-MB copy (see washing): it becomes a JPEG before the analysis returns.
            images = {"snapshot": image, "crop": image[y0:y1, x0:x1].copy(), "load": patch}
        return Detection(detector=NAME, camera=self.camera, time=time,
                         kind="uncovered_load" if violation else "load_checked",
                         key=f"{NAME}:{self.camera}:{tr.id}", score=round(p_violation, 3), regions=tuple(regions),
                         metrics=metrics, confirmed=violation, images=images)


def _build(params: LoadParams, camera: CameraView, pool: ModelPool) -> UncoveredLoadDetector:
    if params.exit_line is None:
        raise ValueError(f"camera {camera.camera_id}: uncovered_load needs detectors.uncovered_load.exit_line")
    if params.inside_point is not None:
        inside = params.inside_point
    elif params.inside_zone in camera.zones:
        inside = centroid(camera.zones[params.inside_zone])
    else:
        raise ValueError(f"camera {camera.camera_id}: uncovered_load needs a '{params.inside_zone}' zone or "
                         "inside_point to know the site's side of the exit line")
    return UncoveredLoadDetector(params.exit_line, inside, params, camera=camera.camera_id,
                                 objects=pool.objects(params.objects_model, params.threads),
                                 classifier=pool.classifier(HEAD_NAME, params.model, params.threads))


SPEC = DetectorSpec(
    name=NAME, params=LoadParams, build=_build, kinds=("uncovered_load", "load_checked"),
    summary="vehicles (COCO detector) crossing the exit line with their load area classified covered, partly "
    "covered, uncovered or empty; an open load is a violation",
    needs_zones=lambda params: [] if params.inside_point is not None else [params.inside_zone],
    violations={"uncovered_load": ViolationKind("truck left with its load uncovered ({load})", moment=True)},
)


# --- training: one command on a site's own photos -----------------------------------------------------------


def _labelled(data: Path) -> list[tuple[Path, str]]:
    """(image, head label) pairs from DIR/labels.csv (file,label) or DIR/<label>/*.jpg."""
    rows: list[tuple[Path, str]] = []
    table = data / "labels.csv"
    if table.is_file():
        with table.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                rows.append((data / row["file"], row["label"]))
    else:
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            rows += [(f, folder.name) for f in sorted(folder.iterdir())
                     if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    out = []
    for path, label in rows:
        mapped = label if label in LABELS else DATASET_LABELS.get(label)
        if mapped is not None:
            out.append((path, mapped))
    return out


def vehicle_box(objects: ObjectDetector, image: np.ndarray, min_score: float = 0.3) -> tuple[Box4, float] | None:
    """The most confident vehicle of a photo (training: one truck per photo)."""
    found = [o for o in objects.detect(image) if o.group == "vehicle" and o.score >= min_score]
    if not found:
        return None
    best = max(found, key=lambda o: o.score)
    return best.box, best.score


def train(data: Path, out: Path, region: Sequence[float] = DEFAULT_REGION, l2: float = 0.1,
          steps: int = 400, seed: int = 0) -> dict[str, Any]:
    """Crop each photo's load area as the detector does, fit the head, leave-one-out figures; write head + card."""
    from detectors.backbone import Backbone
    from detectors.heads import FitSettings, fit, pool

    backbone_file = MODELS_DIR / BACKBONE_FILE  # the project's backbone: one per camera for every head
    backbone_sha = sha256_file(backbone_file)
    backbone = Backbone(backbone_file, backbone_sha)
    objects = load_objects()
    items = _labelled(data)
    feats: list[list[np.ndarray]] = []
    ys: list[int] = []
    names: list[str] = []
    skipped: list[str] = []
    for path, label in items:
        img = cv2.imread(str(path))
        found = vehicle_box(objects, img) if img is not None else None
        if img is None or found is None:
            skipped.append(str(path.relative_to(data)))
            continue
        patch = crop(img, load_box(found[0], region))
        views = [patch, patch[:, ::-1]]
        feats.append([pool(backbone.feature_map(np.ascontiguousarray(v)), "mean") for v in views])
        ys.append(LABELS.index(label))
        names.append(str(path.relative_to(data)))
    if len(set(ys)) < 2:
        raise SystemExit(f"need photos of at least two labels with a vehicle found; got {len(ys)} usable")
    settings = FitSettings(l2=l2, steps=steps, seed=seed)
    y = np.asarray(ys)

    def fit_on(idx: Sequence[int]) -> Any:
        x = np.asarray([f for i in idx for f in feats[i]])
        t = np.asarray([ys[i] for i in idx for _ in feats[i]])
        counts = np.bincount(t, minlength=len(LABELS)).astype(np.float32)
        weights = 1.0 / np.maximum(counts[t], 1.0)
        return fit(x, t, LABELS, "mean", settings, weights)

    pred = np.zeros(len(ys), int)
    p_viol = np.zeros(len(ys))
    violation = np.asarray([lab in ("uncovered", "partial") for lab in LABELS])
    for i in range(len(ys)):
        head = fit_on([j for j in range(len(ys)) if j != i])
        prob = head.probs(np.asarray([feats[i][0]]))[0]
        pred[i] = int(np.argmax(prob))
        p_viol[i] = float(prob[violation].sum())
    confusion = np.zeros((len(LABELS), len(LABELS)), int)
    for a, b in zip(y, pred, strict=True):
        confusion[a, b] += 1
    per_class = {}
    for k, lab in enumerate(LABELS):
        n_true, n_pred, hit = int(confusion[k].sum()), int(confusion[:, k].sum()), int(confusion[k, k])
        per_class[lab] = {"n": n_true, "recall": round(hit / n_true, 3) if n_true else None,
                          "precision": round(hit / n_pred, 3) if n_pred else None}
    true_v = violation[y]
    pred_v = p_viol >= 0.5
    binary = {"accuracy": round(float((true_v == pred_v).mean()), 3),
              "recall": round(float((pred_v & true_v).sum() / max(1, true_v.sum())), 3),
              "precision": round(float((pred_v & true_v).sum() / max(1, pred_v.sum())), 3),
              "false_alarms": int((pred_v & ~true_v).sum()), "missed": int((~pred_v & true_v).sum()),
              "majority_baseline": round(float(max(true_v.mean(), 1 - true_v.mean())), 3)}
    beats = binary["accuracy"] - binary["majority_baseline"]
    verdict = ("no better than always giving the majority answer" if beats < 0.1 else
               "better than always giving the majority answer, on very few photos")
    head = fit_on(list(range(len(ys))))
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{HEAD_NAME}.loo.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "predicted", "p_violation"])
        for name, a, b, pv in zip(names, y, pred, p_viol, strict=True):
            w.writerow([name, LABELS[a], LABELS[b], f"{pv:.3f}"])
    figures = {"n": len(ys), "skipped_no_vehicle": skipped, "accuracy": round(float((pred == y).mean()), 3),
               "per_class": per_class, "violation_vs_ok": binary,
               "confusion": {"labels": list(LABELS), "rows_true_cols_predicted": confusion.tolist()}}
    counts = {lab: int((y == k).sum()) for k, lab in enumerate(LABELS)}
    extra = {
        "task": "classification of a truck's load area (a crop of the vehicle box)",
        "label_map": DATASET_LABELS,
        "head": {"kind": "logistic regression (softmax) on standardised features, detectors/heads.py",
                 "l2": l2, "steps": steps, "seed": seed, "class_balanced": True},
        "training": {"command": f"python -m detectors.uncovered_load train --data {data} --out {out}",
                     "date": date.today().isoformat(), "images": counts, "views_per_image": "crop and mirror",
                     "vehicle_boxes": "the most confident car/bus/truck (score >= 0.3) of the shipped SSD per photo",
                     "synthetic": "none"},
        "leave_one_out": figures,
        "limitations": (
            f"Only {len(ys)} real photos ({', '.join(f'{k} {v}' for k, v in counts.items())}), all from one "
            "source: overhead gantry frames of trucks leaving a coal mine / toll station in Shanxi, January 2019, "
            "mostly at night, loads often out of the frame's top (the label then rests on what the camera "
            f"cannot see). Leave-one-out, the head is {verdict} (violation vs ok "
            f"{binary['accuracy']} against {binary['majority_baseline']}). Figures on so few photos are noisy "
            "(one photo moves a class recall by 0.2) and optimistic for another site (same cameras, same "
            "trucks). Not evidence-grade: a confirmed uncovered_load should be checked by a person from its load "
            "crop until the head is retrained on the site's own photos (this command, DIR of labelled photos). "
            f"Photos without a vehicle found by the SSD are skipped ({len(skipped)} here), as the detector would "
            "never judge them."),
    }
    card_path = write_head(head, out, backbone_file, backbone_sha, region, extra)
    return {"head": card_path.with_suffix(".npz"), "card": card_path, "leave_one_out": figures, "names": names,
            "sha256": sha256_file(card_path.with_suffix(".npz"))}


def write_head(head: Any, out: Path, backbone_file: Path, backbone_sha256: str,
               region: Sequence[float] = DEFAULT_REGION, extra: dict[str, Any] | None = None,
               name: str = HEAD_NAME) -> Path:
    """Save a load head and its card in the project's head-card format (detectors/card.py); the card's path."""
    out.mkdir(parents=True, exist_ok=True)
    head_path = out / f"{name}.npz"
    head.save(head_path)
    card: dict[str, Any] = {
        "name": name, "version": "2", "file": head_path.name, "sha256": sha256_file(head_path),
        "detector": NAME, "description": "Load area of a vehicle leaving the site: covered (tarp), partial (net "
        "over a heap), uncovered, empty.",
        "input": {"width": 224, "height": 224, "channels": 3, "color": "rgb", "dtype": "uint8"},
        "normalisation": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                          "note": "0..255 pixels as they are; the backbone's input quantisation rescales"},
        "labels": list(head.labels), "positive_label": "uncovered", "output": "probabilities",
        "violation_labels_default": ["uncovered", "partial"],
        "load_region": [float(v) for v in region],
        "backbone": {"file": os.path.relpath(backbone_file, out), "sha256": backbone_sha256,
                     "pooling": head.pooling,
                     "source": "google-coral/test_data @ 104342d2d3480b3e66203073dac24f4e2dbb4c41, Apache-2.0 "
                               "(LICENSE-Apache-2.0.txt), requantised to int8 inside by detectors.training.requantize; "
                               "provenance as in smoke_cls.yaml"},
    }
    card.update(extra or {})
    path = out / f"{name}.yaml"
    path.write_text("# Model card of an uncovered_load head; written by `python -m detectors.uncovered_load "
                    "train`.\n" + yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=110),
                    encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detectors.uncovered_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="fit the load head on labelled photos; print leave-one-out figures")
    tr.add_argument("--data", type=Path, required=True, help="labels.csv (file,label) or one folder per label")
    tr.add_argument("--out", type=Path, default=MODELS_DIR, help="where the head (.npz) goes (default: shipped)")
    tr.add_argument("--l2", type=float, default=0.1)
    args = parser.parse_args(argv)
    result = train(args.data, args.out, l2=args.l2)
    print(yaml.safe_dump({"head": str(result["head"]), "sha256": result["sha256"],
                          "leave_one_out": result["leave_one_out"]}, sort_keys=False, allow_unicode=True))
    print(f"wrote {result['head']} and its card {result['card']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
