"""Push-to-talk from the console: the operator's recording, signed and sent as a `talk` command.

The browser records with MediaRecorder; Chromium writes WebM/Opus (Firefox Ogg/Opus), and a
box takes Ogg/Opus or WAV only, so WebM is decoded and encoded again as Ogg/Opus (PyAV;
a few kB a second, ~20 ms of CPU). The command carries the audio's size and SHA-256 (the
agent's own `talk_args`, so the box checks exactly what was signed); audio over 48 kB goes in
parts on `cmd/talk/<sha256>/<i>`, published before the command. The audit log and the
command history keep the talk without its audio.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np

from bureau.commands import CommandError, CommandSender
from edge_agent.security.bureau_command import MAX_TALK_BYTES, talk_args, talk_oversize, talk_part_leaf
from edge_agent.security.canonical import canonical_bytes

MAX_UPLOAD_BYTES = 2_000_000  # what the browser may upload (before re-encoding); 30 s of WebM is ~200 kB
MAX_SECONDS = 30.0


def to_box_audio(data: bytes) -> tuple[bytes, str]:
    """(audio, format) a box plays: Ogg and WAV as they are, WebM/Matroska re-encoded as Ogg/Opus."""
    if data[:4] == b"OggS":
        return data, "ogg"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return data, "wav"
    if data[:4] != b"\x1a\x45\xdf\xa3":
        raise CommandError("the recording is neither Ogg, WAV nor WebM")
    import av

    from edge_agent.voice.audio import OPUS_RATE, encode_opus

    chunks: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r", format="matroska") as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=OPUS_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                if sum(len(c) for c in chunks) > (MAX_SECONDS + 1) * OPUS_RATE:
                    raise CommandError(f"the recording is longer than {MAX_SECONDS:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except CommandError:
        raise
    except Exception as exc:
        raise CommandError(f"the recording cannot be decoded: {exc}"[:200]) from None
    if not chunks:
        raise CommandError("the recording holds no sound")
    return encode_opus(np.concatenate(chunks).astype(np.float32), OPUS_RATE), "ogg"


def send_talk(sender: CommandSender, user: str, site: str, device: str, recording: bytes) -> dict[str, Any]:
    """Sign and publish a talk (parts first); record it, without its audio, in the history and audit log."""
    audio, fmt = to_box_audio(recording)
    if len(audio) > MAX_TALK_BYTES:
        raise CommandError(f"{len(audio)} bytes of audio, a talk carries at most {MAX_TALK_BYTES}")
    args, parts = talk_args(audio, fmt)
    too_big = talk_oversize(args)
    if too_big:
        raise CommandError(too_big)
    signed = sender.sign(site, device, "talk", args)
    shown = {k: v for k, v in args.items() if k not in ("data", "parts")}
    sender.store.add_command({**signed, "args": {**shown, "parts": len(parts)}}, user)
    base = f"{sender.prefix}/{site}/{device}"
    ok = all(sender.publish(f"{base}/{talk_part_leaf(args['sha256'], i)}", part) for i, part in enumerate(parts))
    ok = ok and sender.publish(f"{base}/cmd/talk", canonical_bytes(signed))
    sender.store.audit(user, "command", f"{site}/{device}", f"talk {signed['id']} ({len(audio)} bytes {fmt}, "
                       f"{len(parts)} parts) {'published' if ok else 'NOT published (broker unreachable)'}",
                       time.time())
    if not ok:
        raise CommandError("the broker did not take the talk (not connected?); it was recorded, not sent")
    return signed
