"""A frozen, pretrained LiteRT backbone that gives a spatial feature map, not ImageNet classes.

The shipped files are byte-identical copies of their public sources (so their sha256 can be
checked against the source's), but their graphs end in ImageNet pooling and logits. At load
we re-point the graph's output, in memory, at the last convolution's feature map (the
tensor the final global pool reads). A graph output is never overwritten by the arena, so
the map can be read after `invoke()` without `experimental_preserve_all_tensors` (which
keeps every intermediate tensor alive: more RSS for nothing). The pool and the ImageNet
logits after it are cut off too (the operator list ends at the op that makes the map), so
their weights are neither packed nor read: MobileNet V2's 1.3 MB classifier among them.

One pass over a 224×224 input gives a 7×7 map (stride 32). Its mean over all cells is the
usual pooled embedding; the mean over a part of it is the embedding of that part, so one
pass serves a whole-image score and every cell of a zone's grid.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors import model_pages
from detectors.card import ModelError, sha256_bytes

log = logging.getLogger(__name__)

_POOL_OPS = {1: "AVERAGE_POOL_2D", 40: "MEAN"}  # TFLite BuiltinOperator codes


class _Table:
    """Just enough of a FlatBuffers reader for the TFLite schema fields we need (no schema module:
    importing the generated one costs ~4 MB of RSS for three lookups)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vsize = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, index: int) -> int:
        slot = 4 + 2 * index
        if slot >= self.vsize:
            return 0
        off = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        return self.pos + off if off else 0

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        at = self._field(index)
        return int(struct.unpack_from("<" + fmt, self.buf, at)[0]) if at else default

    def vector(self, index: int) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) if absent."""
        at = self._field(index)
        if not at:
            return 0, 0
        start = at + struct.unpack_from("<I", self.buf, at)[0]
        return start + 4, struct.unpack_from("<I", self.buf, start)[0]

    def ints(self, index: int) -> list[int]:
        start, n = self.vector(index)
        return list(struct.unpack_from(f"<{n}i", self.buf, start)) if n else []

    def tables(self, index: int) -> list[_Table]:
        start, n = self.vector(index)
        at = [start + 4 * i for i in range(n)]
        return [_Table(self.buf, a + struct.unpack_from("<I", self.buf, a)[0]) for a in at]

    def string(self, index: int) -> str:
        start, n = self.vector(index)
        return self.buf[start:start + n].decode("utf-8", "replace") if n else ""


@dataclass(frozen=True)
class GraphInfo:
    """Where the feature map is in a backbone graph, and where the graph's output index is stored."""

    feature_index: int
    feature_name: str
    output_at: int  # byte offset of subgraph 0's first output index
    ops_count_at: int = 0  # byte offset of subgraph 0's operator count; 0: leave the operators be
    ops_kept: int = 0  # operators up to the one that makes the feature map


def find_feature_tensor(model: bytes) -> GraphInfo:
    """The 4-D tensor with a spatial extent that the graph's last global pooling op reads."""
    try:
        root = _Table(model, struct.unpack_from("<I", model, 0)[0])
        # OperatorCode: deprecated_builtin_code (int8, field 0) and builtin_code (int32, field 3)
        codes = [max(c.scalar(0, "b"), c.scalar(3, "i")) for c in root.tables(1)]
        subgraph = root.tables(2)[0]
        tensors = subgraph.tables(0)
        out_at, n_out = subgraph.vector(2)
        ops = subgraph.tables(3)
        found = None
        for op in ops:
            if codes[op.scalar(0, "I")] not in _POOL_OPS:
                continue
            inputs = op.ints(1)
            shape = tensors[inputs[0]].ints(0) if inputs else []
            if len(shape) == 4 and shape[1] > 1 and shape[2] > 1:
                found = inputs[0]
        # Operators are stored in execution order: those after the one making the map only use it.
        # With a single graph output (re-pointed at the map) they can go.
        makers = [i for i, op in enumerate(ops) if found is not None and found in op.ints(2)]
        ops_at, _ = subgraph.vector(3)
        cut = (ops_at - 4, makers[-1] + 1) if makers and n_out == 1 and ops_at else (0, 0)
    except (struct.error, IndexError) as exc:
        raise ModelError(f"backbone: not a TFLite model this runtime can read ({exc})") from exc
    if found is None:
        raise ModelError("backbone: no global pooling over a spatial feature map found in the graph")
    if n_out < 1:
        raise ModelError("backbone: the graph has no output")
    return GraphInfo(found, tensors[found].string(3), out_at, *cut)


