"""On-box adaptation: `edge-agent adapt` fixes a deliberately wrong head from a site's labelled photos,
the running pool switches to it without a restart, `--rollback` restores the previous head, a head that
scores worse on the site's held-out photos is refused without `--force`; `edge-agent collect` saves frames
and zone crops from a real RTSP camera with a labels.csv to fill in."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from detectors.adapted import SHIPPED, ActiveHead, HeadStore
from detectors.card import load_card, sha256_file
from detectors.heads import Head
from detectors.pool import ModelPool
from detectors.runtime import MODELS_DIR, HeadClassifier, default_model_path, load_head
from detectors.training import synth
from edge_agent.cli import main

LABELS = ("bare_soil", "covered", "hard")


def _image(label: str, rng: np.random.Generator) -> np.ndarray:
    h, w = int(rng.integers(150, 220)), int(rng.integers(180, 260))
    if label == "bare_soil":
        return synth.soil_texture(h, w, rng)
    if label == "covered":
        return synth.drape_net(synth.soil_texture(h, w, rng), rng, 1.0, perspective=bool(rng.random() < 0.5))
    return synth.hard_texture(h, w, rng)


def _site_folder(root: Path, per_class: int = 24, seed: int = 0) -> Path:
    """A site's labelled photos (rendered: no dataset images in the tests)."""
    rng = np.random.default_rng(seed)
    folder = root / f"site{seed}"
    folder.mkdir()
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        for label in LABELS:
            for i in range(per_class):
                name = f"{label}_{i:02d}.jpg"
                cv2.imwrite(str(folder / name), _image(label, rng))
                w.writerow([name, label])
    return folder


def _install_wrong_head(models_dir: Path) -> HeadStore:
    """The shipped soil head with bare soil and hard surface swapped, installed and active as v0001."""
    head, _, _ = load_head(default_model_path("soil_cls"))
    swap = [2, 1, 0]
    wrong = dataclasses.replace(head, w_out=head.w_out[:, swap].copy(), b_out=head.b_out[swap].copy())
    store = HeadStore(models_dir, "soil_cls")
    vdir = store.dir / "v0001"
    vdir.mkdir(parents=True)
    wrong.save(vdir / "head.npz")
    card = yaml.safe_load(default_model_path("soil_cls").read_text())
    card.update(file="head.npz", sha256=sha256_file(vdir / "head.npz"), version="2.0.0+site.v0001")
    (vdir / "soil_cls.yaml").write_text(yaml.safe_dump(card))
    store.activate("v0001")
    return store


def _accuracy(clf: HeadClassifier, folder: Path) -> float:
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    probs = clf.classify([cv2.imread(str(folder / r["file"])) for r in rows])
    return float(np.mean([clf.labels[int(p.argmax())] == r["label"] for p, r in zip(probs, rows, strict=True)]))


def test_store_activate_and_rollback(tmp_path: Path) -> None:
    store = HeadStore(tmp_path, "soil_cls")
    assert store.active() == SHIPPED and store.next_version() == "v0001"
    from detectors.card import ModelError

    with pytest.raises(ModelError, match="nothing to roll back"):
        store.rollback()
    with pytest.raises(ModelError, match="no installed version"):
        store.activate("v0007")
    for v in ("v0001", "v0002"):
        (store.dir / v).mkdir(parents=True)
        store.card_path(v).write_text("name: soil_cls\n")
        store.activate(v)
    assert store.active() == "v0002" and store.history() == ["v0001", "v0002"]
    assert store.rollback() == "v0001" and store.active() == "v0001"
    assert store.rollback() == SHIPPED and store.active() == SHIPPED


def test_watcher_looks_at_most_every_check_s(tmp_path: Path) -> None:
    clock = [0.0]
    store = _install_wrong_head(tmp_path / "models")
    watch = ActiveHead(store, load_head, default_model_path("soil_cls"), check_s=5.0, clock=lambda: clock[0])
    first = watch()
    assert first is not None and first[1].version.endswith("v0001")
    store.rollback()
    clock[0] = 1.0
    assert watch() is None, "not looked at again within check_s"
    clock[0] = 6.0
    back = watch()
    assert back is not None and back[1].version == load_card(default_model_path("soil_cls")).version  # shipped


