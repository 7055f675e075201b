"""Train every shipped head in one command (numpy only: no TensorFlow).

    python -m detectors.training.train_heads --datasets ../shared/datasets --out detectors/models

For each head (smoke_cls for black_smoke, soil_cls for bare_soil):
1. reads the real images in place from every dataset folder that fits (catalog.py), plus our
   eye labels of whole ground-level scenes (scene_labels.csv);
2. splits them 75/25 grouped by source (clip, frame, source file, near-duplicate picture),
   stratified by family and label, seed 2024; the held-out list goes to NAME.heldout.csv (no
   threshold or setting is ever chosen on it; the split head of step 4 never sees it);
3. runs the frozen backbone once per image and view (cached), and for soil lays synthetic green
   dust nets over real soil photos (no real netted photo exists); for
   smoke, cuts the vehicles the COCO detector finds out of the photos, clear of any smoke, as
   more negatives (object_crops.py);
4. chooses the one setting it has (smoke: a logit offset towards the smoke class, for recall)
   by 5-fold grouped cross-validation on the training split, fits the head on the whole
   training split: NAME.split.npz and NAME.split.yaml, whose held-out figures (per family and
   per folder, measured through the runtime classifier by the same code as `edge-agent
   eval-detector`) go in the cards;
5. runs the same recipe on every image, held-out ones included (the offset chosen again by
   cross-validation, now on all of them): NAME.npz and NAME.yaml, the heads the daemon loads
   (backbone and head hashes, provenance, data, cross-validation figures, and the split
   head's held-out figures, named as such). Real photos are what the heads lack most; the
   held-out quarter is a third more of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import hashlib
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from detectors.backbone import Backbone, FeatureExtractor, StackedBackbone
from detectors.card import sha256_file
from detectors.evaluate import EvalResult, Sample, predict
from detectors.evaluate import result as evaluate_result
from detectors.heads import FitSettings, Head, fit, pool
from detectors.runtime import load_classifier
from detectors.training import catalog, object_crops, synth
from detectors.training.catalog import Item
from detectors.training.features import FeatureCache, default_cache_dir, read_image
from detectors.training.object_crops import ObjectCrop

VERSION = "3.1.0"  # 3: the requantised int8 backbone; .1: trained on every image
SEED = 2024
HELDOUT = 0.25
FOLDS = 5
BACKBONE = "mobilenet_v1_1.0_224_embedding_int8.tflite"
BACKBONE_SOURCE = {
    "repository": "https://github.com/google-coral/test_data",
    "path": "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
    "commit": "104342d2d3480b3e66203073dac24f4e2dbb4c41",
    "published_sha256": "f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319",
    "sha256": "d8cb98ed1d3a0818df06d9f097142b17daf414284a68307a09aa51eec571b472",
    "licence": "Apache-2.0",
    "licence_file": "LICENSE-Apache-2.0.txt",
    "what": "MobileNet V1 1.0, 224x224, ImageNet, cut at the global average pool (Coral's embedding extractor "
            "for transfer learning), published uint8; requantised here to int8 inside (uint8 in and out) so "
            "XNNPACK's signed kernels run it: python -m detectors.training.requantize SOURCE "
            "detectors/models/mobilenet_v1_1.0_224_embedding_int8.tflite (deterministic)",
}
# More backbones a head may read beside BACKBONE (their maps stacked after its channels), with provenance.
EXTRA_BACKBONES = {
    "tf2_mobilenet_v2_1.0_224_ptq.tflite": {
        "repository": "https://github.com/google-coral/test_data",
        "path": "tf2_mobilenet_v2_1.0_224_ptq.tflite",
        "commit": "104342d2d3480b3e66203073dac24f4e2dbb4c41",
        "sha256": "5d3137241276e79c86d14a74fe43581398ae0e815191d3dba45495b810840e8c",
        "licence": "Apache-2.0",
        "licence_file": "LICENSE-Apache-2.0.txt",
        "what": "MobileNet V2 1.0, 224x224, ImageNet classifier (TF2 Keras, full-integer post-training "
                "quantisation, uint8 in and out); read at its 7x7x1280 map before the global pool; copied unchanged",
    },
}
Log = Callable[[str], None]


@dataclass(frozen=True)
class Task:
    name: str
    detector: str
    labels: tuple[str, ...]
    positive: str
    items: Callable[[Path], list[Item]]
    views: tuple[str, ...]
    label_map: dict[str, str]
    description: str
    limitations: str
    l2: float = 1e-2
    cell_share: float = 0.0  # weight of single-cell samples (homogeneous images) against whole images
    cell_families: tuple[str, ...] = ()
    positive_offsets: tuple[float, ...] = (0.0,)  # logit offsets towards the positive label, chosen by CV
    synthetic_nets: bool = False
    object_crops: bool = False  # vehicles cut out of the photos (none of their smoke) as negatives
    extra_backbones: tuple[str, ...] = ()  # files in EXTRA_BACKBONES whose maps are stacked after BACKBONE's
    version: str = VERSION  # the card's; a head whose input changes gets a new major
    notes: dict[str, str] = field(default_factory=dict)


TASKS = {
    "smoke_cls": Task(
        "smoke_cls", "black_smoke", catalog.SMOKE_LABELS, "smoke", catalog.smoke_items,
        ("full", "flip", "box0", "box1", "crop0", "crop1"), catalog.SMOKE_LABEL_MAP,
        "Is an image (a whole photo, or the crop of a dark moving region) black smoke? Frozen MobileNet V1 and "
        "MobileNet V2 features side by side (one pass of each on the same input), logistic-regression head.",
        "Real positives are web photos of vehicle exhaust, a few CCTV clips, and industrial flares; no steam, "
        "clean-exhaust or mist-cannon negatives exist in the data. CCTV crops of vehicles without smoke are the "
        "weakest family (near-identical frames of the same clips carry both labels); thin grey exhaust and grey "
        "plumes against an overcast sky are often scored below 0.5 (they look like haze). Held-out sets per "
        "family are small: treat each figure as rough. No synthetic images.",
        positive_offsets=(0.0, 0.25, 0.5, 0.75, 1.0),
        extra_backbones=("tf2_mobilenet_v2_1.0_224_ptq.tflite",), version="4.1.0", object_crops=True,
    ),
    "soil_cls": Task(
        "soil_cls", "bare_soil", catalog.SOIL_LABELS, "bare_soil", catalog.soil_items,
        ("full", "flip", "crop0", "crop1", "bottom", "tilt0"), catalog.SOIL_LABEL_MAP,
        "Ground cover of an image or of each cell of a zone: bare soil, covered (dust net, tarp, vegetation) or "
        "hard surface. Frozen MobileNet V1 features, logistic-regression head applied to the pooled map (whole "
        "image) or to each map cell (zone grid).",
        "No real photo of soil under a green dust net exists in the data: nets are SYNTHETIC (drape_net in "
        "detectors/training/synth.py, laid over real soil photos of the training split). Whole-scene ground-level "
        "labels are our own eye labels of photos from other folders (scene_labels.csv). No elevated (tower-crane) "
        "views exist: aerial tiles and ground-level photos stand in. Check on the site's own photos "
        "(edge-agent collect / adapt).",
        cell_share=0.3, cell_families=("aerial tiles", "ground-level crops"), synthetic_nets=True,
    ),
}


# --- features --------------------------------------------------------------------------------


@dataclass
class Row:
    """One training vector: an image view, a map cell, or a synthetic image."""

    x: np.ndarray
    target: int
    item: Item | None  # None: synthetic
    kind: str  # view, cell, synthetic
    family: str


def item_maps(cache: FeatureCache, root: Path, items: Sequence[Item], views: Sequence[str],
              boxes: dict[str, list[tuple[int, int, int, int]]], log: Log) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    t0 = time.perf_counter()
    for i, it in enumerate(items):
        maps = cache.maps(it.key, functools.partial(read_image, root / it.dataset / it.file), views,
                          boxes.get(it.key, ()))
        if maps:
            out[it.key] = maps
        if (i + 1) % 200 == 0:
            spent = time.perf_counter() - t0
            log(f"  features: {i + 1}/{len(items)} images ({cache.computed} computed, {spent:.0f} s)")
    return out


def _synth_rng(key: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))


@dataclass(frozen=True)
class SynthNet:
    key: str
    base: Item
    kind: str  # ground, aerial, scene


def synthetic_nets(root: Path, items: Sequence[Item], tops: Sequence[Item], per_base: int = 2) -> list[SynthNet]:
    """Which synthetic netted images to make: from each real bare-soil photo of soil only
    (aerial tiles and ground-level crops), one netted copy and one netted scene (or a second copy)."""
    out = []
    for it in items:
        if it.target != "bare_soil" or it.family not in ("aerial tiles", "ground-level crops"):
            continue
        for i in range(per_base):
            kind = "aerial" if it.family == "aerial tiles" else ("scene" if i == 1 and tops else "ground")
            out.append(SynthNet(f"synthnet:v1:{it.key}:{i}", it, kind))
    return out


def render_net(root: Path, s: SynthNet, tops: Sequence[Item]) -> np.ndarray | None:
    img = read_image(root / s.base.dataset / s.base.file)
    if img is None:
        return None
    if "kagan" in s.base.file:  # web road photos: only their lower half is ground
        img = img[img.shape[0] // 2:]
    rng = _synth_rng(s.key)
    coverage = 1.0 if rng.random() < 0.6 else float(rng.uniform(0.75, 0.95))
    if s.kind == "scene":
        top_item = tops[int(rng.integers(0, len(tops)))]
        top = read_image(root / top_item.dataset / top_item.file)
        if top is not None:
            return synth.net_scene(img, top, rng, coverage)
    return synth.drape_net(img, rng, coverage, perspective=s.kind != "aerial")


def synthetic_maps(cache: FeatureCache, root: Path, nets: Sequence[SynthNet],
                   tops: Sequence[Item]) -> dict[str, np.ndarray]:
    out = {}
    for s in nets:
        maps = cache.maps(s.key, functools.partial(render_net, root, s, tops), ["full"])
        if maps:
            out[s.key] = maps["full"]
    return out


CROP_VIEWS = ("full", "flip")


def crop_maps(cache: FeatureCache, root: Path, crops: Sequence[ObjectCrop]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for c in crops:
        maps = cache.maps(c.key, functools.partial(object_crops.image, root, c), CROP_VIEWS)
        if maps:
            out[c.key] = maps
    return out


def build_rows(task: Task, items: Sequence[Item], maps: dict[str, dict[str, np.ndarray]],
               nets: Sequence[SynthNet], net_maps: dict[str, np.ndarray],
               crops: Sequence[ObjectCrop] = (), cmaps: dict[str, dict[str, np.ndarray]] | None = None) -> list[Row]:
    """Training vectors of these items; synthetic nets and vehicle crops only of photos among them."""
    rows: list[Row] = []
    covered = task.labels.index("covered") if "covered" in task.labels else -1
    for it in items:
        if it.key not in maps:
            continue
        y = task.labels.index(it.target)
        for view in task.views:
            if view in maps[it.key]:
                rows.append(Row(pool(maps[it.key][view], "mean"), y, it, "view", it.family))
        if task.cell_share and it.family in task.cell_families:
            flat = maps[it.key]["full"].reshape(-1, maps[it.key]["full"].shape[-1])
            for j in _synth_rng("cells:" + it.key).choice(len(flat), min(8, len(flat)), replace=False):
                rows.append(Row(flat[j], y, it, "cell", it.family))
    keys = {it.key for it in items}
    negative = [lab for lab in task.labels if lab != task.positive]
    for c in crops:  # real pixels: weighed as one more view of a negative photo
        if c.base.key in keys and cmaps and c.key in cmaps and len(negative) == 1:
            for view in CROP_VIEWS:
                rows.append(Row(pool(cmaps[c.key][view], "mean"), task.labels.index(negative[0]), c.base, "view",
                                c.family))
    for s in nets:
        if s.base.key in keys and s.key in net_maps and covered >= 0:
            fmap = net_maps[s.key]
            rows.append(Row(pool(fmap, "mean"), covered, None, "synthetic", f"synthetic net ({s.kind})"))
            if task.cell_share and s.kind != "scene":
                flat = fmap.reshape(-1, fmap.shape[-1])
                for j in _synth_rng("cells:" + s.key).choice(len(flat), 4, replace=False):
                    rows.append(Row(flat[j], covered, None, "cell", f"synthetic net ({s.kind})"))
    return rows


def weights(task: Task, rows: Sequence[Row]) -> np.ndarray:
    """Each class weighs the same in total.
    Within a class: real image views 1, synthetic images 1 (at most as much as the real ones),
    single cells `cell_share` (real and synthetic apart)."""
    y = np.array([r.target for r in rows])
    kind = np.array([r.kind for r in rows])
    real = np.array([r.item is not None for r in rows])
    w = np.zeros(len(rows), np.float64)
    for k in range(len(task.labels)):
        cls = y == k
        for sel, share in (((kind == "view") & cls, 1.0), ((kind == "synthetic") & cls, 1.0),
                           ((kind == "cell") & cls & real, task.cell_share),
                           ((kind == "cell") & cls & ~real, task.cell_share)):
            if sel.any():
                w[sel] = share / sel.sum()
        total = w[cls].sum()
        if total:
            w[cls] /= total
    return w.astype(np.float32)


def fit_head(task: Task, rows: Sequence[Row]) -> Head:
    x = np.stack([r.x for r in rows])
    y = np.array([r.target for r in rows])
    return fit(x, y, task.labels, "mean", FitSettings(l2=task.l2, steps=400, lr=0.01, seed=SEED),
               weights(task, rows))


# --- figures ---------------------------------------------------------------------------------


def figures(labels: Sequence[str], positive: str, truth: Sequence[int], pred: Sequence[int]) -> dict[str, Any]:
    cm = np.zeros((len(labels), len(labels)), np.int64)
    for t, p in zip(truth, pred, strict=True):
        cm[t, p] += 1
    res = EvalResult(tuple(labels), positive, tuple(tuple(int(v) for v in r) for r in cm), int(cm.sum()), 0, 0, 0.0)
    m = res.metrics()
    m.pop("positive_label", None)
    return m


def by_group(labels: Sequence[str], positive: str, keys: Sequence[str], truth: Sequence[int],
             pred: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Per family / folder: n, accuracy, and for the positive label its recall or the share wrongly called positive."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    pos = labels.index(positive)
    out = {}
    for k in sorted(groups):
        idx = groups[k]
        t = np.array([truth[i] for i in idx])
        p = np.array([pred[i] for i in idx])
        row: dict[str, Any] = {"n": len(idx), "accuracy": round(float((t == p).mean()), 3)}
        if (t == pos).any():
            row["recall"] = round(float(((p == pos) & (t == pos)).sum() / (t == pos).sum()), 3)
        if (t != pos).any():
            row["false_positive_rate"] = round(float(((p == pos) & (t != pos)).sum() / (t != pos).sum()), 3)
        out[k] = row
    return out


def cross_validate(task: Task, train: Sequence[Item], maps: dict[str, dict[str, np.ndarray]],
                   nets: Sequence[SynthNet], net_maps: dict[str, np.ndarray],
                   seeds: Sequence[int] = (0, 1), crops: Sequence[ObjectCrop] = (),
                   cmaps: dict[str, dict[str, np.ndarray]] | None = None) -> tuple[list[Item], np.ndarray]:
    """Grouped k-fold on the training split: each image's whole-view log-probabilities,
    averaged over the seeds' repetitions."""
    logp: dict[str, list[np.ndarray]] = defaultdict(list)
    for seed in seeds:
        fold = catalog.folds(train, FOLDS, SEED + seed)
        for f in range(FOLDS):
            fit_items = [it for it, k in zip(train, fold, strict=True) if k != f]
            test_items = [it for it, k in zip(train, fold, strict=True) if k == f and it.key in maps]
            head = fit_head(task, build_rows(task, fit_items, maps, nets, net_maps, crops, cmaps))
            z = head.logits(np.stack([pool(maps[it.key]["full"], "mean") for it in test_items]))
            z = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
            for it, row in zip(test_items, z, strict=True):
                logp[it.key].append(row)
    scored = [it for it in train if it.key in logp]
    return scored, np.stack([np.mean(logp[it.key], axis=0) for it in scored])


