"""report.md and report.html as a reader sees them: in headless Chromium at 1,400 px the
per-class table of 47 classes with long names fits the page, Support included (it scrolled
sideways); counts read as words ("1 time")."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from digitpipe.evaluate.stats import confusion_stats, to_markdown
from digitpipe.outputs.evaluate import WORST_CASES
from digitpipe.report.build import worst_cases_section
from digitpipe.report.html import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Appended to the page: each table's scrollWidth/clientWidth, printed into the DOM.
PROBE = """<script>
const sizes = [...document.querySelectorAll('table')].map(t => t.scrollWidth + '/' + t.clientWidth);
const out = document.createElement('pre');
out.textContent = 'TABLES:' + sizes.join(' ') + ':END';
document.body.appendChild(out);
</script></body>"""


def table_widths(page: str, tmp_path) -> list[tuple[int, int]]:
    """(scrollWidth, clientWidth) of each table of ``page`` in a 1,400 px wide window."""
    (tmp_path / "page.html").write_text(page.replace("</body>", PROBE))
    flags = ["--headless", "--no-sandbox", "--proxy-server=127.0.0.1:9", "--window-size=1400,2000"]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", (tmp_path / "page.html").as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    start = dom.rindex("TABLES:") + len("TABLES:")  # the printed line, not the script
    found = dom[start : dom.index(":END", start)]
    return [tuple(map(int, pair.split("/"))) for pair in found.split()]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium")
def test_the_per_class_table_fits_a_1400_px_window(tmp_path):
    shapes = ("square", "triangle", "circle", "pentagon", "rounded rectangle", "five-pointed star")
    names = [f"{shapes[k % 6]} {k}" for k in range(47)]
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(100, 999, 47)) + rng.integers(0, 3, (47, 47))
    page = render_html(to_markdown(confusion_stats(matrix, names)), "stats", tmp_path)
    widths = table_widths(page, tmp_path)
    assert len(widths) == 2
    for scrolled, shown in widths:
        assert scrolled <= shown, widths  # nothing hidden to the right


@pytest.mark.parametrize(("count", "words"), [(1, "1 time."), (2, "2 times.")])
def test_the_most_confused_pair_is_counted_in_words(tmp_path, count, words):
    pair = {"actual": "square", "predicted": "triangle", "count": count, "image_ids": ["a"] * count}
    report = {"most_confused_pair": pair, "confident_mistakes": [], "typical": {}}
    (tmp_path / WORST_CASES).parent.mkdir(parents=True)
    (tmp_path / WORST_CASES).write_text(json.dumps(report))
    lead = "The most confused pair: **square** read as **triangle**, "
    assert lead + words in worst_cases_section(tmp_path)
