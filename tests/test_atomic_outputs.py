"""All-or-nothing outputs: a stage publishes all its outputs together or leaves the previous ones,
on a failed step, a failed publication and a disk that fills up for real under `dvc repro -f`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers.processes import repro_stopped_in_training
from helpers.project import edit_params, fill, init_pipeline_repo
from helpers.tracking import experiment_runs
from mlflow.tracking import MlflowClient

from digitpipe.core.atomic import staged_outputs
from digitpipe.outputs.train import DECLARED as TRAIN_DECLARED
from digitpipe.outputs.train import MODEL_DIR, TRAIN_REPORTS

OUTPUTS = [Path("models"), Path("reports/train/history.csv")]


def previous_outputs(root: Path) -> None:
    (root / "models").mkdir()
    (root / "models/model.json").write_text("old model")
    (root / "reports/train").mkdir(parents=True)
    (root / "reports/train/history.csv").write_text("old history")


def contents(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_outputs_are_published_together(tmp_path):
    previous_outputs(tmp_path)
    with staged_outputs(tmp_path, "train", OUTPUTS) as out:
        (out / "models").mkdir()
        (out / "models/model.safetensors").write_text("new weights")
        (out / "reports/train").mkdir(parents=True)
        (out / "reports/train/history.csv").write_text("new history")
        assert contents(tmp_path)["reports/train/history.csv"] == "old history"
    assert contents(tmp_path) == {
        "models/model.safetensors": "new weights",  # model.json went with the old folder
        "reports/train/history.csv": "new history",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "reports"]  # no staging left


def test_a_failed_step_publishes_nothing(tmp_path):
    previous_outputs(tmp_path)
    before = contents(tmp_path)
    with pytest.raises(OSError), staged_outputs(tmp_path, "train", OUTPUTS) as out:
        (out / "models").mkdir()
        (out / "models/model.json").write_text("new model")
        raise OSError("the second file could not be written")
    assert contents(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "reports"]


def test_a_failed_publication_puts_the_previous_outputs_back(tmp_path):
    """The second output cannot be placed (a file stands where its folder must be): the first,
    already placed, is taken back and the previous one restored."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.json").write_text("old model")
    (tmp_path / "reports").write_text("a file, not a folder")
    with pytest.raises(OSError), staged_outputs(tmp_path, "train", OUTPUTS) as out:
        (out / "models").mkdir()
        (out / "models/model.json").write_text("new model")
        (out / "reports/train").mkdir(parents=True)
        (out / "reports/train/history.csv").write_text("new history")
    assert contents(tmp_path) == {
        "models/model.json": "old model",
        "reports": "a file, not a folder",
    }


@pytest.mark.slow
def test_a_full_disk_under_repro_leaves_no_mix_and_no_running_run(tiny_project, small_disk):
    """The disk fills up during the forced rerun's train stage: one message, none of the stage's
    outputs (DVC removed the previous ones first) instead of some, the MLflow run not RUNNING;
    with space freed, the next `dvc repro` completes."""
    project = small_disk / "project"
    store = f"sqlite:///{tiny_project / 'mlflow.db'}"  # off the full disk: its status is checked
    edit_params(tiny_project, "train", max_epochs=2, batch_size=32, limit_batches=12)
    edit_params(tiny_project, "track", enabled=True, tracking_uri=store, experiment="disk")
    shutil.copytree(tiny_project / "data", project / "data")
    shutil.copy(tiny_project / "params.yaml", project)
    env = init_pipeline_repo(project)
    env.pop("MLFLOW_TRACKING_URI", None)
    first = subprocess.run(["dvc", "repro", "train"], cwd=project, env=env, capture_output=True)
    assert first.returncode == 0, first.stdout + first.stderr

    rerun, training = repro_stopped_in_training(
        project, env, "-f", "train", stdout=subprocess.PIPE, text=True
    )
    # The remaining epoch rewrites its checkpoints in place and needs no more than a few pages;
    # the export (about 1 MB of weights) then runs out of space.
    fill(small_disk, leave=64 * 1024)
    os.kill(training, signal.SIGCONT)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode != 0
    assert output.count("digitpipe: error: no space left on the device") == 1, output
    assert "Traceback" not in output, output
    left = [path for path in TRAIN_DECLARED.paths() if (project / path).exists()]
    assert left == [], f"a failed train stage left {left}"
    client = MlflowClient(store)
    statuses = [run.info.status for run in experiment_runs(client, "disk")]
    assert sorted(statuses) == ["FAILED", "FINISHED"], statuses

    (small_disk / "filler").unlink()
    resumed = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert all((project / path).exists() for path in TRAIN_DECLARED.paths())
    assert (project / MODEL_DIR / "model.ckpt").exists()
    assert (project / TRAIN_REPORTS / "history.csv").read_text().count("\n") == 3
