"""Reproduce every shipped model.

    python -m detectors.training.train --datasets ../shared/datasets --out detectors/models


Needs the `train` extra (TensorFlow); never needed to run or test the agent. For each task
it reads the real images in place, splits them (held-out by source group, see data.py),
adds synthetic samples (synth.py), trains a tiny CNN from scratch, exports int8 and
float32 `.tflite` files and writes their cards with held-out metrics measured by the same
code as `edge-agent eval-detector` on the exported model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from detectors.card import sha256_file
from detectors.evaluate import Sample, evaluate
from detectors.runtime import load_classifier
from detectors.training import synth
from detectors.training.data import Item, read_boxes, read_items, split, write_heldout

Rng = np.random.Generator
VERSION = "1.0.0"
SEED = 2024
HELDOUT = 0.25


@dataclass(frozen=True)
class Task:
    name: str
    detector: str
    size: int
    labels: tuple[str, ...]
    positive: str
    datasets: dict[str, dict[str, str]]  # dataset -> {dataset label: model label}
    n_synthetic: int
    epochs: int
    description: str
    limitations: str


SMOKE_MAP = {
    "black_smoke_vehicle": "smoke", "black_smoke_other": "smoke", "black_smoke_vehicle_cctv_crop": "smoke",
    "no_smoke_vehicle_cctv_crop": "no_smoke", "no_smoke_road_background": "no_smoke", "no_smoke_machinery": "no_smoke",
}
NEG_MAP = {"fog": "no_smoke", "water_mist": "no_smoke", "dust": "no_smoke", "sky": "no_smoke"}
SOIL_MAP = {
    "bare_land": "bare_soil", "meadow_green_cover": "covered", "parking_paved": "hard", "industrial_built": "hard",
}

TASKS = {
    "smoke_cls": Task("smoke_cls", "black_smoke", 64, ("no_smoke", "smoke"), "smoke",
                      {"smoke": SMOKE_MAP, "smoke_negatives": NEG_MAP}, 2400, 30,
                      "Is a candidate region (dark, moving) black smoke? Input: the region's crop.",
                      "Real positives are mostly web photos and a few CCTV clips of vehicles; no steam, clean-exhaust "
                      "or mist-cannon negatives exist in the data (synthetic white plumes stand in). Held-out set is "
                      "small (87 images): treat the figures as rough."),
    "soil_cls": Task("soil_cls", "bare_soil", 48, synth.SOIL_CLASSES, "bare_soil",
                     {"soil": SOIL_MAP}, 2400, 30,
                     "Ground patch: bare soil, covered (dust net, tarp, vegetation) or hard surface.",
                     "Real images are AERIAL tiles (AID, 150 px), a proxy for a crane view; dust nets and tarps are "
                     "synthetic only (no real photos). Held-out: 40 aerial tiles, not site photos: check on your own "
                     "photos with eval-detector before trusting it."),
}


# --- sample generation -------------------------------------------------------------------------


def _crop(img: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, max(x1, x0 + 2)), min(h, max(y1, y0 + 2))
    return cv2.resize(img[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)


def _random_box(h: int, w: int, rng: Rng, lo: float, hi: float) -> tuple[int, int, int, int]:
    s = rng.uniform(lo, hi)
    bw, bh = max(8, int(w * s * rng.uniform(0.8, 1.2))), max(8, int(h * s * rng.uniform(0.8, 1.2)))
    bw, bh = min(bw, w), min(bh, h)
    x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    return x0, y0, x0 + bw, y0 + bh


def _around(box: tuple[int, int, int, int], rng: Rng, lo: float = 0.05, hi: float = 0.5) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    m = [rng.uniform(lo, hi) for _ in range(4)]
    return int(x0 - m[0] * bw), int(y0 - m[1] * bh), int(x1 + m[2] * bw), int(y1 + m[3] * bh)


def real_samples(task: Task, root: Path, items: list[Item], rng: Rng, per_image: int) -> list[tuple[np.ndarray, str]]:
    """Augmented crops of the training images (smoke crops follow the labelled boxes)."""
    boxes = read_boxes(root)
    out = []
    for it in items:
        img = cv2.imread(str(root / it.dataset / it.file), cv2.IMREAD_COLOR)
        if img is None:
            continue
        h, w = img.shape[:2]
        out.append((cv2.resize(img, (task.size, task.size), interpolation=cv2.INTER_AREA), it.target))
        for _ in range(per_image):
            own = boxes.get(it.file) if it.dataset == "smoke" else None
            if own:
                box = _around(own[int(rng.integers(0, len(own)))], rng)
            else:
                box = _random_box(h, w, rng, 0.45 if it.target == "smoke" else 0.25, 1.0)
            out.append((_crop(img, box, task.size), it.target))
    return out


def _background_crop(h: int, w: int, rng: Rng, pool: list[np.ndarray]) -> np.ndarray:
    if pool and rng.random() < 0.5:
        src = pool[int(rng.integers(0, len(pool)))]
        sh, sw = src.shape[:2]
        return _crop(src, _random_box(sh, sw, rng, 0.3, 1.0), w) if h == w else cv2.resize(src, (w, h))
    return synth.background(h, w, rng)


def smoke_synthetic(task: Task, n: int, rng: Rng, pool: list[np.ndarray]) -> list[tuple[np.ndarray, str]]:
    """Half black plumes of opacity 0.25..1 on varied backgrounds; half look-alikes:
    plain backgrounds, hard-edged dark objects and shadows, white steam, haze."""
    out = []
    big = task.size * 2
    for i in range(n):
        bg = _background_crop(big, big, rng, pool)
        if i % 2 == 0:
            dens = synth.plume_density(big, big, rng)
            img = synth.composite_plume(bg, dens, rng.uniform(0.25, 1.0), smoke_albedo=rng.uniform(0.0, 0.15))
            ys, xs = np.nonzero(dens > 0.2)
            box = _around((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), rng, 0.0, 0.4)
            label = "smoke"
        else:
            img = bg.copy()
            pick = i % 8
            if pick in (1, 3):  # dark hard-edged things: vehicles, machines, shadows
                for _ in range(int(rng.integers(1, 4))):
                    pts = rng.integers(0, big, (int(rng.integers(3, 7)), 2)).astype(np.int32)
                    level = float(rng.uniform(0, 90))
                    if rng.random() < 0.5:
                        cv2.fillPoly(img, [cv2.convexHull(pts)], (level, level, level))
                    else:  # a shadow: darkens what is under it, hard edge
                        m = np.zeros(img.shape[:2], np.uint8)
                        cv2.fillPoly(m, [cv2.convexHull(pts)], 1)
                        img = np.where(m[..., None] > 0, (img * rng.uniform(0.3, 0.7)).astype(np.uint8), img)
            elif pick == 5:  # white steam / mist: lighter than the scene
                dens = synth.plume_density(big, big, rng)
                img = synth.composite_plume(bg, dens, rng.uniform(0.3, 0.9), smoke_albedo=rng.uniform(1.5, 4.0))
            elif pick == 7:  # haze veil
                img = synth.composite_plume(bg, np.ones((big, big), np.float32) * synth.noise(big, big, rng, 2),
                                            rng.uniform(0.2, 0.6), smoke_albedo=rng.uniform(1.2, 2.5))
            box = _random_box(big, big, rng, 0.4, 1.0)
            label = "no_smoke"
        img = synth.add_camera_noise(img, rng, rng.uniform(0.5, 3))
        out.append((_crop(img, box, task.size), label))
    return out


def soil_synthetic(task: Task, n: int, rng: Rng) -> list[tuple[np.ndarray, str]]:
    out = []
    for i in range(n):
        label = task.labels[i % len(task.labels)]
        s = int(rng.integers(task.size, task.size * 3))
        patch = synth.soil_class_patch(label, s, s, rng)
        out.append((cv2.resize(patch, (task.size, task.size), interpolation=cv2.INTER_AREA), label))
    return out


# --- model ------------------------------------------------------------------------------------


def build_model(tf: Any, size: int, n_out: int) -> Any:
    L = tf.keras.layers
    inp = L.Input((size, size, 3), name="image")
    x = L.Rescaling(1.0 / 255.0)(inp)
    for filters, stride in ((16, 2), (32, 2), (64, 2), (64, 1)):
        x = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.3)(x)
    out = L.Dense(n_out, activation="softmax")(x)
    return tf.keras.Model(inp, out)


def augment(x: np.ndarray, rng: Rng) -> np.ndarray:
    """Per-epoch flips and light changes (the camera's exposure varies)."""
    x = x.copy()
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, ::-1]
    gain = rng.uniform(0.7, 1.3, (len(x), 1, 1, 1)).astype(np.float32)
    return np.clip(x.astype(np.float32) * gain, 0, 255)


