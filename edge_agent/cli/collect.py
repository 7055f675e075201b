"""`edge-agent collect CAMERA --minutes N`: save a configured camera's frames and zone crops for labelling.

Reads the camera as the agent does (drivers/camera's capture, keyframes at the analysis rate),
keeps one frame every `--every` seconds for N minutes, and writes the whole frame and a crop
of each of the camera's zones (their bounding boxes, as bare_soil reads them) into a folder
with a labels.csv (file,label) whose labels are empty: fill them in (e.g. bare_soil, covered,
hard; smoke, no_smoke) and run `edge-agent adapt DETECTOR FOLDER`. Stop the agent first or
run it beside the agent if the camera accepts two readers.
"""

from __future__ import annotations

import argparse
import csv
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_agent.cli._common import DEFAULT_CONFIG, EXIT_CONFIG, load_or_report

NAME = "collect"
HELP = "save a camera's frames and zone crops into a folder to label for `edge-agent adapt`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("camera", help="camera id from the config")
    parser.add_argument("--minutes", type=float, required=True, help="how long to collect")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between saved frames (default 10)")
    parser.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help="config file")
    parser.add_argument("--out", type=Path,
                        help="folder to write (default: storage.data_dir/collect/CAMERA-UTCTIME)")
    parser.add_argument("--no-zones", action="store_true", help="whole frames only")


class Collector:
    """Writes the frames handed to it (from the capture thread) as JPEGs plus zone crops."""

    def __init__(self, out: Path, zones: dict[str, list[tuple[float, float]]], every_s: float, with_zones: bool = True):
        self.out = out
        self.zones = zones if with_zones else {}
        self.every_s = every_s
        self.files: list[str] = []
        self.frames = 0
        self._last: float | None = None
        self._lock = threading.Lock()

    def on_frame(self, frame: Any) -> None:
        import cv2

        now = time.monotonic()
        if self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        image = frame.image
        stamp = frame.time.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
        written = []
        name = f"frame_{stamp}.jpg"
        if cv2.imwrite(str(self.out / name), image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
            written.append(name)
        h, w = image.shape[:2]
        for zone, points in self.zones.items():
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            x0, x1 = int(min(xs) * w), max(int(min(xs) * w) + 8, round(max(xs) * w))
            y0, y1 = int(min(ys) * h), max(int(min(ys) * h) + 8, round(max(ys) * h))
            crop = image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
            zname = f"zone_{_safe(zone)}_{stamp}.jpg"
            if crop.size and cv2.imwrite(str(self.out / zname), crop, [cv2.IMWRITE_JPEG_QUALITY, 92]):
                written.append(zname)
        with self._lock:
            self.files.extend(written)
            self.frames += 1

    def write_labels(self) -> Path:
        """labels.csv with every saved file and an empty label (keeps labels already filled in)."""
        path = self.out / "labels.csv"
        known: dict[str, str] = {}
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as fh:
                known = {r["file"]: r.get("label", "") for r in csv.DictReader(fh) if r.get("file")}
        with self._lock:
            files = list(dict.fromkeys([*known, *self.files]))
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "label"])
            for f in files:
                writer.writerow([f, known.get(f, "")])
        return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    camera = next((c for c in config.cameras if c.id == args.camera), None)
    if camera is None:
        print(f"collect: no camera {args.camera!r}; configured: {', '.join(c.id for c in config.cameras) or 'none'}",
              file=sys.stderr)
        return 2
    if args.minutes <= 0 or args.every <= 0:
        print("collect: --minutes and --every must be positive", file=sys.stderr)
        return 2
    from drivers.camera.capture import CameraCapture, CaptureSettings, redact

    try:
        main, sub = camera.stream_urls()
    except ValueError as exc:
        print(f"collect: {exc}", file=sys.stderr)
        return 2
    url = sub or main  # what analysis decodes
    out = args.out or Path(config.storage.data_dir) / "collect" / (
        f"{camera.id}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}")
    out.mkdir(parents=True, exist_ok=True)
    collector = Collector(out, {k: [tuple(p) for p in v] for k, v in camera.zones.items()}, args.every,  # type: ignore[misc]
                          with_zones=not args.no_zones)
    capture = CameraCapture(CaptureSettings(camera.id, url, analysis_fps=min(camera.analysis_fps, 1.0 / args.every),
                                            open_timeout_s=camera.open_timeout_s, transport=camera.transport),
                            on_frame=collector.on_frame)
    print(f"collecting from {camera.id} ({redact(url)}) for {args.minutes:g} min, one frame every {args.every:g} s "
          f"into {out}")
    capture.start()
    deadline = time.monotonic() + args.minutes * 60
    try:
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        print("stopped early")
    finally:
        capture.stop()
    error = capture.health().last_error
    labels = collector.write_labels()
    print(f"{collector.frames} frames, {len(collector.files)} images; label them in {labels} "
          f"(column label), then: edge-agent adapt DETECTOR {out}")
    if not collector.frames:
        print(f"collect: no picture from {redact(url)}: {error or 'timed out'}", file=sys.stderr)
        return 1
    return 0
