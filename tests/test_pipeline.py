"""The real `dvc repro` in a temporary git repo: runs stages, then skips what did not change."""

from __future__ import annotations

import pytest
from conftest import dvc, edit_params, init_pipeline_repo

pytestmark = pytest.mark.slow


def test_repro_runs_then_is_a_no_op_then_reruns_what_changed(tiny_project):
    edit_params(tiny_project, "train", max_epochs=1, limit_batches=4, batch_size=32)
    env = init_pipeline_repo(tiny_project)
    first = dvc(tiny_project, env, "repro")
    assert "Running stage 'ingest'" in first and "Running stage 'train'" in first
    assert (tiny_project / "models/model.safetensors").exists()
    second = dvc(tiny_project, env, "repro")
    assert "Running stage" not in second and "didn't change" in second
    edit_params(tiny_project, "train", lr=0.003)
    third = dvc(tiny_project, env, "repro")
    assert "Running stage 'train'" in third and "Running stage 'ingest'" not in third
    edit_params(tiny_project, "data", seed=3)
    assert "Running stage 'ingest'" in dvc(tiny_project, env, "repro")
