"""Capture against a real GStreamer RTSP server on 127.0.0.1: frames, reconnects, freezes, clips, snapshots.

The server's `--clock` stream paints the wall-clock time into every frame, so a decoded frame
says when it was made: frame times and clip contents are checked against that, not assumed.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from rtsp_helpers import RtspServer, free_port, read_barcode, require_ffmpeg, require_rtsp

from drivers.camera import CameraCapture, CaptureSettings, PacketRing, StreamEvent
from drivers.camera.osd import draw_watermark
from drivers.camera.plan import decode_cost
from drivers.camera.ring import RingPacket, StreamInfo
from drivers.types import Frame
from edge_agent.config.cameras import CameraConfig
from edge_agent.types import Violation
from edge_agent.video.cameras import RING_MARGIN_S, CameraFrame, CamerasComponent


@pytest.fixture
def clock_server() -> Iterator[RtspServer]:
    require_rtsp()
    server = RtspServer(free_port(), "--clock", "--fps", "15", "--gop", "15").start()
    yield server
    server.kill()


class Sink:
    """Collects frames and events from capture threads."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.events: list[StreamEvent] = []
        self.cond = threading.Condition()

    def frame(self, frame: Frame) -> None:
        with self.cond:
            self.frames.append(frame)
            self.cond.notify_all()

    def event(self, event: StreamEvent) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_frames(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.frames) >= n, timeout)


def test_frames_flow_at_the_analysis_rate_from_keyframes_only(clock_server: RtspServer) -> None:
    sink = Sink()
    cap = CameraCapture(CaptureSettings("cam1", clock_server.url, analysis_fps=1.0), sink.frame, sink.event)
    cap.start()
    try:
        assert sink.wait_frames(3, 15), f"frames did not flow: {cap.health()}"
        warm = cap.health()  # the GOP length is known from here on
        assert sink.wait_frames(7, 10)
        health = cap.health()
    finally:
        cap.stop()
    frames = sink.frames
    assert frames[0].image.shape == (240, 320, 3)
    gaps = [(b.time - a.time).total_seconds() for a, b in itertools.pairwise(frames)]
    assert all(0.8 < g < 1.3 for g in gaps), gaps  # one a second, not every frame
    # Keyframe every second = analysis rate: only keyframes reach the decoder.
    assert health.decode_mode == "keyframes"
    assert all(f.keyframe for f in frames[1:])
    decoded, skipped = health.decoded - warm.decoded, health.skipped - warm.skipped
    assert decoded == health.frames_out - warm.frames_out, (warm, health)  # one decode per analysis frame
    assert skipped >= 10 * decoded, (warm, health)  # 14 of 15 packets never reach the decoder
    # The frame's capture time matches the time painted into it (latency of the loopback path only).
    for f in frames:
        painted = read_barcode(f.image)
        assert -0.05 <= f.time.timestamp() - painted <= 0.5, (f.time, painted)
    assert health.state == "ok" and health.connected and health.reconnects == 0


def test_long_gop_decodes_only_up_to_the_needed_frame() -> None:
    require_rtsp()
    server = RtspServer(free_port(), "--clock", "--fps", "15", "--gop", "30").start()  # keyframe every 2 s
    sink = Sink()
    cap = CameraCapture(CaptureSettings("cam1", server.url, analysis_fps=1.0), sink.frame)
    cap.start()
    try:
        # Counted once the GOP length is known: before, the packets ahead of the first keyframe are
        # skipped and the first GOP is read keyframes-only, so how far the start lands would count.
        assert sink.wait_frames(4, 20)
        before = cap.health()
        assert sink.wait_frames(10, 20)
        health = cap.health()
    finally:
        cap.stop()
        server.kill()
    assert before.gop_frames == 30 and health.decode_mode == "gop"
    assert not all(f.keyframe for f in sink.frames[2:])  # the mid-GOP frame is a P-frame
    # Per 2 s GOP (30 packets): the keyframe and the 15 P-frames up to the 1 s mark, not the rest.
    # The server stamps frames as it pushes them (do-timestamp), so on a loaded machine its GOP of 30
    # frames can last longer than 2 s and then holds a later due frame: the most the plan may decode
    # follows the (longest) keyframe interval the capture measured (decode_cost: the keyframe and every
    # frame up to the last due one); at least the keyframe and the frames up to the 1 s mark.
    decoded, skipped = health.decoded - before.decoded, health.skipped - before.skipped
    share = decoded / (decoded + skipped)
    gop_s = health.keyframe_interval_s
    assert gop_s is not None and health.gop_frames
    due = max(1, math.ceil(gop_s - 0.05))  # analysed frames per GOP at 1 fps
    most = decode_cost(1.0, gop_s, health.gop_frames / gop_s) * due / health.gop_frames
    assert 0.35 < share <= min(1.0, most + 0.1), (share, most, before, health)


