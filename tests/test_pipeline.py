"""The real `dvc repro` in a temporary git repo: it reruns exactly what changed, restores every
stage from the run-cache, repeats its outputs byte for byte, and a fresh clone that pulls from
the remote runs nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import QUICK_TRAIN, dvc, edit_params, init_pipeline_repo

pytestmark = pytest.mark.slow
STAGES = ["ingest", "train", "evaluate", "activations", "report"]
# Outputs that record how long a run took, or which run and when (the report's first lines):
# they differ between identical runs by design.
TIMINGS = {
    "reports/train/speed.json",
    "reports/report.md",
    "reports/report.html",
}


def ran(output: str) -> list[str]:
    """The stages `dvc repro` executed, in order."""
    return re.findall(r"Running stage '(\w+)'", output)


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


def git(project: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


@pytest.fixture()
def pipeline(tiny_project):
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    env = init_pipeline_repo(tiny_project)
    assert ran(dvc(tiny_project, env, "repro")) == STAGES
    return tiny_project, env


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
    assert {k: v for k, v in again.items() if k not in TIMINGS} == {
        k: v for k, v in first.items() if k not in TIMINGS
    }
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
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    clone_env = {**env, "PYTHONPATH": str(clone / "src")}
    dvc(clone, clone_env, "pull", "--run-cache")
    pulled = dvc(clone, clone_env, "repro")
    assert ran(pulled) == [], pulled
    assert (clone / "reports/report.html").read_bytes() == (
        project / "reports/report.html"
    ).read_bytes()