def cv_figures(task: Task, scored: Sequence[Item], logp: np.ndarray, offset: float) -> dict[str, Any]:
    z = logp.copy()
    z[:, task.labels.index(task.positive)] += offset
    truth = [task.labels.index(it.target) for it in scored]
    pred = [int(r.argmax()) for r in z]
    out = figures(task.labels, task.positive, truth, pred)
    out["per_family"] = by_group(task.labels, task.positive, [it.family for it in scored], truth, pred)
    return out


def choose_offset(task: Task, scored: Sequence[Item], logp: np.ndarray, log: Log) -> tuple[float, dict[str, Any]]:
    """The smallest logit offset towards the positive label whose cross-validated recall is >= 0.95
    at a cost of at most 0.01 F1 against the best offset (a missed plume is the costlier error);
    where none reaches 0.95, the one with the best recall within that cost. Chosen by
    cross-validation on the images the head is trained on, never on held-out ones."""
    results = [(o, cv_figures(task, scored, logp, o)) for o in task.positive_offsets]
    for o, cv in results:
        log(f"  cv positive offset {o}: P {cv['precision']} R {cv['recall']} F1 {cv['f1']} acc {cv['accuracy']}")
    best_f1 = max(cv["f1"] for _, cv in results)
    affordable = [(o, cv) for o, cv in results if cv["f1"] >= round(best_f1 - 0.01, 3)]
    good = [(o, cv) for o, cv in affordable if cv["recall"] >= 0.95]
    if good:
        return good[0]
    best_recall = max(cv["recall"] for _, cv in affordable)
    return next((o, cv) for o, cv in affordable if cv["recall"] == best_recall)


