"""The console's push page: a config or a detector head to one box or a group, and each box's answer.

An admin picks boxes and pastes a whole config (YAML) or the sections to replace (as YAML); for
each box the console signs the agent's `config` command (edge_agent/fleet/), in parts where the
file is long, with the hash of the config that box reports in its retained status as the one it
replaces (a box that reports none is skipped). Or uploads a head (.npz) and its card (.yaml),
sent as signed `model` parts. The table shows, per box, the outcome of its latest change:
restarting (or installing), applied, rolled back (with the cause) or refused.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import yaml
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bureau.commands import CommandError
from edge_agent.fleet.transfer import split
from edge_agent.security.canonical import canonical_bytes

if TYPE_CHECKING:
    from bureau.web.app import Web

PART_BYTES = 4096
PART_GAP_S = 0.02
NAMES = ("config", "model")


def outcome(command: dict[str, Any]) -> tuple[str, str]:
    """(what to show, why) for a config or model command from its acks."""
    acks = command.get("acks") or []
    final = next((a for a in reversed(acks) if a["result"] in ("done", "failed", "refused")), None)
    if final is None:
        return ("restarting" if any(a["result"] == "queued" for a in acks) else "sent"), ""  # or installing
    if final["result"] == "done":
        return "applied", final.get("detail") or ""
    if final["result"] == "failed" and final.get("reason") == "rolled_back":
        return "rolled_back", final.get("detail") or ""
    return final["result"], f"{final.get('reason') or ''} {final.get('detail') or ''}".strip()


class Push:
    def __init__(self, web: Web):
        self.web = web

    def _boxes(self) -> list[dict[str, Any]]:
        store = self.web.c.store
        rows = []
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for cmd in store.commands(limit=500):
            args = cmd.get("args") or {}
            last_part = "parts" not in args or args.get("part") == args.get("parts", 1) - 1
            if cmd["name"] in NAMES and last_part:
                latest.setdefault((cmd["site"], cmd["device"]), cmd)
        for box in store.fleet():
            detail = store.device(box["site"], box["device"]) or {}
            status = detail.get("status") or {}
            last = latest.get((box["site"], box["device"]))
            shown, why = outcome(last) if last else ("", "")
            rows.append({**box, "config_sha256": (status.get("config") or {}).get("sha256") or "",
                         "last": last, "outcome": shown, "why": why})
        return rows

    async def page(self, request: Request, user: dict[str, Any]) -> Response:
        boxes = await asyncio.to_thread(self._boxes)
        return self.web.render(request, "push.html", user, boxes=boxes, error=request.query_params.get("error"),
                               sent=request.query_params.get("sent"))

    async def post(self, request: Request, user: dict[str, Any]) -> Response:
        form = request.state.form
        targets = [str(v) for v in form.getlist("box")]
        text = str(form.get("yaml", ""))
        mode = str(form.get("mode", "file"))
        try:
            confirm_s = int(str(form.get("confirm_s", "90")))
            sent = await asyncio.to_thread(self._send, user["user"], targets, text, mode, confirm_s)
        except (CommandError, ValueError, yaml.YAMLError) as exc:
            return RedirectResponse(f"/admin/push?error={_q(str(exc)[:300])}", status_code=303)
        return RedirectResponse(f"/admin/push?sent={sent}", status_code=303)

    async def post_model(self, request: Request, user: dict[str, Any]) -> Response:
        form = request.state.form
        targets = [str(v) for v in form.getlist("box")]
        card, head = form.get("card"), form.get("head")
        try:
            if isinstance(card, str) or isinstance(head, str) or card is None or head is None:
                raise CommandError("upload the head (.npz) and its card (.yaml)")
            card_bytes, head_bytes = await card.read(), await head.read()
            sent = await asyncio.to_thread(self._send_model, user["user"], targets, card_bytes, head_bytes)
        except (CommandError, ValueError, yaml.YAMLError) as exc:
            return RedirectResponse(f"/admin/push?error={_q(str(exc)[:300])}", status_code=303)
        return RedirectResponse(f"/admin/push?sent={sent}", status_code=303)

    def _send_model(self, user: str, targets: list[str], card: bytes, head: bytes) -> int:
        if not targets:
            raise CommandError("pick at least one box")
        parsed = yaml.safe_load(card.decode("utf-8"))
        name = parsed.get("name") if isinstance(parsed, dict) else None
        if not isinstance(name, str):
            raise CommandError("the card has no model name")
        parts = [{"model": name, "card_bytes": len(card), **p} for p in split(card + head, PART_BYTES)]
        for target in targets:
            site, _, device = target.partition("/")
            self._publish(user, site, device, "model", parts)
            self.web.c.store.audit(user, "model", target, f"head {name} pushed in {len(parts)} part(s)", time.time())
        return len(targets)

    def _publish(self, user: str, site: str, device: str, name: str, parts: list[dict[str, Any]]) -> None:
        sender = self.web.c.sender
        for i, args in enumerate(parts):
            if i:
                time.sleep(PART_GAP_S)  # a box runs a few commands at once and refuses more as `busy`
            signed = sender.sign(site, device, name, args)
            self.web.c.store.add_command(signed, user)
            if not sender.publish(f"{sender.prefix}/{site}/{device}/cmd/{name}", canonical_bytes(signed)):
                raise CommandError("the broker did not take the command (not connected?)")

    def _send(self, user: str, targets: list[str], text: str, mode: str, confirm_s: int) -> int:
        if not targets:
            raise CommandError("pick at least one box")
        if not text.strip():
            raise CommandError("paste the config (or the sections to replace)")
        store = self.web.c.store
        if mode == "sections":
            sections = yaml.safe_load(text)
            if not isinstance(sections, dict):
                raise CommandError("sections: a YAML mapping of section name to its new content")
            parts: list[dict[str, Any]] = [{"sections": sections}]
        else:
            parts = split(text.encode("utf-8"), PART_BYTES)
        sent = 0
        for target in targets:
            site, _, device = target.partition("/")
            status = (store.device(site, device) or {}).get("status") or {}
            expect = (status.get("config") or {}).get("sha256")
            if not expect:
                store.audit(user, "config", target, "skipped: the box reports no config hash", time.time())
                continue
            self._publish(user, site, device, "config",
                          [{**args, "expect_sha256": expect, "confirm_s": confirm_s} for args in parts])
            store.audit(user, "config", target, f"config pushed in {len(parts)} part(s)", time.time())
            sent += 1
        return sent


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
