"""`voice:` — two-way talk (双向对讲): the bureau's recorded voice on the speaker, the crew's reply.

A signed `talk` carries the officer's recording (Ogg/Opus or WAV, at most 30 s and 300 kB;
its SHA-256 is signed); it plays above every other announcement. After it has played, the
box can record the crew's answer from the microphone and send it, signed with the device
key, on `…/voice`. Live listening on a bureau `listen` command is a privacy matter: it is
off unless `listen_enabled`, capped at `listen_max_s`, and every use is logged and acked.
"""

from __future__ import annotations

from pydantic import Field

from edge_agent.config.base import Section


class VoiceConfig(Section):
    """Talk, reply and listen."""

    parts_timeout_s: float = Field(
        10.0, gt=0, le=120,
        description="How long a talk whose audio comes in parts waits for the missing parts before it is "
        "refused as incomplete (parts normally arrive before the command).",
    )
    reply_after_talk_s: int = Field(
        10, ge=0, le=60,
        description="After a talk has played, record the crew's reply from the microphone for up to this many "
        "seconds and send it (0: never; needs an enabled `microphone`). A talk may ask for less with reply_s.",
    )
    reply_end_silence_s: float = Field(
        2.0, gt=0, le=30,
        description="A reply ends early after this much silence once someone has spoken.",
    )
    silence_dbfs: float = Field(
        -45.0, ge=-90, le=-10,
        description="Level (dBFS, 20-ms RMS) below which the microphone counts as silent: leading and trailing "
        "silence is trimmed from replies; a reply with nothing louder is sent as `silent`, without audio.",
    )
    listen_enabled: bool = Field(
        False,
        description="Obey the bureau's `listen` command (record N s of the site's sound and send it). Off by "
        "default: ambient listening is a privacy matter; every use is logged and acked.",
    )
    listen_max_s: int = Field(30, ge=1, le=120, description="Longest recording a `listen` command may ask for.")
    opus_bitrate: int = Field(24000, ge=6000, le=128000, description="Bit rate of recorded replies (Opus), bit/s.")
