"""The real `dvc repro` in a temporary git repo: runs stages, then reruns only what changed."""

from __future__ import annotations

import re

import pytest
from conftest import QUICK_TRAIN, dvc, edit_params, init_pipeline_repo

pytestmark = pytest.mark.slow
STAGES = ["ingest", "train", "evaluate", "activations", "report"]


def ran(output: str) -> list[str]:
    """The stages `dvc repro` ran, in order."""
    return re.findall(r"Running stage '(\w+)'", output)


def test_repro_runs_everything_then_only_what_changed(tiny_project):
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    env = init_pipeline_repo(tiny_project)
    assert ran(dvc(tiny_project, env, "repro")) == STAGES
    assert (tiny_project / "reports/report.html").exists()
    unchanged = dvc(tiny_project, env, "repro")
    assert ran(unchanged) == [] and "didn't change" in unchanged
    edit_params(tiny_project, "report", title="Another title")
    assert ran(dvc(tiny_project, env, "repro")) == ["report"]
    edit_params(tiny_project, "activations", image_ids=["test-000003"])
    assert ran(dvc(tiny_project, env, "repro")) == ["activations", "report"]
    edit_params(tiny_project, "train", lr=0.003)
    assert ran(dvc(tiny_project, env, "repro")) == STAGES[1:]