def test_reconnects_within_10_s_after_the_server_restarts(clock_server: RtspServer) -> None:
    sink = Sink()
    cap = CameraCapture(CaptureSettings("cam1", clock_server.url, analysis_fps=2.0, watchdog_s=3.0,
                                        lost_after_s=2.0), sink.frame, sink.event)
    cap.start()
    try:
        assert sink.wait_frames(2, 15)
        clock_server.kill()
        time.sleep(4.0)  # down long enough for the back-off to grow
        assert cap.health().state == "down"
        assert any(e.kind == "lost" for e in sink.events)
        before = len(sink.frames)
        clock_server.start()
        restarted = time.monotonic()
        assert sink.wait_frames(before + 1, 10.0), "no frame within 10 s of the restart"
        took = time.monotonic() - restarted
        health = cap.health()
    finally:
        cap.stop()
    assert took <= 10.0
    assert health.reconnects >= 1 and health.state == "ok"
    assert [e.kind for e in sink.events][-1] == "connected"


def _component(
    url: str, clip_dir: Path, **extra: object
) -> tuple[CamerasComponent, list[Violation], list[CameraFrame]]:
    cfg = CameraConfig.model_validate({
        "id": "cam1", "url": url, "analysis_fps": 2.0, "clip_pre_s": 3.0, "clip_post_s": 2.0,
        "osd_text": "1号塔吊 南侧", **extra,
    })
    violations: list[Violation] = []
    frames: list[CameraFrame] = []
    comp = CamerasComponent([cfg], "Asia/Shanghai", frames.append, violations.append,
                            site="工地A", device="box1", clip_dir=clip_dir)
    return comp, violations, frames


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_freeze_is_reported_within_the_watchdog_time(clock_server: RtspServer, tmp_path: Path) -> None:
    watchdog = 2.0
    comp, violations, frames = _component(clock_server.url, tmp_path, watchdog_s=watchdog,
                                          open_timeout_s=2.0, tamper={"enabled": True, "lost_after_s": 30})
    comp.start()
    try:
        assert _wait(lambda: len(frames) >= 2, 15)
        clock_server.freeze()  # SIGSTOP: the TCP connection stays open, nothing more arrives
        frozen_at = time.monotonic()
        # Packets already in the socket buffers still arrive after SIGSTOP (seconds of them on a loaded
        # machine), so the watchdog's promise is judged from the last packet that arrived.
        assert _wait(lambda: any(v.kind == "device_fault" for v in violations), watchdog + 4), comp.health()
        took = time.monotonic() - frozen_at
        cam = comp.health()["cameras"]["cam1"]
        assert cam["frozen"] and cam["state"] in ("degraded", "down")
        started = next(v for v in violations if v.kind == "device_fault")
        assert started.state == "started" and started.figures["reason"] == "stream_frozen"
        silent = started.time.timestamp() - cam["last_packet"]
        # Reported once `watchdog` seconds pass without a packet (checked every 0.2 s): not before, not much after.
        assert watchdog - 0.05 <= silent <= watchdog + 0.5, silent
        assert took <= watchdog + 4, took
        clock_server.thaw()
        assert _wait(lambda: any(v.kind == "device_fault" and v.state == "ended" for v in violations), 15)
        assert comp.health()["cameras"]["cam1"]["state"] == "ok"
    finally:
        clock_server.thaw()
        comp.stop()


