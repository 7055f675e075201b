"""Model updates end to end: signed `model` commands to the real agent; hash checks, self-test, rollback."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from broker import Broker
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_box import FleetBox

from edge_agent.fleet.transfer import split
from edge_agent.security.keys import Signer, private_pem

pytest.importorskip("ai_edge_litert")

from detectors.adapted import HeadStore
from detectors.heads import Head
from detectors.runtime import default_model_path, load_shipped
from detectors.training import synth

MODEL = "smoke_cls"


def frames(n: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        bg = synth.background(224, 224, rng)
        if i % 2:
            bg = synth.composite_plume(bg, synth.plume_density(224, 224, rng), 0.9)
        out.append(bg)
    return out


@pytest.fixture
def box(mosquitto: Broker, tmp_path: Path) -> Iterator[FleetBox]:
    # Stored frames for the self-test, labelled with what the shipped head says of them: the head in use
    # scores 1.0 there, so a new head is judged against it on the box's own frames.
    folder = tmp_path / "data" / "fleet" / "selftest" / MODEL
    folder.mkdir(parents=True)
    shipped = load_shipped(MODEL)
    images = frames()
    labels = [shipped.labels[int(i)] for i in shipped.classify(images).argmax(1)]
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            cv2.imwrite(str(folder / f"f{i}.png"), img)
            w.writerow([f"f{i}.png", label])
    fleet = FleetBox(mosquitto, tmp_path, Signer(Ed25519PrivateKey.generate()))
    fleet.write()
    yield fleet.start()
    fleet.stop()


def head_and_card(tmp_path: Path, version: str, flip: bool = False) -> tuple[Path, Path]:
    """The shipped head (flipped: its two classes swapped, so it says the opposite) with its own card."""
    card_path = default_model_path(MODEL)
    card = yaml.safe_load(card_path.read_text())
    head = Head.load(card_path.parent / card["file"])
    if flip:
        head = replace(head, w_out=head.w_out[:, ::-1].copy(), b_out=head.b_out[::-1].copy())
    head_file = tmp_path / f"{MODEL}-{version}.npz"
    head_file.write_bytes(head.to_bytes())
    card.update(version=version, file=f"{MODEL}.npz", sha256=hashlib.sha256(head_file.read_bytes()).hexdigest())
    card_file = tmp_path / f"{MODEL}-{version}.yaml"
    card_file.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True))
    return head_file, card_file


def model_args(head_file: Path, card_file: Path, part_bytes: int = 4096) -> list[dict]:
    card = card_file.read_bytes()
    return [{"model": MODEL, "card_bytes": len(card), **p}
            for p in split(card + head_file.read_bytes(), part_bytes)]


def send_parts(box: FleetBox, parts: list[dict], cid: str) -> str:
    """Each part as its own signed command; the id of the last one, which carries the outcome."""
    for i, args in enumerate(parts):
        box.send("model", args, f"{cid}-p{i}")
    return f"{cid}-p{len(parts) - 1}"


def test_model_with_a_wrong_hash_is_refused(box: FleetBox, tmp_path: Path):
    head_file, card_file = head_and_card(tmp_path, "9.0.0")
    card = yaml.safe_load(card_file.read_text())
    card["sha256"] = "1" * 64  # the card names other bytes than those sent
    card_file.write_text(yaml.safe_dump(card, sort_keys=False))
    last = send_parts(box, model_args(head_file, card_file), "m-hash")
    ack = box.wait_ack(last, ("refused", "done", "failed"), 20)
    assert (ack["result"], ack["reason"]) == ("refused", "hash_mismatch"), ack
    assert "1" * 64 in ack["detail"]

    head_file, card_file = head_and_card(tmp_path, "9.0.1")
    parts = model_args(head_file, card_file)
    for part in parts:  # the package hash signed in every part is not that of the content
        part["sha256"] = hashlib.sha256(b"something else").hexdigest()
    last = send_parts(box, parts, "m-package")
    ack = box.wait_ack(last, ("refused", "done", "failed"), 20)
    assert (ack["result"], ack["reason"]) == ("refused", "hash_mismatch"), ack
    store = HeadStore(tmp_path / "data" / "models", MODEL)
    assert store.versions() == [] and store.active() == "shipped"


def test_head_that_fails_its_selftest_is_rolled_back(box: FleetBox, tmp_path: Path):
    head_file, card_file = head_and_card(tmp_path, "9.1.0", flip=True)
    last = send_parts(box, model_args(head_file, card_file), "m-bad")
    ack = box.wait_ack(last, ("refused", "done", "failed"), 30)
    assert (ack["result"], ack["reason"], ack["data"]["cause"]) == ("failed", "rolled_back", "selftest_failed"), ack
    assert [a["result"] for a in box.acks(last)] == ["accepted", "queued", "failed"]
    assert ack["data"]["selftest"]["previous"]["accuracy"] == 1.0
    assert ack["data"]["selftest"]["new"]["accuracy"] < 0.5
    store = HeadStore(tmp_path / "data" / "models", MODEL)
    assert store.active() == "shipped" and ack["data"]["active"] == "shipped"
    assert store.versions() == ["v0001"]  # installed beside the current one, kept for a look, not in use


def test_good_head_in_parts_from_sign_command_is_applied(box: FleetBox, tmp_path: Path):
    head_file, card_file = head_and_card(tmp_path, "9.2.0")
    key_file = tmp_path / "bureau.key"
    key_file.write_bytes(private_pem(box.key.private))
    out = subprocess.run([sys.executable, "-m", "edge_agent", "sign-command", "model", "--key", str(key_file),
                          "--site", "site-test", "--device", "box-1", "--id", "m-good", "--file", str(head_file),
                          "--card", str(card_file)], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == -(-(head_file.stat().st_size + card_file.stat().st_size) // 4096) > 1
    box.send_lines("model", lines)
    last = f"m-good-p{len(lines) - 1}"
    ack = box.wait_ack(last, ("refused", "done", "failed"), 30)
    assert ack["result"] == "done" and ack["data"]["outcome"] == "applied", ack
    assert ack["data"]["selftest"]["new"]["accuracy"] == 1.0 and ack["data"]["version"] == "v0001"
    store = HeadStore(tmp_path / "data" / "models", MODEL)
    assert store.active() == "v0001"
    assert yaml.safe_load(store.card_path("v0001").read_text())["version"] == "9.2.0"
