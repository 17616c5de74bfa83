"""What each stage writes, declared once per stage: the paths, and the schema of each JSON report
that a later stage reads.

The writer checks its report against the schema before writing it, the reader checks it again
when reading (``core.files.read_json_report``: a damaged or hand-edited report is refused
naming the file and the field), and tests/test_layout.py checks the paths against dvc.yaml.
One module per stage, so that a change to one stage's outputs reruns only the stages reading
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from digitpipe.core.atomic import write_json
from digitpipe.core.numbers import json_safe


@dataclass(frozen=True)
class Declared:
    """A stage's outputs as dvc.yaml lists them, relative to the project root."""

    outs: tuple[Path, ...]
    metrics: tuple[Path, ...] = ()
    plots: tuple[Path, ...] = ()

    def paths(self) -> tuple[Path, ...]:
        """Every output, as the stage publishes them together."""
        return self.outs + self.metrics + self.plots


class StageReport(BaseModel):
    """The fields of a JSON report that later stages use; a writer may add others (ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)  # "54000" is no count


def write_report(path: Path, schema: type[StageReport], content: dict) -> None:
    """Write ``content`` as JSON once it holds what ``schema``'s readers need: a writer that
    drifts from its readers fails in its own stage, not in the next one."""
    schema.model_validate(json_safe(content))
    write_json(path, content)
