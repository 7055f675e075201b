"""`rules:` — when a figure becomes a violation. Defaults cite the rule they come from.

Noise: GB 12523-2011 (site boundary): day 70 dB(A), night 55 dB(A), night Lmax at most
15 dB over the night limit; judged on a 20-minute LAeq (widely cited, UNCONFIRMED).
Dust: no Shenzhen numeric threshold was found (UNCONFIRMED); the default is Shaanxi
DB61/1078-2017, TSP 1-hour mean <= 0.8 mg/m³ (earthworks). See ../shared/DOMAIN.md §1–2.

A window is judged on the rolling figures the measures compute: noise LAeq over 60, 300,
1200 or 3600 s, means over 60, 300, 900 or 3600 s (edge_agent/measures/series.py);
`check-config` warns about a window outside those, and about a quantity no meter gives.
"""

from __future__ import annotations

from pydantic import Field

from edge_agent.config.base import Section


class Timing(Section):
    """How a condition becomes a violation and stops being one."""

    min_duration_s: float = Field(0, ge=0, description="The condition must hold this long before 'started'.")
    clear_s: float = Field(60, ge=0, description="It must be clear (past the hysteresis) this long before 'ended'.")
    cooldown_s: float = Field(300, ge=0, description="After 'ended', no new 'started' of this rule for this long.")
    ongoing_every_s: float = Field(600, gt=0, description="While active, repeat an 'ongoing' event this often.")


# The violation kinds the rules below raise (the detectors' kinds come from detectors/registry.py).
RULE_KINDS = ("noise_over_limit", "noise_early_warning", "night_lmax", "night_work", "dust_over_limit",
              "dust_early_warning")


class NoiseRule(Section):
    enabled: bool = Field(True, description="Judge noise against the limits.")
    quantity: str = Field(
        "noise_la", description="Reading quantity of the A-weighted level; a configured meter must give it."
    )
    window_s: int = Field(
        1200, description="LAeq window judged (GB 12523: 20 min = 1200 s); one of 60, 300, 1200, 3600."
    )
    day_limit_db: float = Field(70.0, description="Daytime limit, dB(A) (GB 12523-2011).")
    night_limit_db: float = Field(55.0, description="Night limit, dB(A) (GB 12523-2011).")
    indoor_offset_db: float = Field(
        0.0, le=0, description="-10 where the meter is indoors at a sensitive building (GB 12523-2011 §4.2)."
    )
    hysteresis_db: float = Field(1.0, ge=0, description="Ends only once this far below the limit.")
    night_requires_construction: bool = Field(
        False,
        description="At night, only a level the box's microphone attributes to construction (YAMNet: tools, "
        "engines, ...) is a noise_over_limit or night_work violation; road traffic or aircraft over the limit is "
        "not. Needs `microphone:` with its classifier; without one the rules judge the level alone.",
    )
    construction_min_share: float = Field(
        0.5, ge=0, le=1, description="With night_requires_construction: the least construction share of the "
        "sound energy over the window."
    )
    timing: Timing = Field(default_factory=lambda: Timing(min_duration_s=0, clear_s=60), description="Timing.")


class EarlyWarningRule(Section):
    enabled: bool = Field(True, description="Warn the crew before the limit is reached.")
    window_s: int = Field(
        300, description="LAeq window watched (5 min); one of 60, 300, 1200, 3600, at most rules.noise.window_s."
    )
    margin_db: float = Field(3.0, ge=0, description="Warn when within this many dB of the limit.")
    timing: Timing = Field(default_factory=lambda: Timing(min_duration_s=30, clear_s=60, cooldown_s=600),
                           description="Timing.")


class NightLmaxRule(Section):
    enabled: bool = Field(True, description="Judge single loud events at night.")
    excess_db: float = Field(15.0, description="Night Lmax may exceed the night limit by this much (GB 12523-2011).")
    timing: Timing = Field(default_factory=lambda: Timing(min_duration_s=0, clear_s=30, cooldown_s=60),
                           description="Timing.")


