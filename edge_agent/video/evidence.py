"""Pictures for evidence: what a violation's bundle gets from the cameras, and the bureau's snapshot.

Every violation's bundle gets the watermarked snapshot and a clip from its own camera (a
camera violation) or the site's first camera (a meter violation). Where a detector raised
it, the bundle also gets a marked copy of the snapshot outlining what was seen (the clean
frame stays too: the outline is the box's reading, not part of the picture) and the
detector's own crops (e.g. the plume and its background patch for a Ringelmann grade).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np

from edge_agent.command_dispatch import AckResult
from edge_agent.evidence.bundle import EvidenceFile, EvidenceStore
from edge_agent.evidence.publish import publish_bundle
from edge_agent.security.bureau_command import Command
from edge_agent.types import Publish, Seen, Violation
from edge_agent.video.cameras import CamerasComponent

log = logging.getLogger(__name__)


class CameraEvidence:
    """Snapshot(s), clip and detector crops for a violation's bundle (an evidence media source)."""

    def __init__(self, cameras: CamerasComponent):
        self.cameras = cameras

    def _camera(self, violation: Violation) -> str | None:
        """The camera that saw it (a detector's, or the one whose activity backs up a noise breach),
        else the violation's own camera, else the site's first."""
        ids = self.cameras.camera_ids()
        if violation.seen is not None and violation.seen.camera in ids:
            return violation.seen.camera
        return violation.source if violation.source in ids else (ids[0] if ids else None)

    def reserve(self, violation: Violation) -> None:
        """At the report: the camera keeps this violation's clip until its job cuts it."""
        camera = self._camera(violation)
        if camera is not None:
            self.cameras.hold_clip(camera, violation.time)

    def __call__(self, violation: Violation) -> list[EvidenceFile]:
        seen = violation.seen
        camera = self._camera(violation)
        if camera is None:
            return []
        files: list[EvidenceFile] = []
        text = f"{violation.kind} {violation.message}"[:80]
        try:
            # The latest analysed frame (<= 1 s old at 1 fps): decoding the moment from the packet ring
            # would start a second 1080p decoder and its frame pool (tens of MB) for each bundle.
            if seen is not None and seen.outlines and seen.camera == camera:
                clean, marked = self.cameras.marked_snapshots(camera, text, seen.outlines, seen.label[:60])
                files += [EvidenceFile("snapshot.jpg", clean), EvidenceFile("snapshot_marked.jpg", marked)]
            else:
                files.append(EvidenceFile("snapshot.jpg", self.cameras.snapshot(camera, text)))
        except Exception as exc:
            log.warning("evidence snapshot from %s failed: %s", camera, exc)
        if seen is not None:
            files += _crops(seen)
        try:
            clip = self.cameras.clip(camera, violation.time)  # the ring holds seconds, not the whole breach
            files.append(EvidenceFile("clip.mp4", move_from=clip))  # moved into the bundle, never read whole
        except Exception as exc:
            log.warning("evidence clip from %s failed: %s", camera, exc)
        return files


def evidence_jpegs(images: Mapping[str, Any]) -> dict[str, bytes]:
    """A detector's evidence images (BGR arrays) as JPEGs, by role; what is not a picture is left out."""
    out = {}
    for name, image in images.items():
        if isinstance(image, bytes):
            out[name] = image  # already encoded
            continue
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
            continue
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if ok:
            out[name] = jpeg.tobytes()
    return out


def _crops(seen: Seen) -> list[EvidenceFile]:
    """The detector's evidence images as files named after their role (see `evidence_jpegs`)."""
    return [EvidenceFile(f"detector_{name}.jpg", jpeg) for name, jpeg in evidence_jpegs(seen.images).items()]


def snapshot_command(cameras: CamerasComponent, store: EvidenceStore,
                     publish: Publish | None) -> Callable[[Command], AckResult]:
    """The bureau's `snapshot` command: a watermarked JPEG, as a signed bundle of its own."""

    def handle(command: Command) -> AckResult:
        ids = cameras.camera_ids()
        camera = command.args.get("camera") or (ids[0] if ids else None)
        if camera not in ids:
            return AckResult("failed", "unknown_camera", f"no camera {camera!r}; configured: {', '.join(ids)}")
        try:
            jpeg = cameras.snapshot(camera, f"bureau snapshot {command.id}")
        except Exception as exc:
            return AckResult("failed", "camera_unavailable", str(exc))
        evidence = store.create([EvidenceFile("snapshot.jpg", jpeg)],
                                subject={"command": command.id, "name": "snapshot", "camera": camera})
        if publish is not None:
            publish_bundle(evidence, publish)
        return AckResult("done", data={"evidence": evidence.id, "camera": camera})

    return handle




def relearn_view_command(cameras: CamerasComponent) -> Callable[[Command], AckResult]:
    """The bureau's `relearn_view`: a camera re-aimed on purpose stops being reported as moved."""

    def handle(command: Command) -> AckResult:
        camera = str(command.args.get("camera"))
        if camera not in cameras.camera_ids():
            return AckResult("failed", "unknown_camera", f"no camera {camera!r}")
        cameras.relearn_view(camera)
        return AckResult("done", data={"camera": camera})

    return handle


__all__ = ["CameraEvidence", "relearn_view_command", "snapshot_command"]
