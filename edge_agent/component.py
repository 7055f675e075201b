"""What the agent runs: components with a life cycle, watched by one supervisor.

A component owns threads (a serial bus, a camera, the speaker, the core). The supervisor
asks each one `alive()` every second; one whose threads have died is restarted with
back-off (5 s, 10 s, ... up to 5 min apart), the restart is counted in the status, and the
systemd watchdog is withheld while any component is dead, so a box whose supervisor cannot
bring a part back is restarted whole by systemd.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)


@runtime_checkable
class Component(Protocol):
    """A device or service the agent runs."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def alive(self) -> bool:
        """Whether every thread this component needs is running (True when it needs none)."""
        ...

    # Optional: `revive()` restarts only the dead threads (when stop() + start() would lose
    # state, e.g. claimed GPIO pins); the supervisor calls it instead of stop() and start().

    def health(self) -> Mapping[str, Any]: ...


def threads_alive(*threads: threading.Thread | None) -> bool:
    """True when every started thread is still running (a component not yet started is alive)."""
    return all(t is None or t.is_alive() for t in threads)


class Supervisor:
    """Starts the components, restarts dead ones with back-off, and says whether all are alive."""

    def __init__(self, components: list[Component], monotonic: Callable[[], float],
                 first_delay_s: float = 5.0, max_delay_s: float = 300.0, watched: Sequence[Component] = ()):
        self.components = components  # the owner's list: components registered later are watched too
        self.watched = list(watched)  # restarted when dead, but started and stopped by their owner
        self.monotonic = monotonic
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.restarts: dict[str, int] = {}
        self._next_restart: dict[str, float] = {}
        self._lock = threading.Lock()
        self._restarting = threading.Lock()  # held through a restart: stop_all waits for one in flight
        self._stopping = False

    def start_all(self) -> None:
        with self._lock:
            self._stopping = False
        for comp in self.components:
            self._start(comp)

    def stop_all(self) -> None:
        """Stop every component, last started first; from now on `check()` restarts nothing (the
        agent's loop may still be in its last turn: it must not bring back what is being stopped)."""
        with self._lock:
            self._stopping = True
        with self._restarting:  # a restart already begun ends first; then it is stopped with the rest
            pass
        for comp in reversed(self.components):
            try:
                comp.stop()
            except Exception:
                log.exception("component %s failed to stop", comp.name)

    def _start(self, comp: Component) -> None:
        try:
            comp.start()
        except Exception as exc:
            log.exception("component %s failed to start: %s", comp.name, exc)

    def check(self) -> None:
        """Restart every component whose threads have died, unless its back-off is still running."""
        now = self.monotonic()
        for comp in [*self.components, *self.watched]:
            if self._stopping or self._alive(comp):
                continue
            with self._lock:
                if self._stopping or now < self._next_restart.get(comp.name, 0.0):
                    continue
                count = self.restarts.get(comp.name, 0) + 1
                self.restarts[comp.name] = count
                self._next_restart[comp.name] = now + min(self.max_delay_s, self.first_delay_s * 2 ** (count - 1))
            with self._restarting:
                if self._stopping:
                    return
                log.error("component %s stopped working: restarting it (restart %d)", comp.name, count)
                self._restart(comp)

    def _restart(self, comp: Component) -> None:
        revive = getattr(comp, "revive", None)
        if revive is not None:  # a component that knows how to restart just its dead threads
            try:
                revive()
            except Exception:
                log.exception("component %s failed to revive", comp.name)
            return
        try:
            comp.stop()
        except Exception:
            log.exception("component %s failed to stop", comp.name)
        self._start(comp)

    def alive(self) -> bool:
        return all(self._alive(comp) for comp in [*self.components, *self.watched])

    def dead(self) -> list[str]:
        return [comp.name for comp in [*self.components, *self.watched] if not self._alive(comp)]

    @staticmethod
    def _alive(comp: Component) -> bool:
        try:
            return bool(comp.alive())
        except Exception:
            log.exception("component %s: alive() failed", comp.name)
            return False
