"""Remote configuration: a signed `config` command replaces the box's config, or rolls itself back.

The command carries a whole new YAML (in parts, `transfer.py`) or `sections` that replace
named top-level sections of the config in use, and `expect_sha256`: the hash of the config
file it was written against (a change made meanwhile on the box is never overwritten).
The box refuses it unless it passes `check-config --strict` (errors, and warnings about keys the
config in use is not warned about already: a box with a known warning can take other changes), carries
no inline secret (only `{file:}` / `{env:}` references travel), keeps the box's identity
(site and device ids, data dir, topic prefix: change those on the box) and still trusts the
key that signed it (a config that locks the bureau out is refused).

Applying it: the old file is kept as `config.yaml.prev`, a marker `config.yaml.pending`
records the change and what was healthy before it, the new file is renamed over the old one,
and the process restarts itself (`Agent.request_restart`, then exec in `edge-agent run`:
systemd sees a reload, the PID stays). A restart is what a cold boot will do with this file
anyway, so the check that follows is the real one. The new process (`ConfigStatus`) confirms
within `confirm_s` that the broker is connected and that every component healthy before (and
every new one) is `ok`, then acks it applied. Otherwise it restores the old file, restarts
again, and the old config acks it rolled back, with the reason. A config that cannot even start
(it fails to load or to build, or the process dies `MAX_ATTEMPTS` times before confirming)
is rolled back by `edge-agent run` itself before the next start.

Acks of one config command: `accepted`; `done` with `data.stage` `part` for each part but the
last (or `unchanged`); for the change itself `queued` (`data.stage: restarting`), then from the
new process `done` with `data.outcome: applied`, or `failed` with reason `rolled_back` (why in
`data.cause`: `broker_unreachable`, `component_down`, `did_not_start`, ...); or `refused`:
`invalid_args`, `config_changed` (wrong expected hash), `busy`,
`hash_mismatch`, `inline_secret`, `invalid_config`, `config_warnings`, `identity_change`,
`would_lock_out`, `unavailable`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from edge_agent.command_dispatch import ACK_KIND, AckResult
from edge_agent.config import AgentConfig, ConfigError, Problem, load_checked
from edge_agent.files import sha256_file, write_atomic
from edge_agent.fleet.transfer import TRANSFER_KEYS, TransferError, Transfers
from edge_agent.security.bureau_command import Ack, Command
from edge_agent.timefmt import iso
from edge_agent.types import Publish
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

COMMAND = "config"
MAX_CONFIG_BYTES = 256 * 1024  # the loader's own limit
DEFAULT_CONFIRM_S = 90
MIN_CONFIRM_S, MAX_CONFIRM_S = 5, 900
MAX_ATTEMPTS = 3  # starts of a new config that die before confirming, then it is rolled back
ARGS = frozenset({*TRANSFER_KEYS, "sections", "expect_sha256", "confirm_s"})
IDENTITY = (("site", "id"), ("device", "id"), ("storage", "data_dir"), ("mqtt", "topic_prefix"))
_SECRET_KEY = re.compile(r"(?i)(password|passwd|passphrase|secret|token|api_?key|private_?key|credential|^pw$)")
_SHA = re.compile(r"[0-9a-f]{64}")


def prev_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".prev")


def pending_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".pending")


@dataclass
class Pending:
    """The marker beside the config while a change is being applied (and until its outcome is acked)."""

    command_id: str
    new_sha256: str
    old_sha256: str
    confirm_s: float
    required: list[str]  # components `ok` before the change: must be `ok` again
    known: list[str]  # every component before the change: any other must come up `ok`
    key_id: str = ""
    requested_at: str = ""
    stage: str = "applying"  # applying | applied | rolled_back
    attempts: int = 0
    reason: str = ""
    detail: str = ""

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=1).encode("utf-8"), 0o600)

    @classmethod
    def load(cls, path: Path) -> Pending | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.error("config: unreadable change marker %s (%s): ignored", path, exc)
            return None


def inline_secrets(data: Any, loc: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths of values that look like secrets written inline (not `{file:}` / `{env:}`)."""
    found: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            path = (*loc, str(key))
            if _SECRET_KEY.search(str(key)) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                found.append(".".join(path))
            else:
                found.extend(inline_secrets(value, path))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found.extend(inline_secrets(item, (*loc, str(i))))
    elif isinstance(data, str) and re.search(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^@\s/]+@", data, re.I):
        found.append(".".join(loc) + " (a password in a URL)")
    return found


