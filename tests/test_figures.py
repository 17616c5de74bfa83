"""Every report picture, drawn from bench/figures.py's synthetic inputs with 2 and 47 classes and
long class names, is legible where report.html shows it: no two pieces of text overlap (tick
labels, counts, captions, titles, legends), none is smaller than the smallest size the figures
allow, and the picture is no wider than the report's column, so it is never shrunk."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from helpers.data import REPO
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from digitpipe.plotting import SMALLEST_CAPTION, save_figure

spec = importlib.util.spec_from_file_location("bench_figures", REPO / "bench" / "figures.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

PAGE_PX = 1068  # report.html's column: 1,100 px less 2 x 16 px padding


def texts(figure: Figure) -> list[Text]:
    """The texts drawn: visible, not empty, not the label of a tick outside its axis's view."""
    unseen = set()
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - 1e-9 <= tick.get_loc() <= high + 1e-9:
                    unseen |= {id(tick.label1), id(tick.label2)}
    return [
        text
        for text in figure.findobj(Text)
        if text.get_visible() and text.get_text().strip() and id(text) not in unseen
    ]


def overlapping(figure: Figure) -> list[tuple[str, str]]:
    """Pairs of texts whose drawn boxes overlap by more than a pixel each way."""
    renderer = figure.canvas.get_renderer()
    shown = texts(figure)
    boxes = np.array([text.get_window_extent(renderer).extents for text in shown])
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    wide = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
    tall = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
    clash = np.triu((wide > 1) & (tall > 1), k=1)
    return [(shown[i].get_text(), shown[j].get_text()) for i, j in np.argwhere(clash)]


@pytest.mark.parametrize(("classes", "long"), [(2, True), (10, False), (47, True), (47, False)])
def test_report_pictures_are_legible_at_page_width(classes, long, tmp_path):
    for name, draw in bench.figures(classes, long):
        figure = draw()
        figure.canvas.draw()
        assert not overlapping(figure), f"{name}: {overlapping(figure)[:5]}"
        sizes = [text.get_fontsize() for text in texts(figure)]
        assert min(sizes) >= SMALLEST_CAPTION, f"{name}: text of {min(sizes)} pt"
        save_figure(figure, tmp_path / f"{name}.png")
        width = Image.open(tmp_path / f"{name}.png").size[0]
        assert width <= PAGE_PX, f"{name}: {width} px wide, shown shrunk"


def test_the_overlap_check_sees_labels_that_run_together():
    """The check above can fail: two long names on neighbouring upright ticks collide."""
    figure, ax = plt.subplots(figsize=(3, 2))
    ax.set_xticks([0, 0.2], ["square" * 3, "triangle" * 3])
    figure.canvas.draw()
    assert overlapping(figure) == [("squaresquaresquare", "triangletriangletriangle")]
    plt.close(figure)
