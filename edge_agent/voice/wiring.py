"""Joins talk, reply and listen to the agent: handlers, the parts topic, and a status entry."""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from edge_agent.actions import Actions
from edge_agent.clock import Clock
from edge_agent.command_dispatch import AckResult, CommandHandler
from edge_agent.config import AgentConfig
from edge_agent.security.bureau_command import Command
from edge_agent.security.keys import Signer
from edge_agent.types import Publish
from edge_agent.uplink.topics import Topics
from edge_agent.voice.parts import TalkParts
from edge_agent.voice.reply import MicrophoneLike, VoiceRecorder
from edge_agent.voice.talk import TalkHandler

log = logging.getLogger(__name__)

PARTS_TOPIC = Topics.TALK_PARTS  # not "cmd/talk/#": that also matches cmd/talk, the command itself


class VoiceComponent:
    """The status entry `voice` (talk counts, held parts, recordings); it has no thread of its own."""

    name = "voice"

    def __init__(self, talk: TalkHandler, recorder: VoiceRecorder | None):
        self.talk = talk
        self.recorder = recorder

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def alive(self) -> bool:
        return True

    def health(self) -> dict[str, Any]:
        rec = self.recorder.health() if self.recorder is not None else {"state": "no_microphone"}
        return {"state": "ok", "talk": self.talk.health(), "recorder": rec}


def attach_voice(config: AgentConfig, actions: Actions, handlers: MutableMapping[str, CommandHandler], *,
                 publish: Publish, subscribe: Callable[[str, Callable[[str, bytes], None]], None], clock: Clock,
                 signer: Signer, microphone: MicrophoneLike | None) -> VoiceComponent:
    """Register `talk` and `listen` in `handlers` and listen for talk parts; returns the status part."""
    recorder = None
    if microphone is not None:
        recorder = VoiceRecorder(microphone, publish, signer, config.voice, site=config.site.id,
                                 device=config.device.id, tz=config.site.timezone)
    parts = TalkParts()
    talk = TalkHandler(actions, parts, config.voice, now=clock.now, skew_s=config.bureau.clock_skew_s,
                       on_played=recorder.reply_after if recorder is not None else None)
    subscribe(PARTS_TOPIC, parts.on_message)
    handlers["talk"] = talk
    handlers["listen"] = recorder.listen if recorder is not None else _no_microphone
    return VoiceComponent(talk, recorder)


def _no_microphone(command: Command) -> AckResult:
    log.warning("listen %s (key %s) refused: no microphone on this box", command.id, command.key_id)
    return AckResult("refused", "no_microphone", "this box has no enabled microphone")
