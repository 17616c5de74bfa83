"""The real `dvc repro` in a temporary git repo: it reruns exactly what changed, restores every
stage from the run-cache, repeats its outputs byte for byte (every output is a pure function of
its deps and params: no timing, date or run id), a fresh clone that pulls from the remote runs
nothing, and one that trains again, even interrupted and resumed, reproduces the committed
dvc.lock."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import yaml
from helpers.data import QUICK_TRAIN
from helpers.processes import repro_stopped_in_training
from helpers.project import (
    STAGES,
    committed_clone,
    copy_pipeline,
    dvc,
    edit_params,
    git,
    init_pipeline_repo,
    ran,
)

pytestmark = pytest.mark.slow


def restored(output: str) -> list[str]:
    """The stages `dvc repro` restored from the run-cache."""
    return re.findall(r"Stage '(\w+)' is cached - skipping run", output)


def append(project: Path, relative: str, text: str) -> None:
    with (project / relative).open("a") as handle:
        handle.write(text)


def output_hashes(project: Path) -> dict[str, str]:
    """Every output's hash as dvc.lock records it."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {
        out["path"]: out.get("md5") or out.get("hash")
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }


@pytest.fixture()
def pipeline(reproduced_pipeline, tmp_path):
    """A copy of the session's reproduced tiny pipeline."""
    project = tmp_path / "project"
    return project, copy_pipeline(*reproduced_pipeline, project)


def test_repro_reruns_exactly_the_stages_a_change_touches(pipeline):
    project, env = pipeline
    assert (project / "reports/report.html").exists()
    unchanged = dvc(project, env, "repro")
    assert ran(unchanged) == [] and "didn't change" in unchanged
    # Settings that cannot change a result rerun nothing.
    edit_params(project, "runtime", progress="lines", resume=False)
    edit_params(project, "track", experiment="elsewhere")
    assert ran(dvc(project, env, "repro")) == []
    # A code change reruns the stages that import the module, and the stages after them only
    # when their inputs changed: models/ repeats byte for byte, so report does not rerun.
    append(project, "src/digitpipe/model/zoo.py", "\n# a comment\n")
    assert ran(dvc(project, env, "repro")) == ["train", "evaluate", "activations"]
    append(project, "src/digitpipe/report/html.py", "\nSTYLE += 'h3 { color: #444; }'\n")
    assert ran(dvc(project, env, "repro")) == ["report"]
    assert "h3 { color: #444; }" in (project / "reports/report.html").read_text()
    edit_params(project, "report", title="Another title")
    assert ran(dvc(project, env, "repro")) == ["report"]
    assert (project / "reports/report.md").read_text().startswith("# Another title\n")
    edit_params(project, "activations", image_ids=["test-000003"])
    assert ran(dvc(project, env, "repro")) == ["activations", "report"]
    status = dvc(project, env, "status")
    assert "up to date" in status, status


def test_run_cache_identical_reruns_and_a_fresh_clone(pipeline, tmp_path):
    project, env = pipeline
    first = output_hashes(project)
    assert ran(dvc(project, env, "repro", "--force")) == STAGES
    again = output_hashes(project)
    assert again == first  # every output, the report and models/model.ckpt included
    assert "reports/train/speed.json" not in again  # timings: a metric, never an output
    assert "train_seconds" in dvc(project, env, "metrics", "show")
    # A param change, then back: every stage comes from the run-cache, none executes.
    edit_params(project, "data", seed=7)
    edit_params(project, "train", lr=0.005)
    assert ran(dvc(project, env, "repro")) == STAGES
    edit_params(project, "data", seed=42)
    edit_params(project, "train", lr=None)
    back = dvc(project, env, "repro")
    assert ran(back) == [] and restored(back) == STAGES, back
    assert output_hashes(project) == again
    # A teammate: push data, outputs and run-cache; clone; pull; repro executes nothing.
    remote = tmp_path / "remote"
    dvc(project, env, "remote", "add", "-d", "shared", str(remote))
    dvc(project, env, "push", "--run-cache")
    clone = tmp_path / "clone"
    clone_env = committed_clone(project, env, clone)
    dvc(clone, clone_env, "pull", "--run-cache")
    pulled = dvc(clone, clone_env, "repro")
    assert ran(pulled) == [], pulled
    assert (clone / "reports/report.html").read_bytes() == (
        project / "reports/report.html"
    ).read_bytes()


def interrupted_repro(project: Path, env: dict[str, str], epochs: int) -> None:
    """`dvc repro` with its train stage killed (SIGKILL) once it has saved epoch ``epochs``."""
    repro, train = repro_stopped_in_training(project, env, epochs=epochs)
    os.kill(train, signal.SIGKILL)
    assert repro.wait(timeout=300) != 0


def test_a_clone_that_trains_again_interrupted_reproduces_the_committed_lock(
    tiny_project, tmp_path
):
    """The committed dvc.lock names outputs a clone that did not pull makes itself, byte for byte,
    even when its training is killed after epoch 2 and resumed; after an experiment, restoring
    params.yaml and dvc.lock leaves nothing to execute."""
    edit_params(tiny_project, "train", **QUICK_TRAIN | {"max_epochs": 3, "limit_batches": 6})
    env = init_pipeline_repo(tiny_project)
    dvc(tiny_project, env, "repro")
    clone = tmp_path / "clone"
    clone_env = committed_clone(tiny_project, env, clone)
    dvc(clone, clone_env, "repro", "ingest")
    interrupted_repro(clone, clone_env, epochs=2)
    resumed = dvc(clone, clone_env, "repro")
    assert "Resuming from" in resumed and ran(resumed) == STAGES[1:], resumed
    assert output_hashes(clone) == output_hashes(tiny_project)
    git(clone, "diff", "--exit-code", "dvc.lock")
    speed = json.loads((clone / "reports/train/speed.json").read_text())
    assert speed["resumed_after_epoch"] >= 2 and speed["train_seconds"] <= speed["wall_seconds"]

    experiment = dvc(clone, clone_env, "exp", "run", "-S", "evaluate.confident_mistakes=3")
    assert "Running stage 'evaluate'" in experiment and "Running stage 'train'" not in experiment
    git(clone, "checkout", "HEAD", "--", "params.yaml", "dvc.lock")
    back = dvc(clone, clone_env, "repro")
    assert ran(back) == [], back
    git(clone, "diff", "--exit-code", "dvc.lock")