def with_output(model: bytes, info: GraphInfo) -> bytes:
    """The same model with its (first) graph output re-pointed at the feature map and the operators
    after the one that makes it cut off (the vector's length, in place), in memory."""
    patched = bytearray(model)
    struct.pack_into("<i", patched, info.output_at, info.feature_index)
    if info.ops_count_at:
        struct.pack_into("<I", patched, info.ops_count_at, info.ops_kept)
    return bytes(patched)


def interpreter_class() -> Any:
    """LiteRT first; tflite_runtime only for old images (it fails beside numpy 2)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError as exc:
        raise ModelError("no TFLite runtime: pip install ai-edge-litert") from exc


class InferenceLock:
    """The lock around one interpreter's set_tensor/invoke/get_tensor, counting the time callers waited.

    One interpreter per model serves every camera (ModelPool), so two camera threads may want
    it at once; `waited_s` says what sharing costs (health, bench/shared_pool.py). Uncontended,
    it is a plain non-blocking acquire: no clock is read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waits = 0  # acquisitions that found the interpreter busy
        self.waited_s = 0.0
        self.max_wait_s = 0.0

    def __enter__(self) -> None:
        if self._lock.acquire(blocking=False):
            return
        t0 = time.perf_counter()
        self._lock.acquire()
        waited = time.perf_counter() - t0
        self.waits += 1  # updated while holding the lock: no lost counts
        self.waited_s += waited
        self.max_wait_s = max(self.max_wait_s, waited)

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def open_interpreter(what: str, threads: int = 1, *, path: Path | None = None,
                     content: bytes | None = None) -> Any:
    """A LiteRT interpreter with its tensors allocated; ModelError (naming `what`) when the file is bad.

    Opened from a file, it is run once on a blank input (so the runtime has packed every weight
    it will use) and the file's pages are given back to the kernel (detectors/model_pages.py).
    """
    try:
        source = {"model_path": str(path)} if content is None else {"model_content": content}
        interp = interpreter_class()(**source, num_threads=max(1, int(threads)))
        interp.allocate_tensors()
        if content is None and path is not None:
            for inp in interp.get_input_details():
                interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
            interp.invoke()
            model_pages.release(path)
    except ModelError:
        raise
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError on corrupt files
        raise ModelError(f"cannot load {what}: {exc}") from exc
    return interp