def _ffprobe(path: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
                         capture_output=True, text=True, check=True, timeout=30)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_clip_holds_the_pre_event_seconds_and_plays(clock_server: RtspServer, tmp_path: Path) -> None:
    require_ffmpeg()
    comp, violations, frames = _component(clock_server.url, tmp_path)
    comp.start()
    try:
        assert _wait(lambda: len(frames) >= 2, 15)
        time.sleep(4.0)  # more than clip_pre_s recorded
        around = datetime.now(timezone.utc)
        info = comp.clip_info("cam1", around)  # waits for the 2 post seconds
        returned = datetime.now(timezone.utc)
    finally:
        comp.stop()
    t0 = around.timestamp()
    assert (returned - around).total_seconds() >= 2.0  # it waited for the post-event seconds
    path = info.path
    assert path.exists() and path.suffix == ".mp4"

    # It plays: ffmpeg decodes every frame without a single error.
    decode = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert decode.returncode == 0 and decode.stderr.strip() == "", decode.stderr
    probe = _ffprobe(path, "-show_entries", "format=start_time,duration:stream=codec_name,nb_frames")
    assert probe["streams"][0]["codec_name"] == "h264"
    duration = float(probe["format"]["duration"])
    assert duration >= 3.0 + 2.0 - 0.2, probe  # pre + post seconds, at least
    first_frame = _ffprobe(path, "-read_intervals", "%+#1", "-show_entries", "frame=key_frame,pts_time",
                           "-select_streams", "v")["frames"][0]
    assert first_frame["key_frame"] == 1 and float(first_frame["pts_time"]) == 0.0

    # Content: the first frame was painted at or before the event minus pre seconds (the clip opens at
    # the keyframe before it, at most one GOP = 1 s earlier); the last one after the event plus post.
    with av.open(str(path)) as container:
        images = [(float(f.time or 0.0), f.to_ndarray(format="bgr24")) for f in container.decode(video=0)]
    painted_first = read_barcode(images[0][1])
    painted_last = read_barcode(images[-1][1])
    assert t0 - 3.0 - 1.0 - 0.3 <= painted_first <= t0 - 3.0 + 0.05, (painted_first - t0)
    assert painted_last >= t0 + 2.0 - 0.15, (painted_last - t0)
    # The clip's own timestamps follow real time: pts span == painted span.
    assert abs((images[-1][0] - images[0][0]) - (painted_last - painted_first)) < 0.15
    assert abs(info.start - painted_first) < 0.5
    assert not violations


