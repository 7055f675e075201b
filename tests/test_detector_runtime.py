"""The LiteRT runtime: shipped heads on the shipped backbone run; a model that does not match its card is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from detectors.backbone import Backbone, StackedBackbone
from detectors.card import ModelError, sha256_file
from detectors.pool import ModelPool
from detectors.runtime import MODELS_DIR, HeadClassifier, TfliteClassifier, default_model_path, load_classifier
from detectors.training import synth

MODELS = ["smoke_cls", "soil_cls"]
BACKBONE = "mobilenet_v1_1.0_224_embedding_int8.tflite"


def _copy(name: str, tmp_path: Path) -> Path:
    """A model's card, head and backbone in a folder of their own; returns the card."""
    card = default_model_path(name)
    data = yaml.safe_load(card.read_text())
    extra = [bb["file"] for bb in data.get("extra_backbones", [])]
    for f in (card.name, data["file"], data["backbone"]["file"], *extra):
        shutil.copy(MODELS_DIR / f, tmp_path / f)
    return tmp_path / card.name


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
def test_shipped_heads_run_and_give_probabilities(name: str) -> None:
    clf = ModelPool().classifier(name, threads=2)
    assert isinstance(clf, HeadClassifier) and clf.card.dtype == "uint8"
    assert clf.path.stat().st_size <= 200_000  # a head is small; the backbone is shared
    rng = np.random.default_rng(0)
    images = [synth.background(120, 160, rng) for _ in range(3)] + [np.zeros((30, 40, 3), np.uint8),
                                                                    np.zeros((50, 60), np.uint8)]
    probs = clf.classify(images)
    assert probs.shape == (5, len(clf.labels))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert clf.positive_scores([]).shape == (0,)


def test_cards_name_backbone_and_head_hashes_and_report_heldout_per_family() -> None:
    for name in MODELS:
        card = yaml.safe_load(default_model_path(name).read_text())
        assert card["sha256"] == sha256_file(MODELS_DIR / card["file"])
        assert card["backbone"]["file"] == BACKBONE
        assert card["backbone"]["sha256"] == sha256_file(MODELS_DIR / BACKBONE)
        for bb in [card["backbone"], *card.get("extra_backbones", [])]:  # every backbone: hash and provenance
            assert bb["sha256"] == sha256_file(MODELS_DIR / bb["file"]) == bb["source"]["sha256"]
            assert bb["source"]["commit"] and bb["source"]["licence"] == "Apache-2.0"
            assert (MODELS_DIR / bb["source"]["licence_file"]).is_file()
        held = card["heldout"]
        for key in ("precision", "recall", "f1", "n", "confusion", "per_family", "per_folder"):
            assert key in held, (name, key)
        assert all(row["n"] > 0 for row in held["per_family"].values())
        assert "cross_validation" in card and 0 <= card["training"]["synthetic_fraction"] < 1
    soil = yaml.safe_load(default_model_path("soil_cls").read_text())
    assert soil["training"]["synthetic_fraction"] > 0 and "net" in soil["training"]["synthetic_what"]


@pytest.mark.parametrize("name", MODELS)
def test_shipped_head_learnt_from_every_image_and_its_heldout_figures_are_the_split_heads(name: str) -> None:
    """The daemon's head was trained on all the photos; the figures it shows as held-out belong to the
    same recipe trained without the held-out list, shipped beside it so anyone can re-measure them."""
    card = yaml.safe_load(default_model_path(name).read_text())
    split_card_path = MODELS_DIR / card["heldout"]["head"].replace(".npz", ".yaml")
    split = yaml.safe_load(split_card_path.read_text())
    heldout = (MODELS_DIR / f"{name}.heldout.csv").read_text().splitlines()[1:]
    assert card["heldout"]["n"] == split["heldout"]["n"] == len(heldout)
    assert card["training"]["real_images"] == split["training"]["real_images"] + len(heldout)
    assert card["sha256"] != split["sha256"] == sha256_file(MODELS_DIR / split["file"])
    assert {k: split["heldout"][k] for k in ("precision", "recall", "f1", "confusion", "per_family")} == {
        k: card["heldout"][k] for k in ("precision", "recall", "f1", "confusion", "per_family")}
    assert "--model" in card["heldout"]["reproduce"] and split_card_path.name in card["heldout"]["reproduce"]
    assert "measurement only" in split["role"] and "role" not in card
    load_classifier(split_card_path)  # a card the runtime loads, as eval-detector --model does


def test_one_backbone_per_pool_shared_by_both_heads() -> None:
    """Smoke reads MobileNet V1 and V2 side by side, soil V1 alone: V1 is loaded once, for both."""
    pool = ModelPool()
    smoke, soil = pool.classifier("smoke_cls"), pool.classifier("soil_cls")
    assert isinstance(smoke, HeadClassifier) and isinstance(soil, HeadClassifier)
    assert isinstance(smoke.backbone, StackedBackbone) and isinstance(soil.backbone, Backbone)
    assert smoke.backbone.parts[0] is soil.backbone and len(pool.backbones()) == 2
    assert pool.classifier("smoke_cls") is smoke