class NightWorkRule(Section):
    """Overtime construction (超时施工): activity in restricted hours without a permit."""

    enabled: bool = Field(True, description="Flag work in night and quiet hours without a permit.")
    window_s: int = Field(300, description="LAeq window that measures activity; one of 60, 300, 1200, 3600.")
    background_db: float = Field(
        50.0, description="LAeq above this means work is going on (set from the site's quiet-night level)."
    )
    timing: Timing = Field(default_factory=lambda: Timing(min_duration_s=300, clear_s=300),
                           description="Timing; min_duration_s is the 'N minutes' of activity.")


class DustRule(Section):
    enabled: bool = Field(True, description="Judge dust against the limit.")
    quantity: str = Field(
        "tsp",
        description="Quantity judged: tsp, pm10 or pm2_5; a configured meter must give it (the RS-PM-N01 "
        "gives pm2_5 and pm10 only, no tsp).",
    )
    window_s: int = Field(
        3600,
        description="Averaging window: 3600 (Shaanxi DB61/1078-2017), 900 (Shanghai DB31/964-2016), 300 "
        "(Liaoning DB21/2642-2016); one of 60, 300, 900, 3600.",
    )
    limit: float = Field(0.8, gt=0, description="Limit of the mean, in `unit` (Shaanxi: TSP 0.8 mg/m³).")
    unit: str = Field("mg/m3", description="Unit of `limit`: mg/m3 or ug/m3 (readings are converted).")
    hysteresis: float = Field(0.05, ge=0, description="Ends only once this far below the limit, in `unit`.")
    timing: Timing = Field(default_factory=lambda: Timing(min_duration_s=0, clear_s=120),
                           description="Timing.")


class DustEarlyWarningRule(Section):
    """Dust near the limit: warn the crew and start the spray before the limit's mean is crossed.

    No standard sets a dust early warning (UNCONFIRMED: the defaults are our choice). It
    watches the same quantity, unit and limit as `rules.dust`, over a shorter mean, so a
    rising episode is met with water while the longer mean is still under the limit; it ends
    once that mean is `rules.dust.hysteresis` below the warning level for `clear_s`.
    """

    enabled: bool = Field(True, description="Warn the crew and spray before the dust limit is reached.")
    window_s: int = Field(
        900,
        description="Mean watched: 900 s (15 min) by default, a quarter of the default 1-h limit window as the "
        "noise warning watches 5 of 20 min, and the period Shanghai DB31/964-2016 judges on. One of 60, 300, "
        "900, 3600, and at most rules.dust.window_s. UNCONFIRMED (our choice).",
    )
    margin_share: float = Field(
        0.2, gt=0, lt=1,
        description="Warn once that mean is within this share of rules.dust.limit: 0.2 warns at 80 % of it "
        "(0.64 mg/m³ of TSP against Shaanxi's 0.8). UNCONFIRMED (our choice; no standard sets one).",
    )
    timing: Timing = Field(default_factory=lambda: Timing(min_duration_s=60, clear_s=120, cooldown_s=600),
                           description="Timing; min_duration_s keeps one gust from setting it off.")


class RulesConfig(Section):
    figure_validity: float = Field(
        0.75, gt=0, le=1,
        description="Share of a window's expected samples that must be valid before its figure counts "
        "(common practice for averages: 75 %).",
    )
    noise: NoiseRule = Field(default_factory=NoiseRule, description="Noise over the limit (20-min LAeq).")
    early_warning: EarlyWarningRule = Field(default_factory=EarlyWarningRule, description="Near the limit.")
    night_lmax: NightLmaxRule = Field(default_factory=NightLmaxRule, description="Loud single events at night.")
    night_work: NightWorkRule = Field(default_factory=NightWorkRule, description="Work in restricted hours.")
    dust: DustRule = Field(default_factory=DustRule, description="Dust over the limit.")
    dust_early_warning: DustEarlyWarningRule = Field(
        default_factory=DustEarlyWarningRule, description="Dust near the limit (shorter mean): warn and spray."
    )