def test_a_held_clip_cut_late_still_opens_at_its_start_and_then_lets_the_video_go(
        clock_server: RtspServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An evidence job waiting behind others: the ring (pre 3 s + the margin) keeps the held clip's video
    past its seconds until the clip is cut, and no longer."""
    comp, _, frames = _component(clock_server.url, tmp_path)
    comp.start()
    try:
        assert _wait(lambda: len(frames) >= 2, 15)
        time.sleep(4.0)
        around = datetime.now(timezone.utc)
        t0 = around.timestamp()
        comp.hold_clip("cam1", around)
        ring_s = 3.0 + RING_MARGIN_S
        time.sleep(ring_s + 4.0)  # the job comes round long after the ring's seconds
        ring = comp._cameras["cam1"].main.ring
        assert ring is not None and ring.pinned() == [t0 - 3.0]
        assert (ring.oldest() or 0.0) <= t0 - 3.0  # still there
        info = comp.clip_info("cam1", around)
        assert ring.pinned() == []
        assert "late" not in caplog.text
        # Reported long after its moment, a clip cannot open at its start: the log says by how much.
        long_ago = around - timedelta(seconds=60)
        comp.hold_clip("cam1", long_ago)
        assert "will open" in caplog.text and "late" in caplog.text
        ring.unpin(long_ago.timestamp() - 3.0)
        time.sleep(1.5)  # a GOP later the ring is back to its seconds
        assert (ring.oldest() or 0.0) > t0 + 4.0 - 1.1
    finally:
        comp.stop()
    with av.open(str(info.path)) as container:
        images = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert t0 - 3.0 - 1.0 - 0.3 <= read_barcode(images[0]) <= t0 - 3.0 + 0.05
    assert read_barcode(images[-1]) >= t0 + 2.0 - 0.15


def _feed(ring: PacketRing, info: StreamInfo, start: float, seconds: int, fps: int = 5, gop: int = 5) -> None:
    """`seconds` of 1-kB packets from wall time `start`, a keyframe every `gop` packets."""
    for i in range(seconds * fps):
        ring.add(info, RingPacket(start + i / fps, i, i, i % gop == 0, bytes(1024)))


def test_a_pinned_start_outlives_the_ring_seconds_until_unpinned_and_a_stale_pin_expires() -> None:
    info = StreamInfo("h264", Fraction(1, 90000), 16, 16, b"", b"")
    ring = PacketRing(seconds=5.0, max_pin_s=60.0)
    _feed(ring, info, 1000.0, 10)
    assert ring.oldest() == 1004.0  # the GOP holding newest - 5 s (1004.8)
    ring.pin(1005.0)
    ring.pin(1005.0)  # two clips owed from there
    _feed(ring, info, 1010.0, 20)
    assert ring.oldest() == 1005.0 and ring.pinned() == [1005.0, 1005.0]
    ring.unpin(1005.0)
    _feed(ring, info, 1030.0, 1)
    assert ring.oldest() == 1005.0  # one clip still owed
    ring.unpin(1005.0)
    _feed(ring, info, 1031.0, 1)
    assert ring.oldest() == 1026.0 and ring.pinned() == []
    ring.pin(1027.0)  # a job that never cuts its clip: dropped once older than max_pin_s
    _feed(ring, info, 1032.0, 60)
    assert ring.pinned() == [] and ring.oldest() == 1086.0
    small = PacketRing(seconds=5.0, max_bytes=20 * 1024)  # the byte cap wins over a pin
    small.pin(2000.0)
    _feed(small, info, 2000.0, 10)
    assert small.stats()["bytes"] <= 20 * 1024 + 5 * 1024


def test_the_small_grey_from_the_luma_plane_matches_the_one_from_the_bgr_picture() -> None:
    """Motion and tamper read the capture's luma-plane copy: it must be the picture small_grey makes."""
    from drivers.camera.luma import small_luma
    from edge_agent.video.prep import small_grey

    rng = np.random.default_rng(3)
    bgr = cv2.GaussianBlur(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8), (0, 0), 9)
    cv2.rectangle(bgr, (200, 150), (900, 700), (20, 40, 230), -1)  # colour, edges, dark and bright parts
    cv2.rectangle(bgr, (1100, 300), (1700, 900), (250, 250, 250), -1)
    cv2.rectangle(bgr, (100, 800), (600, 1050), (5, 5, 5), -1)
    for fmt in ("yuv420p", "yuvj420p"):
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=fmt)
        luma = small_luma(frame, 320)
        assert luma is not None and luma.shape == (180, 320) and luma.dtype == np.uint8
        diff = np.abs(luma.astype(int) - small_grey(frame.to_ndarray(format="bgr24")).astype(int))
        assert diff.mean() < 1.5 and diff.max() <= 8, (fmt, diff.mean(), diff.max())
    assert small_luma(av.VideoFrame.from_ndarray(bgr, format="bgr24"), 320) is None  # not planar YUV: none


