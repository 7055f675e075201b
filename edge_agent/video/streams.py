"""Which of a camera's two streams each of its detectors reads, and how often.

Most cameras leave the factory with a keyframe every 2 s (GOP 50 at 25 fps). Decoding the
frames between keyframes to analyse at 1 fps costs ~5x decoding the keyframes alone
(bench/camera_cpu.py), and the technician should not have to change the camera. So:

* A detector declares the slowest rate that still serves it (`DetectorSpec.min_fps`: black
  smoke and bare soil are served by a keyframe every 2 s). Such detectors read the main
  stream at full resolution; while the measured keyframe interval is short enough for every
  one of them, only keyframes are decoded (drivers/camera/plan.py), however far that is below
  the camera's `analysis_fps`.
* Detectors that follow moving things (washing, uncovered_load, site_activity: no `min_fps`)
  need frames at the camera's `analysis_fps`. With a `sub_url` they read the sub-stream (a
  small picture, cheap to decode to any frame) at `sub_analysis_fps`; without one they read
  the main stream at `analysis_fps`, and its GOPs are decoded as far as that needs.
* Evidence (the packet ring, clips, snapshots) always comes from the main stream; a main
  stream no detector reads is recorded without being decoded. The sub-stream is opened only
  when some detector reads it.
* The motion gate runs per stream; the tamper watch runs on the main stream when it is
  decoded, else on the sub-stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from detectors.registry import specs
from drivers.camera.plan import keyframes_serve

if TYPE_CHECKING:
    from edge_agent.config.cameras import CameraConfig
    from edge_agent.config.detectors import DetectorsConfig

Stream = Literal["main", "sub"]

# The tamper watch (covered, blurred, moved: confirmed over 10 s) is served by a frame every 2 s.
TAMPER_MIN_FPS = 0.5


@dataclass(frozen=True)
class StreamPlan:
    """Where one camera's detectors read, and what its streams decode."""

    main: tuple[str, ...]  # detector entries that analyse the main stream
    sub: tuple[str, ...]  # detector entries that analyse the sub-stream (empty: it is not opened)
    main_decoded: bool  # False: the main stream is only recorded (evidence)
    main_min_fps: float | None  # keyframes this often serve every main-stream reader; None: analysis_fps
    analysis_fps: float  # the rate the main stream is analysed at when keyframes do not serve
    sub_fps: float  # the sub-stream's analysis rate
    keyframes_ok: tuple[str, ...]  # entries that accept keyframes alone (whatever stream they read)
    need_rate: tuple[str, ...]  # entries that need frames at the analysis rate
    rates: tuple[tuple[str, float | None], ...] = ()  # each entry's declared min_fps

    def served_by_keyframes(self, name: str, keyframe_interval_s: float) -> bool:
        """Whether keyframes this far apart serve the entry (it declared a min_fps they meet)."""
        rate = dict(self.rates).get(name)
        return rate is not None and keyframes_serve(keyframe_interval_s, 1.0 / self.analysis_fps, 1.0 / rate)

    def main_keyframes_serve(self, keyframe_interval_s: float) -> bool:
        """Whether the main stream is read keyframes-only at this keyframe interval (as the capture decides)."""
        return keyframes_serve(keyframe_interval_s, 1.0 / self.analysis_fps, self.main_keyframe_max_s)

    @property
    def tamper_stream(self) -> Stream:
        return "main" if self.main_decoded else "sub"

    @property
    def main_keyframe_max_s(self) -> float:
        """The longest keyframe interval at which the main stream is decoded keyframes-only."""
        return max(1.0 / self.analysis_fps, 1.0 / self.main_min_fps if self.main_min_fps else 0.0)


def entry_min_fps(name: str, detectors: DetectorsConfig | None) -> float | None:
    """The declared min_fps of a camera's detector entry (a configured entry or a registered name)."""
    try:
        kind = detectors.settings(name).type if detectors is not None else name
    except KeyError:
        return None
    spec = specs().get(kind)
    return spec.min_fps if spec is not None else None


def plan_streams(cam: CameraConfig, detectors: DetectorsConfig | None = None) -> StreamPlan:
    """The stream plan of one camera (detectors=None: entries are registered detector names)."""
    rates = {name: entry_min_fps(name, detectors) for name in cam.detectors}
    keyframes_ok = tuple(n for n, r in rates.items() if r is not None)
    need_rate = tuple(n for n, r in rates.items() if r is None)
    if cam.sub_url is not None and need_rate:
        main, sub = keyframes_ok, need_rate
    else:
        main, sub = tuple(cam.detectors), ()
    main_decoded = bool(main) or not sub
    if any(rates[n] is None for n in main):
        main_min_fps: float | None = None
    else:
        main_min_fps = max([TAMPER_MIN_FPS, *(rates[n] or 0.0 for n in main)])
    return StreamPlan(
        main=main, sub=sub, main_decoded=main_decoded, main_min_fps=main_min_fps,
        analysis_fps=cam.analysis_fps, sub_fps=cam.sub_analysis_fps or cam.analysis_fps,
        keyframes_ok=keyframes_ok, need_rate=need_rate, rates=tuple(rates.items()),
    )
