"""The evidence watermark: site, device, camera, local time and violation burnt into a snapshot JPEG.

Chinese must render (site names, violation names), so a CJK TrueType font is looked up on the
system (WenQuanYi, Noto CJK, Droid Sans Fallback, or whatever fontconfig offers for `zh`).
Without one the text falls back to ASCII (non-ASCII replaced by '?') and a warning is logged
once: a snapshot without a legible stamp is still better than none.
"""

from __future__ import annotations

import functools
import io
import logging
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/google-droid/DroidSansFallback.ttf",
)

Font = Any  # ImageFont.FreeTypeFont or the bitmap fallback


@functools.lru_cache(maxsize=1)
def find_cjk_font() -> str | None:
    """Path of a font with Chinese glyphs, or None."""
    for path in CJK_FONTS:
        if Path(path).is_file():
            return path
    if shutil.which("fc-list"):
        try:
            out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        for line in sorted(out.splitlines()):
            path = line.split(":")[0].strip()
            if path.lower().endswith((".ttf", ".ttc", ".otf")) and Path(path).is_file():
                return path
    return None


@functools.lru_cache(maxsize=8)
def _font(size: int) -> tuple[Font, bool]:
    """(font, chinese_capable) at `size` pixels."""
    path = find_cjk_font()
    if path is not None:
        try:
            return ImageFont.truetype(path, size), True
        except OSError as exc:
            log.warning("cannot load CJK font %s: %s", path, exc)
    log.warning("no CJK font found (install fonts-wqy-microhei): snapshot watermarks fall back to ASCII")
    try:
        return ImageFont.load_default(size), False
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default(), False


def font_for(height: int) -> tuple[Font, bool]:
    """The watermark font for an image `height` pixels tall: ~1/28 of it, at least 12 px."""
    return _font(max(12, height // 28))


def draw_watermark(image_bgr: Any, lines: Sequence[str]) -> Image.Image:
    """An RGB image with `lines` on a dark band at the top left (the stream's own OSD is usually there too)."""
    rgb = Image.fromarray(image_bgr[:, :, ::-1].copy())  # BGR -> RGB
    font, cjk = font_for(rgb.height)
    text = [line if cjk else line.encode("ascii", "replace").decode() for line in lines if line]
    if not text:
        return rgb
    draw = ImageDraw.Draw(rgb, "RGBA")
    margin = max(4, rgb.height // 120)
    boxes = [draw.textbbox((0, 0), line, font=font) for line in text]
    line_h = max(b[3] for b in boxes) + margin
    width = max(b[2] for b in boxes) + 2 * margin
    draw.rectangle((0, 0, min(width, rgb.width), line_h * len(text) + margin), fill=(0, 0, 0, 140))
    for i, line in enumerate(text):
        xy = (margin, margin + i * line_h)
        draw.text(xy, line, font=font, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return rgb


def watermark_jpeg(image_bgr: Any, lines: Sequence[str], quality: int = 90) -> bytes:
    """JPEG bytes of the frame with its watermark."""
    buf = io.BytesIO()
    draw_watermark(image_bgr, lines).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


Outline = Sequence[tuple[float, float]]  # a polygon in normalised image coordinates (0..1)


def draw_outlines(image_bgr: Any, outlines: Sequence[Outline], label: str = "",
                  colour: tuple[int, int, int] = (0, 0, 255)) -> Any:
    """A copy of the frame with each polygon outlined (what a detector saw), the label by the first.

    The evidence keeps the clean frame too: the outlines are the box's reading of the picture,
    not part of it.
    """
    import cv2
    import numpy as np

    out = image_bgr.copy()
    h, w = out.shape[:2]
    thickness = max(2, h // 270)
    for i, outline in enumerate(outlines):
        pts = np.array([[round(x * (w - 1)), round(y * (h - 1))] for x, y in outline], np.int32)
        if len(pts) < 2:
            continue
        cv2.polylines(out, [pts.reshape(-1, 1, 2)], True, colour, thickness, cv2.LINE_AA)
        if i == 0 and label:
            x, y = int(pts[:, 0].min()), int(pts[:, 1].min())
            scale = max(0.5, h / 1080)
            cv2.putText(out, label.encode("ascii", "replace").decode(), (x, max(0, y - 6)),
                        cv2.FONT_HERSHEY_SIMPLEX, scale, colour, max(1, thickness - 1), cv2.LINE_AA)
    return out
