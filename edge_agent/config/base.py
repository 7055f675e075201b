"""The base every config section derives from: unknown keys are errors, values are immutable."""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """A block of the YAML file. A typo is an error, never a silently ignored key."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SecretRef(Section):
    """A secret kept out of the YAML: read from a file or an environment variable at start.

    The value itself is never stored in the config object, so it cannot leak into logs or
    into `check-config` output.
    """

    file: Path | None = Field(None, description="File whose first line is the secret (mode 0600).")
    env: str | None = Field(None, description="Environment variable that holds the secret.")

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of 'file' or 'env'")
        return self

    def describe(self) -> str:
        return f"file {self.file}" if self.file else f"env ${self.env}"

    def resolve(self) -> str:
        """Read the secret now; raises ValueError with a technician-readable reason."""
        if self.file is not None:
            try:
                return self.file.read_text(encoding="utf-8").splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ValueError(f"cannot read secret file {self.file}: {exc}") from exc
        value = os.environ.get(self.env or "")
        if value is None:
            raise ValueError(f"environment variable {self.env} is not set")
        return value


def check_timezone(value: str | None) -> str | None:
    """An IANA zone name that this machine's tz database knows (None passes: 'use the default')."""
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (e.g. 'Asia/Shanghai')") from exc
    return value
