#!/usr/bin/python3
"""A loopback RTSP server for tests and benches: GStreamer's gst-rtsp-server via the system Python.

Run with /usr/bin/python3 (the `gi` bindings live there, not in the venv):

    rtsp_server.py --port 8554 --file clip.mp4        # serve a pre-encoded H.264 MP4, no encoding cost
    rtsp_server.py --port 8554 --clock --gop 15      # live: a wall-clock barcode, encoded with x264

The `--clock` stream paints, in its top half, the wall-clock time (Unix milliseconds, 40 bits,
8 px per bit, most significant bit first) at which each frame was made, so a test can read
from any decoded frame when it was produced. The bottom half is a moving texture.
Prints `READY rtsp://127.0.0.1:PORT/PATH` on stdout once it listens. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

BITS = 40
WIDTH, HEIGHT = 320, 240  # the --clock stream: 8 px per bit across the width


def clock_frame(ms: int, n: int) -> bytes:
    """One I420 frame: the barcode of `ms` on top, a texture moving with frame number `n` below."""
    row = bytearray()
    for bit in range(BITS - 1, -1, -1):
        row += (b"\xeb" if (ms >> bit) & 1 else b"\x10") * (WIDTH // BITS)
    top = bytes(row) * (HEIGHT // 2)
    base = bytes((x * 7 + (x // 13) * 50) & 0xFF for x in range(WIDTH * 2))
    shift = (n * 3) % WIDTH
    bottom = b"".join(base[(shift + y * 5) % WIDTH:][:WIDTH] for y in range(HEIGHT // 2))
    chroma = b"\x80" * (WIDTH // 2 * HEIGHT // 2 * 2)
    return top + bottom + chroma


class ClockFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, fps: int, gop: int):
        super().__init__()
        self.fps, self.gop = fps, gop

    def do_create_element(self, url):  # GStreamer's virtual method
        caps = f"video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate={self.fps}/1"
        pipeline = Gst.parse_launch(
            f"appsrc name=src is-live=true do-timestamp=true format=time caps={caps} ! "
            f"x264enc tune=zerolatency speed-preset=ultrafast bitrate=800 key-int-max={self.gop} "
            f"! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1"
        )
        src = pipeline.get_by_name("src")
        state: dict[str, Any] = {"n": 0, "source": None}

        def push() -> bool:
            data = clock_frame(int(time.time() * 1000) & ((1 << BITS) - 1), state["n"])
            state["n"] += 1
            return src.emit("push-buffer", Gst.Buffer.new_wrapped(data)) == Gst.FlowReturn.OK

        def start(*_args) -> None:
            if state["source"] is None:
                state["source"] = GLib.timeout_add(int(1000 / self.fps), push)

        src.connect("need-data", start)
        return pipeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/cam")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="H.264 MP4 to serve as it is (no re-encoding)")
    source.add_argument("--clock", action="store_true", help="live wall-clock barcode stream")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--gop", type=int, default=15)
    parser.add_argument("--udp", action="store_true", help="allow UDP transport too (default: TCP only)")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    if args.clock:
        factory = ClockFactory(args.fps, args.gop)
        factory.set_shared(True)
    else:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            f'( filesrc location="{args.file}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )'
        )
        factory.set_shared(False)  # each client gets the file from its start
    if not args.udp:
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