def _get(config: AgentConfig, path: tuple[str, ...]) -> Any:
    value: Any = config
    for part in path:
        value = getattr(value, part)
    return value


def _refused(reason: str, detail: str) -> AckResult:
    return AckResult("refused", reason, detail[:400])


class RemoteConfig:
    """The `config` command's handler, on a dispatcher worker thread of the running (old) config."""

    def __init__(self, config_path: Path, current: AgentConfig, transfers: Transfers, *,
                 restart: Callable[[str], None], components: Callable[[], Mapping[str, Mapping[str, Any]]],
                 trusted_key_ids: Callable[[AgentConfig], set[str]], now: Callable[[], datetime],
                 current_warnings: Sequence[Problem] = ()):
        self.config_path = Path(config_path)
        self.current = current
        self.current_warnings = {w.path for w in current_warnings}  # by key: a reason's wording may change
        self.transfers = transfers
        self.restart = restart
        self.components = components
        self.trusted_key_ids = trusted_key_ids
        self.now = now
        self._lock = threading.Lock()
        self._busy = False

    def __call__(self, c: Command) -> AckResult:
        args = c.args
        extra = sorted(set(args) - ARGS)
        if extra:
            return _refused("invalid_args", f"unexpected argument(s) {', '.join(extra)}")
        expect = args.get("expect_sha256")
        if not (isinstance(expect, str) and _SHA.fullmatch(expect)):
            return _refused("invalid_args", "'expect_sha256' (64 hex digits: the config this change replaces) "
                            "is required")
        confirm = args.get("confirm_s", DEFAULT_CONFIRM_S)
        if type(confirm) is not int or not MIN_CONFIRM_S <= confirm <= MAX_CONFIRM_S:
            return _refused("invalid_args", f"'confirm_s' must be an integer {MIN_CONFIRM_S}..{MAX_CONFIRM_S}")
        try:
            current_bytes = self.config_path.read_bytes()
        except OSError as exc:
            return _refused("unavailable", f"cannot read the config in use: {exc}")
        current_sha = sha256_file(self.config_path)
        if expect != current_sha:
            return _refused("config_changed", f"the box runs config {current_sha}, the change was written "
                            f"against {expect}: fetch the box's config again")
        if pending_path(self.config_path).exists():
            return _refused("busy", "another config change is being applied")
        if "sections" in args:
            if any(k in args for k in TRANSFER_KEYS):
                return _refused("invalid_args", "give either 'sections' or the whole file in parts, not both")
            built = self._patched(current_bytes, args["sections"])
            if isinstance(built, AckResult):
                return built
            new_bytes, travelled = built
        else:
            try:
                progress = self.transfers.add(args)  # parts may be handled side by side: the store locks
            except TransferError as exc:
                return _refused(exc.reason, exc.detail)
            if progress.content is None:
                return AckResult("done", detail=f"part {progress.received} of {progress.parts} stored",
                                 data={"stage": "part", "received": progress.received, "parts": progress.parts})
            new_bytes, travelled = progress.content, _bounded_yaml(progress.content)
        with self._lock:
            if self._busy or pending_path(self.config_path).exists():
                return _refused("busy", "another config change is being applied")
            self._busy = True
        try:
            return self._change(c, new_bytes, travelled, current_bytes, current_sha, confirm)
        finally:
            with self._lock:
                self._busy = False

    def _change(self, c: Command, new_bytes: bytes, travelled: Any, current_bytes: bytes, current_sha: str,
                confirm_s: int) -> AckResult:
        new_sha = _sha(new_bytes)
        if new_sha == current_sha:
            return AckResult("done", detail="the box already runs this config",
                             data={"stage": "unchanged", "sha256": new_sha})
        secrets = inline_secrets(travelled)
        if secrets:
            return _refused("inline_secret", "secrets travel only as {file: PATH} or {env: VAR} references; inline: "
                            + ", ".join(secrets[:5]))
        checked = self._check(new_bytes, c)
        if isinstance(checked, AckResult):
            return checked
        components = dict(self.components())
        pending = Pending(
            command_id=c.id, new_sha256=new_sha, old_sha256=current_sha, confirm_s=confirm_s,
            required=sorted(n for n, h in components.items() if h.get("state") == "ok"),
            known=sorted(components), key_id=c.key_id, requested_at=self.now().isoformat())
        write_atomic(prev_path(self.config_path), current_bytes)
        pending.save(pending_path(self.config_path))
        write_atomic(self.config_path, new_bytes)
        log.warning("config: command %s replaces config %s with %s; restarting to apply it (confirm within %d s)",
                    c.id, current_sha[:12], new_sha[:12], confirm_s)
        self.restart(f"config command {c.id}")
        # `queued`: the final ack comes from the process that starts next (ConfigStatus), not from this
        # future, which this process will not live to complete.
        return AckResult("queued", detail="restarting with the new config; the outcome follows as done (applied) "
                         "or failed (rolled_back)", data={"stage": "restarting", "sha256": new_sha,
                                                         "previous_sha256": current_sha, "confirm_s": confirm_s},
                         final=Future())

    def _patched(self, current_bytes: bytes, sections: Any) -> tuple[bytes, Any] | AckResult:
        if not isinstance(sections, dict) or not sections:
            return _refused("invalid_args", "'sections' must map section names to their new content")
        unknown = sorted(set(sections) - set(AgentConfig.model_fields))
        if unknown:
            return _refused("invalid_args", f"unknown section(s) {', '.join(unknown)}")
        data = yaml.safe_load(current_bytes.decode("utf-8")) or {}
        for name, value in sections.items():
            if value is None:
                data.pop(name, None)  # back to the section's defaults (or off, for optional ones)
            else:
                data[name] = value
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, default_flow_style=False)
        return text.encode("utf-8"), sections

    def _check(self, new_bytes: bytes, c: Command) -> AckResult | AgentConfig:
        """check-config --strict on the candidate, then what a remote change may not do."""
        if len(new_bytes) > MAX_CONFIG_BYTES:
            return _refused("invalid_config", f"{len(new_bytes)} bytes; a config may have {MAX_CONFIG_BYTES}")
        candidate = self.config_path.with_name(self.config_path.name + ".candidate")
        write_atomic(candidate, new_bytes, 0o600)
        try:
            loaded = load_checked(candidate)
        except ConfigError as exc:
            lines = [str(p).replace(str(candidate), "config") for p in exc.problems[:3]]
            more = f" (and {len(exc.problems) - 3} more)" if len(exc.problems) > 3 else ""
            return _refused("invalid_config", "; ".join(lines) + more)
        finally:
            candidate.unlink(missing_ok=True)
        new_warnings = [w for w in loaded.warnings if w.path not in self.current_warnings]
        if new_warnings:  # --strict on what the change brings: warnings the box has already are not new
            lines = [str(p).replace(str(candidate), "config") for p in new_warnings[:3]]
            return _refused("config_warnings", "check-config --strict: " + "; ".join(lines))
        new = loaded.config
        changed = [".".join(p) for p in IDENTITY if _get(new, p) != _get(self.current, p)]
        if changed:
            return _refused("identity_change", f"{', '.join(changed)} cannot change remotely (the bureau would "
                            "lose the box or its data): change it on the box")
        if c.key_id not in self.trusted_key_ids(new):
            return _refused("would_lock_out", f"the new config does not trust key {c.key_id}, which signed this "
                            "change: the bureau could not reach the box again")
        return new


