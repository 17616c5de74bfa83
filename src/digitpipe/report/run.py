"""The report stage: reports/report.md (GitHub-renderable) and reports/report.html."""

from __future__ import annotations

from pathlib import Path

from digitpipe.core.atomic import write_text
from digitpipe.core.config import Params
from digitpipe.core.paths import REPORTS
from digitpipe.report.build import build_markdown
from digitpipe.report.html import render_html


def run(params: Params, root: Path = Path(".")) -> str:
    """Write both reports under ``root/reports``; return the Markdown."""
    reports = root / REPORTS
    markdown = build_markdown(params, root)
    write_text(reports / "report.md", markdown)
    write_text(reports / "report.html", render_html(markdown, params.report.title, reports))
    if params.track.enabled:
        from digitpipe.tracking.runs import log_stage

        files = [reports / "report.html", reports / "report.md"]
        log_stage(params.track, root, "report", params.report.model_dump(), {"report": files})
    return markdown
