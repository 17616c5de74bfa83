"""The real `dvc repro` in a temporary git repo: runs stages, then skips what did not change."""

from __future__ import annotations

import pytest
from conftest import dvc, edit_params, init_pipeline_repo

pytestmark = pytest.mark.slow


def test_repro_runs_then_is_a_no_op_then_reruns_on_param_change(tiny_project):
    env = init_pipeline_repo(tiny_project)
    first = dvc(tiny_project, env, "repro")
    assert "Running stage 'ingest'" in first
    assert (tiny_project / "data/processed/train.parquet").exists()
    second = dvc(tiny_project, env, "repro")
    assert "Running stage" not in second and "didn't change" in second
    edit_params(tiny_project, "data", seed=3)
    assert "Running stage 'ingest'" in dvc(tiny_project, env, "repro")
