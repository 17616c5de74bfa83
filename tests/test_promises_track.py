"""README promises of MLflow tracking: the logged model's signature and input example, the git and
DVC tags of a run, `dvc exp run` (in a temporary copy) landing in the repo's store, nothing
written anywhere when tracking is off, and bad `evaluate` and `track` values refused by key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import QUICK_TRAIN, dvc, edit_params, init_pipeline_repo, model_probabilities
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from digitpipe.cli import main
from digitpipe.core.config import load_params
from digitpipe.dataset.parquet import read_split
from digitpipe.model.export import load_model
from digitpipe.outputs.ingest import PROCESSED_DIR
from digitpipe.outputs.train import MODEL_DIR
from digitpipe.tracking.runs import find_training_run
from digitpipe.train.run import run as train

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
STORE_NAMES = {"mlflow.db", "mlruns", "mlartifacts"}


def git(project: Path, *args: str) -> str:
    result = subprocess.run([*GIT, *args], cwd=project, check=True, capture_output=True, text=True)
    return result.stdout.strip()


@pytest.fixture()
def no_tracking_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)


def test_logged_model_signature_input_example_and_git_tags(ingested, no_tracking_env):
    edit_params(ingested, "track", enabled=True, experiment="signature")
    git(ingested, "init", "-q")
    git(ingested, "add", "-A")
    git(ingested, "commit", "-qm", "tiny project")
    train(load_params(ingested / "params.yaml"), ingested)
    ref = find_training_run(load_params(ingested / "params.yaml").track, ingested)
    client = MlflowClient(ref.tracking_uri)
    assert ref.tracking_uri == f"sqlite:///{ingested.resolve()}/mlflow.db"
    tags = client.get_run(ref.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == git(ingested, "rev-parse", "HEAD")
    assert tags["git.dirty"] == "false" and "dvc.experiment" not in tags  # not an experiment

    local = Path(mlflow.artifacts.download_artifacts(ref.model_uri, tracking_uri=ref.tracking_uri))
    logged = Model.load(local)
    example = logged.load_input_example(local)
    # The input example: validation images as float pixels 0..255.
    val = read_split(ingested / PROCESSED_DIR / "val.parquet")
    assert example.dtype.kind == "f" and 0 < len(example) <= len(val)
    np.testing.assert_array_equal(
        example.reshape(len(example), -1), val.images[: len(example)].reshape(len(example), -1)
    )
    # The signature describes what the model answers for it: the predicted class and the
    # probability of each class, as the network in models/ gives them.
    served = mlflow.pyfunc.load_model(str(local))
    answer = served.predict(example)
    signature = logged.signature
    assert signature is not None and signature.outputs is not None
    assert signature.outputs.input_names() == list(answer.columns)
    net, spec = load_model(ingested / MODEL_DIR)
    expected = model_probabilities(net, spec, val.images[: len(example)])
    probabilities = answer[[f"prob_{name}" for name in spec.class_names]].to_numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    for column in signature.outputs.inputs:
        declared, answered = column.type.to_numpy().kind, answer[column.name].to_numpy().dtype.kind
        assert answered == declared or {answered, declared} <= {"O", "U"}, column.name  # text

    # A change to a tracked file (params.yaml) since the commit: a dirty run of the same commit.
    edit_params(ingested, "train", seed=3)
    train(load_params(ingested / "params.yaml"), ingested)
    second = find_training_run(load_params(ingested / "params.yaml").track, ingested)
    assert second.run_id != ref.run_id
    tags = client.get_run(second.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == git(ingested, "rev-parse", "HEAD")
    assert tags["git.dirty"] == "true"


def test_tracking_off_writes_to_no_store(ingested, tmp_path_factory, monkeypatch, no_tracking_env):
    assert load_params(ingested / "params.yaml").track.enabled is False  # the fixture's setting
    elsewhere = tmp_path_factory.mktemp("env-store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}/mlflow.db")
    monkeypatch.chdir(ingested)  # MLflow's own default store would be ./mlruns
    for command in ("train", "evaluate", "activations", "report"):
        assert main([command]) == 0, command
    assert not any(elsewhere.iterdir())
    assert not STORE_NAMES & {path.name for path in ingested.iterdir()}
    # The control: with tracking on, the same environment sends the run to that store.
    edit_params(ingested, "track", enabled=True)
    assert main(["train"]) == 0
    assert (elsewhere / "mlflow.db").is_file()


@pytest.mark.parametrize(
    ("command", "section", "changes", "words"),
    [
        (
            "evaluate",
            "evaluate",
            {"calibration_bins": 0},
            ["evaluate.calibration_bins", "greater than 0"],
        ),
        (
            "evaluate",
            "evaluate",
            {"calibration_bins": 10**10},
            ["evaluate.calibration_bins", "less than or equal to 1000"],
        ),
        ("evaluate", "evaluate", {"batch_size": "many"}, ["evaluate.batch_size", "integer"]),
        (
            "evaluate",
            "evaluate",
            {"bins": 10},
            ["evaluate.bins: not a key of evaluate; its keys are batch_size, pair_gallery_size"],
        ),
        ("train", "track", {"promotion_margin": 1.5}, ["track.promotion_margin", "less than 1"]),
        ("train", "track", {"enabled": "sometimes"}, ["track.enabled", "boolean"]),
        ("train", "track", {"experiment": ""}, ["track.experiment", "at least 1 character"]),
        ("train", "track", {"uri": "http://x"}, ["track.uri: not a key of track; its keys are"]),
    ],
)
def test_bad_evaluate_and_track_values_are_refused_by_key(
    tiny_project, monkeypatch, capsys, command, section, changes, words
):
    edit_params(tiny_project, section, **changes)
    monkeypatch.chdir(tiny_project)
    assert main([command]) == 2
    message = capsys.readouterr().err
    assert message.startswith("digitpipe: error: params.yaml: invalid parameters")
    for word in words:
        assert word in message, message
    assert sorted(path.name for path in tiny_project.iterdir()) == ["data", "params.yaml"]


@pytest.mark.slow
def test_dvc_exp_run_in_a_temporary_copy_lands_in_the_repos_store(tiny_project):
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    edit_params(tiny_project, "track", enabled=True)  # the default store: the repo's mlflow.db
    env = init_pipeline_repo(tiny_project)
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(name, None)
    git(tiny_project, "add", "-A")
    git(tiny_project, "commit", "-qm", "tiny pipeline")
    head = git(tiny_project, "rev-parse", "HEAD")
    # --temp runs the experiment in a copy under .dvc/tmp, as a queued one does; only ingest
    # and train (the target) run.
    dvc(
        tiny_project, env, "exp", "run", "--temp", "-n", "lower-lr", "-S", "train.lr=0.004", "train"
    )
    client = MlflowClient(f"sqlite:///{tiny_project.resolve()}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("digitpipe").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "bncnn-lower-lr"
    assert run.data.params["train.lr"] == "0.004"
    assert run.data.tags["dvc.experiment"] == "lower-lr"
    assert run.data.tags["mlflow.source.git.commit"] == head
    # Its files are in the repo, not in the temporary copy DVC removed.
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tiny_project.resolve() / "mlartifacts")
    assert (artifacts / "weights" / "model.safetensors").is_file()
    assert not (tiny_project / "models").exists()  # the workspace is untouched
    shown = json.loads(dvc(tiny_project, env, "exp", "show", "--json"))
    assert "lower-lr" in json.dumps(shown)
