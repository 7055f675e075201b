"""Secrets out of log lines before they leave the box: by what they look like and by value.

By pattern: `password=...`, `"token": "..."`, `PW=...;` (HJ 212 packets), user:password@ in
URLs, PEM private keys, `Bearer ...`. By value: every secret the config refers to
(`{file:}` / `{env:}`) is read once and replaced wherever it appears, whatever the line says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from edge_agent.config.base import SecretRef

MASK = "***"
_WORDS = r"password|passwd|pwd|passphrase|secret|token|api[_-]?key|private[_-]?key|access[_-]?key|credential"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
     "-----PRIVATE KEY " + MASK + "-----"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + MASK),
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1" + MASK + "@"),
    (re.compile(r"(?<![A-Za-z])(PW=)[^;&\s]*"), r"\1" + MASK),
    # key = value, key: value, "key": "value", key value
    (re.compile(rf"(?i)(\b(?:{_WORDS})\b[\"']?\s*(?:[=:]|\bis\b)?\s*[\"']?)(?!{re.escape(MASK)})([^\s\"',;&}}]+)"),
     r"\1" + MASK),
]


class Redactor:
    """Replaces known secret values and anything shaped like a secret with `***`."""

    def __init__(self, known: Iterable[str] = ()):
        self.known = sorted({s for s in known if len(s) >= 4}, key=len, reverse=True)  # longest first

    def __call__(self, line: str) -> tuple[str, bool]:
        """(the line without secrets, whether anything was removed)."""
        out = line
        for secret in self.known:
            out = out.replace(secret, MASK)
        for pattern, repl in _PATTERNS:
            out = pattern.sub(repl, out)
        return out, out != line


def config_secrets(config: BaseModel) -> list[str]:
    """Every secret value the config points at (read now; unreadable ones are skipped) and inline
    ones the schema still allows (hj212.pw)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretRef):
            try:
                found.append(value.resolve())
            except ValueError:
                pass
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(config)
    hj212 = getattr(config, "hj212", None)
    if hj212 is not None and getattr(hj212, "pw", None):
        found.append(str(hj212.pw))
    return [s for s in found if s]
