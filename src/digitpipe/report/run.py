"""The report stage: reports/report.md (GitHub-renderable) and reports/report.html."""

from __future__ import annotations

from pathlib import Path

from digitpipe.core.atomic import staged_outputs, write_text
from digitpipe.core.config import Params
from digitpipe.outputs.report import REPORT_HTML, REPORT_MD, REPORTS
from digitpipe.report.build import build_markdown
from digitpipe.report.html import render_html
from digitpipe.tracking.state import PipelineState, pipeline_state


def write_reports(params: Params, root: Path, state: PipelineState) -> str:
    """Write both reports under ``root/reports`` (built first, then published together); return
    the Markdown."""
    markdown = build_markdown(params, root, state)
    page = render_html(markdown, params.report.title, root / REPORTS)
    with staged_outputs(root, "report", (REPORT_MD, REPORT_HTML)) as out:  # published together
        write_text(out / REPORT_MD, markdown)
        write_text(out / REPORT_HTML, page)
    return markdown


def run(params: Params, root: Path = Path(".")) -> str:
    """The reports, named by the digests of this pipeline state, logged into its MLflow run,
    which is tagged with the same digests: the report's search finds it."""
    state = pipeline_state(params, root)
    if not params.track.enabled:
        return write_reports(params, root, state)
    import mlflow

    from digitpipe.tracking.runs import log_artifacts, stage_run

    with stage_run(params.track, root, "report", params.report.model_dump()):
        markdown = write_reports(params, root, state)
        log_artifacts({"report": [root / REPORT_HTML, root / REPORT_MD]})
        mlflow.set_tags(state.tags())
    return markdown