# --- one task --------------------------------------------------------------------------------


def _extra_backbone(path: Path) -> Backbone:
    if not path.is_file():
        raise SystemExit(f"{path} not found: copy it from ../shared/models (see detectors/models/README.md)")
    published = EXTRA_BACKBONES[path.name]["sha256"]
    sha = sha256_file(path)
    if sha != published:
        raise SystemExit(f"{path}: sha256 {sha} is not the published file's {published}")
    return Backbone(path, sha, threads=1)


@dataclass
class Fitted:
    """A head fitted by the recipe on some images: its logit offset chosen by cross-validation on them."""

    head: Head
    offset: float
    cv: dict[str, Any]
    rows: list[Row]


def fit_recipe(task: Task, items: Sequence[Item], maps: dict[str, dict[str, np.ndarray]],
               nets: Sequence[SynthNet], net_maps: dict[str, np.ndarray], crops: Sequence[ObjectCrop],
               cmaps: dict[str, dict[str, np.ndarray]], backbone_sha: str, log: Log) -> Fitted:
    """The one recipe, run the same way on the training split and on every image: cross-validate
    on `items` to choose the offset, fit on all of `items`, fold the offset into the bias."""
    scored, logp = cross_validate(task, items, maps, nets, net_maps, crops=crops, cmaps=cmaps)
    offset, cv = choose_offset(task, scored, logp, log)
    rows = build_rows(task, items, maps, nets, net_maps, crops, cmaps)
    head = fit_head(task, rows)
    b_out = head.b_out.copy()
    b_out[task.labels.index(task.positive)] += offset
    return Fitted(dataclasses.replace(head, b_out=b_out, backbone_sha256=backbone_sha), offset, cv, rows)


