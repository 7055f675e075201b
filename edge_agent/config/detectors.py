"""`detectors:` — parameters of the video detectors, validated through the detector registry.

Each entry is `NAME: {type: DETECTOR, ...parameters}`; `type` defaults to the entry's name,
so `black_smoke: {score_threshold: 0.6}` configures the black-smoke detector, and
`smoke_strict: {type: black_smoke, grade_limit: 2}` adds a second set of its parameters that
a camera can list by that name. The parameters of each type come from its module in
detectors/ (a discriminated union on `type`): a new detector needs no change here. Which
camera runs which detector, and its zones, are set per camera under `cameras:`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, RootModel, model_validator

from detectors.registry import DetectorParams, specs

if TYPE_CHECKING:  # the members are known only at run time, from the registry
    DetectorSettings = DetectorParams
else:
    DetectorSettings = Annotated[
        Union[tuple(spec.params for spec in specs().values())],  # noqa: UP007
        Field(discriminator="type"),
    ]


class DetectorsConfig(RootModel[dict[str, DetectorSettings]]):
    """Detector parameters by entry name (default entries: one per registered detector)."""

    model_config = {"frozen": True}

    root: dict[str, DetectorSettings] = Field(
        default_factory=dict,
        description="Per entry: `type` (default: the entry's name) and that detector's parameters.",
    )

    @model_validator(mode="before")
    @classmethod
    def _type_from_name(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {name: ({"type": name, **value} if isinstance(value, dict) and "type" not in value else value)
                    for name, value in data.items()}
        return data

    def names(self) -> list[str]:
        """What a camera may list: every registered detector and every configured entry."""
        return sorted({*specs(), *self.root})

    def settings(self, name: str) -> DetectorParams:
        """The parameters an entry name stands for: the configured ones, or the type's defaults."""
        if name in self.root:
            return self.root[name]
        spec = specs().get(name)
        if spec is None:
            raise KeyError(name)
        return spec.default_params()
