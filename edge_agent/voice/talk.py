"""The bureau's `talk`: an officer's recorded voice, played on site above every other announcement.

The command (verified by the dispatcher: signature, expiry, nonce) carries the audio's size
and SHA-256, and the audio itself or the hash of each part (security/bureau_command.py).
The handler assembles and checks the audio (voice/parts.py), decodes it with PyAV straight
to the speaker's rate (voice/audio.py), and queues it at `Priority.TALK`. Acks: `accepted`,
`queued`, then `played` with the times the first sample reached the speaker and the last
ended, or `failed` (no_device, expired, ...); a talk whose audio is incomplete, does not match
its hash, cannot be decoded or runs over 30 s is `refused` with that reason (at once, or as
the final ack when it had to wait for parts). Once played,
the crew's reply is recorded if the box has a microphone (voice/reply.py).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Protocol

from edge_agent.actions.clips import Clip
from edge_agent.actions.speaker_queue import Done, Outcome
from edge_agent.command_dispatch import AckResult, played_ack, speaker_deadline
from edge_agent.config.voice import VoiceConfig
from edge_agent.security.bureau_command import MAX_TALK_S, Command
from edge_agent.voice.audio import AudioError, decode_audio
from edge_agent.voice.parts import PartsError, TalkParts

log = logging.getLogger(__name__)


class TalkSpeaker(Protocol):
    """What a talk needs of edge_agent.actions.Actions."""

    @property
    def device_rate(self) -> int | None: ...

    def talk(self, clip: Clip, *, deadline: float | None = None, done: Done | None = None) -> None: ...


class TalkHandler:
    """The `talk` command handler (`dispatcher.register("talk", handler)`)."""

    def __init__(self, speaker: TalkSpeaker, parts: TalkParts, config: VoiceConfig, *,
                 now: Callable[[], datetime], skew_s: float = 0.0,
                 on_played: Callable[[Command, Outcome, int], None] | None = None):
        """`on_played(command, outcome, reply_s)`: a talk was heard; record the reply (voice/reply.py)."""
        self.speaker = speaker
        self.parts = parts
        self.config = config
        self.now = now
        self.skew_s = skew_s
        self.on_played = on_played
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def __call__(self, command: Command) -> AckResult:
        """Audio inline or all parts in: decode and queue now. Parts still missing: answer `queued` at
        once and wait for them on a thread of its own, so the dispatcher's workers (relays, shouts)
        never wait on a talk's parts; the final ack is then `played`, `failed` or `refused`."""
        args = command.args
        if "data" in args:
            audio: bytes | None = base64.b64decode(args["data"])  # size and hash were checked with the signature
        else:
            try:
                audio = self.parts.collect(str(args["sha256"]), list(args["parts"]), int(args["size"]), 0.0)
            except PartsError as exc:
                if exc.reason != "incomplete_audio":
                    return self._refused(command, exc.reason, exc.detail)
                audio = None
        if audio is not None:
            return self._play(command, audio)
        final: Future[AckResult] = Future()
        final.set_running_or_notify_cancel()
        threading.Thread(target=self._await_parts, args=(command, final), name="talk-parts", daemon=True).start()
        return AckResult("queued", detail=f"waiting for {len(args['parts'])} part(s) of audio", final=final)

    def _await_parts(self, command: Command, final: Future[AckResult]) -> None:
        args = command.args
        wait = min(self.config.parts_timeout_s,
                   max(0.0, (command.expires_at - self.now()).total_seconds() + self.skew_s))
        try:
            audio = self.parts.collect(str(args["sha256"]), list(args["parts"]), int(args["size"]), wait)
            result = self._play(command, audio, final)
        except PartsError as exc:
            result = self._refused(command, exc.reason, exc.detail)
        except Exception as exc:  # a bug must still answer the bureau
            log.exception("talk %s failed", command.id)
            result = AckResult("failed", "internal_error", type(exc).__name__)
        if result.final is None and not final.done():
            final.set_result(result)

    def _refused(self, command: Command, reason: str, detail: str) -> AckResult:
        self._count(reason)
        log.warning("talk %s refused: %s: %s", command.id, reason, detail)
        return AckResult("refused", reason, detail[:200])

    def _play(self, command: Command, audio: bytes, final: Future[AckResult] | None = None) -> AckResult:
        """Decode and queue; `queued` with the future the speaker completes (`final`, or a new one)."""
        args = command.args
        sha, size, fmt = str(args["sha256"]), int(args["size"]), str(args["format"])
        try:
            pcm = decode_audio(audio, fmt, rate=self.speaker.device_rate, max_s=MAX_TALK_S)
        except AudioError as exc:
            return self._refused(command, exc.reason, exc.detail)
        reply_s = min(int(args.get("reply_s", self.config.reply_after_talk_s)), self.config.reply_after_talk_s)
        if final is None:
            final = Future()
            final.set_running_or_notify_cancel()
        future = final

        def done(outcome: Outcome) -> None:
            self._count(outcome.result)
            if not future.done():
                future.set_result(played_ack(outcome))
            if outcome.result == "played" and self.on_played is not None and reply_s > 0:
                try:
                    self.on_played(command, outcome, reply_s)
                except Exception:
                    log.exception("talk %s: starting the reply failed", command.id)

        clip = Clip(f"talk:{sha[:16]}", f"talk {command.id}", pcm, "talk", Path(f"talk-{sha[:16]}.{fmt}"))
        try:
            self.speaker.talk(clip, deadline=speaker_deadline(command, self.now, self.skew_s), done=done)
        except ValueError as exc:  # ActionError: the speaker is disabled
            return AckResult("failed", "action_error", str(exc)[:200])
        log.info("talk %s: %.1f s of %s audio (%d bytes) queued", command.id, pcm.duration_s, fmt, size)
        return AckResult("queued", detail=f"{pcm.duration_s:.1f} s of audio queued",
                         data={"seconds": round(pcm.duration_s, 2)}, final=final)

    def health(self) -> dict[str, object]:
        with self._lock:
            return {**self.counts, "parts": self.parts.health()}
