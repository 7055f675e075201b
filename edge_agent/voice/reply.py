"""The crew's reply after a talk, and the bureau's `listen`: a recording from the microphone, sent signed.

A recording listens to the microphone component (drivers/microphone.py) for up to N seconds,
ends early once someone has spoken and then been quiet for `reply_end_silence_s` (a reply,
not a listen), trims leading and trailing silence, encodes Opus with PyAV and publishes one
JSON message on `…/voice` (voice/message.py: signed with the device key, like evidence).
Nothing louder than `silence_dbfs` is sent as `silent`, without audio. One recording at a
time: a second asked for meanwhile is refused as `busy`.

`listen` (the bureau hears the site's sound) is a privacy matter: refused unless
`voice.listen_enabled`, capped at `voice.listen_max_s`, and every use is logged at WARNING
with the command and the bureau key that asked, and acked `queued` then `done` with the id
of the message that carries the audio.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from drivers.microphone import AudioBlock
from edge_agent.actions.speaker_queue import Outcome
from edge_agent.command_dispatch import AckResult
from edge_agent.config.voice import VoiceConfig
from edge_agent.security.bureau_command import Command
from edge_agent.security.keys import Signer
from edge_agent.types import Publish
from edge_agent.voice.audio import encode_opus, trim_silence
from edge_agent.voice.message import VOICE_LEAF, voice_message

log = logging.getLogger(__name__)

FRAME_S = 0.02


class MicrophoneLike(Protocol):
    def add_listener(self, fn: Callable[[AudioBlock], None]) -> None: ...

    def remove_listener(self, fn: Callable[[AudioBlock], None]) -> None: ...

    def health(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class Recording:
    """What came from the microphone: mono float32 at `rate`, and when."""

    samples: np.ndarray
    rate: int
    start: datetime | None
    end: datetime | None


class _Take:
    """Collects blocks on the microphone's thread until long enough (or the reply has ended)."""

    def __init__(self, seconds: float, end_silence_s: float | None, threshold_dbfs: float):
        self.seconds = seconds
        self.end_silence_s = end_silence_s
        self.threshold = 10 ** (threshold_dbfs / 10)
        self.blocks: list[AudioBlock] = []
        self.frames = 0
        self.spoke = False
        self.quiet_s = 0.0
        self.done = threading.Event()

    def __call__(self, block: AudioBlock) -> None:
        if self.done.is_set():
            return
        self.blocks.append(block)
        self.frames += len(block.samples)
        if self.end_silence_s is not None:
            power = float(np.mean(np.square(block.samples, dtype=np.float64))) if len(block.samples) else 0.0
            if power > self.threshold:
                self.spoke, self.quiet_s = True, 0.0
            else:
                self.quiet_s += block.duration_s
            if self.spoke and self.quiet_s >= self.end_silence_s:
                self.done.set()
        if self.blocks and self.frames >= self.seconds * self.blocks[0].rate:
            self.done.set()