def test_i420_planes_give_the_picture_pyav_gives_and_odd_formats_are_left_to_pyav() -> None:
    """The latest frame is kept as I420 planes and made BGR by OpenCV: the same picture as PyAV's
    bgr24 conversion, for video-range and full-range (JPEG) streams alike."""
    from drivers.camera.picture import i420_planes, i420_to_bgr

    rng = np.random.default_rng(5)
    bgr = cv2.GaussianBlur(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), (0, 0), 5)
    cv2.rectangle(bgr, (100, 100), (500, 400), (20, 40, 230), -1)
    cv2.rectangle(bgr, (700, 200), (1200, 600), (250, 250, 250), -1)
    cv2.rectangle(bgr, (50, 500), (400, 700), (5, 5, 5), -1)
    for fmt in ("yuv420p", "yuvj420p"):
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=fmt)
        planes = i420_planes(frame)
        assert planes is not None and planes.shape == (1080, 1280) and planes.dtype == np.uint8
        ours = i420_to_bgr(planes)
        diff = np.abs(ours.astype(int) - frame.to_ndarray(format="bgr24").astype(int))
        assert diff.mean() < 1.5 and diff.max() <= 4, (fmt, diff.mean(), diff.max())
        assert np.abs(ours.astype(int) - bgr.astype(int)).mean() < 4  # and the picture that was encoded
    assert i420_planes(av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv444p")) is None
    assert i420_planes(av.VideoFrame.from_ndarray(bgr[:719, :1279], format="bgr24").reformat(format="yuv420p")) is None


def test_the_latest_frame_keeps_its_picture_as_i420_at_half_the_memory(clock_server: RtspServer) -> None:
    """Between analyses a camera holds its latest picture for snapshots as I420 planes, not BGR."""
    from drivers.camera.picture import frame_bgr

    sink = Sink()
    cap = CameraCapture(CaptureSettings("cam1", clock_server.url, analysis_fps=2.0), sink.frame)
    cap.start()
    try:
        assert sink.wait_frames(2, 15), f"frames did not flow: {cap.health()}"
        with sink.cond:
            latest = cap.latest_frame()
            handed = sink.frames[-1]
    finally:
        cap.stop()
    assert latest is not None and latest.time == handed.time
    assert latest.image is None and latest.yuv is not None
    assert latest.yuv.nbytes * 2 == handed.image.nbytes  # 3 MB at 1080p, not 6
    picture = frame_bgr(latest)
    assert picture.shape == handed.image.shape and picture is not handed.image
    assert np.array_equal(picture, handed.image)  # the analysis picture was made from the same planes
    assert abs(read_barcode(picture) - latest.time.timestamp()) <= 0.5


def test_snapshot_carries_the_watermark(clock_server: RtspServer, tmp_path: Path) -> None:
    from io import BytesIO

    from PIL import Image

    comp, _, frames = _component(clock_server.url, tmp_path)
    comp.start()
    try:
        assert _wait(lambda: len(frames) >= 2, 15)
        jpeg = comp.snapshot("cam1", "扬尘超标 dust_over_limit")
        latest = frames[-1].frame
    finally:
        comp.stop()
    assert jpeg[:2] == b"\xff\xd8"
    snap = np.asarray(Image.open(BytesIO(jpeg)).convert("RGB")).astype(np.int16)
    plain = latest.image[:, :, ::-1].astype(np.int16)
    assert snap.shape == plain.shape
    local = latest.time.astimezone(comp.tz)
    expected = np.asarray(draw_watermark(latest.image, [
        "工地A box1 cam1", f"{local:%Y-%m-%d %H:%M:%S} +0800 (Asia/Shanghai)", "扬尘超标 dust_over_limit",
        "1号塔吊 南侧"])).astype(np.int16)
    band = (slice(0, 60), slice(0, 150))
    # The stamp is there (the band differs from the bare frame) and it is the expected stamp:
    # same site, device, camera, frame time and violation (matches a reference rendering up to JPEG loss).
    assert np.abs(snap[band] - plain[band]).mean() > 20
    assert np.abs(snap[band] - expected[band]).mean() < 6
    assert np.abs(snap[200:, 200:] - plain[200:, 200:]).mean() < 6  # the rest of the picture is untouched


def _garbage_server() -> tuple[int, Callable[[], None]]:
    """A TCP port that answers anything with noise: a misconfigured URL pointing at the wrong service."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()

    def close() -> None:
        stop.set()
        sock.close()

    return int(sock.getsockname()[1]), close


def test_dead_and_garbage_cameras_are_faults_and_the_others_keep_working(
    clock_server: RtspServer, tmp_path: Path
) -> None:
    garbage_port, close_garbage = _garbage_server()
    fast = {"lost_after_s": 1.0}
    configs = [
        CameraConfig.model_validate({"id": "live", "url": clock_server.url, "analysis_fps": 2.0}),
        CameraConfig.model_validate({"id": "dead", "url": f"rtsp://127.0.0.1:{free_port()}/cam", "tamper": fast}),
        CameraConfig.model_validate({"id": "junk", "url": f"rtsp://127.0.0.1:{garbage_port}/cam", "tamper": fast,
                                     "open_timeout_s": 2.0}),
    ]
    violations: list[Violation] = []
    frames: list[CameraFrame] = []
    comp = CamerasComponent(configs, "Asia/Shanghai", frames.append, violations.append)
    comp.start()
    try:
        assert _wait(lambda: {v.source for v in violations} >= {"dead", "junk"}, 10), violations
        assert _wait(lambda: sum(f.frame.camera_id == "live" for f in frames) >= 4, 10)
        health = comp.health()
    finally:
        comp.stop()
        close_garbage()
    for cam in ("dead", "junk"):
        v = next(v for v in violations if v.source == cam)
        assert (v.kind, v.state, v.figures["reason"]) == ("device_fault", "started", "stream_lost")
        assert health["cameras"][cam]["state"] == "down" and health["cameras"][cam]["last_error"]
    assert health["cameras"]["live"]["state"] == "ok"
    assert health["state"] == "down"  # the worst camera sets the component's state
    assert not [v for v in violations if v.source == "live"]