def test_adapt_fixes_a_wrong_head_the_daemon_switches_and_rollback_restores(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    store = _install_wrong_head(data / "models")
    running = ModelPool(adapted_dir=data / "models", check_s=0.0)  # what the daemon holds
    clf = running.classifier("soil_cls")
    assert isinstance(clf, HeadClassifier) and clf.card.version.endswith("site.v0001")
    folder = _site_folder(tmp_path)
    wrong_accuracy = _accuracy(clf, folder)
    assert wrong_accuracy < 0.6

    assert main(["adapt", "bare_soil", str(folder), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "installed v0002" in out and "new head" in out and "head in use" in out
    assert store.active() == "v0002"
    card = yaml.safe_load(store.card_path("v0002").read_text())
    assert card["heldout"]["n"] > 0 and card["heldout"]["accuracy"] > card["heldout"]["head_it_replaced"]["accuracy"]
    assert card["backbone"]["sha256"] == sha256_file(MODELS_DIR / card["backbone"]["file"])
    assert card["sha256"] == sha256_file(store.dir / "v0002" / card["file"])
    assert card["training"]["cpu_seconds"] < 60

    assert _accuracy(clf, folder) > max(0.8, wrong_accuracy + 0.3), "the running classifier switched by itself"
    assert clf.card.version.endswith("site.v0002")

    assert main(["adapt", "bare_soil", "--rollback", "--data-dir", str(data)]) == 0
    assert "rolled back from v0002 to v0001" in capsys.readouterr().out
    assert store.active() == "v0001"
    assert abs(_accuracy(clf, folder) - wrong_accuracy) < 1e-9 and clf.card.version.endswith("site.v0001")


def test_a_head_worse_on_the_sites_heldout_photos_is_refused_unless_forced(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    folder = _site_folder(tmp_path, seed=1)
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    heldout = [r["file"] for r in rows if int(r["file"].split("_")[-1][:2]) % 4 == 0]
    (tmp_path / "heldout.csv").write_text("file\n" + "\n".join(heldout) + "\n")
    # The training photos are labelled wrongly (bare <-> hard), the held-out ones rightly.
    swap = {"bare_soil": "hard", "hard": "bare_soil", "covered": "covered"}
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        for r in rows:
            w.writerow([r["file"], r["label"] if r["file"] in heldout else swap[r["label"]]])
    args = ["adapt", "bare_soil", str(folder), "--data-dir", str(data), "--heldout", str(tmp_path / "heldout.csv")]
    assert main(args) == 1
    assert "scores worse" in capsys.readouterr().err
    store = HeadStore(data / "models", "soil_cls")
    assert store.active() == SHIPPED and store.versions() == []
    assert main([*args, "--force"]) == 0
    assert store.active() == "v0001"


def test_too_few_photos_per_class_are_refused_with_a_clear_message(tmp_path: Path, capsys) -> None:
    folder = _site_folder(tmp_path, per_class=6)
    assert main(["adapt", "bare_soil", str(folder), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "at least 20" in err and "bare_soil 6" in err
    with (folder / "labels.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(["bare_soil_00.jpg", "lava"])
    assert main(["adapt", "bare_soil", str(folder), "--data-dir", str(tmp_path / "data")]) == 2
    assert "lava" in capsys.readouterr().err


def test_collect_saves_frames_and_zone_crops_with_a_labels_template(tmp_path: Path) -> None:
    from agent_config import write_config
    from rtsp_helpers import RtspServer, free_port, require_ffmpeg, require_rtsp

    require_rtsp()
    require_ffmpeg()
    from camera_scenes import encode

    scene = synth.SoilScene(seed=0)
    video = encode(tmp_path / "yard.mp4", (scene.frame(i // 5, covered=False) for i in range(60)), fps=5, gop=5)
    server = RtspServer(free_port(), "--file", str(video)).start()
    try:
        zone = [list(p) for p in scene.zone]
        config = write_config(tmp_path, 1883, cameras=[{"id": "crane", "url": server.url, "zones": {"pile": zone},
                                                         "detectors": ["bare_soil"]}])
        out = tmp_path / "collected"
        assert main(["collect", "crane", "--minutes", "0.1", "--every", "1", "--config", str(config),
                     "--out", str(out)]) == 0
    finally:
        server.kill()
    rows = list(csv.DictReader((out / "labels.csv").open()))
    frames = [r for r in rows if r["file"].startswith("frame_")]
    zones = [r for r in rows if r["file"].startswith("zone_pile_")]
    assert len(frames) >= 2 and len(zones) == len(frames)
    assert all(r["label"] == "" for r in rows)
    crop = cv2.imread(str(out / zones[0]["file"]))
    assert crop is not None and crop.shape[1] == pytest.approx(0.5 * 640, abs=3)


def test_head_files_are_plain_numpy(tmp_path: Path) -> None:
    head, _, _ = load_head(default_model_path("smoke_cls"))
    with np.load(MODELS_DIR / "smoke_cls.npz", allow_pickle=False) as data:
        assert {"labels", "mean", "inv_std", "w_out", "b_out"} <= set(data.files)
    assert isinstance(head, Head) and head.backbone_sha256


def test_a_site_head_from_before_a_backbone_upgrade_is_refused_and_the_shipped_head_runs(tmp_path: Path,
                                                                                         caplog) -> None:
    """After an upgrade that changed the backbone (2026-12-03: requantised to int8), a site's head
    trained on the old one cannot read the new features: the shipped head is used, and the log says
    what to do."""
    store = _install_wrong_head(tmp_path / "models")
    card_path = store.card_path("v0001")
    card = yaml.safe_load(card_path.read_text())
    card["backbone"].update(file="mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
                            sha256="f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319")
    card_path.write_text(yaml.safe_dump(card))
    images = [_image(label, np.random.default_rng(i)) for i, label in enumerate(LABELS)]
    with caplog.at_level("ERROR", logger="detectors.runtime"):
        clf = ModelPool(adapted_dir=tmp_path / "models", check_s=0.0).classifier("soil_cls")
        probs = clf.classify(images)
    shipped = load_card(default_model_path("soil_cls"))
    assert isinstance(clf, HeadClassifier) and clf.card.version == shipped.version
    np.testing.assert_allclose(probs, ModelPool().classifier("soil_cls").classify(images), rtol=1e-5)
    assert "f409ef4f73fcbb96" in caplog.text and "edge-agent adapt" in caplog.text
