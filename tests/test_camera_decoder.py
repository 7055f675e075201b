"""drivers/camera/decoder.py: a decoder per run of fed packets, closed when the run ends.

Real H.264 from libx264 (GOP 10, no B-frames), demuxed by FFmpeg from MP4 (parameter sets in
the header, as RTSP's SDP gives them) and from MPEG-TS read raw (parameter sets only in band).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest

from drivers.camera.decoder import RunDecoder

GOP = 10


def _encode(path: Path, frames: int = 30) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"g": str(GOP), "keyint_min": str(GOP), "bf": "0", "preset": "ultrafast"}
        for i in range(frames):
            grey = np.full((240, 320, 3), 4 + i * 8, np.uint8)  # each frame's brightness says which it is
            for packet in stream.encode(av.VideoFrame.from_ndarray(grey, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.fixture
def mp4(tmp_path: Path) -> Path:
    path = tmp_path / "gop10.mp4"
    _encode(path)
    return path


def _packets(path: Path) -> tuple[Any, list[Any]]:
    container = av.open(str(path))
    stream = container.streams.video[0]
    return stream, [p for p in container.demux(stream) if p.size]


def _index(frame: Any) -> int:
    """Which encoded frame this is, from its brightness."""
    return round((float(frame.to_ndarray(format="gray").mean()) - 4) / 8)


def test_keyframes_alone_each_open_and_close_a_decoder_of_their_own(mp4: Path) -> None:
    stream, packets = _packets(mp4)
    decoder = RunDecoder(stream)
    assert decoder.per_run
    got = []
    for packet in packets:
        if packet.is_keyframe:
            frames = decoder.decode(packet, key=True, alone=True)
            assert len(frames) == 1 and frames[0].key_frame  # out at once, not a packet later
            assert not decoder.running  # the decoder and its frame pool are gone until the next keyframe
            got += frames
    assert [_index(f) for f in got] == [0, 10, 20]
    assert [f.pts for f in got] == [p.pts for p in packets if p.is_keyframe]  # timed like their packets
    assert decoder.runs == 3


def test_a_run_decodes_from_its_keyframe_until_it_ends_and_the_next_keyframe_starts_afresh(mp4: Path) -> None:
    stream, packets = _packets(mp4)
    decoder = RunDecoder(stream)
    got: list[Any] = []
    # The plan's GOP mode: a keyframe and the P-frames up to the frame it needs (here the 4th), then no more.
    for i, packet in enumerate(packets[:GOP + 3]):
        fed = i % GOP <= 3
        if fed:
            got += decoder.decode(packet, key=packet.is_keyframe, alone=False)
            assert decoder.running
        elif decoder.running:
            got += decoder.end()
            assert not decoder.running
    got += decoder.end()
    assert [_index(f) for f in got] == [0, 1, 2, 3, 10, 11, 12]  # every fed picture decoded right
    assert decoder.runs == 2
    # A P-frame fed with no run open (its keyframe never reached this decoder) cannot be decoded.
    assert decoder.decode(packets[5], key=False, alone=False) == [] and not decoder.running


def test_a_stream_without_parameter_sets_in_its_header_keeps_one_decoder(tmp_path: Path) -> None:
    """An in-band-only stream (no extradata): a fresh decoder could not read a later keyframe,
    so the stream's own decoder is kept for the session and told to skip non-key frames."""
    path = tmp_path / "gop10.ts"
    _encode(path)
    _, packets = _packets(path)
    kept = av.CodecContext.create("h264", "r")  # as a stream whose header carried no SPS/PPS
    decoder = RunDecoder(SimpleNamespace(codec_context=kept))
    assert not decoder.per_run
    got = []
    for packet in packets:
        got += decoder.decode(packet, key=packet.is_keyframe, alone=True)
    got += list(kept.decode(None))
    assert [_index(f) for f in got] == [0, 10, 20]  # non-key frames skipped by the decoder itself
    assert decoder.runs == 0
