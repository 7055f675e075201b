"""`detectors:` — models and thresholds of the video detectors (which camera runs which
detector, and its zones, are set per camera under `cameras:`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from edge_agent.config.base import Section

if TYPE_CHECKING:  # detectors pull in OpenCV; loading a config must not
    from detectors.bare_soil import SoilParams
    from detectors.black_smoke import SmokeParams
    from detectors.washing import WashParams

Point = tuple[float, float]


class ModelSettings(Section):
    """Where a detector's classifier comes from; a site may drop in its own model and card."""

    model: Path | None = Field(
        None, description="Path to a .tflite model with its card (same name, .yaml) beside it; "
        "omit to use the shipped model.",
    )
    threads: int = Field(1, ge=1, le=8, description="LiteRT threads for this detector's classifier.")


class BlackSmokeSettings(ModelSettings):
    score_threshold: float = Field(
        0.5, gt=0, lt=1, description="Classifier probability for a region to count as smoke."
    )
    grade_limit: float = Field(
        1.0, ge=0, le=5,
        description="Confirmed only when the median Ringelmann grade is above this (GB 36886-2018: above grade 1 "
        "for non-road diesel machinery; UNCONFIRMED, check the local rule).",
    )
    persist_n: int = Field(5, ge=1, le=60, description="Window of analyses per plume track.")
    persist_k: int = Field(3, ge=1, le=60, description="Smoky analyses needed in the window (DOMAIN: at least 3).")
    min_blackness: float = Field(
        0.12, gt=0, lt=1, description="A candidate pixel is at least this much darker than its background (0..1)."
    )
    min_area: float = Field(0.002, gt=0, lt=1, description="Smallest candidate region, share of the image.")

    @model_validator(mode="after")
    def _window(self) -> BlackSmokeSettings:
        if self.persist_k > self.persist_n:
            raise ValueError("persist_k must not exceed persist_n")
        return self

    def params(self) -> SmokeParams:
        from detectors.black_smoke import SmokeParams

        return SmokeParams(score_threshold=self.score_threshold, grade_limit=self.grade_limit,
                           persist_n=self.persist_n, persist_k=self.persist_k,
                           min_blackness=self.min_blackness, min_area=self.min_area)


class BareSoilSettings(ModelSettings):
    zones: list[str] = Field(
        default_factory=list,
        description="Names of the camera's zones to watch; empty: every zone of the camera but the wash bay.",
    )
    ratio_threshold: float = Field(0.1, ge=0, lt=1, description="Uncovered share of a zone above which it counts.")
    duration_s: float = Field(
        1800.0, ge=0, le=86400, description="A zone must stay above the threshold this long (default 30 min)."
    )
    score_threshold: float = Field(0.5, gt=0, lt=1, description="Classifier probability for a patch to be bare soil.")
    grid: int = Field(16, ge=4, le=64, description="Square patches across the image width.")
    classify_every_s: float = Field(
        10.0, ge=0, le=3600, description="Classify the zones at most this often (soil changes slowly); 0: every frame."
    )

    def params(self) -> SoilParams:
        from detectors.bare_soil import SoilParams

        return SoilParams(ratio_threshold=self.ratio_threshold, duration_s=self.duration_s,
                          score_threshold=self.score_threshold, grid=self.grid,
                          classify_every_s=self.classify_every_s)


class WashingSettings(Section):
    wash_bay_zone: str = Field("wash_bay", description="Name of the camera zone that is the wash bay.")
    exit_line: tuple[Point, Point] | None = Field(
        None, description="The exit line [[x, y], [x, y]] in normalised coordinates; required where washing runs.",
    )
    min_dwell_s: float = Field(15.0, ge=0, le=600, description="Seconds a vehicle must stay in the wash bay.")
    spray_required: bool = Field(False, description="Also require visible spray while the vehicle is in the bay.")
    spray_share: float = Field(
        0.01, gt=0, lt=1, description="Share of the bay's pixels flickering bright that counts as visible spray."
    )

    @model_validator(mode="after")
    def _line(self) -> WashingSettings:
        if self.exit_line is not None:
            a, b = self.exit_line
            if a == b or not all(0.0 <= v <= 1.0 for v in (*a, *b)):
                raise ValueError("exit_line needs two different points with coordinates in 0..1")
        return self

    def params(self) -> WashParams:
        from detectors.washing import WashParams

        return WashParams(min_dwell_s=self.min_dwell_s, spray_required=self.spray_required,
                          spray_share=self.spray_share)


class DetectorsConfig(Section):
    """Per detector: model override, threads and thresholds."""

    black_smoke: BlackSmokeSettings = Field(default_factory=BlackSmokeSettings, description="Black smoke.")
    bare_soil: BareSoilSettings = Field(default_factory=BareSoilSettings, description="Uncovered bare soil.")
    washing: WashingSettings = Field(default_factory=WashingSettings, description="Vehicle washing at the exit.")
