"""`cameras:` — the RTSP cameras on the crane: where to read them, how often to analyse, what to watch.

Each camera is read by one capture thread per stream; analysis frames come at `analysis_fps`,
decoded from keyframes alone where the camera's GOP and its detectors allow (a camera with a
2-s GOP analyses keyframes only for detectors that declare they are served by them); detectors
that need the full rate read the optional sub-stream (edge_agent/video/streams.py).
Zones are polygons in normalised image coordinates (0..1, x to the right, y down), so they
survive a change of stream resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from edge_agent.config.base import SecretRef, Section
from edge_agent.config.site import ID_PATTERN

Point = tuple[float, float]


class TamperConfig(Section):
    """When a view counts as covered, blurred, moved or frozen; defaults suit a 1 fps analysis."""

    enabled: bool = Field(True, description="Watch this camera for covering, blur, movement and freezes.")
    learn_s: float = Field(
        30.0, ge=0, le=3600,
        description="Seconds of normal view used to learn the sharpness baseline and the reference view.",
    )
    confirm_s: float = Field(
        10.0, ge=0, le=600, description="A condition must last this long before it is reported (started)."
    )
    clear_s: float = Field(10.0, ge=0, le=600, description="A condition must be gone this long before it ends.")
    covered_std: float = Field(
        6.0, ge=0, le=128,
        description="Grey-level standard deviation below which the view is flat, i.e. covered (bag, paint, hand).",
    )
    black_level: float = Field(
        12.0, ge=0, le=255, description="Mean grey level below which the view counts as black (lens covered)."
    )
    blur_ratio: float = Field(
        0.35, gt=0, lt=1,
        description="Blurred when fine detail against coarse structure (contrast-free, so dusk, haze and IR do "
        "not count) falls below this share of the learned baseline in three quarters of the detailed cells.",
    )
    moved_shift: float = Field(
        0.06, gt=0, le=1,
        description="Moved when the view's static structure is found shifted by more than this share of the "
        "image width against the reference, frame after frame.",
    )
    moved_match: float = Field(
        0.35, ge=0, le=1,
        description="Moved when fewer than this share of the reference's structured cells still match it "
        "(a turned or rotated view); passing vehicles, smoke or a removed net hide only some cells. 0 turns "
        "this check off (a shift is still caught).",
    )
    frozen_image_s: float = Field(
        120.0, ge=5, le=86400,
        description="Report a device fault when the picture stays identical this long while packets still flow.",
    )
    lost_after_s: float = Field(
        10.0, ge=1, le=3600, description="Report a device fault when no video has arrived for this long."
    )
    reference_refresh_s: float = Field(
        900.0, ge=60, le=86400,
        description="Time constant with which the reference follows a normal view (daylight, site progress); "
        "parts of the view that no longer match (a new building, hoarding taken down) follow twice as slowly.",
    )
    ir_saturation: float = Field(
        0.03, ge=0, le=1,
        description="Below this mean colour saturation (of the colour frame, when the caller passes it) the "
        "camera is in IR (night) mode, which gets a reference of its own instead of a tamper report; back to "
        "colour above twice this.",
    )
    state_save_s: float = Field(
        600.0, ge=10, le=86400,
        description="While the view is normal, save the learned reference and baselines this often (in the data "
        "dir), so a restart resumes the checks at once.",
    )


class CameraConfig(Section):
    id: str = Field(..., pattern=ID_PATTERN, description="Camera id: names it in frames, evidence and health.")
    url: str = Field(
        ...,
        description="Main-stream RTSP URL, e.g. rtsp://192.168.1.64:554/Streaming/Channels/101. Evidence clips "
        "are cut from this stream. Put credentials in username/password, not in the URL.",
    )
    sub_url: str | None = Field(
        None,
        description="Optional sub-stream URL (e.g. .../Channels/102). When set, the detectors that need frames at "
        "analysis_fps (those that track vehicles: washing, uncovered_load, site_activity) read the small sub-stream "
        "at sub_analysis_fps; detectors served by keyframes (black_smoke, bare_soil) keep reading the main stream's "
        "keyframes at full resolution. Clips and snapshots always come from the main stream, which is only "
        "recorded, never decoded, when no detector reads it.",
    )
    sub_analysis_fps: float | None = Field(
        None, gt=0, le=25,
        description="Frames per second the sub-stream's detectors analyse (default: analysis_fps).",
    )
    username: str | None = Field(None, description="RTSP user name, inserted into the URL(s) at start.")
    password: SecretRef | None = Field(
        None, description="Where the RTSP password comes from: {file: PATH} or {env: VAR}. Never inline."
    )
    transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTSP transport; TCP survives lossy site networks without smeared frames."
    )
    analysis_fps: float = Field(
        1.0, gt=0, le=25,
        description="Frames per second handed to detectors. At or below the camera's keyframe rate only "
        "keyframes are decoded. Above it, a camera whose detectors are all served by keyframes (black_smoke, "
        "bare_soil: a keyframe every 2 s) still decodes keyframes only, at the keyframe rate; detectors that need "
        "this rate read sub_url when set, else the frames between keyframes are decoded too (~5x the work).",
    )
    keyframe_interval_s: float | None = Field(
        None, gt=0, le=60,
        description="Seconds between the main stream's keyframes (its I-frame interval, or GOP, divided by its "
        "frame rate: GOP 50 at 25 fps = 2 s, as most cameras ship), as set in the camera's web page. Optional: "
        "the box measures it from the stream (`doctor` and the camera's status show it); stated here, "
        "`check-config` warns when the main stream's detectors need more frames than keyframes give, which "
        "costs decoding the frames between them.",
    )
    clip_pre_s: float = Field(10.0, ge=0, le=60, description="Seconds of video before an event in its clip.")
    clip_post_s: float = Field(10.0, ge=0, le=60, description="Seconds of video after an event in its clip.")
    pose: str = Field(
        "", max_length=200,
        description="Where the camera is and what it looks at, for the bureau's map and every evidence bundle, "
        "e.g. 'east hoarding, facing the exit, 12 m up' ('东侧围挡，朝向出入口，高12米').",
    )
    osd_text: str = Field(
        "", max_length=64, description="Extra watermark line on snapshots, e.g. the camera's place ('1号塔吊 南侧')."
    )
    zones: dict[str, list[Point]] = Field(
        default_factory=dict,
        description="Named areas as polygons [[x, y], ...] in normalised coordinates (0..1, origin top left).",
    )
    detectors: list[str] = Field(default_factory=list, description="Detectors that analyse this camera's frames.")
    watchdog_s: float = Field(
        5.0, ge=1, le=120,
        description="No packet for this long means the stream froze: reported at once, then reconnected.",
    )
    open_timeout_s: float = Field(10.0, ge=1, le=120, description="Give up opening the stream after this long.")
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay; doubles each try.")
    reconnect_max_s: float = Field(
        5.0, gt=0, le=300, description="Longest reconnect delay (with ±20 % jitter), so a restart is seen quickly."
    )
    motion_min_ratio: float = Field(
        0.002, ge=0, le=1,
        description="Share of changed pixels (downscaled grey frame) above which a frame counts as moving.",
    )
    tamper: TamperConfig = Field(default_factory=TamperConfig, description="Tamper and fault detection.")
    enabled: bool = Field(True, description="Set false to keep the entry but not read the camera.")

    @field_validator("url", "sub_url")
    @classmethod
    def _rtsp(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
            raise ValueError("must be an rtsp:// or rtsps:// URL with a host")
        if parts.password:
            raise ValueError("keep the password out of the URL: use 'password: {file: ...}' or '{env: ...}'")
        return value

    @field_validator("zones")
    @classmethod
    def _polygons(cls, zones: dict[str, list[Point]]) -> dict[str, list[Point]]:
        for name, points in zones.items():
            if len(points) < 3:
                raise ValueError(f"zone {name!r}: a polygon needs at least 3 points")
            for x, y in points:
                if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                    raise ValueError(f"zone {name!r}: point [{x}, {y}] is outside 0..1 (coordinates are normalised)")
            if abs(_area(points)) < 1e-6:
                raise ValueError(f"zone {name!r}: the points enclose no area")
        return zones

    @model_validator(mode="after")
    def _consistent(self) -> CameraConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if self.sub_analysis_fps is not None and self.sub_url is None:
            raise ValueError("sub_analysis_fps needs a sub_url (the sub-stream it is the rate of)")
        return self

    def stream_urls(self) -> tuple[str, str | None]:
        """(main, sub) with credentials inserted; resolves the password secret now."""
        return self._with_credentials(self.url), (self._with_credentials(self.sub_url) if self.sub_url else None)

    def _with_credentials(self, url: str) -> str:
        if self.username is None:
            return url
        parts = urlsplit(url)
        auth = quote(self.username, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password.resolve(), safe="")
        netloc = f"{auth}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))


def _area(points: Sequence[Point]) -> float:
    """Shoelace area (signed), to reject degenerate polygons."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, [*points[1:], points[0]], strict=True))


def _unique_ids(cameras: list[CameraConfig]) -> list[CameraConfig]:
    seen: set[str] = set()
    for cam in cameras:
        if cam.id in seen:
            raise ValueError(f"camera id {cam.id!r} is used twice")
        seen.add(cam.id)
    return cameras


Cameras = Annotated[list[CameraConfig], AfterValidator(_unique_ids)]
