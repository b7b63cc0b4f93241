"""draw_instances labels: kept inside the image, text colour contrasting with the label box."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mrdetr.utils.visualizer import class_color, draw_instances, text_color

H, W = 120, 200
NAME = "a rather long class name"
YELLOW_GREEN = 2  # class_color(2) = (166, 242, 60): a light fill
BLUE = 1  # class_color(1) = (60, 113, 242): a dark fill


@pytest.mark.parametrize(
    ("color", "expected"),
    [
        ((255, 255, 0), (0, 0, 0)),  # yellow
        ((0, 255, 0), (0, 0, 0)),  # green
        ((255, 255, 255), (0, 0, 0)),
        ((0, 0, 128), (255, 255, 255)),  # navy
        ((200, 0, 0), (255, 255, 255)),  # red
        ((0, 0, 0), (255, 255, 255)),
    ],
)
def test_text_color_by_brightness(color, expected):
    assert text_color(color) == expected


def _longest_run(row: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of True in a 1-d bool array."""
    best, start = (0, 0), None
    for x, v in enumerate(np.append(row, False)):
        if v and start is None:
            start = x
        elif not v and start is not None:
            best = max(best, (start, x - start), key=lambda r: r[1])
            start = None
    return best


def _label_box(
    out: np.ndarray, cls: int, edge_rows: tuple[int, ...]
) -> tuple[int, int, int, np.ndarray]:
    """(bottom, left, right) of the filled label box of class ``cls`` (inclusive), and the fill mask.

    The label box's rows below the text baseline are runs of the class colour as wide as the
    label; ``edge_rows`` (the drawn box's horizontal edges) are left out.
    """
    fill = np.all(out == np.array(class_color(cls), dtype=np.uint8), axis=2)
    runs = {y: _longest_run(fill[y]) for y in range(out.shape[0]) if y not in edge_rows}
    widest = max(length for _, length in runs.values())
    bottom = max(y for y, (_, length) in runs.items() if length == widest)
    left = runs[bottom][0]
    return bottom, left, left + widest - 1, fill


def _text_size(text: str) -> tuple[int, int, int]:
    """(width, height, baseline) of ``text`` at the font scale draw_instances uses for an HxW image."""
    scale = max(0.35, max(H, W) / 1000)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return tw, th, base


@pytest.mark.parametrize(
    "box",
    [
        (150.0, 40.0, 199.0, 100.0),  # touches the right edge: label would run off to the right
        (170.0, 0.0, 199.0, 30.0),  # top-right corner: no room above, none to the right
        (0.0, 0.0, 199.0, 119.0),  # the whole image
    ],
)
def test_label_stays_inside_the_image(box):
    image = np.zeros((H, W, 3), dtype=np.uint8)
    text = f"{NAME} 90%"
    out = draw_instances(
        image,
        np.array([box]),
        np.array([YELLOW_GREEN]),
        np.array([0.9]),
        None,
        [NAME] * 3,
        line_width=1,
    )
    tw, th, base = _text_size(text)
    bottom, left, right, fill = _label_box(out, YELLOW_GREEN, (int(box[1]), int(box[3])))
    # the whole label is visible: its full text width and height, inside the image
    assert right - left == tw
    assert right <= W - 1 and bottom <= H - 1 and bottom - th - base >= 0
    assert left == min(int(box[0]), W - 1 - tw)  # shifted left only as far as needed
    # the text pixels (not the fill) in the label box are dark, never brighter than the fill
    top = bottom - th - base
    region = out[top : bottom + 1, left : right + 1].astype(int)
    text_pixels = region[~fill[top : bottom + 1, left : right + 1]]
    assert len(text_pixels) > 0
    assert text_pixels.sum(axis=1).max() <= sum(class_color(YELLOW_GREEN))
    assert text_pixels.sum(axis=1).min() < 100


def test_dark_fill_gets_white_text():
    image = np.zeros((H, W, 3), dtype=np.uint8)
    out = draw_instances(
        image,
        np.array([[20.0, 50.0, 120.0, 100.0]]),
        np.array([BLUE]),
        None,
        None,
        ["person", "car"],
        line_width=1,
    )
    tw, th, base = _text_size("car")
    bottom, left, right, _ = _label_box(out, BLUE, (50, 100))
    assert (bottom, left, right - left) == (48, 20, tw)  # above the box's top-left corner
    region = out[bottom - th - base : bottom + 1, left : right + 1]
    assert (region.min(axis=2) > 200).any()  # white text on the blue box
