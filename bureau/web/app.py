"""The console's web app (Starlette): pages, fragments for live updates, the SSE stream, forms.

Security: a session cookie (HttpOnly, SameSite=Strict, Secure) holding a random token whose
hash the store keeps; a CSRF token on every POST (the session's, or a double-submit cookie
for the login form); roles checked on every route (viewer < operator < admin); failed logins
limited per user and per address; a Content-Security-Policy that allows only this origin.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bureau.app import Console
from bureau.auth import allowed, hash_password
from bureau.commands import NAMES, PRESET_CLIPS, CommandError
from bureau.export import export_zip, fingerprint
from bureau.messages import TARGET
from bureau.store.base import ROLES
from bureau.web import charts
from bureau.web.i18n import kind_icon, kind_label, label
from edge_agent.evidence.bundle import BUNDLE_DIR, FILE_NAME
from edge_agent.security.keys import KeyFileError, key_id, parse_public_key, public_b64

HERE = Path(__file__).parent
COOKIE = "bureau_session"
LOGIN_CSRF = "bureau_login_csrf"
CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
DUST_COLORS = {"tsp": "#8d6e63", "pm10": "#e08a00", "pm2_5": "#7b4fb8"}

Handler = Callable[[Request], Awaitable[Response]]


class Web:
    def __init__(self, console: Console):
        self.c = console
        self.tz = ZoneInfo(console.config.timezone)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
        self.env.filters["t"] = self._fmt_time
        self.env.filters["ago"] = self._ago
        self.env.globals.update(kind_label=kind_label, kind_icon=kind_icon, fingerprint=fingerprint,
                                site_name=console.config.site_name, NAMES=NAMES, ROLES=ROLES)

    # --- helpers ------------------------------------------------------------------------------

    def _fmt_time(self, ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        if ts is None:
            return "—"
        return datetime.fromtimestamp(ts, self.tz).strftime(fmt)

    def _ago(self, ts: float | None) -> str:
        if ts is None:
            return "—"
        s = max(0, int(time.time() - ts))
        if s < 120:
            return f"{s}s"
        return f"{s // 60}m" if s < 7200 else f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"

    def lang(self, request: Request) -> str:
        lang = request.query_params.get("lang") or request.cookies.get("lang") or "zh"
        return lang if lang in ("zh", "en") else "zh"

    def render(self, request: Request, name: str, user: dict[str, Any] | None, status: int = 200,
               **ctx: Any) -> HTMLResponse:
        lang = self.lang(request)
        html = self.env.get_template(name).render(
            _=lambda key: label(key, lang), lang=lang, user=user, request=request, path=request.url.path,
            can_command=bool(user and allowed(user["role"], "operator")),
            is_admin=bool(user and allowed(user["role"], "admin")), **ctx)
        resp = HTMLResponse(html, status_code=status)
        if request.query_params.get("lang") in ("zh", "en"):
            resp.set_cookie("lang", lang, max_age=365 * 86400, samesite="strict", httponly=True)
        return resp

    def user(self, request: Request) -> dict[str, Any] | None:
        return self.c.sessions.get(request.cookies.get(COOKIE))

    def page(self, role: str, handler: Callable[[Request, dict[str, Any]], Awaitable[Response]]) -> Handler:
        """A route for logged-in users of at least `role`; POSTs must carry the session's CSRF token."""

        async def wrapped(request: Request) -> Response:
            user = await asyncio.to_thread(self.user, request)
            if user is None:
                if request.method == "GET" and not request.url.path.startswith(("/fragment", "/stream")):
                    return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
                return Response("login required", status_code=401)
            if request.method == "POST":
                form = await request.form()
                if not secrets.compare_digest(str(form.get("csrf", "")), user["csrf"]):
                    return self.render(request, "message.html", user, status=403, message="csrf")
                request.state.form = form
            if not allowed(user["role"], role):
                return self.render(request, "message.html", user, status=403, message="forbidden")
            return await handler(request, user)

        return wrapped

    # --- login ------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        resp = self.render(request, "login.html", None, csrf=token, next=_safe_next(request.query_params.get("next")))
        self._cookie(resp, LOGIN_CSRF, token, 600)
        return resp

    async def login(self, request: Request) -> Response:
        form = await request.form()
        token = request.cookies.get(LOGIN_CSRF, "")
        if not token or not secrets.compare_digest(str(form.get("csrf", "")), token):
            return self.render(request, "message.html", None, status=403, message="csrf")
        name = str(form.get("username", ""))[:64]
        addr = request.client.host if request.client else "?"
        keys = (f"user:{name}", f"addr:{addr}")
        next_url = _safe_next(str(form.get("next", "")))
        if self.c.limiter.blocked(*keys) > 0:
            resp = self.render(request, "login.html", None, status=429, error="login_blocked", csrf=token,
                               next=next_url)
            return resp
        result = await asyncio.to_thread(self.c.sessions.login, name, str(form.get("password", ""))[:1024])
        if result is None:
            self.c.limiter.failed(*keys)
            return self.render(request, "login.html", None, status=401, error="login_failed", csrf=token,
                               next=next_url)
        self.c.limiter.succeeded(*keys)
        redirect = RedirectResponse(next_url, status_code=303)
        self._cookie(redirect, COOKIE, result[0], int(self.c.config.web.session_hours * 3600))
        redirect.delete_cookie(LOGIN_CSRF)
        return redirect

    def _cookie(self, resp: Response, name: str, value: str, max_age: int) -> None:
        resp.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                        secure=self.c.config.web.cookie_secure, path="/")

    async def logout(self, request: Request, user: dict[str, Any]) -> Response:
        self.c.sessions.logout(request.cookies.get(COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    # --- pages ------------------------------------------------------------------------------

    def _fleet_ctx(self) -> dict[str, Any]:
        fleet = self.c.store.fleet()
        open_kinds: dict[tuple[str, str], list[str]] = {}
        for ev in self.c.store.events(open_only=True, limit=2000):
            open_kinds.setdefault((ev["site"], ev["device"]), []).append(ev["kind"])
        totals = {"total": len(fleet), "online": sum(d["state"] == "online" for d in fleet),
                  "offline": sum(d["state"] == "offline" for d in fleet),
                  "open": sum(d["open_violations"] or 0 for d in fleet),
                  "failed": sum(d["failed_bundles"] or 0 for d in fleet),
                  "keys": sum(d["key_state"] in ("pending", "changed") for d in fleet)}
        return {"fleet": fleet, "open_kinds": open_kinds, "totals": totals}

    async def fleet(self, request: Request, user: dict[str, Any]) -> Response:
        ctx = await asyncio.to_thread(self._fleet_ctx)
        return self.render(request, "fleet.html", user, **ctx)

    async def fleet_fragment(self, request: Request, user: dict[str, Any]) -> Response:
        ctx = await asyncio.to_thread(self._fleet_ctx)
        return self.render(request, "fleet_table.html", user, **ctx)

    def _day(self, request: Request) -> date:
        try:
            return date.fromisoformat(request.query_params.get("day", ""))
        except ValueError:
            return datetime.now(self.tz).date()

    def _site_ctx(self, site: str, day: date, lang: str) -> dict[str, Any]:
        start_dt = datetime.combine(day, datetime.min.time(), self.tz)
        start, end = start_dt.timestamp(), (start_dt + timedelta(days=1)).timestamp()
        limits = self.c.config.site_limits(site)
        devices = [d for d in self.c.store.fleet() if d["site"] == site]
        night_bands = _night_bands(limits, start, end, self.tz)

        def noise_limit(t: float) -> float:
            return limits.noise_night_db if limits.is_night(datetime.fromtimestamp(t, self.tz).time()) \
                else limits.noise_day_db

        blocks = []
        for dev in devices:
            rows = self.c.store.telemetry(site, dev["device"], start, end)
            noise = charts.Chart(start, end, "dB(A)", bands=night_bands, css_id=f"noise-{dev['device']}")
            noise.series.append(charts.Series("LAeq", [(r["end_ts"], r["leq"]) for r in rows], "#1565c0"))
            noise.series.append(charts.Series("Lmax", [(r["end_ts"], r["lmax"]) for r in rows], "#90a4ae", 1.0))
            noise.limits.append(charts.Series(label("limit", lang), charts.step_line(start, end, noise_limit),
                                              "#d32f2f", 1.8, "6 4", None))
            dust = charts.Chart(start, end, "", bands=night_bands, y_min=0, css_id=f"dust-{dev['device']}")
            units = []
            for q, color in DUST_COLORS.items():
                pts = [(r["end_ts"], r[q]) for r in rows]
                if any(v is not None for _, v in pts):
                    dust.series.append(charts.Series(q.upper().replace("_", "."), pts, color))
                    lim = limits.dust.get(q)
                    if lim is not None:
                        dust.limits.append(charts.Series(f"{q.upper().replace('_', '.')} {label('limit', lang)}",
                                                         [(start, lim.limit), (end, lim.limit)], color, 1.6,
                                                         "6 4", None))
                        units.append(lim.unit)
            dust.unit = "/".join(sorted(set(units))) or "ug/m3"
            blocks.append({"device": dev, "rows": len(rows), "noise_svg": charts.render(noise, self.tz),
                           "dust_svg": charts.render(dust, self.tz) if dust.series else ""})
        events = self.c.store.events(site=site, start=start - 86400, end=end, limit=500)
        events = [e for e in events if (e["ended"] or time.time()) >= start]
        timeline = _timeline_svg(events, start, end, self.tz, lang)
        return {"site": site, "day": day, "prev": day - timedelta(days=1), "next": day + timedelta(days=1),
                "blocks": blocks, "events": events, "timeline": timeline, "limits": limits}

    async def site(self, request: Request, user: dict[str, Any]) -> Response:
        site = request.path_params["site"]
        if not TARGET.fullmatch(site):
            return self._not_found(request, user)
        ctx = await asyncio.to_thread(self._site_ctx, site, self._day(request), self.lang(request))
        return self.render(request, "site.html", user, **ctx)

    def _device_ctx(self, site: str, device: str) -> dict[str, Any] | None:
        dev = self.c.store.device(site, device)
        if dev is None:
            return None
        status = dev.get("status") or {}
        clips = (((status.get("components") or {}).get("actions") or {}).get("speaker") or {}).get("clips") or {}
        ready = [c for c in clips.get("ready", []) if isinstance(c, str)] or list(PRESET_CLIPS)
        events = self.c.store.events(site=site, device=device, limit=100)  # the page lists 20; cameras read all
        return {"dev": dev, "clips": ready, "gaps": self.c.store.chain_gaps(site, device),
                "bundles": self.c.store.bundles(site, device, limit=30),
                "commands": self.c.store.commands(site=site, device=device, limit=20),
                "events": events[:20],
                "components": status.get("components") or {},
                "cameras": device_cameras(status, events),
                "replies": self.c.voice.recent(site, device)}

    async def voice_file(self, request: Request, user: dict[str, Any]) -> Response:
        """A crew's reply (or a `listen` recording) as Ogg/Opus, for the console's player."""
        p = request.path_params
        path = self.c.voice.audio_path(p["site"], p["device"], p["voice_id"])
        if path is None:
            return self._not_found(request, user)
        return FileResponse(path, media_type="audio/ogg")

    async def device(self, request: Request, user: dict[str, Any]) -> Response:
        site, device = request.path_params["site"], request.path_params["device"]
        ctx = await asyncio.to_thread(self._device_ctx, site, device) if _ids_ok(site, device) else None
        if ctx is None:
            return self._not_found(request, user)
        return self.render(request, "device.html", user, highlight=request.query_params.get("cmd"),
                           error=request.query_params.get("error"), **ctx)

    async def commands_fragment(self, request: Request, user: dict[str, Any]) -> Response:
        site, device = request.path_params["site"], request.path_params["device"]
        if not _ids_ok(site, device):
            return self._not_found(request, user)
        cmds = await asyncio.to_thread(self.c.store.commands, site=site, device=device, limit=20)
        return self.render(request, "commands_table.html", user, commands=cmds,
                           highlight=request.query_params.get("cmd"))

    async def command(self, request: Request, user: dict[str, Any]) -> Response:
        site, device = request.path_params["site"], request.path_params["device"]
        if not _ids_ok(site, device):
            return self._not_found(request, user)
        form = request.state.form
        name = str(form.get("name", ""))
        args: dict[str, Any] = {}
        if name == "shout":
            text = str(form.get("text", "")).strip()
            args = {"text": text} if text else {"clip": str(form.get("clip", ""))}
        elif name in ("spray", "strobe"):
            state = str(form.get("state", "on"))
            args = {"state": state}
            if state == "on":
                try:
                    args["duration_s"] = int(str(form.get("duration_s", "60")))
                except ValueError:
                    args["duration_s"] = -1
        elif name == "relearn_view":
            args = {"camera": str(form.get("camera", ""))}
        try:
            signed = await asyncio.to_thread(self.c.sender.send, user["user"], site, device, name, args)
        except CommandError as exc:
            return RedirectResponse(f"/device/{site}/{device}?error={_q(str(exc))}#commands", status_code=303)
        return RedirectResponse(f"/device/{site}/{device}?cmd={signed['id']}#commands", status_code=303)

    async def talk(self, request: Request, user: dict[str, Any]) -> Response:
        """Push-to-talk: the browser's recording (field `audio`) becomes a signed `talk` (bureau/talk.py)."""
        from bureau.talk import MAX_UPLOAD_BYTES, send_talk

        site, device = request.path_params["site"], request.path_params["device"]
        if not _ids_ok(site, device):
            return self._not_found(request, user)
        upload = request.state.form.get("audio")
        if upload is None or isinstance(upload, str):
            return Response(json.dumps({"error": "no audio"}), status_code=400, media_type="application/json")
        recording = await upload.read(MAX_UPLOAD_BYTES + 1)
        try:
            if len(recording) > MAX_UPLOAD_BYTES:
                raise CommandError(f"the recording is larger than {MAX_UPLOAD_BYTES} bytes")
            signed = await asyncio.to_thread(send_talk, self.c.sender, user["user"], site, device, recording)
        except CommandError as exc:
            return Response(json.dumps({"error": str(exc)}), status_code=400, media_type="application/json")
        return Response(json.dumps({"id": signed["id"]}), media_type="application/json")

    async def live(self, request: Request, user: dict[str, Any]) -> Response:
        events = await asyncio.to_thread(self.c.store.events, limit=50)
        return self.render(request, "live.html", user, events=events)

    async def live_fragment(self, request: Request, user: dict[str, Any]) -> Response:
        events = await asyncio.to_thread(self.c.store.events, limit=50)
        return self.render(request, "events_list.html", user, events=events)

    def _event_ctx(self, event_id: int, lang: str) -> dict[str, Any] | None:
        ev = self.c.store.event(event_id)
        if ev is None:
            return None
        bundles = self.c.store.bundles(ev["site"], ev["device"], violation_key=ev["key"])
        bundle = self.c.store.bundle(ev["site"], ev["device"], bundles[-1]["bundle"]) if bundles else None
        dev = self.c.store.device(ev["site"], ev["device"]) or {}
        readings_svg = ""
        if bundle is not None:
            data = self.c.files.read(ev["site"], ev["device"], bundle["bundle"], "readings.json")
            readings_svg = _readings_svg(data, ev, self.tz, lang)
        media: dict[str, Any] = {"snapshot": None, "marked": None, "clip": None, "images": []}
        for f in (bundle or {}).get("files", []):
            n = str(f["name"])
            if not f["present"]:
                continue
            if n == "snapshot.jpg":
                media["snapshot"] = n
            elif n == "snapshot_marked.jpg":
                media["marked"] = n
            elif n.endswith(".mp4") and media["clip"] is None:
                media["clip"] = n
            elif n.endswith((".jpg", ".png")):
                media["images"].append(n)
        limit = ev["figures"].get("limit")
        return {"ev": ev, "updates": self.c.store.event_updates(event_id), "bundle": bundle, "dev": dev,
                "media": media, "readings_svg": readings_svg, "limit": limit,
                "figure_bars": _figure_bars(ev["figures"])}

    async def event(self, request: Request, user: dict[str, Any]) -> Response:
        return await self._event_page(request, user, "event.html")

    async def event_fragment(self, request: Request, user: dict[str, Any]) -> Response:
        """The event's verification part alone (the page refreshes it when a result arrives)."""
        return await self._event_page(request, user, "verification.html")

    async def _event_page(self, request: Request, user: dict[str, Any], template: str) -> Response:
        try:
            event_id = int(request.path_params["event_id"])
        except ValueError:
            return self._not_found(request, user)
        ctx = await asyncio.to_thread(self._event_ctx, event_id, self.lang(request))
        if ctx is None:
            return self._not_found(request, user)
        return self.render(request, template, user, **ctx)

    async def evidence_file(self, request: Request, user: dict[str, Any]) -> Response:
        p = request.path_params
        if not (_ids_ok(p["site"], p["device"]) and BUNDLE_DIR.fullmatch(p["bundle"])
                and FILE_NAME.fullmatch(p["name"])):
            return self._not_found(request, user)
        path = self.c.files.bundle_dir(p["site"], p["device"], p["bundle"]) / p["name"]
        if not path.is_file():
            return self._not_found(request, user)
        media = {".jpg": "image/jpeg", ".png": "image/png", ".mp4": "video/mp4", ".json": "application/json"}
        return FileResponse(path, media_type=media.get(path.suffix, "application/octet-stream"),
                            headers={"Cache-Control": "private, max-age=3600"})

    async def evidence_zip(self, request: Request, user: dict[str, Any]) -> Response:
        p = request.path_params
        if not (_ids_ok(p["site"], p["device"]) and BUNDLE_DIR.fullmatch(p["bundle"])):
            return self._not_found(request, user)
        data = await asyncio.to_thread(export_zip, self.c.config, self.c.store, self.c.files, p["site"], p["device"],
                                       p["bundle"])
        if data is None:
            return self._not_found(request, user)
        await asyncio.to_thread(self.c.store.audit, user["user"], "export", f"{p['site']}/{p['device']}",
                                p["bundle"], time.time())
        return Response(data, media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="evidence-{p["site"]}-{p["device"]}-{p["bundle"]}.zip"'})

    # --- admin ------------------------------------------------------------------------------

    async def keys(self, request: Request, user: dict[str, Any]) -> Response:
        fleet = await asyncio.to_thread(self.c.store.fleet)
        devices = [await asyncio.to_thread(self.c.store.device, d["site"], d["device"]) for d in fleet]
        return self.render(request, "keys.html", user, devices=devices, bureau_key=self.c.signer.public_b64,
                           bureau_key_id=self.c.signer.key_id, error=request.query_params.get("error"))

    async def keys_post(self, request: Request, user: dict[str, Any]) -> Response:
        form = request.state.form
        site, device = str(form.get("site", "")).strip(), str(form.get("device", "")).strip()
        if not _ids_ok(site, device):
            return RedirectResponse("/admin/keys?error=bad+site+or+device", status_code=303)
        now = time.time()
        if form.get("approve"):
            kid = await asyncio.to_thread(self.c.store.approve_seen_key, site, device, user["user"], now)
            detail = f"approved seen key {kid}"
        else:
            try:
                key = parse_public_key(str(form.get("public_key", "")))
            except KeyFileError as exc:
                return RedirectResponse(f"/admin/keys?error={_q(str(exc))}", status_code=303)
            kid = key_id(key)
            await asyncio.to_thread(self.c.store.register_key, site, device, public_b64(key), kid, user["user"], now)
            detail = f"registered key {kid}"
        await asyncio.to_thread(self.c.store.audit, user["user"], "key", f"{site}/{device}", detail, now)
        self.c.verifier.wake()
        return RedirectResponse("/admin/keys", status_code=303)

    async def users(self, request: Request, user: dict[str, Any]) -> Response:
        users = await asyncio.to_thread(self.c.store.users)
        return self.render(request, "users.html", user, users=users, error=request.query_params.get("error"))

    async def users_post(self, request: Request, user: dict[str, Any]) -> Response:
        form = request.state.form
        name, role, pw = str(form.get("username", "")).strip(), str(form.get("role", "")), str(form.get("password", ""))
        if not TARGET.fullmatch(name) or role not in ROLES or len(pw) < 8:
            return RedirectResponse("/admin/users?error=name%2C+role+and+a+password+of+8%2B+characters",
                                    status_code=303)
        await asyncio.to_thread(self.c.store.add_user, name, role, hash_password(pw), time.time())
        await asyncio.to_thread(self.c.store.audit, user["user"], "user", name, f"role {role}", time.time())
        return RedirectResponse("/admin/users", status_code=303)

    async def audit(self, request: Request, user: dict[str, Any]) -> Response:
        log = await asyncio.to_thread(self.c.store.audit_log, 300)
        cmds = await asyncio.to_thread(self.c.store.commands, limit=100)
        return self.render(request, "audit.html", user, log=log, commands=cmds)

    async def refused(self, request: Request, user: dict[str, Any]) -> Response:
        rows = await asyncio.to_thread(self.c.store.refused, 200)
        return self.render(request, "refused.html", user, rows=rows)

    # --- live ---------------------------------------------------------------------------------

    async def stream(self, request: Request, user: dict[str, Any]) -> Response:
        q = self.c.hub.subscribe()

        async def gen() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(q.get(), 15)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: {item.get('type', 'message')}\ndata: {json.dumps(item, default=str)}\n\n"
            finally:
                self.c.hub.unsubscribe(q)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _not_found(self, request: Request, user: dict[str, Any] | None) -> Response:
        return self.render(request, "message.html", user, status=404, message="not_found")


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text[:200])


def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def device_cameras(status: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The box's cameras, for the `relearn_view` form: those its status lists (with the tamper
    conditions it reports now) and those named by its camera_tamper events (a box that is offline
    still has them); ids the agent would refuse are left out."""
    listed = (((status.get("components") or {}).get("cameras") or {}).get("cameras") or {})
    cams: dict[str, list[str]] = {}
    if isinstance(listed, dict):
        for cam, entry in listed.items():
            tamper = entry.get("tamper") if isinstance(entry, dict) else None
            cams[str(cam)] = [str(t) for t in tamper] if isinstance(tamper, list) else []
    for ev in events:
        if ev.get("kind") == "camera_tamper" and ev.get("source"):
            cams.setdefault(str(ev["source"]), [])
    return [{"id": cam, "tamper": cams[cam]} for cam in sorted(cams) if TARGET.fullmatch(cam)]


def _ids_ok(site: str, device: str) -> bool:
    return bool(TARGET.fullmatch(site) and TARGET.fullmatch(device))


def _night_bands(limits: Any, start: float, end: float, tz: ZoneInfo) -> list[tuple[float, float]]:
    bands, t, cur = [], start, None
    while t <= end:
        night = limits.is_night(datetime.fromtimestamp(t, tz).time())
        if night and cur is None:
            cur = t
        elif not night and cur is not None:
            bands.append((cur, t))
            cur = None
        t += 300
    if cur is not None:
        bands.append((cur, end))
    return bands


KIND_COLORS = {"noise_over_limit": "#d32f2f", "noise_early_warning": "#f9a825", "night_lmax": "#6a1b9a",
               "night_work": "#4527a0", "dust_over_limit": "#8d6e63", "bare_soil": "#a1887f",
               "unwashed_vehicle": "#00897b", "black_smoke": "#212121", "camera_tamper": "#546e7a",
               "device_fault": "#ff6f00"}


def _timeline_svg(events: list[dict[str, Any]], start: float, end: float, tz: ZoneInfo, lang: str) -> str:
    """One lane per kind across the day; each event a bar from start to end (or now), linked to its page."""
    from html import escape

    kinds = sorted({e["kind"] for e in events})
    width, left, lane = 900, 150, 26
    height = 30 + lane * max(1, len(kinds))
    span = end - start

    def x(t: float) -> float:
        return left + (min(max(t, start), end) - start) / span * (width - left - 16)

    out = [f'<svg class="timeline" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" role="img">']
    for h in range(0, 25, 3):
        xx = x(start + h * 3600)
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="4" y2="{height - 18}" stroke="#e3e6ea"/>')
        out.append(f'<text x="{xx:.1f}" y="{height - 4}" font-size="11" text-anchor="middle" fill="#555">'
                   f"{h:02d}:00</text>")
    now = time.time()
    for i, kind in enumerate(kinds):
        yy = 8 + i * lane
        out.append(f'<text x="{left - 8}" y="{yy + 14}" font-size="12" text-anchor="end" fill="#222">'
                   f"{escape(kind_label(kind, lang))}</text>")
        for e in (e for e in events if e["kind"] == kind):
            a, b = x(e["started"]), x(e["ended"] or min(now, end))
            color = KIND_COLORS.get(kind, "#37474f")
            title = f"{kind_label(kind, lang)} {datetime.fromtimestamp(e['started'], tz):%H:%M:%S} {e['message']}"
            out.append(f'<a href="/event/{e["id"]}"><rect x="{a:.1f}" y="{yy}" width="{max(b - a, 4):.1f}" '
                       f'height="18" rx="3" fill="{color}"><title>{escape(title)}</title></rect></a>')
    out.append("</svg>")
    return "".join(out)


def _readings_svg(data: bytes | None, ev: dict[str, Any], tz: ZoneInfo, lang: str) -> str:
    if not data:
        return ""
    try:
        rows = json.loads(data).get("readings") or []
        points: dict[str, list[tuple[float, float | None]]] = {}
        units: dict[str, str] = {}
        for r in rows:
            t = datetime.fromisoformat(str(r["time"])).timestamp()
            v = r.get("value")
            key = f"{r.get('sensor')} {r.get('quantity')}"
            points.setdefault(key, []).append((t, float(v) if isinstance(v, (int, float)) else None))
            units[key] = str(r.get("unit") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""
    if not points:
        return ""
    ts = [t for pts in points.values() for t, _ in pts]
    chart = charts.Chart(min(ts), max(ts) + 1, "/".join(sorted(set(units.values()))), css_id="readings-chart")
    palette = ["#1565c0", "#e08a00", "#2e7d32", "#6a1b9a"]
    for i, (name, pts) in enumerate(sorted(points.items())):
        chart.series.append(charts.Series(name, sorted(pts), palette[i % len(palette)], max_gap_s=None))
    limit = ev["figures"].get("limit")
    values = [v for pts in points.values() for _, v in pts if v is not None]
    unit = ev["figures"].get("unit")
    same_scale = unit in units.values() if isinstance(unit, str) else (
        bool(values) and min(values) * 0.5 <= float(limit or 0) <= max(values) * 2)
    if isinstance(limit, (int, float)) and same_scale:
        line = [(chart.start, float(limit)), (chart.end, float(limit))]
        chart.limits.append(charts.Series(label("limit", lang), line, "#d32f2f", 1.8, "6 4", None))
    return charts.render(chart, tz)


def _figure_bars(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Each numeric figure against the limit, as a bar a person sees at a glance."""
    limit = figures.get("limit")
    if not isinstance(limit, (int, float)) or limit <= 0:
        return []
    out = []
    for k, v in figures.items():
        if k == "limit" or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if k in ("leq", "lmax", "avg", "value", "mean", "laeq") or (0.3 * limit <= v <= 5 * limit):
            scale = max(v, limit) * 1.15
            out.append({"name": k, "value": v, "pct": round(100 * v / scale, 1),
                        "limit_pct": round(100 * limit / scale, 1), "over": v > limit})
    return out


class SecurityHeaders:
    """Plain ASGI middleware (it must not buffer the event stream): CSP and friends on every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CSP
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "same-origin"
                headers["X-Frame-Options"] = "DENY"
                if "cache-control" not in headers and not static:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(console: Console) -> Starlette:
    web = Web(console)
    p = web.page
    from bureau.web.push import Push

    push = Push(web)
    routes = [
        Route("/login", web.login_form, methods=["GET"]),
        Route("/login", web.login, methods=["POST"]),
        Route("/logout", p("viewer", web.logout), methods=["POST"]),
        Route("/", p("viewer", web.fleet)),
        Route("/fragment/fleet", p("viewer", web.fleet_fragment)),
        Route("/site/{site}", p("viewer", web.site)),
        Route("/device/{site}/{device}", p("viewer", web.device)),
        Route("/device/{site}/{device}/command", p("operator", web.command), methods=["POST"]),
        Route("/device/{site}/{device}/talk", p("operator", web.talk), methods=["POST"]),
        Route("/voice/{site}/{device}/{voice_id}.ogg", p("viewer", web.voice_file)),
        Route("/fragment/commands/{site}/{device}", p("viewer", web.commands_fragment)),
        Route("/live", p("viewer", web.live)),
        Route("/fragment/live", p("viewer", web.live_fragment)),
        Route("/event/{event_id}", p("viewer", web.event)),
        Route("/fragment/event/{event_id}", p("viewer", web.event_fragment)),
        Route("/evidence/{site}/{device}/{bundle}.zip", p("viewer", web.evidence_zip)),
        Route("/evidence/{site}/{device}/{bundle}/{name}", p("viewer", web.evidence_file)),
        Route("/admin/keys", p("admin", web.keys)),
        Route("/admin/keys", p("admin", web.keys_post), methods=["POST"]),
        Route("/admin/users", p("admin", web.users)),
        Route("/admin/users", p("admin", web.users_post), methods=["POST"]),
        Route("/admin/push", p("admin", push.page)),  # remote config to boxes (bureau/web/push.py)
        Route("/admin/push", p("admin", push.post), methods=["POST"]),
        Route("/admin/push/model", p("admin", push.post_model), methods=["POST"]),
        Route("/audit", p("operator", web.audit)),
        Route("/refused", p("viewer", web.refused)),
        Route("/stream", p("viewer", web.stream)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.web = web
    return app
