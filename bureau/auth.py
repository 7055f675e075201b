"""People: scrypt password hashes, sessions with CSRF tokens, and login rate limiting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque

from bureau.store import Store
from bureau.store.base import ROLES

_N, _R, _P = 2**14, 8, 1
RANK = {role: i for i, role in enumerate(ROLES)}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(base64.b64decode(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


# A fixed hash to check against when the user does not exist, so timing does not tell.
_DUMMY = hash_password(secrets.token_hex(8))


def allowed(role: str, needed: str) -> bool:
    return RANK.get(role, -1) >= RANK[needed]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


class LoginLimiter:
    """At most `attempts` failed logins per user name and per address within `window_s`."""

    def __init__(self, attempts: int, window_s: float):
        self.attempts = attempts
        self.window_s = window_s
        self._fails: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, *keys: str) -> float:
        """Seconds until a login may be tried again (0: now)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                q = self._fails[key]
                while q and q[0] < now - self.window_s:
                    q.popleft()
                if len(q) >= self.attempts:
                    wait = max(wait, q[0] + self.window_s - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._fails[key].append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._fails.pop(key, None)


class Sessions:
    def __init__(self, store: Store, hours: float):
        self.store = store
        self.seconds = hours * 3600

    def login(self, name: str, password: str) -> tuple[str, str] | None:
        """(session token, csrf token) for the right password, else None."""
        user = self.store.user(name)
        ok = check_password(password, user["pw_hash"] if user else _DUMMY)
        if not (ok and user):
            return None
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = time.time()
        self.store.add_session(token_hash(token), name, csrf, now, now + self.seconds)
        return token, csrf

    def get(self, token: str | None) -> dict[str, str] | None:
        if not token:
            return None
        return self.store.session(token_hash(token), time.time())

    def logout(self, token: str | None) -> None:
        if token:
            self.store.drop_session(token_hash(token))
