"""An MQTT broker inside the process (amqtt), for the demo: no Mosquitto to install.

amqtt is asyncio-based; it runs on its own event loop in a daemon thread, bound to
127.0.0.1 only (its default would be every interface).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from edge_agent.loopback import free_port

log = logging.getLogger(__name__)


class EmbeddedBroker:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="demo-broker", daemon=True)

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the embedded MQTT broker did not start")
        if self._error is not None:
            raise RuntimeError(f"the embedded MQTT broker failed: {self._error}") from self._error
        return self

    def _run(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            self._error = RuntimeError("amqtt is not installed: pip install 'edge-agent[demo]'")
            self._error.__cause__ = exc
            self._ready.set()
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}", "max_connections": 50}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def _start() -> None:
            self._broker = Broker(config, loop=loop)
            await self._broker.start()

        try:
            loop.run_until_complete(_start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        try:
            fut.result(5)
        except Exception as exc:
            log.debug("embedded broker shutdown: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)
