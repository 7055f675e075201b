"""Evidence bundles: signed by the device key, chained across restarts, any change detected."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from agent_config import BASE, write_config
from broker import Broker, Recorder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.types import Quality, Reading
from edge_agent.cli import main as edge_agent_main
from edge_agent.config import load_config
from edge_agent.daemon import build_agent
from edge_agent.evidence.bundle import GENESIS_HASH, HEAD_FILE, MANIFEST, EvidenceFile, EvidenceStore, open_store
from edge_agent.evidence.publish import MAX_PARTS, PART_BYTES, Reassembly, parse_file_leaf, publish_bundle
from edge_agent.evidence.verify import verify_bundle, verify_chain
from edge_agent.security.canonical import canonical_bytes
from edge_agent.security.keys import Signer
from edge_agent.types import Violation

T0 = datetime(2026, 11, 23, 14, 0, 0, tzinfo=timezone.utc)
EDGE_FW = [sys.executable, "-c", "import sys; from firmware_tools.cli import main; sys.exit(main())"]


def violation(n: int = 1) -> Violation:
    return Violation(kind="noise_over_limit", state="started", key=f"noise-{n}", time=T0, started=T0,
                     source="noise-1", figures={"leq_5min": 72.4, "limit": 70.0}, message="噪声超标")


def readings(count: int = 20) -> list[Reading]:
    return [Reading("noise-1", "noise_la", 70.0 + i / 10, "dB(A)", T0 - timedelta(seconds=count - i),
                    Quality.OK if i % 7 else Quality.COMM_ERROR) for i in range(count)]


def make_store(root: Path, signer: Signer, *, synced: bool | None = True) -> EvidenceStore:
    return EvidenceStore(root, signer, "site-test", "box-1", now=lambda: T0, clock_sync=lambda: synced)


def bundle(store: EvidenceStore, n: int = 1, samples: int = 20):
    snapshot = EvidenceFile("snapshot.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) + b"\xff\xd9")
    return store.for_violation(violation(n), readings(samples), [snapshot])


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def cli(*args: str) -> int:
    return edge_agent_main(["verify-evidence", *args])


# --- building ------------------------------------------------------------------------------------


def test_bundle_holds_the_readings_window_hashes_and_a_valid_signature(tmp_path: Path, signer: Signer):
    store = make_store(tmp_path / "evidence", signer, synced=False)
    ev = bundle(store)
    manifest = json.loads((ev.path / MANIFEST).read_bytes())
    assert manifest["seq"] == 1 and manifest["prev_hash"] == GENESIS_HASH and manifest["id"] == ev.path.name
    assert manifest["clock_synchronized"] is False  # an unsynchronised clock is flagged on the bundle
    assert manifest["violation"]["key"] == "noise-1" and manifest["violation"]["figures"]["leq_5min"] == 72.4
    assert manifest["key_id"] == signer.key_id and manifest["created"] == "2026-11-23T14:00:00.000+00:00"
    files = {f["name"]: f for f in manifest["files"]}
    assert files["snapshot.jpg"]["media_type"] == "image/jpeg"
    for name, entry in files.items():
        data = (ev.path / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    window = json.loads((ev.path / "readings.json").read_text(encoding="utf-8"))
    assert len(window["readings"]) == 20 and window["violation_key"] == "noise-1"
    assert window["readings"][0]["quality"] == "comm_error"
    assert (ev.path / MANIFEST).read_bytes() == canonical_bytes(manifest)
    assert ev.hash == hashlib.sha256((ev.path / MANIFEST).read_bytes()).hexdigest()
    report = verify_bundle(ev.path, signer.public)
    assert report.ok, report.problems


def test_a_clip_is_moved_into_the_bundle_and_hashed_in_pieces(tmp_path: Path, signer: Signer):
    """A clip (megabytes) goes in by `move_from`: not left behind, hashed whole across 1 MB pieces."""
    clips = tmp_path / "video-clips"
    clips.mkdir()
    clip = clips / "cam1.mp4"
    content = os.urandom((3 << 20) + 12345)  # over three hashing pieces
    clip.write_bytes(content)
    store = make_store(tmp_path / "evidence", signer)
    ev = store.for_violation(violation(), readings(), [EvidenceFile("clip.mp4", move_from=clip)])
    assert not clip.exists()
    entry = {f["name"]: f for f in ev.manifest["files"]}["clip.mp4"]
    assert entry == {"name": "clip.mp4", "sha256": hashlib.sha256(content).hexdigest(), "size": len(content),
                     "media_type": "video/mp4"}
    assert (ev.path / "clip.mp4").read_bytes() == content
    assert verify_bundle(ev.path, signer.public).ok


def test_chain_continues_across_restarts_and_verifies(tmp_path: Path, signer: Signer):
    root = tmp_path / "evidence"
    first = [bundle(make_store(root, signer), n) for n in (1, 2)]
    restarted = make_store(root, signer)  # a new process
    third = bundle(restarted, 3)
    assert third.seq == 3 and third.manifest["prev_hash"] == first[1].hash
    assert first[1].manifest["prev_hash"] == first[0].hash
    chain = verify_chain(root, signer.public)
    assert chain.ok, (chain.problems, [b.problems for b in chain.bundles])
    assert [b.seq for b in chain.bundles] == [1, 2, 3]


def test_crash_between_rename_and_head_update_is_recovered(tmp_path: Path, signer: Signer):
    root = tmp_path / "evidence"
    store = make_store(root, signer)
    bundle(store, 1)
    stale_head = (root / HEAD_FILE).read_bytes()
    bundle(store, 2)
    (root / HEAD_FILE).write_bytes(stale_head)  # as if the box died before writing the new head
    (root / ".tmp-00000003-x").mkdir()  # and a half-written bundle
    ev = bundle(make_store(root, signer), 3)
    assert ev.seq == 3 and not (root / ".tmp-00000003-x").exists()
    (root / HEAD_FILE).unlink()  # head lost altogether: continue after the newest bundle
    assert bundle(make_store(root, signer), 4).seq == 4
    assert verify_chain(root, signer.public).ok


def test_concurrent_bundles_are_serialised_into_one_chain(tmp_path: Path, signer: Signer):
    root = tmp_path / "evidence"
    store = make_store(root, signer)
    threads = [threading.Thread(target=lambda: [store.create([EvidenceFile("a.json", b"{}")]) for _ in range(5)])
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chain = verify_chain(root, signer.public)
    assert chain.ok and [b.seq for b in chain.bundles] == list(range(1, 31))


def test_device_key_is_made_once_0600_and_its_id_is_in_health(tmp_path: Path):
    config = load_config(write_config(tmp_path, 1883))
    store = open_store(config)
    key = tmp_path / "data" / "keys" / "device.key"
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    assert open_store(config).signer.key_id == store.signer.key_id  # reused, not regenerated
    assert store.health()["device_key_id"] == store.signer.key_id
    shown = subprocess.run([*EDGE_FW, "keys", "show-public", str(key)], capture_output=True, text=True,
                           check=True).stdout
    assert store.signer.key_id in shown and store.signer.public_b64 in shown


# --- tampering --------------------------------------------------------------------------------------


def test_changing_any_byte_of_any_file_fails_verification(tmp_path: Path, signer: Signer):
    ev = bundle(make_store(tmp_path / "evidence", signer), samples=8)
    files = sorted(p for p in ev.path.iterdir())
    assert {p.name for p in files} == {"manifest.json", "readings.json", "snapshot.jpg"}
    checked = 0
    for path in files:
        original = path.read_bytes()
        for pos in range(len(original)):
            # every bit pattern matters most in the manifest (escapes, hex case, base64 padding)
            for flip in (0x01, 0x20, 0x80) if path.name == MANIFEST else (0x01,):
                changed = bytearray(original)
                changed[pos] ^= flip
                path.write_bytes(bytes(changed))
                assert not verify_bundle(ev.path).ok, f"{path.name} byte {pos} ^ {flip:#x} went unnoticed"
                checked += 1
        path.write_bytes(original)
    assert checked > 3000
    assert verify_bundle(ev.path).ok


def test_signature_by_another_key_fails(tmp_path: Path, signer: Signer):
    ev = bundle(make_store(tmp_path / "evidence", signer))
    manifest = json.loads((ev.path / MANIFEST).read_bytes())
    other = Signer(Ed25519PrivateKey.generate())
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    # 1) another key's signature under the device's key id: fails on its own
    (ev.path / MANIFEST).write_bytes(canonical_bytes({**unsigned, "signature": other.sign(canonical_bytes(unsigned))}))
    assert any("signature does not verify" in p for p in verify_bundle(ev.path).problems)
    # 2) wholly re-signed by another key: consistent in itself, caught by the expected device key
    resigned = {**unsigned, "key_id": other.key_id, "public_key": other.public_b64}
    (ev.path / MANIFEST).write_bytes(canonical_bytes({**resigned, "signature": other.sign(canonical_bytes(resigned))}))
    assert verify_bundle(ev.path).ok  # integrity only, as verify-evidence warns without --key
    problems = verify_bundle(ev.path, signer.public).problems
    assert any("expected key" in p for p in problems)
    assert cli(str(ev.path), "--key", signer.public_b64) == 1


def test_removed_or_added_files_fail(tmp_path: Path, signer: Signer):
    ev = bundle(make_store(tmp_path / "evidence", signer))
    (ev.path / "extra.txt").write_text("planted")
    assert verify_bundle(ev.path).problems == ("extra.txt: not listed in the manifest",)
    (ev.path / "extra.txt").unlink()
    (ev.path / "snapshot.jpg").unlink()
    assert verify_bundle(ev.path).problems == ("snapshot.jpg: missing",)
    (ev.path / MANIFEST).unlink()
    assert not verify_bundle(ev.path).ok


def test_chain_detects_a_removed_bundle_a_removed_newest_and_a_foreign_key(tmp_path: Path, signer: Signer):
    root = tmp_path / "evidence"
    store = make_store(root, signer)
    evs = [bundle(store, n) for n in range(1, 5)]
    backup = tmp_path / "backup"
    shutil.copytree(evs[1].path, backup)
    shutil.rmtree(evs[1].path)
    assert any("gap" in p for p in verify_chain(root).problems)
    shutil.copytree(backup, evs[1].path)
    assert verify_chain(root).ok
    shutil.rmtree(evs[3].path)  # the newest: links look fine, the head file knows
    assert any(HEAD_FILE in p for p in verify_chain(root).problems)
    shutil.rmtree(evs[0].path)  # oldest pruned by retention: a note, not a failure
    (root / HEAD_FILE).write_text(json.dumps({"seq": 3, "id": evs[2].id, "hash": evs[2].hash}))
    chain = verify_chain(root)
    assert chain.ok and chain.notes and "starts at seq 2" in chain.notes[0]
    bundle(EvidenceStore(root, Signer(Ed25519PrivateKey.generate()), "site-test", "box-1"), 9)
    assert any("signed by key" in p for p in verify_chain(root).problems)


# --- the command line -----------------------------------------------------------------------------


def test_verify_evidence_exit_codes_and_lines(tmp_path: Path, signer: Signer, capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "evidence"
    store = make_store(root, signer)
    first, second = bundle(store, 1), bundle(store, 2)
    assert cli(str(first.path)) == 0
    assert f"OK    {first.id}" in capsys.readouterr().out
    assert cli(str(first.path / MANIFEST), "--key", signer.public_b64) == 0
    assert cli(str(root), "--chain") == 0
    assert "links intact" in capsys.readouterr().out
    data = bytearray((second.path / "readings.json").read_bytes())
    data[10] ^= 1
    (second.path / "readings.json").write_bytes(bytes(data))
    assert cli(str(second.path)) == 1
    assert f"FAIL  {second.id}: readings.json: SHA-256 does not match" in capsys.readouterr().out
    assert cli(str(root), "--chain") == 1
    assert cli(str(tmp_path / "nowhere")) == 1
    assert cli(str(first.path), "--key", "not-a-key") == 1
    # and through the installed entry point, as an inspector would run it
    proc = subprocess.run([sys.executable, "-m", "edge_agent", "verify-evidence", str(first.path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "OK" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "edge_agent", "verify-evidence", str(root), "--chain"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "FAIL" in proc.stdout


# --- to the bureau ------------------------------------------------------------------------------------


def test_bundle_published_over_mosquitto_files_first_then_the_exact_manifest(mosquitto: Broker, tmp_path: Path):
    config = load_config(write_config(tmp_path, mosquitto.port))
    parts = build_agent(config)
    agent = parts.agent
    store = open_store(config)
    bureau = Recorder(mosquitto.port, f"{BASE}/evidence/#").start()  # '#' also matches .../evidence itself
    agent.start()
    try:
        ev = bundle(store)
        assert publish_bundle(ev, agent.publish) == 3
        assert bureau.wait_for(lambda: len(bureau.messages) >= 3, timeout=10)
        with bureau.lock:
            received = [(m.topic.removeprefix(BASE + "/"), bytes(m.payload)) for m in bureau.messages]
        assert [t for t, _ in received] == [f"evidence/{ev.id}/readings.json", f"evidence/{ev.id}/snapshot.jpg",
                                            "evidence"]
        manifest = received[-1][1]
        assert manifest == (ev.path / MANIFEST).read_bytes()  # the signed bytes, untouched by the outbox
        files = {t.rsplit("/", 1)[1]: data for t, data in received[:-1]}
        for entry in json.loads(manifest)["files"]:
            assert hashlib.sha256(files[entry["name"]]).hexdigest() == entry["sha256"]
        assert bureau.wait_for(lambda: agent.outbox.depth_by_kind().get("evidence", 0) == 0)  # all acked
    finally:
        agent.stop(timeout=2)
        bureau.stop()


def test_publish_order_is_files_then_manifest(tmp_path: Path, signer: Signer):
    ev = bundle(make_store(tmp_path / "evidence", signer))
    sent: list[tuple[str, bytes, str]] = []
    publish_bundle(ev, lambda leaf, payload, *, kind: sent.append((leaf, payload, kind)))
    assert [s[0] for s in sent] == [f"evidence/{ev.id}/readings.json", f"evidence/{ev.id}/snapshot.jpg", "evidence"]
    assert {s[2] for s in sent} == {"evidence"}


def test_a_large_file_goes_in_parts_read_one_at_a_time_and_joins_back(tmp_path: Path, signer: Signer):
    clip = os.urandom(2 * PART_BYTES + 1234)  # three parts, the last one short
    store = make_store(tmp_path / "evidence", signer)
    ev = store.for_violation(violation(1), readings(20), [EvidenceFile("clip.mp4", clip, "video/mp4")])
    sent: list[tuple[str, bytes]] = []
    assert publish_bundle(ev, lambda leaf, payload, *, kind: sent.append((leaf, payload))) == 5
    assert [t for t, _ in sent] == [f"evidence/{ev.id}/readings.json", f"evidence/{ev.id}/clip.mp4/0/3",
                                    f"evidence/{ev.id}/clip.mp4/1/3", f"evidence/{ev.id}/clip.mp4/2/3", "evidence"]
    assert max(len(p) for _, p in sent[1:4]) == PART_BYTES and len(sent[3][1]) == 1234
    # Any order, a part twice: the join is the file the manifest hashed.
    joined = Reassembly()
    for leaf, payload in [sent[3], sent[1], sent[3], sent[0]]:
        joined.add(leaf, payload)
    assert joined.waiting() == {(ev.id, "clip.mp4")} and (ev.id, "clip.mp4") not in joined.files()
    joined.add(*sent[2])
    files = joined.files(ev.id)
    assert files[(ev.id, "clip.mp4")] == clip and joined.waiting() == set()
    listed = {f["name"]: f["sha256"] for f in json.loads(sent[-1][1])["files"]}
    assert hashlib.sha256(files[(ev.id, "clip.mp4")]).hexdigest() == listed["clip.mp4"]


@pytest.mark.parametrize("leaf", [
    "evidence/{id}/clip.mp4/3/3", "evidence/{id}/clip.mp4/0/1", "evidence/{id}/clip.mp4/-1/3",
    "evidence/{id}/clip.mp4/x/3", "evidence/{id}/clip.mp4/\u0661/3", f"evidence/{{id}}/clip.mp4/0/{MAX_PARTS + 1}",
    "evidence/{id}/clip.mp4/0", "evidence/{id}/manifest.json/0/2", "evidence/{id}/../0/2", "evidence/nope/a.jpg/0/2",
    "evidence/{id}/clip.mp4/0/2/x", "evidence/{id}/clip.mp4/000001/2",
])
def test_a_bad_part_topic_is_not_a_file(leaf: str):
    good = "00000001-20261202T064057Z-caa4"
    assert parse_file_leaf(f"evidence/{good}/clip.mp4/1/2") is not None
    assert parse_file_leaf(leaf.replace("{id}", good).encode().decode("unicode_escape")) is None


def test_reading_history_window_feeds_the_bundle(tmp_path: Path, signer: Signer):
    from edge_agent.history import ReadingHistory

    history = ReadingHistory(keep_s=60)
    for i in range(120):  # two minutes at 1 Hz from two sensors; only the last minute is kept
        for sensor in ("noise-1", "dust-1"):
            history.add(Reading(sensor, "noise_la", 60.0 + i, "dB(A)", T0 - timedelta(seconds=119 - i)))
    window = history.window("noise-1", T0 - timedelta(seconds=29), T0)
    assert len(window) == 30 and window[-1].time == T0 and window[0].time == T0 - timedelta(seconds=29)
    assert len(history.window("dust-1", T0 - timedelta(seconds=300), T0)) == 61  # older samples fell out
    ev = make_store(tmp_path / "evidence", signer).for_violation(violation(), window)
    assert len(json.loads((ev.path / "readings.json").read_bytes())["readings"]) == 30
