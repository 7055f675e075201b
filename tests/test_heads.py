"""Backbone + head classifiers: the feature map is the right tensor, read without preserving every tensor;
features are computed once per frame and input for all of a camera's detectors; bare soil classifies a
zone's cells from one backbone pass; heads round-trip; the cards' held-out figures reproduce (../shared)."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from detectors.backbone import Backbone
from detectors.bare_soil import BareSoilDetector, SoilParams
from detectors.black_smoke import BlackSmokeDetector, SmokeParams
from detectors.heads import FitSettings, Head, fit, pool
from detectors.pool import ModelPool
from detectors.runtime import MODELS_DIR, HeadClassifier
from detectors.shared import SharedFeatures
from detectors.training import synth
from edge_agent.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
T0 = datetime(2025, 6, 1, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def models() -> ModelPool:
    return ModelPool()


def _heads(pool: ModelPool) -> tuple[HeadClassifier, HeadClassifier]:
    smoke, soil = pool.classifier("smoke_cls"), pool.classifier("soil_cls")
    assert isinstance(smoke, HeadClassifier) and isinstance(soil, HeadClassifier)
    return smoke, soil


def test_feature_map_is_the_last_conv_map_and_pools_to_the_models_own_embedding(models: ModelPool) -> None:
    from ai_edge_litert.interpreter import Interpreter

    _, soil = _heads(models)
    bb = soil.backbone
    image = synth.soil_texture(240, 320, np.random.default_rng(3))
    fmap = bb.feature_map(image)
    assert fmap.shape == (7, 7, 1024) and fmap.dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Interpreter(model_path=str(bb.path), num_threads=1, experimental_preserve_all_tensors=True)
    ref.allocate_tensors()
    ref.set_tensor(ref.get_input_details()[0]["index"], bb.prepare(image))
    ref.invoke()
    details = {d["name"]: d for d in ref.get_tensor_details()}
    inner = details[bb.feature_name]
    scale, zero = inner["quantization"]
    assert np.array_equal(fmap, (ref.get_tensor(inner["index"])[0].astype(np.float32) - zero) * scale)
    out = ref.get_output_details()[0]  # the unmodified model's own output: the 7x7 average pool
    scale, zero = out["quantization"]
    pooled = (ref.get_tensor(out["index"]).reshape(-1).astype(np.float32) - zero) * scale
    assert np.abs(fmap.mean(axis=(0, 1)) - pooled).max() <= scale + 1e-6  # within one quantisation step


def test_backbone_refuses_a_file_that_is_not_its_card(tmp_path: Path) -> None:
    from detectors.card import ModelError

    path = MODELS_DIR / "mobilenet_v1_1.0_224_embedding_int8.tflite"
    with pytest.raises(ModelError, match="does not match"):
        Backbone(path, "0" * 64)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    from detectors.card import sha256_file

    with pytest.raises(ModelError):
        Backbone(junk, sha256_file(junk))


def test_features_of_one_frame_are_computed_once_for_two_detectors(models: ModelPool) -> None:
    smoke_clf, soil_clf = _heads(models)
    bb = soil_clf.backbone  # MobileNet V1: soil reads it alone, smoke as the first part of its stack
    assert smoke_clf.backbone.parts[0] is bb  # type: ignore[union-attr]
    scene = synth.SmokeScene(opacity=0.8, kind="sky", start=2, seed=3)
    zone = {"ground": ((0.0, 0.8), (1.0, 0.8), (1.0, 1.0), (0.0, 1.0))}
    smoke_a = BlackSmokeDetector(smoke_clf, SmokeParams())
    smoke_b = BlackSmokeDetector(smoke_clf, SmokeParams(grade_limit=2.0))  # a second entry of the same type
    soil_a = BareSoilDetector(soil_clf, zone, SoilParams(classify_every_s=0))
    soil_b = BareSoilDetector(soil_clf, zone, SoilParams(classify_every_s=0, ratio_threshold=0.3))
    computed = reused = 0
    for i in range(6):
        frame = scene.frame(i)
        shared = SharedFeatures(frame, models)
        before = bb.passes
        found_a = smoke_a.analyse(frame, T0 + timedelta(seconds=i), shared=shared)
        after_a = bb.passes
        found_b = smoke_b.analyse(frame, T0 + timedelta(seconds=i), shared=shared)
        assert bb.passes == after_a, "the second smoke detector reuses the first one's crops"
        assert [d.score for d in found_a] == [d.score for d in found_b]
        soil_a.analyse(frame, T0 + timedelta(seconds=i), shared=shared)
        mid = bb.passes
        soil_b.analyse(frame, T0 + timedelta(seconds=i), shared=shared)
        assert bb.passes == mid and mid - after_a == 1, "one pass for the zone, shared by both bare_soil entries"
        assert shared.computed == bb.passes - before
        computed += shared.computed
        reused += shared.reused
    assert computed > 0 and reused >= computed


def test_without_shared_each_detector_computes_for_itself(models: ModelPool) -> None:
    _, soil_clf = _heads(models)
    zone = {"z": ((0.1, 0.3), (0.6, 0.3), (0.6, 0.9), (0.1, 0.9))}
    det = BareSoilDetector(soil_clf, zone, SoilParams(classify_every_s=0))
    before = soil_clf.backbone.passes
    det.analyse(synth.SoilScene(seed=0).frame(0, False), T0)
    assert soil_clf.backbone.passes == before + 1


def test_bare_soil_grid_comes_from_one_pass_per_zone_or_per_frame(models: ModelPool) -> None:
    _, soil_clf = _heads(models)
    bb = soil_clf.backbone
    scene = synth.SoilScene(seed=2)
    zones = {"stockpile": scene.zone, "strip": ((0.65, 0.3), (0.95, 0.3), (0.95, 0.9), (0.65, 0.9))}
    det = BareSoilDetector(soil_clf, zones, SoilParams(classify_every_s=0))
    before = bb.passes
    found = det.analyse(scene.frame(0, False), T0)
    assert bb.passes - before == 2, "one backbone pass per zone"
    stockpile = next(d for d in found if d.metrics["zone"] == "stockpile")
    assert stockpile.metrics["cells"] == 49.0  # the 7x7 map over the zone's box (a rectangle)
    assert float(stockpile.metrics["uncovered_ratio"]) > 0.5
    strip = next(d for d in found if d.metrics["zone"] == "strip")
    assert float(strip.metrics["uncovered_ratio"]) < 0.2  # concrete beside the pile
    frame_det = BareSoilDetector(soil_clf, zones, SoilParams(classify_every_s=0, feature_input="frame"))
    before = bb.passes
    found = frame_det.analyse(scene.frame(0, False), T0)
    assert bb.passes - before == 1, "one pass for the whole frame serves every zone"
    assert all(d.metrics["cells"] >= 1 for d in found)
    # every cell from that one map: the same probabilities as asking for the cells directly
    fmap = bb.feature_map(scene.frame(0, False))
    grid = soil_clf.cell_probs(fmap)
    assert grid.shape == (7, 7, 3) and np.allclose(grid.sum(-1), 1.0, atol=1e-4)


def test_head_fit_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (60, 16)), rng.normal(1.5, 1, (60, 16))].astype(np.float32)
    y = np.r_[np.zeros(60, int), np.ones(60, int)]
    head = fit(x, y, ("a", "b"), "mean", FitSettings(l2=1e-2, steps=200))
    assert (head.probs(x).argmax(1) == y).mean() > 0.9
    path = tmp_path / "h.npz"
    head.save(path)
    again = Head.load(path)
    assert np.allclose(again.probs(x), head.probs(x)) and again.labels == ("a", "b")
    assert head.to_bytes() == again.to_bytes()  # same head, same bytes, same sha256
    mlp = fit(x, y, ("a", "b"), "mean", FitSettings(hidden=8, steps=200, lr=0.01))
    assert mlp.kind == "mlp" and (mlp.probs(x).argmax(1) == y).mean() > 0.9
    fmap = rng.random((7, 7, 16)).astype(np.float32)
    assert np.allclose(pool(fmap, "mean"), fmap.mean(axis=(0, 1)))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not present")
@pytest.mark.parametrize(("detector", "model"), [("black_smoke", "smoke_cls"), ("bare_soil", "soil_cls")])
def test_eval_detector_reproduces_the_cards_heldout_figures(capsys, detector: str, model: str) -> None:
    card = yaml.safe_load((MODELS_DIR / f"{model}.yaml").read_text())["heldout"]
    args = ["eval-detector", detector, str(SHARED), "--labels", str(MODELS_DIR / f"{model}.heldout.csv"), "--json",
            "--model", str(MODELS_DIR / card["head"].replace(".npz", ".yaml"))]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("positive ") and " F1 " in line for line in out)
    figures = yaml.safe_load(out[-1])
    assert figures["n"] == card["n"]
    assert figures["confusion"] == card["confusion"]
    assert abs(figures["f1"] - card["f1"]) <= 0.005
