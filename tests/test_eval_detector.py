"""`edge-agent eval-detector`: figures on a labelled folder; held-out figures match the cards (needs ../shared)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from detectors.runtime import MODELS_DIR
from detectors.training import synth
from edge_agent.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        for i in range(6):
            label = synth.SOIL_CLASSES[i % 3]
            cv2.imwrite(str(folder / f"{i}.jpg"), synth.soil_class_patch(label, 96, 96, rng))
            w.writerow([f"{i}.jpg", label])
        w.writerow(["missing.jpg", "bare_soil"])
        w.writerow(["0.jpg", "unknown_label"])
    return folder


def test_eval_on_own_photos(tmp_path: Path, capsys) -> None:
    assert main(["eval-detector", "bare_soil", str(_folder(tmp_path))]) == 0
    out = capsys.readouterr().out
    for word in ("precision", "recall", "F1", "confusion", "ms per image", "1 unknown label, 1 unreadable"):
        assert word in out


def test_eval_errors_are_reported(tmp_path: Path, capsys) -> None:
    assert main(["eval-detector", "bare_soil", str(tmp_path)]) == 2
    assert main(["eval-detector", "bare_soil", str(_folder(tmp_path)), "--model", str(tmp_path / "x.tflite")]) == 2
    assert "not found" in capsys.readouterr().err


def test_scoring_a_shipped_head_on_its_own_heldout_list_says_it_has_seen_those_photos(tmp_path: Path, capsys) -> None:
    folder = _folder(tmp_path)
    listed = tmp_path / "soil_cls.heldout.csv"  # the card's list by name (here: synthetic photos)
    listed.write_text((folder / "labels.csv").read_text())
    assert main(["eval-detector", "bare_soil", str(folder), "--labels", str(listed)]) == 0
    out = capsys.readouterr().out
    assert "was trained on these photos too" in out and "soil_cls.split.yaml" in out
    split = MODELS_DIR / "soil_cls.split.yaml"
    assert main(["eval-detector", "bare_soil", str(folder), "--labels", str(listed), "--model", str(split)]) == 0
    assert "trained on these photos" not in capsys.readouterr().out  # the split head never saw them
    assert main(["eval-detector", "bare_soil", str(folder)]) == 0  # any other folder: no note
    assert "trained on these photos" not in capsys.readouterr().out


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not present")
@pytest.mark.parametrize(("detector", "model"), [("black_smoke", "smoke_cls"), ("bare_soil", "soil_cls")])
def test_heldout_figures_match_the_card(capsys, detector: str, model: str) -> None:
    # The held-out list names files across several dataset folders, with the labels the model was scored on.
    # Its figures are those of the split head (the shipped one was trained on every image after).
    heldout = MODELS_DIR / f"{model}.heldout.csv"
    args = ["eval-detector", detector, str(SHARED), "--labels", str(heldout), "--json",
            "--model", str(MODELS_DIR / f"{model}.split.yaml")]
    assert main(args) == 0
    figures = yaml.safe_load(capsys.readouterr().out.strip().splitlines()[-1])
    card = yaml.safe_load((MODELS_DIR / f"{model}.yaml").read_text())["heldout"]
    assert figures["n"] == card["n"]
    assert abs(figures["f1"] - card["f1"]) <= 0.02
