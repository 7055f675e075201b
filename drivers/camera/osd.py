"""The evidence watermark: site, device, camera, local time and violation burnt into a snapshot JPEG.

Chinese must render (site names, violation names), so a CJK TrueType font is looked up on the
system (WenQuanYi, Noto CJK, Droid Sans Fallback, or whatever fontconfig offers for `zh`).
Without one the text falls back to ASCII (non-ASCII replaced by '?') and a warning is logged
once: a snapshot without a legible stamp is still better than none.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
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


def _band_layout(width: int, height: int, lines: Sequence[str]) -> tuple[Font, list[str], int, int, int]:
    """(font, text, margin, line height, band width) of the watermark for a `width`×`height` frame."""
    font, cjk = font_for(height)
    text = [line if cjk else line.encode("ascii", "replace").decode() for line in lines if line]
    margin = max(4, height // 120)
    if not text:
        return font, text, margin, 0, 0
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.textbbox((0, 0), line, font=font) for line in text]
    line_h = int(max(b[3] for b in boxes)) + margin  # whole pixels with the fonts in use (FreeType, bitmap)
    band_w = int(max(b[2] for b in boxes)) + 2 * margin
    return font, text, margin, line_h, band_w


def stamp(image_bgr: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Burn `lines` on a dark band at the top left of `image_bgr`, in place; returns it.

    Only the band goes through Pillow (for the CJK font): a 1080p frame is never converted
    to an RGB copy and a Pillow image (14 MB for each snapshot before).
    """
    h, w = image_bgr.shape[:2]
    font, text, margin, line_h, band_w = _band_layout(w, h, lines)
    if not text:
        return image_bgr
    band_h = line_h * len(text) + margin
    # the rectangle's far edges are inclusive and the text's stroke reaches 1 px past its box
    bh, bw = min(h, band_h + 4), min(w, band_w + 4)
    band = Image.fromarray(np.ascontiguousarray(image_bgr[:bh, :bw, ::-1]))
    draw = ImageDraw.Draw(band, "RGBA")
    draw.rectangle((0, 0, min(band_w, w), band_h), fill=(0, 0, 0, 140))
    for i, line in enumerate(text):
        xy = (margin, margin + i * line_h)
        draw.text(xy, line, font=font, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    image_bgr[:bh, :bw] = np.asarray(band)[:, :, ::-1]
    return image_bgr


def draw_watermark(image_bgr: Any, lines: Sequence[str]) -> Image.Image:
    """An RGB image with `lines` on a dark band at the top left (the stream's own OSD is usually there too)."""
    out = stamp(np.array(image_bgr, dtype=np.uint8, copy=True), lines)
    return Image.fromarray(np.ascontiguousarray(out[:, :, ::-1]))


def encode_jpeg(image_bgr: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a BGR frame, encoded straight from it (libjpeg, 4:2:0, as Pillow did)."""
    ok, jpeg = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return jpeg.tobytes()


def _work_copy(image_bgr: Any, owned: bool) -> np.ndarray:
    """The picture to stamp: the caller's own array when it says it may be drawn on, else a copy."""
    if owned and isinstance(image_bgr, np.ndarray) and image_bgr.dtype == np.uint8 and image_bgr.flags.writeable:
        return image_bgr
    return np.array(image_bgr, dtype=np.uint8, copy=True)


def watermark_jpeg(image_bgr: Any, lines: Sequence[str], quality: int = 90, *, owned: bool = False) -> bytes:
    """JPEG bytes of the frame with its watermark (stamped on one copy of the frame, or on the
    frame itself when the caller `owned` it: a picture made for this, 6 MB less at 1080p)."""
    return encode_jpeg(stamp(_work_copy(image_bgr, owned), lines), quality)


def watermark_jpegs(image_bgr: Any, lines: Sequence[str], outlines: Sequence[Outline], label: str = "",
                    quality: int = 90, *, owned: bool = False) -> tuple[bytes, bytes]:
    """(clean, marked) watermarked JPEGs of one frame, made on one copy of it (or on the frame
    itself when the caller `owned` it).

    The picture is stamped and encoded (clean); the band is put back from a copy of what it
    covered, the outlines are drawn and it is stamped again (marked): the same pictures as two
    separate copies would give, with at most one 1080p copy instead of two (and no Pillow frame).
    """
    work = _work_copy(image_bgr, owned)
    h, w = work.shape[:2]
    _, _, margin, line_h, band_w = _band_layout(w, h, lines)
    bh = min(h, line_h * sum(1 for line in lines if line) + margin + 4)
    bw = min(w, band_w + 4)
    under_band = work[:bh, :bw].copy()
    clean = encode_jpeg(stamp(work, lines), quality)
    work[:bh, :bw] = under_band
    _outline(work, outlines, label)
    marked = encode_jpeg(stamp(work, lines), quality)
    return clean, marked


Outline = Sequence[tuple[float, float]]  # a polygon in normalised image coordinates (0..1)


def draw_outlines(image_bgr: Any, outlines: Sequence[Outline], label: str = "",
                  colour: tuple[int, int, int] = (0, 0, 255)) -> Any:
    """A copy of the frame with each polygon outlined (what a detector saw), the label by the first.

    The evidence keeps the clean frame too: the outlines are the box's reading of the picture,
    not part of it.
    """
    return _outline(image_bgr.copy(), outlines, label, colour)


def _outline(out: np.ndarray, outlines: Sequence[Outline], label: str = "",
             colour: tuple[int, int, int] = (0, 0, 255)) -> np.ndarray:
    """Draw the outlines (and the label by the first) on `out`, in place."""
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
