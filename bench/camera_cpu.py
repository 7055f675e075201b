#!/usr/bin/env python3
"""CPU cost of reading one 1080p25 H.264 camera at 1 analysis frame a second, three ways.

    python bench/camera_cpu.py [--seconds 60] [--gops 25,50]

A pre-encoded 1080p25 file (4 Mbit/s, like a site camera's main stream) is served over RTSP on
127.0.0.1 by edge_agent/demo/rtsp_server.py (GStreamer, no encoding while serving), and read for
`--seconds` by:

  a. the agent's capture path (CamerasComponent: PyAV demux, packet ring for clips, keyframe-only
     or partial-GOP decoding, BGR conversion, motion gate and tamper checks), 1 fps;
  b. a naive OpenCV loop that reads every frame and keeps one a second;
  c. the floor: `ffmpeg -threads 1 -skip_frame nokey -i URL -f null -` (keyframes decoded, nothing else).

CPU seconds are those of each reader's process while streaming (its start-up and imports are
reported apart). Clips are encoded once and cached in ~/.cache/edge-agent-bench. The last line
of output is one JSON object: per GOP, a/c, b/a and the RSS per camera (what a second camera adds
to the agent's process, both rings full; the process's fixed cost of Python, NumPy, PyAV and
OpenCV is reported apart). Targets at GOP 25: a/c <= 1.5, b/a >= 5, RSS <= 60 MB per camera.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-agent-bench"


def clip(gop: int, seconds: int) -> Path:
    """The 1080p25 test clip with a keyframe every `gop` frames (encoded once, then cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"1080p25_gop{gop}_{seconds}s.mp4"
    if path.exists():
        return path
    print(f"encoding {path.name} (once; ~1 min) ...", file=sys.stderr, flush=True)
    tmp = path.with_suffix(".part.mp4")
    subprocess.run([
        "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=25:duration={seconds}",
        "-vf", "noise=alls=6:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0",
        "-b:v", "4M", "-maxrate", "4M", "-bufsize", "8M", "-pix_fmt", "yuv420p", str(tmp),
    ], check=True)
    tmp.replace(path)
    return path


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the readers, each run as its own process -------------------------------------------------

def child_agent(url: str, seconds: float, cameras: int = 1) -> dict[str, Any]:
    import threading

    from edge_agent.config.cameras import CameraConfig
    from edge_agent.video.cameras import CamerasComponent

    # Defaults: 10 s pre + 10 s post clips, so each camera keeps ~30 s of packets.
    configs = [CameraConfig(id="bench" if i == 0 else f"bench{i}", url=url, analysis_fps=1.0) for i in range(cameras)]
    frames: list[float] = []
    first = threading.Event()

    def on_frame(f: Any) -> None:
        if f.frame.camera_id == "bench":
            frames.append(time.monotonic())
            first.set()

    comp = CamerasComponent(configs, "Asia/Shanghai", on_frame, lambda v: None)
    base_rss = rss_mb()
    start_cpu = cpu_self()
    comp.start()
    first.wait(30)
    t0, c0 = time.monotonic(), cpu_self()
    time.sleep(seconds)
    c1 = cpu_self()
    health = comp.health()["cameras"]["bench"]
    comp.stop()
    return {"cpu_s": c1 - c0, "startup_cpu_s": c0 - start_cpu, "frames": sum(1 for t in frames if t >= t0),
            "rss_mb": rss_mb(), "peak_rss_mb": rss_mb("VmHWM"), "base_rss_mb": base_rss,
            "decoded": health["decoded"], "skipped": health["skipped"], "decode_mode": health["decode_mode"],
            "ring_mb": health["ring"]["bytes"] / 2**20 if health.get("ring") else 0.0}


def child_opencv(url: str, seconds: float) -> dict[str, Any]:
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp|analyzeduration;200000|probesize;65536"
    import cv2

    start_cpu = cpu_self()
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise SystemExit("OpenCV cannot open the stream")
    ok, _ = cap.read()
    t0, c0 = time.monotonic(), cpu_self()
    kept, last_keep, n = 0, 0.0, 0
    while time.monotonic() - t0 < seconds:
        ok, image = cap.read()
        if not ok:
            break
        n += 1
        if time.monotonic() - last_keep >= 1.0:
            _ = image.copy()
            kept += 1
            last_keep = time.monotonic()
    c1 = cpu_self()
    cap.release()
    return {"cpu_s": c1 - c0, "startup_cpu_s": c0 - start_cpu, "frames": kept, "read": n,
            "rss_mb": rss_mb(), "peak_rss_mb": rss_mb("VmHWM")}


def run_child(kind: str, url: str, seconds: float, cameras: int = 1) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--url", url, "--seconds", str(seconds),
                          "--cameras", str(cameras)],
                         capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} reader failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run_ffmpeg_floor(url: str, seconds: float) -> dict[str, float]:
    """`ffmpeg -skip_frame nokey` to null; CPU from the kernel's accounting of the finished child."""
    proc = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-nostdin", "-threads", "1", "-skip_frame", "nokey", "-rtsp_transport", "tcp",
         "-i", url, "-t", str(seconds), "-f", "null", "-"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def bench_gop(gop: int, seconds: float, memory: bool = True) -> dict[str, Any]:
    from rtsp_helpers import RtspServer, free_port

    path = clip(gop, int(seconds) + 20)
    server = RtspServer(free_port(), "--file", str(path)).start()
    try:
        floor = run_ffmpeg_floor(server.url, seconds)
        print(f"GOP {gop}: c floor     {floor['cpu_s']:.2f} CPU s", file=sys.stderr, flush=True)
        agent = run_child("agent", server.url, seconds)
        print(f"GOP {gop}: a agent     {agent['cpu_s']:.2f} CPU s  {agent}", file=sys.stderr, flush=True)
        naive = run_child("opencv", server.url, seconds)
        print(f"GOP {gop}: b opencv    {naive['cpu_s']:.2f} CPU s  {naive}", file=sys.stderr, flush=True)
        # RSS per camera: what a second camera adds to the process once both rings are full (40 s > 30 s ring).
        two = run_child("agent", server.url, 40.0, cameras=2) if memory else None
        if two:
            print(f"GOP {gop}: 2 cameras   peak RSS {two['peak_rss_mb']:.1f} MB", file=sys.stderr, flush=True)
    finally:
        server.kill()
    return {
        "a_agent_cpu_s": round(agent["cpu_s"], 3), "b_opencv_cpu_s": round(naive["cpu_s"], 3),
        "c_floor_cpu_s": round(floor["cpu_s"], 3),
        "a_over_c": round(agent["cpu_s"] / floor["cpu_s"], 2), "b_over_a": round(naive["cpu_s"] / agent["cpu_s"], 1),
        "rss_mb_per_camera": round(two["peak_rss_mb"] - agent["peak_rss_mb"], 1) if two else None,
        "rss_mb_process_1_camera": round(agent["peak_rss_mb"], 1),
        "rss_mb_process_imports_only": round(agent["base_rss_mb"], 1),
        "rss_mb_first_camera_over_imports": round(agent["peak_rss_mb"] - agent["base_rss_mb"], 1),
        "agent_frames": agent["frames"], "agent_decode_mode": agent["decode_mode"],
        "agent_decoded_share": round(agent["decoded"] / max(1, agent["decoded"] + agent["skipped"]), 3),
        "agent_startup_cpu_s": round(agent["startup_cpu_s"], 2), "ring_mb": round(agent["ring_mb"], 1),
        "opencv_frames_read": naive["read"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--gops", default="25,50", help="keyframe intervals (frames at 25 fps) to measure")
    parser.add_argument("--child", choices=("agent", "opencv"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cameras", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_agent(args.url, args.seconds, args.cameras) if args.child == "agent" else \
            child_opencv(args.url, args.seconds)
        print(json.dumps(result))
        return 0
    results: dict[str, Any] = {f"gop{g}": bench_gop(int(g), args.seconds, memory=g == "25")
                               for g in args.gops.split(",")}
    g25 = results.get("gop25")
    if isinstance(g25, dict):
        results["targets_met_gop25"] = {
            "a_over_c<=1.5": g25["a_over_c"] <= 1.5, "b_over_a>=5": g25["b_over_a"] >= 5,
            "rss<=60MB": g25["rss_mb_per_camera"] is not None and g25["rss_mb_per_camera"] <= 60,
        }
    results["cpus"] = os.cpu_count()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
