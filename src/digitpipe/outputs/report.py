"""The report stage's outputs: one page on the whole pipeline state, as Markdown and HTML."""

from __future__ import annotations

from pathlib import Path

from digitpipe.outputs import Declared

REPORTS = Path("reports")
REPORT_MD = REPORTS / "report.md"
REPORT_HTML = REPORTS / "report.html"

DECLARED = Declared(outs=(REPORT_MD, REPORT_HTML))