def _bounded_yaml(data: bytes) -> Any:
    """The document through the config loader's bounds (size, depth, aliases); None if it does not parse
    (the full check names the problem with its line)."""
    from edge_agent.config.loader import _parse

    try:
        return _parse("config", data.decode("utf-8"))[0]
    except (ConfigError, UnicodeDecodeError):
        return None


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- before the config is loaded: `edge-agent run` ---------------------------------------------------


def rollback_files(config_path: Path, pending: Pending, reason: str, detail: str) -> None:
    """Put the previous config back and record why (the old config acks it after its start)."""
    write_atomic(config_path, prev_path(config_path).read_bytes())
    pending.stage, pending.reason, pending.detail = "rolled_back", reason, detail[:400]
    pending.save(pending_path(config_path))
    log.error("config: change %s rolled back: %s: %s", pending.command_id, reason, detail)


def boot(config_path: Path) -> None:
    """Count this start against a change being applied; roll back one that never got healthy."""
    config_path = Path(config_path)
    pending = Pending.load(pending_path(config_path))
    if pending is None or pending.stage != "applying":
        return
    try:
        current = sha256_file(config_path)
    except OSError:
        current = ""
    if current != pending.new_sha256:
        pending.stage = "rolled_back"
        pending.reason = "interrupted" if current == pending.old_sha256 else "superseded"
        pending.detail = ("the box stopped before the change was in place" if current == pending.old_sha256
                          else "the config file was changed on the box meanwhile")
        pending.save(pending_path(config_path))
        return
    pending.attempts += 1
    if pending.attempts > MAX_ATTEMPTS:
        rollback_files(config_path, pending, "did_not_start",
                       f"the agent stopped {MAX_ATTEMPTS} times before the new config was confirmed")
        return
    pending.save(pending_path(config_path))


