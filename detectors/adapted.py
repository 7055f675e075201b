"""Heads a site trained on its own photos (`edge-agent adapt`): versioned, switchable, reversible.

Layout under the agent's data dir (`storage.data_dir/models/<model name>/`):

    v0001/head.npz, v0001/<name>.yaml (card with its own held-out figures), v0001/heldout.csv
    active     the version in use ("shipped": the head shipped with the agent); replaced atomically
    history    the versions activated, oldest first; rollback drops the last one

A running daemon notices a new `active` by its modification time, looked at no more often
than every few seconds (or at once after `request_reload()`, e.g. on SIGHUP), and swaps the
head; the backbone stays loaded. A head whose card names another backbone is refused.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from detectors.card import ModelCard, ModelError
from detectors.heads import Head

SHIPPED = "shipped"
_VERSION = re.compile(r"^v(\d{4,})$")

_generation = 0
_generation_lock = threading.Lock()


def request_reload() -> None:
    """Make every watcher look at its active pointer on its next use (wire to SIGHUP)."""
    global _generation
    with _generation_lock:
        _generation += 1


class HeadStore:
    """The adapted heads of one model (e.g. smoke_cls) in a data dir."""

    def __init__(self, models_dir: Path, name: str) -> None:
        self.name = name
        self.dir = Path(models_dir) / name
        self.active_file = self.dir / "active"
        self.history_file = self.dir / "history"

    def versions(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir() and _VERSION.match(p.name))

    def next_version(self) -> str:
        last = max((int(_VERSION.match(v).group(1)) for v in self.versions()), default=0)  # type: ignore[union-attr]
        return f"v{last + 1:04d}"

    def card_path(self, version: str) -> Path:
        return self.dir / version / f"{self.name}.yaml"

    def active(self) -> str:
        """The version in use, or SHIPPED."""
        try:
            value = self.active_file.read_text(encoding="utf-8").strip()
        except OSError:
            return SHIPPED
        return value if value == SHIPPED or _VERSION.match(value) else SHIPPED

    def history(self) -> list[str]:
        try:
            return [v for v in self.history_file.read_text(encoding="utf-8").split() if _VERSION.match(v)]
        except OSError:
            return []

    def _write(self, path: Path, text: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)  # readers see the old or the new pointer, never half of one

    def activate(self, version: str) -> None:
        if version != SHIPPED and not self.card_path(version).is_file():
            raise ModelError(f"{self.name}: no installed version {version}")
        if version != SHIPPED:
            self._write(self.history_file, "\n".join([*self.history(), version]) + "\n")
        self._write(self.active_file, version + "\n")

    def rollback(self) -> str:
        """Back to the head in use before the current one (the shipped head at the bottom)."""
        history = self.history()
        current = self.active()
        if current == SHIPPED and not history:
            raise ModelError(f"{self.name}: nothing to roll back, the shipped head is in use")
        if history and history[-1] == current:
            history.pop()
        previous = history[-1] if history else SHIPPED
        self._write(self.history_file, "".join(f"{v}\n" for v in history))
        self._write(self.active_file, previous + "\n")
        return previous


class ActiveHead:
    """Watches a store's `active` pointer for one classifier (see HeadClassifier.refresh)."""

    def __init__(self, store: HeadStore, load: Callable[[Path], tuple[Head, ModelCard, Path]], shipped_card: Path,
                 check_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._load = load
        self.shipped_card = shipped_card
        self.check_s = check_s
        self._clock = clock
        self._next = float("-inf")
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of `active`, None: absent
        self._generation = -1
        self.version = SHIPPED

    def __call__(self) -> tuple[Head, ModelCard, Path] | None:
        now = self._clock()
        if now < self._next and self._generation == _generation:
            return None
        self._next = now + self.check_s
        self._generation = _generation
        try:
            st = self.store.active_file.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp == self._seen:
            return None
        self._seen = stamp
        version = self.store.active()
        if version == self.version:
            return None
        card = self.shipped_card if version == SHIPPED else self.store.card_path(version)
        loaded = self._load(card)  # ModelError propagates: the classifier logs it and keeps its head
        self.version = version
        return loaded
