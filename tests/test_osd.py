"""The snapshot watermark: it is there, it leaves the rest of the picture alone, and it speaks Chinese."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from camera_scenes import site_canvas, view
from PIL import Image, ImageDraw

from drivers.camera.osd import draw_watermark, find_cjk_font, font_for, watermark_jpeg

LINES = ["工地A box1 cam1", "2026-05-04 10:00:00 +0800 (Asia/Shanghai)", "扬尘超标 dust_over_limit", "1号塔吊 南侧"]


def _frame() -> np.ndarray:
    return view(site_canvas(), 1.0)


def test_watermark_marks_the_top_left_band_only() -> None:
    frame = _frame()
    jpeg = watermark_jpeg(frame, LINES)
    snap = np.asarray(Image.open(BytesIO(jpeg)).convert("RGB")).astype(np.int16)
    plain = np.asarray(Image.open(BytesIO(watermark_jpeg(frame, []))).convert("RGB")).astype(np.int16)
    assert snap.shape == plain.shape == (*frame.shape[:2], 3)
    band = snap[:40, :200] - plain[:40, :200]
    assert np.abs(band).mean() > 20  # the stamp (dark band, white text) is there
    assert np.abs(snap[150:, 300:] - plain[150:, 300:]).mean() < 1.0  # the evidence itself is untouched


def test_the_text_lines_are_drawn() -> None:
    frame = _frame()
    one = np.asarray(draw_watermark(frame, LINES[:1])).astype(np.int16)
    four = np.asarray(draw_watermark(frame, LINES)).astype(np.int16)
    font, _ = font_for(frame.shape[0])
    line_h = font.getbbox("Ag")[3]
    below_first = slice(line_h + 10, 4 * line_h)
    assert np.abs(four[below_first, :150] - one[below_first, :150]).mean() > 10  # later lines are there too


def test_chinese_renders_as_glyphs_not_boxes() -> None:
    path = find_cjk_font()
    if path is None:
        pytest.skip("no CJK font on this machine (apt-get install fonts-wqy-microhei)")
    font, cjk = font_for(360)
    assert cjk

    def render(text: str) -> np.ndarray:
        img = Image.new("L", (200, 40))
        ImageDraw.Draw(img).text((2, 2), text, font=font, fill=255)
        return np.asarray(img)

    noise, dust, unknown = render("噪声"), render("扬尘"), render("\U000f0000\U000f0001")  # private use: no glyph
    assert noise.any() and dust.any()
    assert not np.array_equal(noise, dust)  # distinct glyphs, not one "tofu" box for every character
    assert not np.array_equal(noise, unknown)


def test_clean_and_marked_snapshots_from_one_copy_are_the_pictures_two_copies_give() -> None:
    from drivers.camera.osd import draw_outlines, watermark_jpegs

    frame = _frame()
    before = frame.copy()
    # one outline under the band (its stamp must cover it in the marked copy, not leak into the clean one)
    outlines = [[(0.05, 0.02), (0.5, 0.02), (0.5, 0.6), (0.05, 0.6)], [(0.6, 0.6), (0.9, 0.6), (0.9, 0.9)]]
    clean, marked = watermark_jpegs(frame, LINES, outlines, "plume")
    assert np.array_equal(frame, before)  # the analysed frame is never drawn on
    assert clean == watermark_jpeg(frame, LINES)
    assert marked == watermark_jpeg(draw_outlines(frame, outlines, "plume"), LINES)
    assert clean != marked


def test_stamp_draws_in_place_inside_the_band_only() -> None:
    from drivers.camera.osd import stamp

    frame = _frame()
    work = frame.copy()
    assert stamp(work, LINES) is work
    changed = np.argwhere((work != frame).any(axis=2))
    assert len(changed) > 100
    font, _ = font_for(frame.shape[0])
    assert changed[:, 0].max() < 4 * (font.getbbox("Ag")[3] + 10) + 10  # rows: the four lines' band
    assert changed[:, 1].max() < frame.shape[1]
    assert np.array_equal(stamp(frame.copy(), []), frame)  # no text, no band
