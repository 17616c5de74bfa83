"""The report stage: reports/report.md (GitHub-renderable) and reports/report.html."""

from __future__ import annotations

from pathlib import Path

from digitpipe.atomic import write_text
from digitpipe.config import Params
from digitpipe.report.build import REPORTS, build_markdown
from digitpipe.report.html import render_html
from digitpipe.track.runs import log_stage


def run(params: Params, root: Path = Path(".")) -> str:
    """Write both reports under ``root/reports``; return the Markdown."""
    reports = root / REPORTS
    markdown = build_markdown(params, reports)
    write_text(reports / "report.md", markdown)
    write_text(reports / "report.html", render_html(markdown, params.report.title, reports))
    log_stage(root, "report", [reports / "report.html", reports / "report.md"])
    return markdown