def test_a_stacked_backbone_joins_its_parts_maps_on_one_resized_input() -> None:
    pool = ModelPool()
    smoke = pool.classifier("smoke_cls")
    assert isinstance(smoke, HeadClassifier) and isinstance(smoke.backbone, StackedBackbone)
    stack = smoke.backbone
    image = synth.background(300, 400, np.random.default_rng(3))
    fmap = stack.feature_map(image)
    v1, v2 = (bb.feature_map(image) for bb in stack.parts)
    assert fmap.shape == (7, 7, 1024 + 1280) == (stack.grid_h, stack.grid_w, stack.channels)
    assert np.array_equal(fmap, np.concatenate([v1, v2], axis=-1))
    assert smoke.head.dim == stack.channels and stack.sha256 == smoke.card.backbone_key
    assert stack.passes == 1 and all(bb.passes == 2 for bb in stack.parts)


def test_wrong_second_backbone_is_refused(tmp_path: Path) -> None:
    card = _copy("smoke_cls", tmp_path)
    second = yaml.safe_load(card.read_text())["extra_backbones"][0]["file"]
    (tmp_path / second).write_bytes((tmp_path / second).read_bytes() + b"\0")  # not the file the head was trained on
    with pytest.raises(ModelError, match="does not match its card"):
        load_classifier(card)
    data = yaml.safe_load(card.read_text())
    data["extra_backbones"][0]["sha256"] = sha256_file(tmp_path / second)  # the card edited to match
    card.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelError, match="trained on backbone"):
        load_classifier(card)


def test_wrong_backbone_hash_is_refused(tmp_path: Path) -> None:
    card = _copy("soil_cls", tmp_path)
    _edit_card(card, backbone__sha256="0" * 64)
    with pytest.raises(ModelError, match="does not match its card"):
        load_classifier(card)


def test_head_trained_on_another_backbone_is_refused(tmp_path: Path) -> None:
    pool = ModelPool()
    pool.classifier("smoke_cls")  # the shipped backbone is now loaded in this pool
    card = _copy("soil_cls", tmp_path)
    other = tmp_path / BACKBONE
    other.write_bytes(other.read_bytes() + b"\0")  # another file, though its card names it
    _edit_card(card, backbone__sha256=sha256_file(other))
    with pytest.raises(ModelError):
        pool.classifier("soil_cls", override=card)


def test_head_hash_mismatch_and_missing_card_are_refused(tmp_path: Path) -> None:
    card = _copy("smoke_cls", tmp_path)
    head = tmp_path / yaml.safe_load(card.read_text())["file"]
    head.write_bytes(head.read_bytes() + b"x")
    with pytest.raises(ModelError, match="does not match its card"):
        load_classifier(card)
    card.unlink()
    with pytest.raises(ModelError, match=r"card .* not found"):
        load_classifier(head)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input__width": 96}, "input"),
        ({"labels": ["a", "b", "c"], "positive_label": "a"}, "labels"),
        ({"input__color": "cmyk"}, "input.color"),
        ({"positive_label": "fire"}, "positive_label"),
    ],
)
def test_card_that_does_not_describe_the_head_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    card = _copy("smoke_cls", tmp_path)
    _edit_card(card, **change)
    with pytest.raises(ModelError, match=message):
        load_classifier(card)


def test_site_head_override_without_code_changes(tmp_path: Path) -> None:
    card = _copy("soil_cls", tmp_path)
    site = tmp_path / "site_soil.yaml"
    _edit_card(card, name="site_soil")
    card.rename(site)
    clf = ModelPool().classifier("soil_cls", override=site)
    assert clf.card.name == "site_soil"
    assert clf.classify([np.full((64, 64, 3), 128, np.uint8)]).shape == (1, 3)


def test_a_plain_tflite_classifier_with_its_card_still_runs(tmp_path: Path) -> None:
    """A site's own self-contained .tflite (here: the backbone file read as a 1024-way output)."""
    model = tmp_path / "site_model.tflite"
    shutil.copy(MODELS_DIR / BACKBONE, model)
    labels = [f"c{i}" for i in range(1024)]
    (tmp_path / "site_model.yaml").write_text(yaml.safe_dump({
        "name": "site_model", "version": "1", "file": model.name, "sha256": sha256_file(model),
        "input": {"width": 224, "height": 224, "channels": 3, "color": "rgb", "dtype": "uint8"},
        "normalisation": {"mean": 0.0, "std": 1.0}, "labels": labels, "positive_label": "c0"}))
    clf = load_classifier(model)
    assert isinstance(clf, TfliteClassifier)
    assert clf.classify([np.zeros((100, 80, 3), np.uint8)]).shape == (1, 1024)
    _edit_card(tmp_path / "site_model.yaml", input__dtype="float32")
    with pytest.raises(ModelError, match="input dtype"):
        load_classifier(model)
    model.write_bytes(b"not a flatbuffer" * 10)
    _edit_card(tmp_path / "site_model.yaml", sha256=sha256_file(model), input__dtype="uint8")
    with pytest.raises(ModelError, match="cannot load model"):
        load_classifier(model)


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
