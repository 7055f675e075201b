"""The console process: store, verifier, ingest and command sender, wired together (web: `web/`)."""

from __future__ import annotations

import logging
import threading
import time

from bureau.auth import LoginLimiter, Sessions
from bureau.commands import CommandSender, bureau_signer
from bureau.config.model import BureauConfig
from bureau.hub import Hub
from bureau.ingest import Ingest
from bureau.store import EvidenceFiles, Store, open_store
from bureau.verify import Verifier
from bureau.voice import VoiceInbox, registered_key, voice_dir

log = logging.getLogger(__name__)


class Console:
    def __init__(self, config: BureauConfig, store: Store | None = None, files: EvidenceFiles | None = None):
        self.config = config
        if store is None or files is None:
            store, files = open_store(config)
        self.store = store
        self.files = files
        self.hub = Hub()
        self.verifier = Verifier(store, files, on_result=self._verified)
        self.ingest = Ingest(config, store, self.verifier, self.hub, subscribe=config.ingest.in_console)
        self.signer = bureau_signer(config.key_file)
        self.sender = CommandSender(store, self.signer, self.ingest.publish, config.mqtt.topic_prefix,
                                    config.commands.lifetime_s)
        self.voice = VoiceInbox(voice_dir(config), registered_key(store))
        self.ingest.voice = self.voice
        self.sessions = Sessions(store, config.web.session_hours)
        self.limiter = LoginLimiter(config.web.login_attempts, config.web.login_window_s)
        self._stop = threading.Event()
        self._janitor = threading.Thread(target=self._prune, name="bureau-janitor", daemon=True)

    def _verified(self, site: str, device: str, bundle: str, result: str) -> None:
        self.hub.publish({"type": "evidence", "site": site, "device": device, "bundle": bundle,
                          "verification": result})

    def start(self, connect_timeout: float = 10.0) -> None:
        self.verifier.start()
        self.ingest.start(connect_timeout)
        self._janitor.start()

    def _prune(self) -> None:
        while not self._stop.wait(3600):
            try:
                self.store.prune(time.time(), self.config.store.dedup_days)
                self.voice.prune()
            except Exception:
                log.exception("pruning failed")

    def stop(self) -> None:
        self._stop.set()
        self.ingest.stop()
        self.verifier.stop()
