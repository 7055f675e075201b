"""The shipped int8 models are the published uint8 ones requantised (detectors/training/requantize.py).

Needs the published files in ../shared/models (a user's clone has none: skipped there).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from detectors.backbone import open_interpreter
from detectors.models import __file__ as _models_init
from detectors.training.requantize import requantize

MODELS = Path(_models_init).parent
PUBLISHED = Path(__file__).resolve().parents[2] / "shared" / "models"
DATASETS = PUBLISHED.parent / "datasets"
V1 = ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "mobilenet_v1_1.0_224_embedding_int8.tflite")
SSD = ("ssd_mobilenet_v1_coco_quant.tflite", "ssd_mobilenet_v1_coco_int8.tflite")

needs_published = pytest.mark.skipif(not (PUBLISHED / V1[0]).is_file(), reason="../shared/models is not present")


def _interp(content: bytes) -> object:
    return open_interpreter("model under test", content=content)


def _run(interp: object, x: np.ndarray) -> list[np.ndarray]:
    inp = interp.get_input_details()[0]  # type: ignore[attr-defined]
    interp.set_tensor(inp["index"], x[None])  # type: ignore[attr-defined]
    interp.invoke()  # type: ignore[attr-defined]
    out = []
    for o in interp.get_output_details():  # type: ignore[attr-defined]
        raw = interp.get_tensor(o["index"]).astype(np.float32)  # type: ignore[attr-defined]
        scale, zero = o["quantization"]
        out.append((raw - zero) * scale if scale else raw)
    return out


def _photos(folder: str, size: int, n: int) -> list[np.ndarray]:
    files = sorted((DATASETS / folder).rglob("*.jpg"))[:n]
    if not files:
        pytest.skip(f"../shared/datasets/{folder} is not present")
    return [cv2.cvtColor(cv2.resize(cv2.imread(str(f)), (size, size), interpolation=cv2.INTER_AREA),
                         cv2.COLOR_BGR2RGB) for f in files]


@needs_published
@pytest.mark.parametrize("names", [V1, SSD], ids=["backbone", "ssd"])
def test_the_shipped_file_is_the_published_one_requantised_byte_for_byte(names: tuple[str, str]) -> None:
    published, shipped = names
    converted = requantize((PUBLISHED / published).read_bytes())
    assert converted == (MODELS / shipped).read_bytes()
    card = MODELS / shipped.replace(".tflite", ".yaml")
    if card.is_file():  # the SSD's own card names both files
        data = yaml.safe_load(card.read_text())
        assert data["sha256"] == hashlib.sha256(converted).hexdigest()
        assert data["source"]["published_sha256"] == hashlib.sha256((PUBLISHED / published).read_bytes()).hexdigest()


@needs_published
def test_the_requantised_backbone_gives_the_same_features_with_a_uint8_interface() -> None:
    before = _interp((PUBLISHED / V1[0]).read_bytes())
    after = _interp((MODELS / V1[1]).read_bytes())
    for interp in (before, after):
        assert interp.get_input_details()[0]["dtype"] == np.uint8  # type: ignore[attr-defined]
    cosines = []
    for img in _photos("smoke", 224, 12):
        a, b = _run(before, img)[0].ravel(), _run(after, img)[0].ravel()
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    assert min(cosines) > 0.98, cosines


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Boxes as (ymin, xmin, ymax, xmax)."""
    h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = h * w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@needs_published
def test_the_requantised_ssd_finds_the_same_vehicles() -> None:
    before = _interp((PUBLISHED / SSD[0]).read_bytes())
    after = _interp((MODELS / SSD[1]).read_bytes())
    found = kept = 0
    group = {0: "person", 2: "vehicle", 5: "vehicle", 7: "vehicle"}  # what the detectors count (the card's groups)
    for img in _photos("site_vehicles", 300, 25):
        a, b = _run(before, img), _run(after, img)
        theirs = [(group[int(a[1][0][i])], a[0][0][i]) for i in range(int(a[3][0]))
                  if a[2][0][i] >= 0.5 and int(a[1][0][i]) in group]
        ours = [(group[int(b[1][0][i])], b[0][0][i]) for i in range(int(b[3][0]))
                if b[2][0][i] >= 0.4 and int(b[1][0][i]) in group]
        for cls, box in theirs:
            found += 1
            kept += any(c == cls and _iou(box, bx) >= 0.7 for c, bx in ours)
    assert found >= 8
    assert kept >= 0.9 * found, (kept, found)
