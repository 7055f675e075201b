"""The LiteRT runtime: shipped int8 and float32 models run; a model that does not match its card is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from detectors.card import ModelError, sha256_file
from detectors.runtime import default_model_path, load_classifier, load_shipped
from detectors.training import synth

MODELS = ["smoke_cls", "smoke_cls_f32", "soil_cls", "soil_cls_f32"]


def _copy(name: str, tmp_path: Path) -> tuple[Path, Path]:
    src = default_model_path(name)
    model, card = tmp_path / src.name, tmp_path / src.with_suffix(".yaml").name
    shutil.copy(src, model)
    shutil.copy(src.with_suffix(".yaml"), card)
    return model, card


def _edit_card(card: Path, **changes: object) -> None:
    data = yaml.safe_load(card.read_text())
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split("__")
        for key in path:
            node = node[key]
        node[last] = value
    card.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("name", MODELS)
def test_shipped_models_run_and_give_probabilities(name: str) -> None:
    clf = load_shipped(name, threads=2)
    assert clf.card.dtype == ("float32" if name.endswith("_f32") else "int8")
    assert default_model_path(name).stat().st_size <= 1_000_000
    rng = np.random.default_rng(0)
    images = [synth.background(120, 160, rng) for _ in range(3)] + [np.zeros((30, 40, 3), np.uint8)]
    probs = clf.classify(images)
    assert probs.shape == (4, len(clf.labels))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=0.05)
    assert clf.positive_scores([]).shape == (0,)


def test_cards_report_heldout_metrics() -> None:
    for name in MODELS:
        card = yaml.safe_load(default_model_path(name).with_suffix(".yaml").read_text())
        held = card["heldout"]
        for key in ("precision", "recall", "f1", "n", "confusion"):
            assert key in held, (name, key)
        assert 0 < card["training"]["synthetic_fraction"] < 1
        assert card["sha256"] == sha256_file(default_model_path(name))


def test_int8_and_float_agree_on_most_patches() -> None:
    rng = np.random.default_rng(1)
    patches = [synth.soil_class_patch(label, 64, 64, rng) for label in synth.SOIL_CLASSES * 10]
    a = load_shipped("soil_cls").classify(patches).argmax(1)
    b = load_shipped("soil_cls_f32").classify(patches).argmax(1)
    assert (a == b).mean() >= 0.8


def test_hash_mismatch_is_refused(tmp_path: Path) -> None:
    model, card = _copy("smoke_cls", tmp_path)
    _edit_card(card, sha256="0" * 64)
    with pytest.raises(ModelError, match="does not match its card"):
        load_classifier(model)


def test_missing_card_is_refused(tmp_path: Path) -> None:
    model, card = _copy("smoke_cls", tmp_path)
    card.unlink()
    with pytest.raises(ModelError, match=r"card .* not found"):
        load_classifier(model)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input__width": 96}, "input shape"),
        ({"input__dtype": "float32"}, "input dtype"),
        ({"labels": ["a", "b", "c"], "positive_label": "a"}, "outputs"),
        ({"input__color": "cmyk"}, "input.color"),
        ({"positive_label": "fire"}, "positive_label"),
    ],
)
def test_card_that_does_not_describe_the_model_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    model, card = _copy("smoke_cls", tmp_path)
    _edit_card(card, **change)
    with pytest.raises(ModelError, match=message):
        load_classifier(model)


def test_corrupt_model_is_a_clear_error(tmp_path: Path) -> None:
    model, card = _copy("smoke_cls", tmp_path)
    model.write_bytes(b"not a flatbuffer" * 10)
    _edit_card(card, sha256=sha256_file(model))
    with pytest.raises(ModelError, match="cannot load model"):
        load_classifier(model)


def test_site_model_override_without_code_changes(tmp_path: Path) -> None:
    model, _ = _copy("soil_cls_f32", tmp_path)
    site = tmp_path / "site_soil.tflite"
    model.rename(site)
    card = tmp_path / "soil_cls_f32.yaml"
    _edit_card(card, file=site.name, name="site_soil")
    card.rename(site.with_suffix(".yaml"))
    clf = load_shipped("soil_cls", override=site)
    assert clf.card.name == "site_soil"


def test_detectors_config_defaults_and_validation() -> None:
    from pydantic import ValidationError

    from edge_agent.config.detectors import DetectorsConfig

    cfg = DetectorsConfig()
    assert cfg.settings("black_smoke").persist_k == 3  # type: ignore[attr-defined]
    assert cfg.settings("bare_soil").duration_s == 1800  # type: ignore[attr-defined]
    assert cfg.settings("washing").min_dwell_s == 15  # type: ignore[attr-defined]
    custom = DetectorsConfig.model_validate({"smoke_strict": {"type": "black_smoke", "grade_limit": 2}})
    assert custom.settings("smoke_strict").grade_limit == 2  # type: ignore[attr-defined]
    assert "smoke_strict" in custom.names() and "washing" in custom.names()
    with pytest.raises(ValidationError):
        DetectorsConfig.model_validate({"smoke_strict": {"type": "blak_smoke"}})
    with pytest.raises(ValidationError):
        DetectorsConfig.model_validate({"black_smoke": {"persist_k": 6, "persist_n": 5}})
    with pytest.raises(ValidationError):
        DetectorsConfig.model_validate({"washing": {"exit_line": [[0, 0.5], [0, 0.5]]}})
    with pytest.raises(ValidationError):
        DetectorsConfig.model_validate({"bare_soil": {"typo": 1}})
