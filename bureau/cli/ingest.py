"""`edge-bureau ingest`: one ingest worker, as its own process; run as many as the load needs.

Each worker joins the MQTT 5 shared subscription `$share/GROUP/PREFIX/#`, so the broker
splits the stream between them, on a persistent session of its own (client id
CLIENT_ID-WORKER: keep it stable across restarts, unique per worker), acknowledging each
message only once it is stored. With PostgreSQL they share one store; evidence files go to
`store.evidence_dir`, a volume every worker mounts. SIGTERM drains and stops cleanly; a
SIGKILL loses nothing (the broker redelivers what was not acknowledged).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from typing import Any

from bureau.cli._common import EXIT_CONFIG, add_config, load_or_report

NAME = "ingest"
HELP = "run one ingest worker (MQTT 5 shared subscription; start several for a city)"
DESCRIPTION = __doc__
DEFAULT_GROUP = "edge-bureau"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument("--worker-id", default=socket.gethostname(),
                        help="this worker's name, stable across restarts (default: the host name)")
    parser.add_argument("--group", default=None,
                        help=f"shared subscription group (default ingest.shared_group, else '{DEFAULT_GROUP}')")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=f"%(asctime)s ingest[{args.worker_id}] %(levelname)s "
                                                     "%(name)s: %(message)s", stream=sys.stderr)
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    from bureau.ingest import Ingest
    from bureau.store import open_store
    from bureau.verify import Verifier
    from bureau.voice import VoiceInbox, registered_key, voice_dir

    group = args.group or config.ingest.shared_group or DEFAULT_GROUP
    base_id = config.mqtt.client_id or "edge-bureau"
    config = config.model_copy(update={
        "mqtt": config.mqtt.model_copy(update={"client_id": f"{base_id}-{args.worker_id}",
                                               "protocol": "5"}),
        "ingest": config.ingest.model_copy(update={"shared_group": group})})
    try:
        store, files = open_store(config)
    except Exception as exc:
        print(f"edge-bureau ingest: cannot open the store: {exc}", file=sys.stderr)
        return 1
    verifier = Verifier(store, files)
    ingest = Ingest(config, store, verifier)
    ingest.voice = VoiceInbox(voice_dir(config), registered_key(store))  # crews' replies reach any worker
    done = threading.Event()

    def _term(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    verifier.start()
    ingest.start()
    if not ingest.subscribed.wait(30):
        logging.getLogger(__name__).warning("no subscription confirmed yet (%s); waiting in the background",
                                            ingest.stats.last_error)
    print(f"edge-bureau ingest: worker {args.worker_id} on {config.mqtt.host}:{config.mqtt.port}, "
          f"{ingest.subscription}, store {config.store.kind}", flush=True)
    last_prune = time.monotonic()
    while not done.wait(5.0):
        if time.monotonic() - last_prune > 3600:
            last_prune = time.monotonic()
            try:
                store.prune(time.time(), config.store.dedup_days)
            except Exception:
                logging.getLogger(__name__).exception("pruning failed")
    s = ingest.stats
    ingest.stop()
    verifier.stop()
    store.close()
    print(f"edge-bureau ingest: worker {args.worker_id} stopped: {s.received} received, {s.applied} applied, "
          f"{s.duplicates} duplicates, {s.refused} refused, {getattr(store, 'retries', 0)} batches retried",
          flush=True)
    return 0
