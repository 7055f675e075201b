"""Sending a bundle to the bureau: each file on `evidence/<id>/<file>`, then the manifest.

The manifest goes last and as the exact bytes of `manifest.json`, so the bureau can check
the signature on what it received. A bundle is complete at the bureau when the manifest
has arrived and every file it lists has arrived with the listed SHA-256: that rule holds
whatever order a reconnect delivers messages in; in the normal case the files are already
there when the manifest comes.
"""

from __future__ import annotations

from edge_agent.evidence.bundle import MANIFEST, Evidence
from edge_agent.types import Publish
from edge_agent.uplink.topics import Topics

KIND = "evidence"


def publish_bundle(evidence: Evidence, publish: Publish) -> int:
    """Queue every file, then the manifest; returns the number of messages."""
    for name in evidence.file_names:
        publish(Topics.evidence_file(evidence.id, name), (evidence.path / name).read_bytes(), kind=KIND)
    publish(Topics.EVIDENCE, (evidence.path / MANIFEST).read_bytes(), kind=KIND)
    return len(evidence.file_names) + 1
