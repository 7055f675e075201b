"""The store's interface: what ingest writes and what the console reads.

SQLite (`sqlite.py`) is the embedded default; PostgreSQL comes behind this same interface,
with several ingest workers on one MQTT 5 shared subscription. So: de-duplication is a
unique key in the store (the `msg_id`, and the (site, device, bundle, file) of evidence),
never a set in one process's memory; a batch is one transaction; evidence bytes live behind
`EvidenceFiles` (a filesystem path), the store keeps only their hashes and state.

Rows come back as plain dicts with the keys each method names.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bureau.messages import Record

ROLES = ("viewer", "operator", "admin")
# Verification of a bundle: incomplete (files still missing) -> pending (complete, not yet
# checked) -> valid / failed / unverified (intact, but the device has no registered key).
VERIFICATIONS = ("incomplete", "pending", "valid", "failed", "unverified")
# A bundle's link to the one before it: intact, broken (prev_hash differs), gap (the one
# before has not arrived), first (seq 1 with the genesis hash).
CHAIN_STATES = ("intact", "broken", "gap", "first")
# A device key: none seen, pending (seen, waiting for an admin), registered, changed (the
# box signs with another key than the registered one: flagged, never trusted).
KEY_STATES = ("none", "pending", "registered", "changed")


@dataclass
class Applied:
    """What a batch changed, for the live feed and the verifier."""

    events: list[dict[str, Any]] = field(default_factory=list)  # event rows after the update (with 'update')
    acks: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)  # site, device, state
    bundles_ready: list[tuple[str, str, str]] = field(default_factory=list)  # complete and to be verified
    refused: int = 0
    duplicates: int = 0
    applied: int = 0


class Store(abc.ABC):
    # --- ingest -------------------------------------------------------------------------------

    @abc.abstractmethod
    def apply(self, records: Sequence[Record], received: float) -> Applied:
        """Apply a batch in one transaction; messages already seen (by msg_id) change nothing."""

    @abc.abstractmethod
    def bundles_to_verify(self, limit: int = 100) -> list[tuple[str, str, str]]:
        """Complete bundles waiting for verification (after a restart, or a key registration)."""

    @abc.abstractmethod
    def set_verification(self, site: str, device: str, bundle: str, result: str, problems: Sequence[str],
                         key_id: str | None, when: float) -> None: ...

    @abc.abstractmethod
    def prune(self, now: float, dedup_days: int) -> None:
        """Forget message ids older than `dedup_days` and expired sessions."""

    # --- devices and keys ---------------------------------------------------------------------

    @abc.abstractmethod
    def fleet(self) -> list[dict[str, Any]]:
        """Every device: site, device, state, since, last_seen, clock_sync, outbox_depth, outbox_dropped,
        version, uptime_s, health (name -> state), open_violations, key_state, key_id, failed_bundles."""

    @abc.abstractmethod
    def device(self, site: str, device: str) -> dict[str, Any] | None:
        """The fleet row plus status (the last status body), seen_key_id, seen_key_b64, key_b64."""

    @abc.abstractmethod
    def register_key(self, site: str, device: str, key_b64: str, key_id: str, by: str, when: float) -> None:
        """Trust this key for the device (pending bundles are verified again)."""

    @abc.abstractmethod
    def approve_seen_key(self, site: str, device: str, by: str, when: float) -> str | None:
        """Trust the key the device was seen signing with (trust on first use, approved); its id, or None."""

    # --- telemetry and events -----------------------------------------------------------------

    @abc.abstractmethod
    def telemetry(self, site: str, device: str, start: float, end: float) -> list[dict[str, Any]]:
        """Rows end, leq, lmax, tsp, pm10, pm2_5, sync in [start, end), oldest first."""

    @abc.abstractmethod
    def events(self, *, site: str | None = None, device: str | None = None, start: float | None = None,
               end: float | None = None, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Event rows (id, site, device, key, kind, state, started, last_time, ended, source, figures,
        message, clock_sync, bundle, verification, snapshot), newest first."""

    @abc.abstractmethod
    def event(self, event_id: int) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def event_updates(self, event_id: int) -> list[dict[str, Any]]: ...

    # --- evidence -----------------------------------------------------------------------------

    @abc.abstractmethod
    def bundles(self, site: str, device: str, *, violation_key: str | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
        """Bundle rows: bundle, seq, created, kind, violation_key, files_total, files_present, verification,
        problems (list), chain, key_id, manifest_hash, received."""

    @abc.abstractmethod
    def bundle(self, site: str, device: str, bundle: str) -> dict[str, Any] | None:
        """A bundle row plus manifest (dict) and files (name, sha256, size, matches)."""

    @abc.abstractmethod
    def chain_gaps(self, site: str, device: str) -> list[tuple[int, int]]:
        """Missing seq ranges (first, last) between the lowest and highest seq received."""

    # --- commands and audit -------------------------------------------------------------------

    @abc.abstractmethod
    def add_command(self, command: dict[str, Any], issued_by: str) -> None:
        """A signed command as sent (id, site, device, name, args, issued_at, expires_at)."""

    @abc.abstractmethod
    def commands(self, *, site: str | None = None, device: str | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
        """Command rows (id, site, device, name, args, issued_by, issued_at, state, acks: [...]), newest first."""

    @abc.abstractmethod
    def command(self, command_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def audit(self, user: str, action: str, target: str, detail: str, when: float) -> None: ...

    @abc.abstractmethod
    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def refused(self, limit: int = 100) -> list[dict[str, Any]]: ...

    # --- people -------------------------------------------------------------------------------

    @abc.abstractmethod
    def add_user(self, name: str, role: str, pw_hash: str, when: float) -> None:
        """Create or replace a user."""

    @abc.abstractmethod
    def user(self, name: str) -> dict[str, Any] | None:
        """name, role, pw_hash, created."""

    @abc.abstractmethod
    def users(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def add_session(self, token_hash: str, user: str, csrf: str, created: float, expires: float) -> None: ...

    @abc.abstractmethod
    def session(self, token_hash: str, now: float) -> dict[str, Any] | None:
        """user, role, csrf of a live session."""

    @abc.abstractmethod
    def drop_session(self, token_hash: str) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def outage(self, exc: BaseException) -> bool:
        """Whether an error from the store means it is unreachable or busy (retry later), not a bad message."""
        return False
