"""Signed bureau commands in, acks out: verify, run the handler off the MQTT thread, answer.

Wiring (edge_agent/daemon.py; the uplink delivers `cmd/ack` too, since `cmd/+` matches it;
it is ignored):

    dispatcher = build_dispatcher(config, publish, handlers={**action_handlers(actions), ...}, clock=clock)
    uplink.subscribe(Topics.CMD, dispatcher.on_message)

Every message on `cmd/<name>` gets acks on `cmd/ack`: either one `refused` with a reason,
or `accepted` at once and then `done`, `failed` or `refused` when the handler returns. A
handler whose work outlives it (the speaker's: a shout is only worth acking once it was
heard) returns `queued` with a `final` future: `queued` is acked at once, the future's
result (`played` with its start and end times, or `failed` with the reason) when it comes.
Nothing a sender puts on the wire raises out of `on_message`. Besides the verifier's
reasons (security/commands.py), the dispatcher refuses with `unknown_command` (no handler
registered), `busy` (too many still running), `shutting_down` and `internal_error`.
Refusal acks are capped per minute (a flood of forgeries must not fill the outbox) and
refusal log lines are limited to one per reason per minute; both are counted in health().
An MQTT redelivery of an accepted command is refused as `replayed`: at most once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.actions.speaker_queue import Outcome
from edge_agent.clock import SYSTEM_CLOCK, Clock, clock_synchronized
from edge_agent.component import threads_alive
from edge_agent.config import AgentConfig
from edge_agent.config.security import RELAY_ALIASES
from edge_agent.security.bureau_command import (
    Ack,
    Command,
    CommandVerifier,
    Refused,
    VerifierPolicy,
    relay_of,
    trusted_key_map,
)
from edge_agent.security.keys import KeyFileError, load_public_key, parse_public_key
from edge_agent.security.nonces import NonceStore
from edge_agent.timefmt import iso
from edge_agent.types import Publish
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

ACK_KIND = "ack"


FINAL_RESULTS = ("done", "failed", "refused", "played")


@dataclass(frozen=True)
class AckResult:
    """What a handler reports: `done`, `failed` (with a reason) or `refused` (cannot now); or
    `queued` with `final`, a future that the final one (e.g. `played`) completes later."""

    result: str = "done"
    reason: str = ""
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    final: Future[AckResult] | None = field(default=None, compare=False)


CommandHandler = Callable[[Command], AckResult]


def ping(command: Command) -> AckResult:
    return AckResult("done", data={"pong": True})


def no_camera(command: Command) -> AckResult:
    return AckResult("refused", "unavailable", "no camera configured")


class ActionsLike(Protocol):
    """What `action_handlers` needs of edge_agent.actions.Actions (errors are ValueErrors)."""

    def shout(self, clip_id: str | None = None, text: str | None = None, repeats: int = 1, *,
              deadline: float | None = None, done: Callable[[Outcome], None] | None = None) -> None: ...

    def set_relay(self, relay_id: str, on: bool | None, duration_s: float | None = None) -> Mapping[str, Any] | None:
        ...


def speaker_deadline(command: Command, now: Callable[[], datetime], skew_s: float = 0.0) -> float:
    """The command's expiry (with the clock-skew allowance the verifier grants) on the monotonic
    clock: the speaker drops it if not started by then."""
    return time.monotonic() + max(0.0, (command.expires_at - now()).total_seconds() + skew_s)


def played_ack(outcome: Outcome) -> AckResult:
    """A speaker outcome as the command's final ack: `played` with its times, or `failed`."""
    if outcome.result == "played":
        return AckResult("played", data=outcome.as_data())
    return AckResult("failed", outcome.reason, outcome.detail[:200], data=outcome.as_data())


def speaker_future() -> tuple[Future[AckResult], Callable[[Outcome], None]]:
    """A future for the final ack and the speaker `done` callback that completes it."""
    final: Future[AckResult] = Future()
    final.set_running_or_notify_cancel()

    def done(outcome: Outcome) -> None:
        if not final.done():
            final.set_result(played_ack(outcome))

    return final, done


def action_handlers(actions: ActionsLike, *, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                    skew_s: float = 0.0) -> dict[str, CommandHandler]:
    """shout and relay handlers (`relay`, and its aliases `spray`, `strobe`) over the speaker and relays.

    A shout is acked `queued`, then `played` (with the times the first sample reached the
    speaker and the last repeat ended) or `failed` (`no_device`, `interrupted`, `expired`,
    ...); a relay is acked `done` once switched, with its state just after (`on`, `mode`,
    and `resting_s` when its min_off_s rest delays switching on). Which relays the bureau may
    switch at all is checked before (bureau.relays_allowed, security/bureau_command.py)."""

    def shout(c: Command) -> AckResult:
        final, done = speaker_future()
        try:
            actions.shout(c.args.get("clip"), c.args.get("text"), c.args.get("repeat", 1),
                          deadline=speaker_deadline(c, now, skew_s), done=done)
        except ValueError as exc:  # ActionError: unknown clip, speaker disabled...
            return AckResult("failed", "action_error", str(exc)[:200])
        return AckResult("queued", detail="shout queued", final=final)

    def switch(c: Command) -> AckResult:
        relay = relay_of(c.name, c.args)
        if relay is None:
            return AckResult("failed", "invalid_args", "no relay named")
        on = {"on": True, "off": False}.get(c.args["state"])  # "auto": back to the violations
        try:
            state = actions.set_relay(relay, on, c.args.get("duration_s"))
        except ValueError as exc:  # ActionError: no such relay on this box
            return AckResult("failed", "action_error", str(exc)[:200])
        data = dict(state) if state else {"relay": relay}
        detail = ""
        if on and data.get("resting_s"):
            detail = f"on after the relay's min_off_s rest, in {data['resting_s']} s"
        return AckResult("done", detail=detail, data=data)

    return {"shout": shout, "relay": switch, **{alias: switch for alias in RELAY_ALIASES}}