def train_task(task: Task, root: Path, out_dir: Path, log: Callable[[str], None]) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    items: list[Item] = []
    for dataset, mapping in task.datasets.items():
        if (root / dataset / "labels.csv").is_file():
            items.extend(read_items(root, dataset, mapping))
    train_items, held = split(items, HELDOUT, SEED)
    log(f"{task.name}: {len(items)} real images, train {len(train_items)}, held-out {len(held)} "
        f"({dict(Counter(i.target for i in held))})")
    real = real_samples(task, root, train_items, rng, per_image=4)
    if task.name == "smoke_cls":
        pool = [cv2.imread(str(root / i.dataset / i.file)) for i in train_items if i.target == "no_smoke"]
        syn = smoke_synthetic(task, task.n_synthetic, rng, [p for p in pool if p is not None])
    else:
        syn = soil_synthetic(task, task.n_synthetic, rng)
    samples = real + syn
    x = np.stack([s[0] for s in samples]).astype(np.uint8)
    x = x[..., ::-1].copy()  # BGR -> RGB, as the card says
    y = np.array([task.labels.index(s[1]) for s in samples])
    counts = np.bincount(y, minlength=len(task.labels))
    weights = {k: float(len(y) / (len(task.labels) * max(1, c))) for k, c in enumerate(counts)}
    log(f"{task.name}: {len(real)} real + {len(syn)} synthetic training samples, per class {counts.tolist()}")

    model = build_model(tf, task.size, len(task.labels))
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    for epoch in range(task.epochs):
        lr = 2e-3 * 0.5 * (1 + np.cos(np.pi * epoch / task.epochs))
        model.optimizer.learning_rate.assign(lr)
        hist = model.fit(augment(x, rng), y, batch_size=64, epochs=1, verbose=0, class_weight=weights, shuffle=True)
        if epoch % 5 == 4 or epoch == task.epochs - 1:
            log(f"  epoch {epoch + 1}: loss {hist.history['loss'][-1]:.3f} acc {hist.history['accuracy'][-1]:.3f}")

    rep = x[rng.choice(len(x), 300, replace=False)].astype(np.float32)

    def representative() -> Any:
        for r in rep:
            yield [r[None]]

    heldout_csv = out_dir / f"{task.name}.heldout.csv"
    write_heldout(heldout_csv, held)
    held_samples = [Sample(root / i.dataset / i.file, i.label) for i in held]
    for variant in ("int8", "float32"):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if variant == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        name = task.name if variant == "int8" else f"{task.name}_f32"
        model_path = out_dir / f"{name}.tflite"
        model_path.write_bytes(conv.convert())
        card_path = model_path.with_suffix(".yaml")
        card: dict[str, Any] = {
            "name": name,
            "version": VERSION,
            "file": model_path.name,
            "sha256": sha256_file(model_path),
            "task": "classification",
            "description": task.description,
            "limitations": task.limitations,
            "detector": task.detector,
            "input": {"width": task.size, "height": task.size, "channels": 3, "color": "rgb", "dtype": variant},
            "normalisation": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                              "note": "0..255 pixels go in as they are; the model rescales inside"},
            "labels": list(task.labels),
            "positive_label": task.positive,
            "output": "probabilities",
            "label_map": {k: v for m in task.datasets.values() for k, v in m.items()},
            "training": {
                "command": "python -m detectors.training.train --datasets ../shared/datasets --out detectors/models",
                "date": dt.date.today().isoformat(),
                "seed": SEED,
                "architecture": "4 conv layers (16-32-64-64, 3x3, BN, ReLU) + global average pool + softmax; "
                                "trained from scratch",
                "epochs": task.epochs,
                "real_datasets": {d: f"../shared/datasets/{d} (see its SOURCES.md / README.md)" for d in task.datasets},
                "real_images_used": len(train_items),
                "real_samples": len(real),
                "synthetic_samples": len(syn),
                "synthetic_fraction": round(len(syn) / len(samples), 3),
                "synthetic_generator": "detectors/training/synth.py",
                "quantization": "full integer, int8 input and output, 300 representative training samples"
                if variant == "int8" else "none (float32)",
            },
            "heldout": {
                "split": f"grouped by source frame/clip, stratified, seed {SEED}, {int(HELDOUT * 100)} %; "
                         f"list in {heldout_csv.name}; never used for training or thresholds",
            },
        }
        card_path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), encoding="utf-8")
        result = evaluate(load_classifier(model_path), held_samples)
        card["heldout"].update(result.metrics())
        card["heldout"]["ms_per_image_here"] = round(result.ms_per_image, 3)
        card_path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), encoding="utf-8")
        log(f"{name}: {model_path.stat().st_size} bytes; held-out:\n{result.report()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detectors.training.train", description=__doc__)
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"), help="folder of the real datasets")
    parser.add_argument("--out", type=Path, default=Path("detectors/models"), help="where models and cards go")
    parser.add_argument("--only", choices=sorted(TASKS), action="append", help="train only this model (repeatable)")
    args = parser.parse_args(argv)
    if not args.datasets.is_dir():
        print(f"datasets folder {args.datasets} not found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or sorted(TASKS):
        train_task(TASKS[name], args.datasets, args.out, lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