def _training_section(task: Task, items: Sequence[Item], fitted: Fitted, nets: Sequence[SynthNet],
                      crops: Sequence[ObjectCrop], cmaps: dict[str, dict[str, np.ndarray]],
                      what: str) -> dict[str, Any]:
    counts = Counter(r.kind for r in fitted.rows)
    return {
        "command": "python -m detectors.training.train_heads --datasets ../shared/datasets --out detectors/models",
        "date": dt.date.today().isoformat(),
        "seed": SEED,
        "images": what,
        "real_datasets": sorted({f"../shared/datasets/{it.dataset}" for it in items}),
        "eye_labels": "detectors/training/scene_labels.csv (whole ground-level scenes, labelled by us by eye)"
        if any("eye-labelled" in it.family for it in items) else None,
        "real_images": len(items),
        "real_images_per_family": dict(sorted(Counter(f"{it.family} / {it.target}" for it in items).items())),
        "views_per_image": list(task.views),
        "samples": dict(counts),
        "synthetic_images": counts.get("synthetic", 0),
        "synthetic_fraction": round(sum(1 for r in fitted.rows if r.item is None) / len(fitted.rows), 3),
        "synthetic_what": ("green dust nets laid over real bare-soil photos of the images trained on "
                           "(synth.drape_net / synth.net_scene): the only covered_net examples")
        if nets else "none",
        **({"object_crops": {
            "what": "vehicles the shipped COCO detector finds (score >= 0.5, >= 3 % of the photo) cut out of "
                    "the photos trained on with a 10 % margin, clear of every labelled smoke box (grown 15 %); "
                    "views full and flip; real pixels, labelled no_smoke (detectors/training/object_crops.py)",
            "crops": dict(Counter(c.family for c in crops if c.key in cmaps)),
            "from_photos_with_smoke": sum(1 for c in crops if c.key in cmaps and c.base.target == task.positive),
        }} if crops else {}),
    }


