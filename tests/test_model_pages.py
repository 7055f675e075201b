"""Model files give their pages back once LiteRT has packed the weights (detectors/model_pages.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detectors import model_pages
from detectors.backbone import find_feature_tensor, with_output
from detectors.pool import ModelPool

IMAGE = np.random.default_rng(7).integers(0, 256, (300, 400, 3), dtype=np.uint8)


def _cached(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.features.tflite"))


def test_backbones_kept_on_disk_read_the_same_features_and_give_their_pages_back(tmp_path: Path) -> None:
    if not model_pages.on_disk(tmp_path):
        pytest.skip(f"{tmp_path} is on a RAM filesystem here")
    cache = tmp_path / "model-cache"
    in_memory = ModelPool().classifier("smoke_cls")
    on_disk = ModelPool(cache_dir=cache).classifier("smoke_cls")  # the stack: MobileNet V1 and V2
    files = _cached(cache)
    assert len(files) == 2
    for f in files:
        assert model_pages.mappings(f), f"{f.name} is not mapped: loaded from memory after all"
    got, want = on_disk.backbone.feature_map(IMAGE), in_memory.backbone.feature_map(IMAGE)
    assert np.array_equal(got, want)
    np.testing.assert_allclose(on_disk.classify([IMAGE]), in_memory.classify([IMAGE]), rtol=1e-6)
    # Setting up read every byte of both; given back, only what a pass reads again stays resident
    # (here V1 ~2 of its 3.2 MB, V2 ~0.6 of 4.4).
    resident = sum(model_pages.resident_kb(f) * 1024 for f in files)
    assert resident < 0.5 * sum(f.stat().st_size for f in files)


def test_the_object_detector_gives_its_file_pages_back_and_still_finds_the_same(tmp_path: Path) -> None:
    ssd = ModelPool().objects()
    size = ssd.path.stat().st_size
    assert model_pages.mappings(ssd.path)
    before = ssd.detect(IMAGE, min_score=0.0)
    # Each pass reads the anchors (8 kB) again: on a kernel that caches the file in 2-MB folios that
    # alone mapped 2-4 MB back, unless the cached file was dropped too (model_pages._drop_cached)
    assert model_pages.resident_kb(ssd.path) * 1024 < 0.1 * size
    assert ssd.detect(IMAGE, min_score=0.0) == before


def test_a_damaged_feature_file_is_rewritten_from_the_checked_original(tmp_path: Path) -> None:
    if not model_pages.on_disk(tmp_path):
        pytest.skip(f"{tmp_path} is on a RAM filesystem here")
    cache = tmp_path / "model-cache"
    first = ModelPool(cache_dir=cache).classifier("soil_cls")
    (feature_file,) = _cached(cache)
    stale = cache / f"{first.backbone.path.stem}.0123456789abcdef.features.tflite"  # an older version's
    stale.write_bytes(b"old")
    feature_file.write_bytes(b"not a model")
    again = ModelPool(cache_dir=cache).classifier("soil_cls")
    original = first.backbone.path.read_bytes()
    assert feature_file.read_bytes() == with_output(original, find_feature_tensor(original))
    assert _cached(cache) == [feature_file]  # the older version's file is gone
    assert np.array_equal(again.backbone.feature_map(IMAGE), first.backbone.feature_map(IMAGE))


def test_on_a_ram_filesystem_the_backbone_is_loaded_from_memory() -> None:
    shm = Path("/dev/shm")
    if model_pages.filesystem(shm) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm here")
    assert not model_pages.on_disk(shm)
    assert model_pages.on_disk(Path(__file__).parent) == (model_pages.filesystem(Path(__file__).parent)
                                                         not in model_pages.RAM_FILESYSTEMS)


def test_release_leaves_writable_mappings_and_unknown_files_alone(tmp_path: Path) -> None:
    import mmap

    path = tmp_path / "scratch.bin"
    path.write_bytes(b"\x01" * (1 << 20))
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mm:
        mm[0] = 2  # a change only this mapping holds (until flushed)
        assert model_pages.release(path) == 0
        assert mm[0] == 2
    assert model_pages.release(tmp_path / "not-mapped.bin") == 0


def test_the_feature_graph_ends_at_the_map_and_reads_the_same_map() -> None:
    """The ops after the feature map (pool, ImageNet logits) are cut off: same map, no dead weights to pack."""
    import struct

    from detectors.backbone import open_interpreter
    from detectors.models import __file__ as models_init

    models = Path(models_init).parent
    x = np.random.default_rng(3).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    for name, dropped in (("mobilenet_v1_1.0_224_embedding_int8.tflite", 2),  # the pool and its QUANTIZE to uint8
                          ("tf2_mobilenet_v2_1.0_224_ptq.tflite", 5)):
        model = (models / name).read_bytes()
        info = find_feature_tensor(model)
        total = struct.unpack_from("<I", model, info.ops_count_at)[0]
        assert info.ops_kept == total - dropped
        only_output = bytearray(model)  # the output re-pointed, every operator kept
        struct.pack_into("<i", only_output, info.output_at, info.feature_index)
        maps = []
        for content in (bytes(only_output), with_output(model, info)):
            interp = open_interpreter(name, content=content)
            interp.set_tensor(interp.get_input_details()[0]["index"], x)
            interp.invoke()
            maps.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
        assert maps[0].shape[1:3] == (7, 7) and np.array_equal(maps[0], maps[1])
