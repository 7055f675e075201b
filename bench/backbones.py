"""One pass of each shipped network against the published file it was requantised from, 1 LiteRT thread.

Why the shipped MobileNet V1 and SSD are int8 inside (detectors/training/requantize.py): XNNPACK's
signed per-channel kernels against the generic ones it uses for the published uint8 files. The
two files of a pair are timed in alternating blocks in one process, so a host that speeds up or
slows down over the run (this VM drifts by a third within the hour) weighs on both alike; each
figure is the median of its blocks' medians. The published files are read from ../shared/models
(or --published DIR); without them only the shipped files are timed. Ends with one JSON line.

Run: `python bench/backbones.py [--blocks 6] [--passes 20]`
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.backbone import open_interpreter  # noqa: E402
from detectors.models import __file__ as _models_init  # noqa: E402

MODELS = Path(_models_init).parent
PAIRS = {  # name: (published file, shipped file)
    "mobilenet_v1": ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
                     "mobilenet_v1_1.0_224_embedding_int8.tflite"),
    "ssd": ("ssd_mobilenet_v1_coco_quant.tflite", "ssd_mobilenet_v1_coco_int8.tflite"),
    "mobilenet_v2": (None, "tf2_mobilenet_v2_1.0_224_ptq.tflite"),  # published int8 inside already
}


class Pass:
    """One interpreter and a fixed random input: `run()` is one invoke."""

    def __init__(self, path: Path) -> None:
        self.interp: Any = open_interpreter(path.name, 1, path=path)  # allocated and run once
        inp = self.interp.get_input_details()[0]
        self.index = inp["index"]
        self.x = np.random.default_rng(0).integers(0, 256, inp["shape"]).astype(inp["dtype"])

    def run(self) -> None:
        self.interp.set_tensor(self.index, self.x)
        self.interp.invoke()


def block_ms(p: Pass, passes: int) -> float:
    times = []
    for _ in range(passes):
        t = time.perf_counter()
        p.run()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks per file (default 6)")
    parser.add_argument("--passes", type=int, default=20, help="invokes per block (default 20)")
    parser.add_argument("--published", type=Path, default=ROOT.parent / "shared" / "models",
                        help="folder with the published files (default ../shared/models)")
    args = parser.parse_args()
    result: dict[str, Any] = {"bench": "backbones", "threads": 1, "cpu": platform.machine(),
                              "blocks": args.blocks, "passes_per_block": args.passes, "ms_per_pass": {}}
    speedups = {}
    for name, (published, shipped) in PAIRS.items():
        files = {"shipped": MODELS / shipped}
        if published is not None and (args.published / published).is_file():
            files["published"] = args.published / published
        passes = {k: Pass(v) for k, v in files.items()}
        blocks: dict[str, list[float]] = {k: [] for k in passes}
        for _ in range(args.blocks):
            for k, p in passes.items():
                blocks[k].append(block_ms(p, args.passes))
        ms = {k: round(statistics.median(v), 2) for k, v in blocks.items()}
        result["ms_per_pass"][name] = ms
        if "published" in ms:
            speedups[name] = round(ms["published"] / ms["shipped"], 2)
        print(f"{name}: " + ", ".join(f"{k} {v} ms (blocks {[round(b, 1) for b in blocks[k]]})"
                                      for k, v in ms.items()), file=sys.stderr)
    result["speedup_published_over_shipped"] = speedups
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