def features_file(cache_dir: Path, original: Path, sha256: str, patched: bytes) -> Path | None:
    """The backbone re-pointed at its feature map, as a file in `cache_dir` (written when missing or
    different), so it can be opened from disk and its pages given back; None where that cannot be
    (a RAM filesystem, a read-only or full disk): the caller loads it from memory instead."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if not model_pages.on_disk(cache_dir):
            return None
        target = cache_dir / f"{original.stem}.{sha256[:16]}.features.tflite"
        try:
            same = target.stat().st_size == len(patched) and target.read_bytes() == patched
        except OSError:
            same = False
        if not same:
            tmp = target.with_name(f".{target.name}.part")
            tmp.write_bytes(patched)
            tmp.replace(target)
        for stale in cache_dir.glob(f"{original.stem}.*.features.tflite"):  # an older backbone's, after an upgrade
            if stale != target:
                stale.unlink(missing_ok=True)
        return target
    except OSError as exc:
        log.warning("backbone %s: cannot keep its feature model in %s (%s); loading it from memory",
                    original.name, cache_dir, exc)
        return None


class Backbone:
    """One loaded backbone, shared by every camera's detectors (ModelPool): each pass holds its lock."""

    def __init__(self, path: Path, sha256: str, threads: int = 1, feature_name: str | None = None,
                 cache_dir: Path | None = None) -> None:
        self.path = Path(path)
        try:
            model = self.path.read_bytes()
        except OSError as exc:
            raise ModelError(f"backbone {self.path} not found or unreadable: {exc}") from exc
        actual = sha256_bytes(model)
        if actual != sha256.lower():
            raise ModelError(f"backbone {self.path} does not match its card: sha256 is {actual}, "
                             f"the card says {sha256}; use the shipped file or fix the card")
        self.sha256 = actual
        try:
            info = find_feature_tensor(model)
            if feature_name and info.feature_name != feature_name:
                raise ModelError(f"backbone {self.path}: feature tensor is {info.feature_name!r}, "
                                 f"the card says {feature_name!r}")
            patched = with_output(model, info)
            del model
            # From a file on disk the runtime maps it and its pages can be given back once packed
            # (~4 MB per backbone); else from memory, where they stay for good.
            on_disk = features_file(cache_dir, self.path, actual, patched) if cache_dir is not None else None
            if on_disk is not None:
                del patched
                interp = open_interpreter(f"backbone {self.path}", threads, path=on_disk)
            else:
                interp = open_interpreter(f"backbone {self.path}", threads, content=patched)
        except ModelError:
            raise
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError on corrupt files
            raise ModelError(f"cannot load backbone {self.path}: {exc}") from exc
        self.feature_name = info.feature_name
        self._interp = interp
        inp = interp.get_input_details()[0]
        out = interp.get_output_details()[0]
        if np.dtype(inp["dtype"]) != np.uint8:
            raise ModelError(f"backbone {self.path}: input must be uint8 (0..255 RGB), got {inp['dtype']}")
        self._in_index = inp["index"]
        self._out_index = out["index"]
        _, self.height, self.width, _ = (int(v) for v in inp["shape"])
        _, self.grid_h, self.grid_w, self.channels = (int(v) for v in out["shape"])
        scale, zero = out.get("quantization", (0.0, 0))
        self._scale = np.float32(scale or 1.0)
        self._zero = np.float32(zero if scale else 0.0)
        self.passes = 0  # inferences so far: tests and health check the sharing with it
        self.lock = InferenceLock()

    @property
    def key(self) -> str:
        """What names this backbone's features in a shared cache."""
        return self.sha256[:16]

    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        """Whole image resized (not cropped) to the input, RGB uint8: the graph normalises itself."""
        img = image_bgr
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        h, w = img.shape[:2]
        if (h, w) != (self.height, self.width):
            shrink = h > self.height and w > self.width
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            img = cv2.resize(img, (self.width, self.height), interpolation=interpolation)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)[None]

    def feature_map(self, image_bgr: np.ndarray) -> np.ndarray:
        """The (grid_h, grid_w, channels) float32 feature map of one BGR uint8 image."""
        return self.run(self.prepare(image_bgr))

    def run(self, x: np.ndarray) -> np.ndarray:
        """The feature map of an input already `prepare`d (1, height, width, 3) RGB uint8."""
        with self.lock:  # another camera's thread must not interleave set_tensor/invoke
            self._interp.set_tensor(self._in_index, x)
            self._interp.invoke()
            raw = self._interp.get_tensor(self._out_index)[0]
            self.passes += 1
        return (raw.astype(np.float32) - self._zero) * self._scale


class StackedBackbone:
    """Several frozen backbones read as one: each runs on the same prepared input and their maps
    are laid side by side on the channel axis (same grid, e.g. 7x7x1024 + 7x7x1280).

    Two ImageNet networks trained differently make mistakes on different pictures; a head on
    both maps is right more often than on either (see detectors/training/README.md). The parts
    are the pool's shared `Backbone`s, so a part another head reads is still loaded only once.
    """

    def __init__(self, parts: Sequence[Backbone]) -> None:
        if len(parts) < 2:
            raise ModelError("a stacked backbone needs at least two backbones")
        first = parts[0]
        for bb in parts[1:]:
            if (bb.width, bb.height, bb.grid_h, bb.grid_w) != (first.width, first.height, first.grid_h, first.grid_w):
                raise ModelError(f"backbones {first.path.name} and {bb.path.name} cannot be stacked: input "
                                 f"{first.width}x{first.height} grid {first.grid_h}x{first.grid_w} vs "
                                 f"{bb.width}x{bb.height} grid {bb.grid_h}x{bb.grid_w}")
        self.parts = tuple(parts)
        self.path = first.path
        self.sha256 = "+".join(bb.sha256 for bb in parts)
        self.feature_name = first.feature_name
        self.width, self.height = first.width, first.height
        self.grid_h, self.grid_w = first.grid_h, first.grid_w
        self.channels = sum(bb.channels for bb in parts)
        self.passes = 0  # inputs run through the stack (each through every part)

    @property
    def key(self) -> str:
        return "+".join(bb.key for bb in self.parts)

    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        return self.parts[0].prepare(image_bgr)

    def feature_map(self, image_bgr: np.ndarray) -> np.ndarray:
        x = self.prepare(image_bgr)  # resized once for every part
        fmap = np.concatenate([bb.run(x) for bb in self.parts], axis=-1)
        self.passes += 1
        return fmap


FeatureExtractor = Backbone | StackedBackbone  # what a head reads its features from
