"""`speaker:`, `relays:` and `actions:` — what the box does on site when a rule is broken.

The texts are in Mandarin because the crew hears them. `text` is what people read (logs, the
bureau's event view); `tts_text` is what espeak-ng speaks. espeak-ng 1.51's `cmn-latn-pinyin`
voice reads Chinese characters through its own dictionary and gets most words right, but it
guesses polyphonic characters wrongly (工地 → "gong1 de", 银行 → "yin2 xing2", 重新 →
"zhong4 xin1"), so the defaults spell the pronunciation out in pinyin with tone digits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from edge_agent.config.base import Section
from edge_agent.config.site import ID_PATTERN


class ClipConfig(Section):
    """One announcement: a text rendered by espeak-ng, or a recording the technician supplies."""

    text: str = Field(
        ..., min_length=1, max_length=500, description="What the announcement says, in Mandarin, for people to read."
    )
    tts_text: str | None = Field(
        None,
        max_length=1000,
        description="What espeak-ng speaks if different from `text`: pinyin with tone digits "
        "(e.g. 'qing3 zhu4 yi4') pins the reading of polyphonic characters.",
    )
    wav: Path | None = Field(
        None,
        description="A WAV recording (PCM 8/16/24/32-bit, any rate, mono or stereo) played instead of "
        "the synthesised voice; if it cannot be read the voice is used and health says why.",
    )
    repeats: int = Field(2, ge=1, le=20, description="How many times the clip is played per request.")
    gap_s: float = Field(2.0, ge=0, le=600, description="Silence between repeats, in seconds.")


def _clip(text: str, tts_text: str, repeats: int = 2, gap_s: float = 2.0) -> ClipConfig:
    return ClipConfig(text=text, tts_text=tts_text, repeats=repeats, gap_s=gap_s)


DEFAULT_CLIPS: dict[str, ClipConfig] = {
    "noise_stop": _clip(
        "请注意，施工区域噪音超标，请立即停止施工。",
        "qing3 zhu4 yi4, shi1 gong1 qu1 yu4 zao4 yin1 chao1 biao1, qing3 li4 ji2 ting2 zhi3 shi1 gong1.",
        repeats=3,
    ),
    "noise_warning": _clip(
        "请注意，施工噪音即将超标，请降低噪音。",
        "qing3 zhu4 yi4, shi1 gong1 zao4 yin1 ji2 jiang1 chao1 biao1, qing3 jiang4 di1 zao4 yin1.",
        repeats=1,
    ),
    "dust": _clip(
        "请注意，施工区域扬尘超标，请立即停止土方作业，喷淋降尘。",
        "qing3 zhu4 yi4, shi1 gong1 qu1 yu4 yang2 chen2 chao1 biao1, "
        "qing3 li4 ji2 ting2 zhi3 tu3 fang1 zuo4 ye4, pen1 lin2 jiang4 chen2.",
        repeats=3,
    ),
    "dust_warning": _clip(  # 扬尘预警: before the limit is crossed, the spray starts with it
        "请注意，扬尘预警，扬尘浓度即将超标，请立即喷淋降尘，减少土方作业。",
        "qing3 zhu4 yi4, yang2 chen2 yu4 jing3, yang2 chen2 nong2 du4 ji2 jiang1 chao1 biao1, "
        "qing3 li4 ji2 pen1 lin2 jiang4 chen2, jian3 shao3 tu3 fang1 zuo4 ye4.",
        repeats=1,
    ),
    "night_work": _clip(
        "请注意，夜间禁止施工，请立即停止作业。",
        "qing3 zhu4 yi4, ye4 jian1 jin4 zhi3 shi1 gong1, qing3 li4 ji2 ting2 zhi3 zuo4 ye4.",
        repeats=3,
    ),
    "black_smoke": _clip(
        "请注意，发现机械冒黑烟，请立即停机检修。",
        "qing3 zhu4 yi4, fa1 xian4 ji1 xie4 mao4 hei1 yan1, qing3 li4 ji2 ting2 ji1 jian3 xiu1.",
    ),
    "bare_soil": _clip(
        "请注意，裸露土方未覆盖，请立即覆盖防尘网。",
        "qing3 zhu4 yi4, luo3 lu4 tu3 fang1 wei4 fu4 gai4, qing3 li4 ji2 fu4 gai4 fang2 chen2 wang3.",
    ),
    "unwashed_vehicle": _clip(
        "请注意，车辆未冲洗，请冲洗干净后再驶出工地。",
        "qing3 zhu4 yi4, che1 liang4 wei4 chong1 xi3, qing3 chong1 xi3 gan1 jing4 hou4 zai4 shi3 chu1 gong1 di4.",
    ),
    "uncovered_load": _clip(  # 渣土车辆100%密闭运输
        "请注意，渣土车辆未密闭覆盖，请覆盖后再驶出工地。",
        "qing3 zhu4 yi4, zha1 tu3 che1 liang4 wei4 mi4 bi4 fu4 gai4, qing3 fu4 gai4 hou4 zai4 shi3 chu1 gong1 di4.",
    ),
    "shout": _clip(
        "请注意，这是监管部门喊话，请立即停止施工。",
        "qing3 zhu4 yi4, zhe4 shi4 jian1 guan3 bu4 men2 han3 hua4, qing3 li4 ji2 ting2 zhi3 shi1 gong1.",
        repeats=3,
    ),
}


class SpeakerConfig(Section):
    """The loudspeaker: a PortAudio output device and the clips it plays."""

    enabled: bool = Field(True, description="Play announcements at all; false on boxes without a speaker.")
    device: str | None = Field(
        None,
        description="Part of the output device's name as PortAudio lists it (`python -m sounddevice`), "
        "e.g. 'USB Audio'; the system default device if omitted.",
    )
    volume: float = Field(0.8, ge=0.0, le=1.0, description="Digital gain applied to every clip, 0..1.")
    sample_rate: int | None = Field(
        None,
        ge=8000,
        le=192000,
        description="Rate the device is opened at; clips are resampled to it. Omit to use the device's "
        "default rate.",
    )
    voice: str = Field(
        "cmn-latn-pinyin",
        min_length=1,
        description="espeak-ng voice. 'cmn-latn-pinyin' reads Chinese characters and tone-numbered pinyin; "
        "plain 'cmn' reads tone digits in English in espeak-ng 1.51.",
    )
    tts_rate_wpm: int = Field(150, ge=80, le=450, description="espeak-ng speaking rate, words per minute.")
    retry_s: float = Field(
        30.0, gt=0, le=3600, description="After the device fails to open, wait this long before trying again."
    )
    clips: dict[str, ClipConfig] = Field(
        default_factory=dict,
        description="Announcements by id. Entries given here replace or add to the built-in ones "
        f"({', '.join(DEFAULT_CLIPS)}).",
    )

    @field_validator("clips")
    @classmethod
    def _merge_defaults(cls, value: dict[str, ClipConfig]) -> dict[str, ClipConfig]:
        for clip_id in value:
            if not clip_id or len(clip_id) > 64:
                raise ValueError(f"clip id {clip_id!r} must be 1..64 characters")
        return {**DEFAULT_CLIPS, **value}


class RelayFeedbackConfig(Section):
    """An input that confirms a relay's load really runs: a flow switch on the spray line, a current
    relay on the pump, a door contact. Commanded on but no feedback within `confirm_s` is a
    `device_fault` (source `relay:ID`), ended when the feedback comes or the relay goes off."""

    pin: int | str = Field(
        ..., description="GPIO input pin as gpiozero names it: BCM number (22) or a name ('GPIO22', 'BOARD15')."
    )
    pull_up: bool | None = Field(
        True,
        description="true: internal pull-up, the contact closes the pin to ground and closed means present "
        "(the usual dry contact); false: internal pull-down, the contact goes to 3.3 V; null: an external "
        "resistor, then `active_state` says which level means present.",
    )
    active_state: bool | None = Field(
        None, description="Only with `pull_up: null`: true if a high level means the feedback is present."
    )
    confirm_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How long after switching on the feedback must be present (and how long it may be "
        "missing while on) before it is a fault; allow for the pump to prime and the flow switch to close.",
    )
    watch_off: bool = Field(
        True,
        description="Also a fault: feedback present for `confirm_s` while the relay is off (a welded relay "
        "contact, a pump started by hand). false for inputs that may legitimately be present then.",
    )
    message: str = Field(
        "{relay}已开启，但{confirm_s}秒内未收到运行反馈，请检查设备。",
        min_length=1,
        max_length=500,
        description="The fault's message when the relay is on without feedback, in Mandarin for people on site "
        "and at the bureau; {relay} and {confirm_s} are filled in.",
    )
    message_off: str = Field(
        "{relay}已关闭，但仍收到运行反馈，请检查继电器。",
        min_length=1,
        max_length=500,
        description="The fault's message when the feedback is present while the relay is off (see `watch_off`).",
    )

    @model_validator(mode="after")
    def _levels(self) -> RelayFeedbackConfig:
        if self.pull_up is None and self.active_state is None:
            raise ValueError("with pull_up: null give active_state (true: high means present)")
        if self.pull_up is not None and self.active_state is not None:
            raise ValueError("active_state goes with pull_up: null only (a pull-up or pull-down fixes it)")
        return self


class RelayConfig(Section):
    """One relay output (spray cannon pump, strobe) on a GPIO pin."""

    id: str = Field(..., pattern=ID_PATTERN, description="Relay id that `actions:` rules name, e.g. 'spray', 'strobe'.")
    pin: int | str = Field(
        ..., description="GPIO pin as gpiozero names it: BCM number (17) or a name ('GPIO17', 'BOARD11')."
    )
    active_high: bool = Field(
        True, description="True if the relay closes when the pin is high; false for the common active-low boards."
    )
    max_on_s: float = Field(
        1800.0,
        gt=0,
        description="Safety cut-off: longest time the relay stays on for one demand; it then stays off "
        "until the demand ends or a new one arrives.",
    )
    min_off_s: float = Field(
        0.0, ge=0, description="Shortest time the relay stays off before it may switch on again (protects pumps)."
    )
    feedback: RelayFeedbackConfig | None = Field(
        None,
        description="An input confirming the load runs, e.g. {pin: 22, confirm_s: 5}; omit if there is none.",
    )

    @model_validator(mode="after")
    def _feedback_in_time(self) -> RelayConfig:
        if self.feedback is not None and self.feedback.confirm_s >= self.max_on_s:
            raise ValueError(f"feedback.confirm_s ({self.feedback.confirm_s:g}) must be shorter than max_on_s "
                             f"({self.max_on_s:g}), or a missing feedback could never be noticed")
        return self


Priority = Literal["early_warning", "violation", "shout"]


class ActionRule(Section):
    """What one kind of violation sets off while it lasts."""

    clip: str | None = Field(
        None, description="Clip id from `speaker.clips` announced when it starts; none if omitted."
    )
    relays: list[str] = Field(
        default_factory=list, description="Relay ids held on while it lasts (relays missing on this box are skipped)."
    )
    priority: Priority = Field(
        "violation",
        description="Speaker priority: a higher one interrupts a lower one playing "
        "(shout > violation > early_warning).",
    )


DEFAULT_ACTIONS: dict[str, ActionRule] = {
    "noise_over_limit": ActionRule(clip="noise_stop", relays=["strobe"]),
    "night_lmax": ActionRule(clip="noise_stop", relays=["strobe"]),
    "noise_early_warning": ActionRule(clip="noise_warning", priority="early_warning"),
    "dust_over_limit": ActionRule(clip="dust", relays=["spray", "strobe"]),
    "dust_early_warning": ActionRule(clip="dust_warning", relays=["spray"], priority="early_warning"),
    "night_work": ActionRule(clip="night_work", relays=["strobe"]),
    "black_smoke": ActionRule(clip="black_smoke", relays=["strobe"]),
    "bare_soil": ActionRule(clip="bare_soil", relays=["strobe"]),
    "unwashed_vehicle": ActionRule(clip="unwashed_vehicle", relays=["strobe"]),
    "uncovered_load": ActionRule(clip="uncovered_load", relays=["strobe"]),
}



def _merge_rules(value: dict[str, ActionRule]) -> dict[str, ActionRule]:
    """Rules given in the file replace or add to the defaults; `{}` silences a kind."""
    return {**DEFAULT_ACTIONS, **value}


Relays = list[RelayConfig]
ActionRules = Annotated[dict[str, ActionRule], AfterValidator(_merge_rules)]


def check_references(speaker: SpeakerConfig, relays: Relays, rules: ActionRules) -> list[str]:
    """Cross-section problems (a rule naming an unknown clip, duplicate relay ids or pins, feedback
    inputs included).

    Unknown relay ids are not listed: the default rules name `spray` and `strobe`, and a box
    without a spray cannon simply has no `spray` relay.
    """
    problems: list[str] = []
    for kind, rule in rules.items():
        if rule.clip is not None and rule.clip not in speaker.clips:
            problems.append(f"actions.{kind}.clip: no clip {rule.clip!r} in speaker.clips")
    seen_ids: set[str] = set()
    seen_pins: set[str] = set()
    for relay in relays:
        if relay.id in seen_ids:
            problems.append(f"relays: relay id {relay.id!r} is used twice")
        pins = [relay.pin] + ([relay.feedback.pin] if relay.feedback is not None else [])
        for pin in pins:
            if str(pin) in seen_pins:
                problems.append(f"relays: pin {pin!r} is used twice")
            seen_pins.add(str(pin))
        seen_ids.add(relay.id)
    return problems