class VoiceRecorder:
    """Records replies and listens; publishes each as a signed `voice` message."""

    name = "voice"

    def __init__(self, microphone: MicrophoneLike, publish: Publish, signer: Signer, config: VoiceConfig, *,
                 site: str, device: str, tz: str):
        self.microphone = microphone
        self.publish = publish
        self.signer = signer
        self.config = config
        self.site, self.device, self.tz = site, device, tz
        self._busy = threading.Lock()
        self.sent = 0
        self.failures: dict[str, int] = {}
        self.last: dict[str, Any] | None = None

    # --- recording ---------------------------------------------------------------------------------

    def record(self, seconds: float, *, end_silence_s: float | None) -> Recording:
        """Up to `seconds` from the microphone (blocks the caller); raises RuntimeError if none comes."""
        take = _Take(seconds, end_silence_s, self.config.silence_dbfs)
        self.microphone.add_listener(take)
        try:
            if not take.done.wait(seconds + 3.0) and not take.blocks:
                state = self.microphone.health().get("state")
                raise RuntimeError(f"no sound from the microphone (state {state})")
        finally:
            self.microphone.remove_listener(take)
        blocks = list(take.blocks)
        if not blocks:
            raise RuntimeError("no sound from the microphone")
        rate = blocks[0].rate
        samples = np.concatenate([b.samples for b in blocks])[: int(seconds * rate)]
        return Recording(samples, rate, blocks[0].start, blocks[-1].end)

    def capture(self, kind: str, command: Command, seconds: float, *, end_silence_s: float | None) -> dict[str, Any]:
        """Record, trim, encode, sign and publish; the returned dict is what the ack says of it."""
        if not self._busy.acquire(blocking=False):
            raise BusyError("another recording is running")
        try:
            rec = self.record(seconds, end_silence_s=end_silence_s)
            kept = trim_silence(rec.samples, rec.rate, threshold_dbfs=self.config.silence_dbfs)
            audio = encode_opus(kept, rec.rate, bitrate=self.config.opus_bitrate) if len(kept) else None
            body = voice_message(self.signer, kind=kind, command_id=command.id, site=self.site, device=self.device,
                                 started=rec.start, ended=rec.end, seconds=len(kept) / rec.rate, audio=audio,
                                 tz=self.tz)
            self.publish(VOICE_LEAF, body, kind="voice")
        finally:
            self._busy.release()
        message = body["message"]
        summary = {"voice_id": message["id"], "seconds": message["seconds"], "silent": message["silent"]}
        self.sent += 1
        self.last = {"kind": kind, "command_id": command.id, **summary}
        log.info("voice %s %s for command %s: %.1f s%s", kind, message["id"], command.id, message["seconds"],
                 " (silent)" if message["silent"] else "")
        return summary

    def _failed(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1

    # --- after a talk ------------------------------------------------------------------------------

    def reply_after(self, command: Command, outcome: Outcome, seconds: int) -> None:
        """A talk was heard: record the crew's answer on a thread of its own (TalkHandler.on_played)."""

        def run() -> None:
            try:
                self.capture("reply", command, float(seconds), end_silence_s=self.config.reply_end_silence_s)
            except BusyError:
                self._failed("busy")
                log.warning("reply to talk %s not recorded: another recording is running", command.id)
            except Exception as exc:
                self._failed("error")
                log.error("reply to talk %s not recorded: %s", command.id, exc)

        threading.Thread(target=run, name="voice-reply", daemon=True).start()

    # --- the bureau's listen -------------------------------------------------------------------------

    def listen(self, command: Command) -> AckResult:
        """The `listen` command handler: off by default; logged; acked with the message's id."""
        seconds = int(command.args["seconds"])
        if not self.config.listen_enabled:
            log.warning("listen %s (key %s) refused: voice.listen_enabled is off", command.id, command.key_id)
            return AckResult("refused", "listen_disabled", "live listening is off on this box (voice.listen_enabled)")
        seconds = min(seconds, self.config.listen_max_s)
        log.warning("LISTEN: the bureau (key %s, command %s) records %d s of the site's sound", command.key_id,
                    command.id, seconds)
        final: Future[AckResult] = Future()
        final.set_running_or_notify_cancel()

        def run() -> None:
            try:
                summary = self.capture("listen", command, float(seconds), end_silence_s=None)
                final.set_result(AckResult("done", data=summary))
            except BusyError as exc:
                self._failed("busy")
                final.set_result(AckResult("refused", "busy", str(exc)))
            except Exception as exc:
                self._failed("error")
                log.error("listen %s failed: %s", command.id, exc)
                final.set_result(AckResult("failed", "no_microphone", str(exc)[:200]))

        threading.Thread(target=run, name="voice-listen", daemon=True).start()
        return AckResult("queued", detail=f"recording {seconds} s", data={"seconds": seconds}, final=final)

    # --- component-ish -------------------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        return {"state": "ok", "recording": self._busy.locked(), "sent": self.sent, "failures": dict(self.failures),
                "listen_enabled": self.config.listen_enabled, "last": self.last}


class BusyError(RuntimeError):
    """One recording at a time."""
