"""The store's logic in SQL that SQLite and PostgreSQL both run: how a batch is applied, and the reads.

The two stores differ only in connections and transactions (`_db`, `_tx`) and their schema:
SQLite has one writer at a time; PostgreSQL has several ingest workers writing at once, so
the SQL here never relies on being alone. De-duplication is the `seen` table's primary key
(`INSERT ... ON CONFLICT DO NOTHING`: a msg_id applied twice changes nothing, whichever
worker got it). Every write about a device (status, event, evidence) first takes that device's
row lock (`_touch`), so concurrent writers of one device queue in one order (records are
applied by device): a bundle's completeness and its chain link are decided by one writer at a
time, which sees what the others committed.
SQL is written with `?` placeholders; the PostgreSQL store translates them.
"""

from __future__ import annotations

import abc
import hashlib
import itertools
import json
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from bureau.messages import Ack, Event, EvidenceFile, EvidencePart, Manifest, Record, Refused, Status, Telemetry
from bureau.store.base import Applied, Store
from bureau.store.files import EvidenceFiles
from edge_agent.evidence.bundle import GENESIS_HASH
from edge_agent.security.keys import KeyFileError, key_id, parse_public_key


class Conn(Protocol):
    """What the SQL needs of a connection: `execute(sql, params)` returning a cursor with name-indexed rows."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...


# The result a command settles on; 'accepted' alone is not an end.
FINAL = ("done", "failed", "refused", "played")
STEPS = ("accepted", "queued")  # on the way: never replace a final result that overtook them


def _sql_list(values: tuple[str, ...]) -> str:
    """A literal SQL list of fixed, known words (never user text)."""
    return "(" + ",".join(f"'{v}'" for v in values) + ")"


def _kind(man: dict[str, Any]) -> str | None:
    for part in (man.get("violation"), man.get("subject")):
        if isinstance(part, dict) and isinstance(part.get("kind"), str):
            return part["kind"][:64]
    return None


def _summary_health(components: Any) -> dict[str, str]:
    if not isinstance(components, dict):
        return {}
    return {str(name)[:64]: str(h.get("state", "?"))[:16] for name, h in components.items() if isinstance(h, dict)}


TELEMETRY_COLUMNS = ("site", "device", "end_ts", "leq", "lmax", "tsp", "pm10", "pm2_5", "sync", "extra")
TOUCH = ("INSERT INTO devices (site, device, last_seen) VALUES (?,?,?) ON CONFLICT (site, device) "
         "DO UPDATE SET last_seen = excluded.last_seen")


class SqlStore(Store):
    """The shared logic; subclasses give connections (`_db` for reads, `_tx` for one write transaction)."""

    files: EvidenceFiles
    # Appended to the SELECT that checks a bundle's completeness: row lock where writers run concurrently.
    LOCK_ROW = ""
    # Telemetry's `last_seen` updates outside the batch's transaction: with concurrent writers, a batch
    # holding a lock on every device it has telemetry for would make the others wait for its commit.
    TOUCH_APART = False

    @abc.abstractmethod
    def _db(self) -> Conn:
        """A connection for reads."""

    @abc.abstractmethod
    def _tx(self) -> AbstractContextManager[Conn]:
        """One write transaction: committed on a clean exit, rolled back on an exception."""

    # --- ingest ---------------------------------------------------------------------------

    def apply(self, records: Sequence[Record], received: float) -> Applied:
        out = Applied()
        ready: set[tuple[str, str, str]] = set()
        with self._tx() as db:
            fresh = self._claim(db, [r.msg_id for r in records if isinstance(r, (Status, Telemetry, Event, Ack))],
                                received)
            telemetry: list[tuple[Any, ...]] = []
            touched: set[tuple[str, str]] = set()
            for rec in records:
                if isinstance(rec, Refused):
                    out.refused += 1
                    db.execute("INSERT INTO refused (received, topic, reason, size, site, device, sample) "
                               "VALUES (?,?,?,?,?,?,?)", (received, rec.topic, rec.reason, rec.size, rec.site,
                                                          rec.device, rec.sample))
                    continue
                if isinstance(rec, (Status, Telemetry, Event, Ack)):
                    if rec.msg_id not in fresh:
                        out.duplicates += 1
                        continue
                    fresh.discard(rec.msg_id)  # the same id again in this batch is a duplicate too
                out.applied += 1
                if isinstance(rec, Telemetry):
                    telemetry.append(_telemetry_row(rec))
                    touched.add((rec.site, rec.device))
                elif isinstance(rec, Status):
                    self._status(db, rec, received, out)
                elif isinstance(rec, Event):
                    self._event(db, rec, received, out)
                elif isinstance(rec, Ack):
                    self._ack(db, rec, received, out)
                elif isinstance(rec, Manifest):
                    self._manifest(db, rec, received, ready)
                elif isinstance(rec, EvidenceFile):
                    self._file(db, rec, received, ready)
                elif isinstance(rec, EvidencePart):
                    self._part(db, rec, received, ready)
            # Telemetry (most of the traffic) in one round of statements per batch, not one per message.
            if telemetry:
                self._insert_telemetry(db, telemetry)
                if not self.TOUCH_APART:
                    self._many(db, TOUCH, [(site, device, received) for site, device in sorted(touched)])
        if touched and self.TOUCH_APART:
            self._touch_apart([(site, device, received) for site, device in sorted(touched)])
        out.bundles_ready = sorted(ready)
        return out

    def _insert_telemetry(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        """Rows of TELEMETRY_COLUMNS; a row already there (same device and minute) is kept."""
        self._many(db, f"INSERT INTO telemetry ({', '.join(TELEMETRY_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?,?,?) "
                       "ON CONFLICT DO NOTHING", rows)

    def _touch_apart(self, rows: list[tuple[Any, ...]]) -> None:
        """`last_seen` of the devices whose telemetry a batch brought, after its commit (see TOUCH_APART)."""
        with self._tx() as db:
            self._many(db, TOUCH, rows)

    def _claim(self, db: Conn, msg_ids: list[str], received: float) -> set[str]:
        """Insert the batch's message ids into `seen`; the ones that were not there yet.

        The primary key decides: an id another transaction holds waits for it to end."""
        fresh = set()
        for msg_id in msg_ids:
            if db.execute("INSERT INTO seen (msg_id, received) VALUES (?, ?) ON CONFLICT DO NOTHING",
                          (msg_id, received)).rowcount:
                fresh.add(msg_id)
        return fresh

    def _many(self, db: Conn, sql: str, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            db.execute(sql, row)

    def _touch(self, db: Conn, site: str, device: str, received: float) -> None:
        db.execute("INSERT INTO devices (site, device, last_seen) VALUES (?,?,?) "
                   "ON CONFLICT (site, device) DO UPDATE SET last_seen = excluded.last_seen",
                   (site, device, received))

    def _status(self, db: Conn, s: Status, received: float, out: Applied) -> None:
        self._touch(db, s.site, s.device, received)  # first: the device's row lock orders concurrent writers
        row = db.execute("SELECT state, since, status_time FROM devices WHERE site=? AND device=?",
                         (s.site, s.device)).fetchone()
        if row is not None and row["status_time"] is not None and s.time < row["status_time"]:
            self._touch(db, s.site, s.device, received)
            return  # an older status arriving late (a backlog) does not undo a newer one
        body = s.body
        # A Last Will is built when the box connects: its `time` is then, not when the link was lost.
        when = received if s.state == "offline" and body.get("reason") == "connection lost" else s.time
        since = row["since"] if row is not None and row["state"] == s.state and row["since"] else when
        outbox: dict[str, Any] = body["outbox"] if isinstance(body.get("outbox"), dict) else {}
        dropped = outbox.get("dropped")
        clock: dict[str, Any] = body["clock"] if isinstance(body.get("clock"), dict) else {}
        sync = clock.get("synchronized", body.get("clock_synchronized"))
        db.execute(
            "INSERT INTO devices (site, device, state, since, last_seen, status_time, clock_sync, outbox_depth, "
            "outbox_dropped, version, uptime_s, health, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (site, device) DO UPDATE SET state=excluded.state, since=excluded.since, "
            "last_seen=excluded.last_seen, status_time=excluded.status_time, clock_sync=excluded.clock_sync, "
            "outbox_depth=excluded.outbox_depth, outbox_dropped=excluded.outbox_dropped, version=excluded.version, "
            "uptime_s=excluded.uptime_s, health=excluded.health, status=excluded.status",
            (s.site, s.device, s.state, since, received, s.time, None if not isinstance(sync, bool) else int(sync),
             outbox.get("depth") if isinstance(outbox.get("depth"), int) else None,
             sum(v for v in dropped.values() if isinstance(v, int)) if isinstance(dropped, dict) else None,
             str(body.get("version", ""))[:32], body.get("uptime_s") if isinstance(body.get("uptime_s"), (int, float))
             else None, json.dumps(_summary_health(body.get("components"))), json.dumps(body, ensure_ascii=False)))
        out.statuses.append({"site": s.site, "device": s.device, "state": s.state, "since": since})

    def _event(self, db: Conn, e: Event, received: float, out: Applied) -> None:
        self._touch(db, e.site, e.device, received)  # the device's row lock: one writer of its events at a time
        figures = json.dumps(e.figures, ensure_ascii=False)
        row = db.execute("SELECT id, state, last_time FROM events WHERE site=? AND device=? AND key=?",
                         (e.site, e.device, e.key)).fetchone()
        ended = e.time if e.state == "ended" else None
        if row is None:
            cur = db.execute(
                "INSERT INTO events (site, device, key, kind, state, started, last_time, ended, source, figures, "
                "message, clock_sync) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                (e.site, e.device, e.key, e.kind, e.state, e.started, e.time, ended, e.source, figures, e.message,
                 None if e.clock_synchronized is None else int(e.clock_synchronized)))
            event_id = cur.fetchone()["id"]
        else:
            event_id = row["id"]
            newer = e.time >= row["last_time"] and row["state"] != "ended"
            if newer or e.state == "ended":
                db.execute("UPDATE events SET state=?, last_time=CASE WHEN last_time > ? THEN last_time ELSE ? END, "
                           "ended=COALESCE(?, ended), figures=?, message=? WHERE id=?",
                           (e.state, e.time, e.time, ended, figures, e.message, event_id))
        db.execute("INSERT INTO event_updates (event_id, msg_id, time, state, figures, received) VALUES (?,?,?,?,?,?)",
                   (event_id, e.msg_id, e.time, e.state, figures, received))
        self._touch(db, e.site, e.device, received)
        ev = db.execute("SELECT * FROM events WHERE id=?", (event_id,)).fetchone()
        out.events.append({**_event_row(ev), "update": e.state})

    def _ack(self, db: Conn, a: Ack, received: float, out: Applied) -> None:
        db.execute("INSERT INTO acks (command_id, site, device, command, result, reason, detail, time, received) "
                   "VALUES (?,?,?,?,?,?,?,?,?)", (a.command_id, a.site, a.device, a.command, a.result, a.reason,
                                                  a.detail, a.time, received))
        if a.command_id is not None:
            # A step on the way ('accepted', 'queued') never replaces a final result that overtook it,
            # and 'accepted' never replaces 'queued'.
            db.execute(f"UPDATE commands SET state=? WHERE id=? AND site=? AND device=? AND NOT ("
                       f"(? IN {_sql_list(STEPS)} AND state IN {_sql_list(FINAL)}) OR "
                       f"(? = 'accepted' AND state = 'queued'))",
                       (a.result, a.command_id, a.site, a.device, a.result, a.result))
        self._touch(db, a.site, a.device, received)
        out.acks.append({"command_id": a.command_id, "site": a.site, "device": a.device, "result": a.result,
                         "reason": a.reason, "detail": a.detail, "time": a.time})

    def _manifest(self, db: Conn, m: Manifest, received: float,
                  ready: set[tuple[str, str, str]]) -> None:
        # The device's row lock first: a bundle's chain link to its neighbours is decided by one writer at a time.
        self._touch(db, m.site, m.device, received)
        man = m.manifest
        digest = hashlib.sha256(m.raw).hexdigest()
        old = db.execute("SELECT manifest_hash FROM bundles WHERE site=? AND device=? AND bundle=?",
                         (m.site, m.device, m.bundle)).fetchone()
        if old is not None and old["manifest_hash"] is not None:
            if old["manifest_hash"] != digest:
                db.execute("INSERT INTO refused (received, topic, reason, size, site, device, sample) "
                           "VALUES (?,?,?,?,?,?,?)",
                           (received, f"{m.site}/{m.device}/evidence", f"a second, different manifest for bundle "
                            f"{m.bundle}: the first is kept", len(m.raw), m.site, m.device, ""))
            return
        self.files.write(m.site, m.device, m.bundle, "manifest.json", m.raw)
        violation: dict[str, Any] = man["violation"] if isinstance(man.get("violation"), dict) else {}
        seq = man.get("seq") if type(man.get("seq")) is int else None
        files: list[Any] = man["files"] if isinstance(man.get("files"), list) else []
        db.execute(
            "INSERT INTO bundles (site, device, bundle, seq, created, manifest, manifest_hash, prev_hash, key_id, "
            "public_key, violation_key, kind, files_total, received) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (site, device, bundle) DO UPDATE SET seq=excluded.seq, created=excluded.created, "
            "manifest=excluded.manifest, manifest_hash=excluded.manifest_hash, prev_hash=excluded.prev_hash, "
            "key_id=excluded.key_id, public_key=excluded.public_key, violation_key=excluded.violation_key, "
            "kind=excluded.kind, files_total=excluded.files_total",
            (m.site, m.device, m.bundle, seq, str(man.get("created", ""))[:40], m.raw.decode("utf-8", "replace"),
             digest, str(man.get("prev_hash", ""))[:64], str(man.get("key_id", ""))[:16],
             str(man.get("public_key", ""))[:100], str(violation.get("key", ""))[:200] or None,
             _kind(man), len(files), received))
        self._seen_key(db, m.site, m.device, man.get("public_key"))
        self._touch(db, m.site, m.device, received)
        self._chain(db, m.site, m.device, seq)
        if seq is not None:
            self._chain(db, m.site, m.device, seq + 1)
        self._check_complete(db, m.site, m.device, m.bundle, ready)

    def _seen_key(self, db: Conn, site: str, device: str, key_b64: Any) -> None:
        """The key a box signs with: pending until an admin approves it; a change is flagged."""
        try:
            kid = key_id(parse_public_key(str(key_b64)))
        except KeyFileError:
            return
        row = db.execute("SELECT key_id, key_state, seen_key_id FROM devices WHERE site=? AND device=?",
                         (site, device)).fetchone()
        if row is None:
            db.execute("INSERT INTO devices (site, device) VALUES (?, ?)", (site, device))
            row = {"key_id": None, "key_state": "none", "seen_key_id": None}
        if row["key_id"] == kid:
            if row["key_state"] == "changed":  # signing with the registered key again
                db.execute("UPDATE devices SET key_state='registered', seen_key_id=?, seen_key_b64=? "
                           "WHERE site=? AND device=?", (kid, key_b64, site, device))
            return
        state = "changed" if row["key_id"] is not None else "pending"
        if row["seen_key_id"] != kid or row["key_state"] != state:
            db.execute("UPDATE devices SET key_state=?, seen_key_id=?, seen_key_b64=? WHERE site=? AND device=?",
                       (state, kid, str(key_b64), site, device))

    def _chain(self, db: Conn, site: str, device: str, seq: int | None) -> None:
        if seq is None:
            return
        row = db.execute("SELECT bundle, prev_hash FROM bundles WHERE site=? AND device=? AND seq=? "
                         "AND manifest_hash IS NOT NULL", (site, device, seq)).fetchone()
        if row is None:
            return
        if seq == 1:
            state = "first" if row["prev_hash"] == GENESIS_HASH else "broken"
        else:
            prev = db.execute("SELECT manifest_hash FROM bundles WHERE site=? AND device=? AND seq=? "
                              "AND manifest_hash IS NOT NULL", (site, device, seq - 1)).fetchone()
            state = "gap" if prev is None else ("intact" if prev["manifest_hash"] == row["prev_hash"] else "broken")
        db.execute("UPDATE bundles SET chain=? WHERE site=? AND device=? AND bundle=?",
                   (state, site, device, row["bundle"]))

    def _file(self, db: Conn, f: EvidenceFile, received: float,
              ready: set[tuple[str, str, str]]) -> None:
        self._touch(db, f.site, f.device, received)  # the device's row lock first, as every writer takes it
        digest = hashlib.sha256(f.data).hexdigest()
        old = self._stored_sha256(db, f.site, f.device, f.bundle, f.name)
        if old is not None and (old == digest or digest not in self._listed(db, f.site, f.device, f.bundle, f.name)):
            return  # a re-send; or a different copy that does not match the manifest either: keep the first
        self.files.write(f.site, f.device, f.bundle, f.name, f.data)
        db.execute("INSERT INTO bundle_files (site, device, bundle, name, sha256, size, received) "
                   "VALUES (?,?,?,?,?,?,?) "
                   "ON CONFLICT (site, device, bundle, name) DO UPDATE SET sha256=excluded.sha256, size=excluded.size, "
                   "received=excluded.received",
                   (f.site, f.device, f.bundle, f.name, digest, len(f.data), received))
        db.execute("INSERT INTO bundles (site, device, bundle, received) VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                   (f.site, f.device, f.bundle, received))
        self._check_complete(db, f.site, f.device, f.bundle, ready)

    def _part(self, db: Conn, p: EvidencePart, received: float, ready: set[tuple[str, str, str]]) -> None:
        """Keep the part on disk; the last one to arrive makes the file (checked like a whole one).

        Parts stay until their bundle is complete (Ingest removes them after the commit): a
        batch rolled back after the join finds them again when the broker redelivers it."""
        have = self._stored_sha256(db, p.site, p.device, p.bundle, p.name)
        if have is not None and have in self._listed(db, p.site, p.device, p.bundle, p.name):
            return  # a re-send of a file already here and matching its manifest
        self.files.write_part(p.site, p.device, p.bundle, p.name, p.index, p.count, p.data)
        data = self.files.join_parts(p.site, p.device, p.bundle, p.name, p.count)
        if data is not None:
            self._file(db, EvidenceFile(p.site, p.device, p.bundle, p.name, data), received, ready)

    def _stored_sha256(self, db: Conn, site: str, device: str, bundle: str, name: str) -> str | None:
        row = db.execute("SELECT sha256 FROM bundle_files WHERE site=? AND device=? AND bundle=? AND name=?",
                         (site, device, bundle, name)).fetchone()
        return None if row is None else str(row["sha256"])

    def _listed(self, db: Conn, site: str, device: str, bundle: str, name: str) -> set[str]:
        row = db.execute("SELECT manifest FROM bundles WHERE site=? AND device=? AND bundle=?",
                         (site, device, bundle)).fetchone()
        if row is None or row["manifest"] is None:
            return set()
        try:
            files = json.loads(row["manifest"]).get("files") or []
        except (ValueError, AttributeError):
            return set()
        return {str(e.get("sha256")) for e in files if isinstance(e, dict) and e.get("name") == name}

    def _check_complete(self, db: Conn, site: str, device: str, bundle: str,
                        ready: set[tuple[str, str, str]]) -> None:
        """Every listed file is here: verify (again). A file that is here but wrong is the verifier's finding."""
        row = db.execute("SELECT manifest FROM bundles WHERE site=? AND device=? AND bundle=?" + self.LOCK_ROW,
                         (site, device, bundle)).fetchone()
        if row is None or row["manifest"] is None:
            return
        try:
            listed = {str(e.get("name")) for e in json.loads(row["manifest"]).get("files") or []
                      if isinstance(e, dict)}
        except (ValueError, AttributeError):
            listed = set()
        have = {r["name"] for r in db.execute("SELECT name FROM bundle_files WHERE site=? AND device=? AND bundle=?",
                                              (site, device, bundle))}
        if listed <= have:
            db.execute("UPDATE bundles SET verification='pending' WHERE site=? AND device=? AND bundle=?",
                       (site, device, bundle))
            ready.add((site, device, bundle))

    def bundles_to_verify(self, limit: int = 100) -> list[tuple[str, str, str]]:
        rows = self._db().execute("SELECT site, device, bundle FROM bundles WHERE verification='pending' LIMIT ?",
                                  (limit,)).fetchall()
        return [(r["site"], r["device"], r["bundle"]) for r in rows]

    def set_verification(self, site: str, device: str, bundle: str, result: str, problems: Sequence[str],
                         key_id: str | None, when: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE bundles SET verification=?, problems=?, verified_key_id=?, verified_at=? "
                       "WHERE site=? AND device=? AND bundle=?",
                       (result, json.dumps(list(problems), ensure_ascii=False), key_id, when, site, device, bundle))

    def prune(self, now: float, dedup_days: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM seen WHERE received < ?", (now - dedup_days * 86400,))
            db.execute("DELETE FROM sessions WHERE expires < ?", (now,))

    # --- devices ----------------------------------------------------------------------------

    _FLEET = ("SELECT d.*, (SELECT COUNT(*) FROM events e WHERE e.site=d.site AND e.device=d.device "
              "AND e.state != 'ended') AS open_violations, (SELECT COUNT(*) FROM bundles b WHERE b.site=d.site "
              "AND b.device=d.device AND b.verification='failed') AS failed_bundles FROM devices d")

    def fleet(self) -> list[dict[str, Any]]:
        rows = self._db().execute(self._FLEET + " ORDER BY d.site, d.device").fetchall()
        return [_device_row(r, with_status=False) for r in rows]

    def device(self, site: str, device: str) -> dict[str, Any] | None:
        row = self._db().execute(self._FLEET + " WHERE d.site=? AND d.device=?", (site, device)).fetchone()
        return _device_row(row, with_status=True) if row is not None else None

    def register_key(self, site: str, device: str, key_b64: str, key_id: str, by: str, when: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO devices (site, device) VALUES (?, ?) ON CONFLICT DO NOTHING", (site, device))
            row = db.execute("SELECT seen_key_id FROM devices WHERE site=? AND device=?", (site, device)).fetchone()
            state = "changed" if row["seen_key_id"] not in (None, key_id) else "registered"
            db.execute("UPDATE devices SET key_b64=?, key_id=?, key_state=?, key_by=?, key_at=? "
                       "WHERE site=? AND device=?", (key_b64, key_id, state, by, when, site, device))
            db.execute("UPDATE bundles SET verification='pending' WHERE site=? AND device=? "
                       "AND verification IN ('valid','failed','unverified')", (site, device))

    def approve_seen_key(self, site: str, device: str, by: str, when: float) -> str | None:
        row = self._db().execute("SELECT seen_key_b64, seen_key_id FROM devices WHERE site=? AND device=?",
                                 (site, device)).fetchone()
        if row is None or not row["seen_key_b64"]:
            return None
        self.register_key(site, device, row["seen_key_b64"], row["seen_key_id"], by, when)
        return str(row["seen_key_id"])

    # --- telemetry and events ------------------------------------------------------------------

    def telemetry(self, site: str, device: str, start: float, end: float) -> list[dict[str, Any]]:
        rows = self._db().execute(
            "SELECT end_ts, leq, lmax, tsp, pm10, pm2_5, sync FROM telemetry WHERE site=? AND device=? "
            "AND end_ts >= ? AND end_ts < ? ORDER BY end_ts", (site, device, int(start), int(end))).fetchall()
        return [dict(r) for r in rows]

    _EVENTS = ("SELECT e.*, b.bundle AS bundle, b.verification AS verification, b.chain AS chain, "
               "(SELECT name FROM bundle_files f WHERE f.site=e.site AND f.device=e.device AND f.bundle=b.bundle "
               "AND f.name LIKE 'snapshot%.jpg' ORDER BY name LIMIT 1) AS snapshot "
               "FROM events e LEFT JOIN bundles b ON b.site=e.site AND b.device=e.device AND b.violation_key=e.key "
               "AND b.seq = (SELECT MIN(seq) FROM bundles b2 WHERE b2.site=e.site AND b2.device=e.device "
               "AND b2.violation_key=e.key)")

    def events(self, *, site: str | None = None, device: str | None = None, start: float | None = None,
               end: float | None = None, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        where, args = [], []
        for cond, value in (("e.site = ?", site), ("e.device = ?", device), ("e.started >= ?", start),
                            ("e.started < ?", end)):
            if value is not None:
                where.append(cond)
                args.append(value)
        if open_only:
            where.append("e.state != 'ended'")
        sql = self._EVENTS + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY e.started DESC LIMIT ?"
        return [_event_row(r) for r in self._db().execute(sql, (*args, limit)).fetchall()]

    def event(self, event_id: int) -> dict[str, Any] | None:
        row = self._db().execute(self._EVENTS + " WHERE e.id = ?", (event_id,)).fetchone()
        return _event_row(row) if row is not None else None

    def event_updates(self, event_id: int) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT time, state, figures, received FROM event_updates WHERE event_id=? "
                                  "ORDER BY time, id", (event_id,)).fetchall()
        return [{**dict(r), "figures": json.loads(r["figures"])} for r in rows]

    # --- evidence ---------------------------------------------------------------------------

    def bundles(self, site: str, device: str, *, violation_key: str | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
        sql = ("SELECT b.*, (SELECT COUNT(*) FROM bundle_files f WHERE f.site=b.site AND f.device=b.device "
               "AND f.bundle=b.bundle) AS files_present FROM bundles b WHERE b.site=? AND b.device=?")
        args: list[Any] = [site, device]
        if violation_key is not None:
            sql += " AND b.violation_key=?"
            args.append(violation_key)
        rows = self._db().execute(sql + " ORDER BY b.seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [_bundle_row(r) for r in rows]

    def bundle(self, site: str, device: str, bundle: str) -> dict[str, Any] | None:
        db = self._db()
        row = db.execute("SELECT b.*, (SELECT COUNT(*) FROM bundle_files f WHERE f.site=b.site AND "
                         "f.device=b.device AND f.bundle=b.bundle) AS files_present FROM bundles b "
                         "WHERE b.site=? AND b.device=? AND b.bundle=?", (site, device, bundle)).fetchone()
        if row is None:
            return None
        out = _bundle_row(row)
        try:
            manifest = json.loads(row["manifest"]) if row["manifest"] else {}
        except ValueError:
            manifest = {}
        out["manifest"] = manifest
        have = {r["name"]: dict(r) for r in db.execute(
            "SELECT name, sha256, size FROM bundle_files WHERE site=? AND device=? AND bundle=?",
            (site, device, bundle))}
        files = []
        for entry in manifest.get("files") or []:
            if not isinstance(entry, dict):
                continue
            got = have.pop(str(entry.get("name")), None)
            files.append({"name": entry.get("name"), "sha256": entry.get("sha256"), "size": entry.get("size"),
                          "media_type": entry.get("media_type", ""), "present": got is not None,
                          "received_sha256": got["sha256"] if got else None,
                          "matches": bool(got and got["sha256"] == entry.get("sha256"))})
        for name, got in have.items():
            files.append({"name": name, "sha256": None, "size": got["size"], "media_type": "", "present": True,
                          "received_sha256": got["sha256"], "matches": False})
        out["files"] = files
        return out

    def chain_gaps(self, site: str, device: str) -> list[tuple[int, int]]:
        seqs = [r["seq"] for r in self._db().execute(
            "SELECT seq FROM bundles WHERE site=? AND device=? AND seq IS NOT NULL ORDER BY seq", (site, device))]
        gaps = []
        for a, b in itertools.pairwise(seqs):
            if b > a + 1:
                gaps.append((a + 1, b - 1))
        return gaps

    # --- commands and audit ---------------------------------------------------------------------

    def add_command(self, command: dict[str, Any], issued_by: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO commands (id, site, device, name, args, issued_by, issued_at, expires_at, sent, "
                       "body) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (command["id"], command["site"], command["device"], command["name"],
                        json.dumps(command["args"], ensure_ascii=False), issued_by, command["issued_at"],
                        command["expires_at"], time.time(), json.dumps(command, ensure_ascii=False)))

    def commands(self, *, site: str | None = None, device: str | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
        where, args = [], []
        for cond, value in (("site = ?", site), ("device = ?", device)):
            if value is not None:
                where.append(cond)
                args.append(value)
        db = self._db()
        rows = db.execute("SELECT * FROM commands" + (" WHERE " + " AND ".join(where) if where else "") +
                          " ORDER BY sent DESC LIMIT ?", (*args, limit)).fetchall()
        return [self._command_row(db, r) for r in rows]

    def command(self, command_id: str) -> dict[str, Any] | None:
        db = self._db()
        row = db.execute("SELECT * FROM commands WHERE id=?", (command_id,)).fetchone()
        return self._command_row(db, row) if row is not None else None

    def _command_row(self, db: Conn, r: Any) -> dict[str, Any]:
        acks = [dict(a) for a in db.execute("SELECT result, reason, detail, time, received FROM acks WHERE "
                                            "command_id=? AND site=? AND device=? ORDER BY time, id",
                                            (r["id"], r["site"], r["device"]))]
        out = {k: r[k] for k in ("id", "site", "device", "name", "issued_by", "issued_at", "expires_at", "sent",
                                 "state")}
        out["args"] = json.loads(r["args"])
        out["acks"] = acks
        return out

    def audit(self, user: str, action: str, target: str, detail: str, when: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO audit (time, \"user\", action, target, detail) VALUES (?,?,?,?,?)",
                       (when, user, action, target, detail))

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT * FROM audit ORDER BY time DESC, id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]

    def refused(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT * FROM refused ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]

    # --- people ------------------------------------------------------------------------------

    def add_user(self, name: str, role: str, pw_hash: str, when: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO users (name, role, pw_hash, created) VALUES (?,?,?,?) ON CONFLICT (name) DO "
                       "UPDATE SET role=excluded.role, pw_hash=excluded.pw_hash", (name, role, pw_hash, when))
            db.execute("DELETE FROM sessions WHERE \"user\"=?", (name,))

    def user(self, name: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM users WHERE name=?", (name,)).fetchone()
        return dict(row) if row is not None else None

    def users(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db().execute("SELECT name, role, created FROM users ORDER BY name")]

    def add_session(self, token_hash: str, user: str, csrf: str, created: float, expires: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO sessions VALUES (?,?,?,?,?)", (token_hash, user, csrf, created, expires))

    def session(self, token_hash: str, now: float) -> dict[str, Any] | None:
        row = self._db().execute('SELECT s."user", s.csrf, u.role FROM sessions s JOIN users u '
                                 'ON u.name = s."user" WHERE s.token_hash=? AND s.expires > ?',
                                 (token_hash, now)).fetchone()
        return dict(row) if row is not None else None

    def drop_session(self, token_hash: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE token_hash=?", (token_hash,))


def _telemetry_row(t: Telemetry) -> tuple[Any, ...]:
    return (t.site, t.device, int(t.end), t.leq, t.lmax, t.dust.get("tsp"), t.dust.get("pm10"), t.dust.get("pm2_5"),
            None if t.clock_synchronized is None else int(t.clock_synchronized),
            json.dumps(t.extra, separators=(",", ":")) if t.extra else None)


def _device_row(r: Any, *, with_status: bool) -> dict[str, Any]:
    out = {k: r[k] for k in ("site", "device", "state", "since", "last_seen", "status_time", "outbox_depth",
                             "outbox_dropped", "version", "uptime_s", "key_state", "key_id", "seen_key_id",
                             "key_by", "key_at", "open_violations", "failed_bundles")}
    out["clock_sync"] = None if r["clock_sync"] is None else bool(r["clock_sync"])
    out["health"] = json.loads(r["health"] or "{}")
    if with_status:
        out["status"] = json.loads(r["status"]) if r["status"] else {}
        out["key_b64"] = r["key_b64"]
        out["seen_key_b64"] = r["seen_key_b64"]
    return out


def _event_row(r: Any) -> dict[str, Any]:
    out = {k: r[k] for k in ("id", "site", "device", "key", "kind", "state", "started", "last_time", "ended",
                             "source", "message")}
    out["figures"] = json.loads(r["figures"])
    out["clock_sync"] = None if r["clock_sync"] is None else bool(r["clock_sync"])
    keys = r.keys()
    for k in ("bundle", "verification", "chain", "snapshot"):
        out[k] = r[k] if k in keys else None
    return out


def _bundle_row(r: Any) -> dict[str, Any]:
    out = {k: r[k] for k in ("site", "device", "bundle", "seq", "created", "manifest_hash", "prev_hash", "key_id",
                             "violation_key", "kind", "files_total", "files_present", "verification", "chain",
                             "verified_key_id", "verified_at", "received")}
    out["problems"] = json.loads(r["problems"] or "[]")
    return out