def start_failed(config_path: Path, why: str) -> bool:
    """The new config could not be loaded or built: roll back now. True: start again (the old config)."""
    config_path = Path(config_path)
    pending = Pending.load(pending_path(config_path))
    if pending is None or pending.stage != "applying" or not prev_path(config_path).exists():
        return False
    rollback_files(config_path, pending, "did_not_start", why)
    return True


# --- after the start: confirm, or roll back -----------------------------------------------------------


@dataclass
class ConfigStatus:
    """The component named "config": the hash in use; confirms a change or rolls it back.

    `info` is the agent's `config_info` (the status's `config`), kept up to date here."""

    config_path: Path
    state_file: Path  # DATA_DIR/fleet/config-state.json: the last change's outcome, across restarts
    publish: Publish
    publish_status: Callable[[], object]
    restart: Callable[[str], None]
    components: Callable[[], Mapping[str, Mapping[str, Any]]]
    now: Callable[[], datetime]
    tz: str
    info: dict[str, Any] = field(default_factory=dict)
    poll_s: float = 0.5
    name: str = "config"

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.confirming: Pending | None = None
        self.last_error = ""

    def start(self) -> None:
        self._stop.clear()
        try:
            self.info["sha256"] = sha256_file(self.config_path)
        except OSError as exc:
            self.last_error = f"cannot hash {self.config_path}: {exc}"
        try:
            self.info["last_change"] = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        pending = Pending.load(pending_path(self.config_path))
        if pending is None:
            return
        if pending.stage == "applying":
            if self._thread is None or not self._thread.is_alive():
                self.confirming = pending
                self._thread = threading.Thread(target=self._confirm, args=(pending,), name="config-confirm",
                                                daemon=True)
                self._thread.start()
        else:
            self._finish(pending)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def alive(self) -> bool:
        return True  # the confirmation thread ends by itself; a dead one leaves the marker for the next start

    def health(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {"state": "degraded" if self.last_error else "ok", "sha256": self.info.get("sha256")}
        if self.confirming is not None:
            out["confirming"] = {"command": self.confirming.command_id, "sha256": self.confirming.new_sha256}
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    def _confirm(self, pending: Pending) -> None:
        start = _mono()
        deadline = start + pending.confirm_s
        problem: tuple[str, str] = ("timeout", "not confirmed")
        while not self._stop.is_set():
            try:
                problem_or_none = self.unhealthy(pending)
            except Exception as exc:  # a health check that raises is not a healthy box
                problem_or_none = ("health_check_failed", str(exc))
            if problem_or_none is None:
                pending.stage = "applied"
                pending.detail = f"healthy {(_mono() - start):.1f} s after the start"
                pending.save(pending_path(self.config_path))
                self.confirming = None
                self._finish(pending)
                return
            problem = problem_or_none
            if _mono() >= deadline:
                break
            self._stop.wait(self.poll_s)
        if self._stop.is_set():
            return  # stopped while confirming: the next start counts an attempt
        self.confirming = None
        try:
            rollback_files(self.config_path, pending, problem[0],
                           f"not healthy {pending.confirm_s} s after the start: {problem[1]}")
        except OSError as exc:
            self.last_error = f"rollback failed: {exc}"
            log.critical("config: cannot roll back change %s: %s", pending.command_id, exc)
            return
        self.restart(f"config rollback of {pending.command_id}")

    def unhealthy(self, pending: Pending) -> tuple[str, str] | None:
        """None when healthy; else (reason, detail) naming what is not."""
        comps = self.components()
        uplink = comps.get("uplink", {})
        if not uplink.get("connected"):
            err = uplink.get("last_error") or "never connected"
            return "broker_unreachable", f"uplink: {err}"
        down = []
        for name, h in comps.items():
            if (name in pending.required or name not in pending.known) and h.get("state") != "ok":
                down.append(f"{name}: {h.get('state')} {str(h.get('last_error') or '')[:80]}".strip())
        if down:
            return "component_down", "; ".join(down[:4])
        return None

    def _finish(self, pending: Pending) -> None:
        """Ack the outcome (durably, in the outbox), remember it, clear the marker, publish the status."""
        result = "applied" if pending.stage == "applied" else "rolled_back"
        data = {"outcome": result, "sha256": pending.new_sha256, "previous_sha256": pending.old_sha256,
                "running_sha256": self.info.get("sha256"), **({"cause": pending.reason} if pending.reason else {})}
        ack = (Ack(pending.command_id, "config", "done", "", pending.detail, data) if result == "applied" else
               Ack(pending.command_id, "config", "failed", "rolled_back", f"{pending.reason}: {pending.detail}", data))
        try:
            self.publish(Topics.CMD_ACK, {**ack.to_json(), "time": iso(self.now(), self.tz)}, kind=ACK_KIND)
        except Exception as exc:  # disk full: the marker stays, the next start tries again
            self.last_error = f"could not store the {result} ack: {exc}"
            log.error("config: %s", self.last_error)
            return
        change = {"command": pending.command_id, "result": result, "sha256": pending.new_sha256,
                  "at": iso(self.now(), self.tz), **({"reason": pending.reason} if result != "applied" else {})}
        self.info["last_change"] = change
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.state_file, json.dumps(change).encode("utf-8"), 0o600)
        except OSError as exc:
            log.warning("config: could not record the last change: %s", exc)
        pending_path(self.config_path).unlink(missing_ok=True)
        log.log(logging.INFO if result == "applied" else logging.ERROR, "config: change %s %s%s",
                pending.command_id, result, f": {pending.reason}: {pending.detail}" if result != "applied" else "")
        try:
            self.publish_status()
        except Exception:
            log.exception("config: status not published")


def _mono() -> float:
    import time

    return time.monotonic()
