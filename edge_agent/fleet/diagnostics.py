"""`logs` and `doctor` on request: what a technician would read on the box, without climbing it.

`logs` answers with the last `lines` lines (or those of the last `minutes`) of the agent's log,
secrets redacted, gzip-compressed and base64-encoded in the ack's data. The journal is read
(`journalctl -u UNIT`) when the agent runs under systemd and the journal answers; otherwise the
box's own ring (`logring.py`). `doctor` answers with the doctor table as JSON: the checks that
need no device of their own (data dir, keys, clock) and, for the broker and each device, the
running agent's own view of it (a second reader on a serial bus or a camera would disturb the
agent, and the agent's connection is the one that matters).
"""

from __future__ import annotations

import base64
import gzip
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_agent.command_dispatch import AckResult
from edge_agent.config import AgentConfig, Problem
from edge_agent.fleet import logring
from edge_agent.fleet.redact import Redactor
from edge_agent.security.bureau_command import Command

MAX_LINES = 5000
MAX_MINUTES = 7 * 24 * 60
MAX_GZIP_BYTES = 256 * 1024
UNIT = "edge-agent"


def _refused(reason: str, detail: str) -> AckResult:
    return AckResult("refused", reason, detail)


def journal_lines(lines: int, minutes: float | None, unit: str = UNIT) -> list[str] | None:
    """The unit's journal, or None when there is none to read (not under systemd, no journalctl, no access)."""
    exe = shutil.which("journalctl")
    if exe is None or not os.environ.get("INVOCATION_ID"):
        return None
    cmd = [exe, "-u", unit, "--no-pager", "-o", "short-iso-precise", "-n", str(lines)]
    if minutes is not None:
        cmd += ["--since", f"-{int(minutes * 60)}s"]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = [line for line in result.stdout.splitlines() if line and not line.startswith("-- ")]
    return out if result.returncode == 0 and out else None


class Logs:
    """The `logs` command's handler."""

    def __init__(self, data_dir: Path, redactor: Callable[[], Redactor],
                 journal: Callable[[int, float | None], list[str] | None] = journal_lines):
        self.data_dir = Path(data_dir)
        self.redactor = redactor
        self.journal = journal

    def __call__(self, c: Command) -> AckResult:
        args = c.args
        extra = sorted(set(args) - {"lines", "minutes", "source"})
        if extra:
            return _refused("invalid_args", f"unexpected argument(s) {', '.join(extra)}")
        lines = args.get("lines", 200)
        minutes = args.get("minutes")
        source = args.get("source", "auto")
        if type(lines) is not int or not 1 <= lines <= MAX_LINES:
            return _refused("invalid_args", f"'lines' must be an integer 1..{MAX_LINES}")
        if minutes is not None and (type(minutes) is not int or not 1 <= minutes <= MAX_MINUTES):
            return _refused("invalid_args", f"'minutes' must be an integer 1..{MAX_MINUTES}")
        if source not in ("auto", "journal", "ring"):
            return _refused("invalid_args", "'source' must be auto, journal or ring")
        text = None
        used = "ring"
        if source in ("auto", "journal"):
            text = self.journal(lines, minutes)
            used = "journal"
        if text is None:
            if source == "journal":
                return AckResult("failed", "unavailable", "no journal to read (not under systemd, or no access)")
            text, used = logring.tail(self.data_dir, lines, minutes), "ring"
        redact = self.redactor()
        cleaned, redacted = [], 0
        for line in text:
            line, hit = redact(line)
            cleaned.append(line)
            redacted += hit
        blob = gzip.compress(("\n".join(cleaned) + "\n").encode("utf-8"), mtime=0)
        while len(blob) > MAX_GZIP_BYTES and len(cleaned) > 1:  # keep the newest lines that fit
            cleaned = cleaned[len(cleaned) // 4:]
            blob = gzip.compress(("\n".join(cleaned) + "\n").encode("utf-8"), mtime=0)
        return AckResult("done", detail=f"{len(cleaned)} line(s) from the {used}",
                         data={"source": used, "lines": len(cleaned), "redacted_lines": redacted,
                               "encoding": "gzip+base64", "log": base64.b64encode(blob).decode("ascii")})


def decode_logs(data: Mapping[str, Any]) -> list[str]:
    """The bureau side: the lines of a `logs` ack's data."""
    return gzip.decompress(base64.b64decode(data["log"])).decode("utf-8").splitlines()


class Doctor:
    """The `doctor` command's handler: the doctor table as JSON, from the running box."""

    def __init__(self, config: AgentConfig, config_path: Path | None, warnings: Sequence[Problem],
                 components: Callable[[], Mapping[str, Mapping[str, Any]]]):
        self.config = config
        self.config_path = config_path
        self.warnings = list(warnings)
        self.components = components

    def __call__(self, c: Command) -> AckResult:
        if c.args:
            return _refused("invalid_args", "doctor takes no arguments")
        rows = [asdict(r) for r in self.results()]
        failed = sum(1 for r in rows if r["status"] == "FAIL")
        return AckResult("done", detail=f"{len(rows) - failed} of {len(rows)} checks passed",
                         data={"checks": rows, "passed": len(rows) - failed, "failed": failed})

    def results(self) -> list[Any]:
        from edge_agent.doctor.checks import (
            FAIL,
            PASS,
            WARN,
            Result,
            check_clock,
            check_data_dir,
            check_keys,
            config_results,
        )

        out: list[Result] = list(config_results(self.config_path or Path("(config)"), self.warnings))
        for check in (check_data_dir, check_keys, check_clock):
            try:
                out.extend(check(self.config, False))
            except Exception as exc:  # one broken check must not hide the others
                out.append(Result(check.__name__.removeprefix("check_"), FAIL, f"check crashed: {exc}"))
        status = {"ok": PASS, "degraded": WARN, "disabled": PASS}
        for name, health in sorted(self.components().items()):
            state = str(health.get("state", "unknown"))
            detail = state + (f": {health['last_error']}" if health.get("last_error") else "")
            if name == "uplink":
                cfg = self.config.mqtt
                detail = (f"connected to {cfg.host}:{cfg.port}" if health.get("connected") else
                          f"not connected to {cfg.host}:{cfg.port}: {health.get('last_error') or 'no answer'}")
            out.append(Result(name, status.get(state, FAIL), str(detail)[:300]))
        return out
