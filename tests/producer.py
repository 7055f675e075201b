"""A producer process for the crash test: stores numbered events, prints ACK n once each is durable.

Usage: python producer.py CONFIG START COUNT. After COUNT events it waits until the broker
has acknowledged everything, prints DONE and exits.
"""

from __future__ import annotations

import sys
import time

from edge_agent.config import load_config
from edge_agent.daemon import build_agent


def main() -> int:
    config = load_config(sys.argv[1])
    start, count = int(sys.argv[2]), int(sys.argv[3])
    parts = build_agent(config)
    agent = parts.agent
    agent.start()
    for seq in range(start, count):
        agent.publish("event", {"seq": seq}, kind="event")
        sys.stdout.write(f"ACK {seq}\n")
        sys.stdout.flush()
        time.sleep(0.002)
    while agent.outbox.depth() > 0:
        time.sleep(0.05)
    sys.stdout.write("DONE\n")
    sys.stdout.flush()
    agent.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