class _TokenBucket:
    """`rate` tokens per minute, at most `rate` saved up."""

    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.tokens = float(per_minute)
        self.rate = per_minute / 60.0
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class CommandDispatcher:
    """The component named "commands": verifies on the uplink thread, runs handlers on its own threads."""

    name = "commands"

    def __init__(self, verifier: CommandVerifier, publish: Publish,
                 handlers: Mapping[str, CommandHandler] | None = None, *, tz: str = "UTC",
                 refusal_acks_per_minute: int = 120, workers: int = 2, max_pending: int = 16,
                 log_every_s: float = 60.0):
        self.verifier = verifier
        self.publish = publish
        self.tz = tz
        self.handlers: dict[str, CommandHandler] = {"ping": ping, "snapshot": no_camera, **(handlers or {})}
        self.max_pending = max_pending
        self._worker_count = max(1, workers)
        self._jobs: queue.Queue[Command | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._acks = _TokenBucket(refusal_acks_per_minute)
        self._log_every_s = log_every_s
        self._last_log: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        self.accepted = 0
        self.refused: dict[str, int] = {}
        self.acks_suppressed = 0
        self.awaiting = 0  # `queued` commands whose final ack is still to come
        self.last_refusal = ""
        self._stopped = True  # until start(): commands are refused as `shutting_down`

    def register(self, name: str, handler: CommandHandler) -> None:
        """Run `handler` for verified `name` commands (replaces a default, e.g. for snapshot)."""
        self.handlers[name] = handler

    # --- the uplink thread ---------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.rsplit("/", 2)
        if len(parts) < 2 or parts[-2] != "cmd" or parts[-1] == "ack":
            return  # our own acks come back through `cmd/+`
        name = parts[-1][:64]
        try:
            if self._stopped:
                raise Refused("shutting_down", "the box is stopping")
            command = self.verifier.verify(name, payload)
            if command.name not in self.handlers:
                raise Refused("unknown_command", f"no handler for '{command.name}' on this box", command.id)
            with self._lock:
                if self._pending >= self.max_pending:
                    raise Refused("busy", f"{self._pending} commands still running", command.id)
                self._pending += 1
        except Refused as exc:
            self._refuse(name, exc)
            return
        except Exception as exc:  # a bug of ours must not become a crash the sender can trigger
            log.exception("command on %s: internal error", topic)
            self._refuse(name, Refused("internal_error", type(exc).__name__))
            return
        self.accepted += 1
        log.info("command %s (%s) accepted, key %s", command.id, command.name, command.key_id)
        self._ack(Ack(command.id, command.name, "accepted"))
        self._jobs.put(command)

    def _refuse(self, name: str, exc: Refused) -> None:
        with self._lock:
            self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
            self.last_refusal = f"{name}: {exc.reason}"
            send = self._acks.take()
            if not send:
                self.acks_suppressed += 1
        self._log_refusal(name, exc)
        if send:
            self._ack(Ack(exc.command_id, name, "refused", exc.reason, exc.detail))

    def _log_refusal(self, name: str, exc: Refused) -> None:
        """One line per reason per `log_every_s`, with the count of those not logged since."""
        now = time.monotonic()
        with self._lock:
            last = self._last_log.get(exc.reason)
            if last is not None and now - last < self._log_every_s:
                self._unlogged[exc.reason] = self._unlogged.get(exc.reason, 0) + 1
                return
            self._last_log[exc.reason] = now
            more = self._unlogged.pop(exc.reason, 0)
        log.warning("command on cmd/%s refused: %s: %s%s", name, exc.reason, exc.detail,
                    f" ({more} more refused for this reason since the last line)" if more else "")

    # --- the worker threads ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                command = self._jobs.get(timeout=1.0)
            except queue.Empty:
                continue
            if command is None:
                return
            if self._stopped:
                self._ack(Ack(command.id, command.name, "failed", "shutting_down", "the box is stopping"))
                self._finish()
                continue
            self._run(command)

    def _run(self, command: Command) -> None:
        try:
            result = self.handlers[command.name](command)
            if not _valid(result):
                result = AckResult("failed", "handler_error", f"handler returned {result!r:.80}")
        except Exception as exc:
            log.exception("command %s (%s) failed", command.id, command.name)
            result = AckResult("failed", "handler_error", f"{type(exc).__name__}: {exc}"[:200])
        try:
            self._ack(Ack(command.id, command.name, result.result, result.reason, result.detail, result.data))
            log.info("command %s (%s): %s %s", command.id, command.name, result.result, result.reason)
            if result.final is not None:
                with self._lock:
                    self.awaiting += 1
                result.final.add_done_callback(lambda f: self._final(command, f))
        finally:
            self._finish()

    def _final(self, command: Command, future: Future[AckResult]) -> None:
        """The late, final ack of a `queued` command (on whichever thread completed it)."""
        with self._lock:
            self.awaiting -= 1
        try:
            result = future.result()
            if not isinstance(result, AckResult) or result.result not in FINAL_RESULTS:
                result = AckResult("failed", "handler_error", f"final result {result!r:.80}")
        except Exception as exc:
            result = AckResult("failed", "handler_error", f"{type(exc).__name__}: {exc}"[:200])
        self._ack(Ack(command.id, command.name, result.result, result.reason, result.detail, result.data))
        log.info("command %s (%s): %s %s", command.id, command.name, result.result, result.reason)

    def _finish(self) -> None:
        with self._lock:
            self._pending -= 1
            self._idle.notify_all()

    def _ack(self, ack: Ack) -> None:
        try:
            self.publish(Topics.CMD_ACK, {**ack.to_json(), "time": iso(self.verifier.now(), self.tz)}, kind=ACK_KIND)
        except Exception:
            log.exception("could not store the ack for command %s", ack.id)

    # --- component ------------------------------------------------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        """True once no handler is running (tests, and a clean stop)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def start(self) -> None:
        """Start the handler threads (again, after a stop or when one has died)."""
        if self.verifier.nonces.closed:
            self.verifier.nonces = NonceStore(self.verifier.nonces.path)
        self._stopped = False
        pending = []  # end-of-work markers from a stop must not end the new threads at once
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                pending.append(job)
        for job in pending:
            self._jobs.put_nowait(job)
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self._worker_count:
            thread = threading.Thread(target=self._work, name=f"command-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Let running handlers finish (2 s), fail what is still queued, close the nonce store."""
        self._stopped = True
        self.wait_idle(2.0)
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(0.5)
        self._threads = [t for t in self._threads if t.is_alive()]
        self.verifier.nonces.close()

    def alive(self) -> bool:
        return threads_alive(*self._threads)

    def health(self) -> Mapping[str, Any]:
        with self._lock:
            return {
                "state": "ok" if self.verifier.policy.trusted else "no_trusted_keys",
                "trusted_keys": sorted(self.verifier.policy.trusted),
                "accepted": self.accepted,
                "refused": dict(self.refused),
                "acks_suppressed": self.acks_suppressed,
                "running": self._pending,
                "awaiting_final": self.awaiting,
                "last_refusal": self.last_refusal,
            }


def _valid(result: object) -> bool:
    if not isinstance(result, AckResult):
        return False
    if result.final is not None:
        return result.result == "queued"
    return result.result in FINAL_RESULTS


def load_trusted_keys(config: AgentConfig) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key for every configured bureau key that can be read; others are logged."""
    keys = []
    for entry in config.bureau.trusted_keys:
        try:
            if entry.public_key is not None:
                keys.append(parse_public_key(entry.public_key))
            elif entry.file is not None:
                keys.append(load_public_key(entry.file))
        except KeyFileError as exc:
            log.error("bureau key %r is unusable, commands signed with it will be refused: %s", entry.name, exc)
    return trusted_key_map(keys)


def build_dispatcher(config: AgentConfig, publish: Publish, *, clock: Clock = SYSTEM_CLOCK,
                     clock_sync: Callable[[], bool | None] = clock_synchronized,
                     handlers: Mapping[str, CommandHandler] | None = None) -> CommandDispatcher:
    """A dispatcher for this box's config; nonces live in DATA_DIR/nonces.sqlite."""
    bureau = config.bureau
    policy = VerifierPolicy(
        site=config.site.id, device=config.device.id, trusted=load_trusted_keys(config),
        commands=frozenset(bureau.commands), max_lifetime_s=bureau.max_command_lifetime_s,
        clock_skew_s=bureau.clock_skew_s, max_payload_bytes=bureau.max_payload_bytes,
        require_synchronized_clock=bureau.require_synchronized_clock,
        relays_allowed=frozenset(bureau.relays_allowed),
    )
    if not policy.trusted:
        log.warning("no trusted bureau key: every command will be refused")
    nonces = NonceStore(Path(config.storage.data_dir) / "nonces.sqlite")
    verifier = CommandVerifier(policy, nonces, now=clock.now, clock_synchronized=clock_sync)
    return CommandDispatcher(verifier, publish, handlers, tz=config.site.timezone,
                             refusal_acks_per_minute=bureau.refusal_acks_per_minute)