def train_task(task: Task, root: Path, out_dir: Path, cache_dir: Path, log: Log,
               backbone_path: Path | None = None) -> dict[str, Any]:
    """Train, write and measure one head. `backbone_path` other than the shipped file is for
    comparing backbones (its card then names no provenance).

    The recipe runs twice. On the training split (75 %): that head, NAME.split.npz with its card,
    is measured on the held-out 25 % (the card's held-out figures, reproducible with
    eval-detector --model NAME.split.yaml). Then on every image, held-out ones included, with
    settings chosen the same way (cross-validation on what it trains on): that is the shipped
    NAME.npz. Real data is what the heads lack most, and the held-out quarter is a third more of it;
    its figures are those of the split head, the shipped one having seen those photos."""
    comparison = backbone_path is not None
    backbone_path = backbone_path or out_dir / BACKBONE
    if not backbone_path.is_file():
        raise SystemExit(f"{backbone_path} not found: copy it from ../shared/models (see detectors/models/README.md)")
    bb_sha = sha256_file(backbone_path)
    source: dict[str, str] = dict(BACKBONE_SOURCE)
    if bb_sha != BACKBONE_SOURCE["sha256"]:
        if backbone_path.name == BACKBONE:
            raise SystemExit(f"{backbone_path}: sha256 {bb_sha} is not the shipped file's {source['sha256']} "
                             f"(python -m detectors.training.requantize makes it from the published file)")
        source = {"what": "not the shipped backbone: a comparison run; see ../shared/models/README.md"}
    first = Backbone(backbone_path, bb_sha, threads=1)
    extras = [] if comparison else [_extra_backbone(out_dir / name) for name in task.extra_backbones]
    backbone: FeatureExtractor = StackedBackbone([first, *extras]) if extras else first
    cache = FeatureCache(backbone, cache_dir)
    items = task.items(root)
    train, held = catalog.split(items, HELDOUT, SEED)
    log(f"{task.name}: {len(items)} real images in {len({it.group for it in items})} source groups; "
        f"train {len(train)}, held-out {len(held)}")
    boxes = catalog.read_boxes(root)
    maps = item_maps(cache, root, items, task.views, boxes, log)
    tops = [it for it in train if it.dataset == "smoke_extra" and it.target == "hard"]
    nets_train = synthetic_nets(root, train, tops) if task.synthetic_nets else []
    nets_held = synthetic_nets(root, held, tops) if task.synthetic_nets else []
    nets_all = nets_train + nets_held  # the shipped head learns from both
    net_maps = synthetic_maps(cache, root, nets_all, tops)
    if nets_train:
        log(f"  synthetic nets: {len(nets_train)} from training photos, "
            f"{len(nets_held)} from held-out photos (report only), {len(nets_all)} from every photo")

    crops_train: list[ObjectCrop] = []
    crops_held: list[ObjectCrop] = []
    cmaps: dict[str, dict[str, np.ndarray]] = {}
    if task.object_crops:
        from detectors.objects import load_objects

        finder = load_objects()
        crops_train = object_crops.find(root, train, task.positive, boxes, finder)
        crops_held = object_crops.find(root, held, task.positive, boxes, finder)
        cmaps = crop_maps(cache, root, crops_train + crops_held)
        log(f"  vehicle crops (no smoke): {len(crops_train)} from training photos, "
            f"{len(crops_held)} from held-out photos")

    heldout_csv = out_dir / f"{task.name}.heldout.csv"
    catalog.write_heldout(heldout_csv, held)
    split_fit = fit_recipe(task, train, maps, nets_train, net_maps, crops_train, cmaps, backbone.sha256, log)
    split_path = out_dir / f"{task.name}.split.npz"
    split_fit.head.save(split_path)
    split_card_path = out_dir / f"{task.name}.split.yaml"
    card: dict[str, Any] = {
        "name": task.name,
        "version": task.version,
        "file": split_path.name,
        "sha256": sha256_file(split_path),
        "task": "classification",
        "detector": task.detector,
        "description": task.description,
        "limitations": task.limitations,
        "backbone": {"file": backbone_path.name, "sha256": bb_sha, "feature_tensor": first.feature_name,
                     "feature_map": f"{first.grid_h}x{first.grid_w}x{first.channels} (stride 32)",
                     "source": source},
        **({"extra_backbones": [
            {"file": bb.path.name, "sha256": bb.sha256, "feature_tensor": bb.feature_name,
             "feature_map": f"{bb.grid_h}x{bb.grid_w}x{bb.channels} (stride 32), stacked after the channels above",
             "source": EXTRA_BACKBONES[bb.path.name]} for bb in extras]} if extras else {}),
        "head": {"type": split_fit.head.kind, "pooling": split_fit.head.pooling, "features": split_fit.head.dim,
                 "l2": task.l2, "steps": 400, "positive_logit_offset": split_fit.offset,
                 "note": "standardise -> softmax layer; numpy (detectors/heads.py)"},
        "input": {"width": backbone.width, "height": backbone.height, "channels": 3, "color": "rgb", "dtype": "uint8"},
        "normalisation": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                          "note": "0..255 RGB goes in as it is; the backbone's input quantisation maps it to -1..1"},
        "labels": list(task.labels),
        "positive_label": task.positive,
        "output": "probabilities",
        "label_map": dict(sorted(task.label_map.items())),
        "role": f"measurement only: the recipe of {task.name}.npz trained on the training split alone, so that "
                f"{heldout_csv.name} is held out from it; the daemon loads {task.name}.yaml",
        "training": _training_section(task, train, split_fit, nets_train, crops_train, cmaps,
                                      f"the training split ({int((1 - HELDOUT) * 100)} %)"),
        "cross_validation": {"what": f"{FOLDS}-fold grouped, on the training split only, x2 seeds; whole images",
                             **split_fit.cv},
        "heldout": {
            "split": f"grouped by source (clip, frame, source file, near-duplicate picture), stratified by family "
                     f"and label, seed {SEED}, {int(HELDOUT * 100)} %; list in {heldout_csv.name}; never used for "
                     f"this head's training, settings or thresholds",
            "head": split_path.name,
            "reproduce": f"edge-agent eval-detector {task.detector} ../shared/datasets --labels "
                         f"detectors/models/{heldout_csv.name} --model detectors/models/{split_card_path.name}",
        },
    }
    split_card_path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), encoding="utf-8")

    # Held-out figures through the runtime classifier, as the daemon loads it, by eval-detector's code.
    classifier = load_classifier(split_card_path, backbone=backbone)
    preds = list(predict(classifier, [Sample(root / it.dataset / it.file, it.label) for it in held]))
    result = evaluate_result(classifier, preds)
    card["heldout"].update(result.metrics())
    card["heldout"]["ms_per_image_here"] = round(result.ms_per_image, 2)
    judged = [it for it, p in zip(held, preds, strict=True) if p.truth is not None and p.predicted is not None]
    truth = [p.truth for p in preds if p.truth is not None and p.predicted is not None]
    pred = [p.predicted for p in preds if p.truth is not None and p.predicted is not None]
    card["heldout"]["per_family"] = by_group(task.labels, task.positive, [it.family for it in judged], truth, pred)
    card["heldout"]["per_folder"] = by_group(task.labels, task.positive, [it.dataset for it in judged], truth, pred)
    if nets_held:
        syn = [s for s in nets_held if s.key in net_maps]
        p = classifier.classify_maps([net_maps[s.key] for s in syn])  # type: ignore[attr-defined]
        card["heldout"]["synthetic_nets_from_heldout_photos"] = by_group(
            task.labels, task.positive, [f"synthetic net ({s.kind})" for s in syn],
            [task.labels.index("covered")] * len(syn), [int(r.argmax()) for r in p])
    held_crops = [c for c in crops_held if c.key in cmaps]
    if held_crops:
        p = classifier.classify_maps([cmaps[c.key]["full"] for c in held_crops])  # type: ignore[attr-defined]
        negative = next(lab for lab in task.labels if lab != task.positive)
        card["heldout"]["object_crops_from_heldout_photos"] = by_group(
            task.labels, task.positive,
            [f"{c.family} ({'photos with smoke' if c.base.target == task.positive else 'photos without'})"
             for c in held_crops], [task.labels.index(negative)] * len(held_crops), [int(r.argmax()) for r in p])
    split_card_path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), encoding="utf-8")
    log(f"{task.name}: split head {split_path.stat().st_size} bytes; held-out:\n{result.report()}")
    for fam, row in card["heldout"]["per_family"].items():
        log(f"  {fam}: {row}")

    # The shipped head: the same recipe on every image.
    crops_all = crops_train + crops_held
    shipped = fit_recipe(task, items, maps, nets_all, net_maps, crops_all, cmaps, backbone.sha256, log)
    head_path = out_dir / f"{task.name}.npz"
    shipped.head.save(head_path)
    final = dict(card)
    final.pop("role")
    final.update({
        "file": head_path.name,
        "sha256": sha256_file(head_path),
        "head": {**card["head"], "positive_logit_offset": shipped.offset},
        "training": _training_section(task, items, shipped, nets_all, crops_all, cmaps,
                                      "every image, the held-out ones included"),
        "cross_validation": {"what": f"{FOLDS}-fold grouped, on every image, x2 seeds; whole images "
                                     f"(this is what chose the offset)", **shipped.cv},
        "heldout": {
            **card["heldout"],
            "split": f"the held-out figures are those of {split_path.name}: this recipe trained on the training "
                     f"split alone, its settings chosen on that split; the held-out photos ({heldout_csv.name}: "
                     f"grouped by source, stratified by family and label, seed {SEED}, {int(HELDOUT * 100)} %) "
                     f"were then added to this head's training, so its own score on them is not a held-out figure",
        },
    })
    card_path = out_dir / f"{task.name}.yaml"
    card_path.write_text(yaml.safe_dump(final, sort_keys=False, allow_unicode=True), encoding="utf-8")
    load_classifier(card_path, backbone=backbone)  # loads as the daemon will
    log(f"{task.name}: shipped head on all {len(items)} images, offset {shipped.offset}, "
        f"CV P {shipped.cv['precision']} R {shipped.cv['recall']} F1 {shipped.cv['f1']}")
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detectors.training.train_heads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"), help="folder of the real datasets")
    parser.add_argument("--out", type=Path, default=Path("detectors/models"),
                        help="where heads and cards go (the backbone must be there)")
    parser.add_argument("--only", choices=sorted(TASKS), action="append", help="train only this head (repeatable)")
    parser.add_argument("--cache", type=Path, default=default_cache_dir(), help="feature cache (outside the repo)")
    parser.add_argument("--backbone", type=Path,
                        help="another backbone file, to compare (default: the shipped one in --out)")
    args = parser.parse_args(argv)
    if not (args.datasets / "smoke" / "labels.csv").is_file() and not (args.datasets / "soil" / "labels.csv").is_file():
        print(f"datasets folder {args.datasets} not found (or empty)", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    for name in args.only or sorted(TASKS):
        train_task(TASKS[name], args.datasets, args.out, args.cache, lambda m: print(m, flush=True), args.backbone)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
