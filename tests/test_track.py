"""MLflow tracking: where runs go, failing fast, and one run holding a whole pipeline run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from helpers.data import QUICK_TRAIN, REPO
from helpers.errors import assert_user_error
from helpers.model import model_probabilities
from helpers.project import commit_all, dvc, edit_params, git, tracked_pipeline
from helpers.servers import free_port
from helpers.tracking import experiment_runs
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from digitpipe.activations.run import run as activations
from digitpipe.cli import main
from digitpipe.core.config import TrackParams, load_params
from digitpipe.core.lifetime import exit_on
from digitpipe.dataset.parquet import read_split
from digitpipe.evaluate.run import run as evaluate
from digitpipe.model.export import load_model
from digitpipe.outputs.ingest import PROCESSED_DIR
from digitpipe.outputs.train import MODEL_DIR
from digitpipe.report.run import run as report
from digitpipe.tracking.runs import (
    NO_TRAINING_RUN,
    TRAINING_RUN_TAG,
    find_training_run,
    package_version,
    stage_run,
)
from digitpipe.tracking.store import tracking_uri
from digitpipe.train.run import run as train

STAGE_NAMES = ("train", "evaluate", "activations", "report")


def test_tracking_uri_is_absolute_and_belongs_to_the_repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking_uri(TrackParams(), tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    relative = TrackParams(tracking_uri="sqlite:///store/runs.db")
    assert tracking_uri(relative, tmp_path) == f"sqlite:///{tmp_path.resolve()}/store/runs.db"
    monkeypatch.setenv("DVC_ROOT", "/srv/repo")  # a queued experiment's temporary copy
    assert tracking_uri(TrackParams(), tmp_path / "copy") == "sqlite:////srv/repo/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(TrackParams(), tmp_path) == "http://127.0.0.1:5000"


def test_a_package_without_metadata_is_tagged_not_installed():
    """Run from a checkout on PYTHONPATH, digitpipe has no installed metadata: the run is still
    tagged (it crashed the train stage on a GPU machine that ran the stages from source)."""
    assert package_version("torch") == torch.__version__
    assert package_version("digitpipe-not-a-distribution") == "not installed"


def test_unreachable_server_stops_train_naming_the_uri(ingested):
    # How fast it stops is measured by bench/track.py; the timeout only guards against a hang.
    uri = f"http://127.0.0.1:{free_port()}"
    edit_params(ingested, "track", enabled=True, tracking_uri=uri)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    result = subprocess.run(
        [sys.executable, str(REPO / "stages/train.py")],
        cwd=ingested,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_user_error(result, uri, "cannot be reached")
    assert not (ingested / MODEL_DIR).exists()


@pytest.mark.slow
def test_one_run_holds_the_pipeline_run(ingested, mlflow_server, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    subprocess.run(["git", "init", "-q"], cwd=ingested, check=True)
    edit_params(
        ingested, "track", enabled=True, tracking_uri=mlflow_server, experiment="tracking-test"
    )
    edit_params(ingested, "train", max_epochs=2)
    params = load_params(ingested / "params.yaml")
    for stage in (train, evaluate, activations, report):
        stage(params, ingested)
    ref = find_training_run(load_params(ingested / "params.yaml").track, ingested)
    client = MlflowClient(mlflow_server)
    run = client.get_run(ref.run_id)
    assert run.data.params["model.arch"] == "bncnn" and run.data.params["recipe.lr"] == "0.01"
    assert run.data.params["train.max_epochs"] == "2"
    history = client.get_metric_history(ref.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2]
    assert "train.best_epoch_val_accuracy" in run.data.metrics
    tags = run.data.tags
    assert tags["train.accelerator"] == "cpu" and tags["version.torch"].startswith("2.13")
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "val", "test"}
    for name, dataset in inputs.items():
        content = (ingested / PROCESSED_DIR / f"{name}.parquet").read_bytes()
        assert dataset.digest == hashlib.sha256(content).hexdigest()[:16], name
    artifacts = {a.path for a in client.list_artifacts(ref.run_id, "train")}
    assert artifacts == {"train/history.csv"}
    root_files = {a.path for a in client.list_artifacts(ref.run_id)}
    assert {"learning_curves.png", "confusion.png"} <= root_files
    assert run.data.metrics["test.accuracy"] > 0 and "test.mcnemar_p_value" in run.data.metrics
    logged = client.get_logged_model(ref.model_uri.rsplit("/", 1)[-1])
    model_metrics = {m.key: m.value for m in logged.metrics or []}
    assert model_metrics["test.accuracy"] == run.data.metrics["test.accuracy"]
    assert inputs["test"].digest and run.info.status == "FINISHED"
    later = {
        a.path
        for folder in ("evaluate", "activations", "report")
        for a in client.list_artifacts(ref.run_id, folder)
    }
    assert {
        "evaluate/most_confused_pair.png",
        "evaluate/stats.md",
        "activations/manifest.json",
        "activations/feature_maps.png",
        "report/report.html",
    } <= later
    assert {a.path for a in client.list_artifacts(ref.run_id, "weights")} == {
        "weights/model.safetensors",
        "weights/model.json",
    }
    served = mlflow.pyfunc.load_model(ref.model_uri)
    test = read_split(ingested / PROCESSED_DIR / "test.parquet")
    example = test.images[:32, None].astype(np.float32)
    net, spec = load_model(ingested / MODEL_DIR)
    expected = model_probabilities(net, spec, test.images[:32])
    predicted = served.predict(example)
    np.testing.assert_allclose(predicted.filter(like="prob_").to_numpy(), expected, atol=1e-6)
    assert predicted["label"].tolist() == [str(i) for i in expected.argmax(axis=1)]
    assert ref.tracking_uri == mlflow_server


@pytest.mark.slow
def test_predict_from_the_registry_loads_the_logged_safetensors(
    ingested, mlflow_server, monkeypatch, capsys
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    edit_params(
        ingested, "track", enabled=True, tracking_uri=mlflow_server, experiment="registry-test"
    )
    train(load_params(ingested / "params.yaml"), ingested)
    ref = find_training_run(load_params(ingested / "params.yaml").track, ingested)
    version = mlflow.register_model(ref.model_uri, "predict-test").version
    MlflowClient(mlflow_server).set_registered_model_alias("predict-test", "champion", version)
    images = ingested / "data/raw/test-images"
    monkeypatch.chdir(ingested)
    assert main(["predict", str(images), "--out", "local.csv"]) == 0
    assert (
        main(
            [
                "predict",
                str(images),
                "--model-uri",
                "models:/predict-test@champion",
                "--out",
                "registry.csv",
            ]
        )
        == 0
    )
    assert (ingested / "local.csv").read_text() == (ingested / "registry.csv").read_text()
    assert_user_error(
        (main(["predict", str(images), "--model-uri", "models:/predict-test@nobody"]), capsys),
        "models:/predict-test@nobody",
    )
    # The downloaded weights leave no temporary folder behind.
    scratch = ingested / "scratch"
    scratch.mkdir()
    command = [sys.executable, "-m", "digitpipe.cli", "predict", str(images), "--out", "tmp.csv"]
    command += ["--model-uri", "models:/predict-test@champion"]
    env = os.environ | {"TMPDIR": str(scratch)}
    done = subprocess.run(command, cwd=ingested, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (ingested / "tmp.csv").read_text() == (ingested / "local.csv").read_text()
    assert list(scratch.iterdir()) == []


def state_run(project, uri: str) -> str:
    """The id of the one MLflow run tagged with the pipeline state the report names."""
    report = (project / "reports/report.md").read_text()
    state = re.search(r"tagged `digitpipe.state` = `(\w+)`", report)
    (run,) = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("states").experiment_id],
        filter_string=f"tags.`digitpipe.state` = '{state[1]}'",
    )
    return run.info.run_id


@pytest.mark.slow
def test_one_run_per_pipeline_state(tiny_project, mlflow_server):
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    env = tracked_pipeline(tiny_project, tracking_uri=mlflow_server, experiment="states")
    commit_all(tiny_project, "clean")
    dvc(tiny_project, env, "repro")
    (trained,) = experiment_runs(MlflowClient(mlflow_server), "states")
    tags = trained.data.tags
    assert tags["git.dirty"] == "false"  # DVC deleting outputs does not make the source dirty
    assert trained.info.run_name.startswith("bncnn-")
    assert all(tags[f"digitpipe.stage.{s}"] == "done" for s in STAGE_NAMES)
    assert trained.data.params["evaluate.calibration_bins"] == "15"
    assert "test.accuracy" in trained.data.metrics and trained.info.status == "FINISHED"
    assert tags["mlflow.note.content"].startswith("test accuracy ")
    root_artifacts = {
        a.path for a in MlflowClient(mlflow_server).list_artifacts(trained.info.run_id)
    }
    assert {"confusion.png", "learning_curves.png"} <= root_artifacts
    assert not any(value == "None" for value in trained.data.params.values())
    ece = trained.data.metrics["test.ece"]
    assert state_run(tiny_project, mlflow_server) == trained.info.run_id

    # A downstream-only rerun with new params: a run of its own, linked to the training run.
    edit_params(tiny_project, "evaluate", calibration_bins=5)
    dvc(tiny_project, env, "repro")
    runs = experiment_runs(MlflowClient(mlflow_server), "states")
    assert len(runs) == 2
    (later,) = [r for r in runs if r.info.run_id != trained.info.run_id]
    assert later.data.tags["digitpipe.training_run"] == trained.info.run_id
    assert later.data.params["evaluate.calibration_bins"] == "5"
    assert later.data.params["model.arch"] == "bncnn"  # the training run's params, for compare
    assert "digitpipe.stage.train" not in later.data.tags
    assert state_run(tiny_project, mlflow_server) == later.info.run_id
    untouched = MlflowClient(mlflow_server).get_run(trained.info.run_id)
    assert untouched.data.metrics["test.ece"] == ece
    assert untouched.data.params["evaluate.calibration_bins"] == "15"

    # Every stage from the run-cache: no new run.
    edit_params(tiny_project, "evaluate", calibration_bins=15)
    assert "is cached" in dvc(tiny_project, env, "exp", "run")
    assert len(experiment_runs(MlflowClient(mlflow_server), "states")) == 2

    # A run refused by its checks never starts a run.
    edit_params(tiny_project, "train", batch_size=100_000)
    failed = subprocess.run(
        ["dvc", "repro"], cwd=tiny_project, env=env, capture_output=True, text=True
    )
    assert failed.returncode != 0 and "larger than the training set" in failed.stderr
    runs = experiment_runs(MlflowClient(mlflow_server), "states")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)

    # A forced retrain that gives the same weights on the same data: DVC skips the later
    # stages, so the retraining logs into the run of that state, which holds their results,
    # and opens none that would stay without them.
    edit_params(tiny_project, "train", batch_size=QUICK_TRAIN["batch_size"])
    assert "Running stage 'evaluate'" not in dvc(tiny_project, env, "repro", "-f", "-s", "train")
    assert len(experiment_runs(MlflowClient(mlflow_server), "states")) == 2
    track = load_params(tiny_project / "params.yaml").track
    assert find_training_run(track, tiny_project).run_id == trained.info.run_id
    client = MlflowClient(mlflow_server)
    assert len(client.get_metric_history(trained.info.run_id, "train.wall_seconds")) == 2


def test_tracking_turned_on_after_an_untracked_training(ingested, tmp_path, monkeypatch):
    """Later stages rerun with tracking on log into a run of their own, each time: the model's
    training run is in no store, and its placeholder is never taken for a run id."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    edit_params(ingested, "track", enabled=False)
    train(load_params(ingested / "params.yaml"), ingested)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    edit_params(ingested, "track", enabled=True, tracking_uri=store, experiment="late")
    params = load_params(ingested / "params.yaml")
    for stage in (evaluate, activations, report, report):
        stage(params, ingested)
    client = MlflowClient(store)
    runs = experiment_runs(client, "late")
    assert runs and all(run.data.tags[TRAINING_RUN_TAG] == NO_TRAINING_RUN for run in runs)


def test_a_stage_ended_by_sigterm_marks_its_run_killed(ingested, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    edit_params(ingested, "track", enabled=True, tracking_uri=store, experiment="sigterm")
    params = load_params(ingested / "params.yaml")
    train(params, ingested)
    previous = signal.getsignal(signal.SIGTERM)
    exit_on(signal.SIGTERM)  # as every stage process does (core.stage)
    try:
        with pytest.raises(SystemExit), stage_run(params.track, ingested, "report", {}) as run:
            os.kill(os.getpid(), signal.SIGTERM)  # the report stage, mid-work
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert MlflowClient(store).get_run(run.run_id).info.status == "KILLED"


# ---------------------------------------------------------------- signature, git tags, store


STORE_NAMES = {"mlflow.db", "mlruns", "mlartifacts"}


@pytest.fixture()
def no_tracking_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)


def test_logged_model_signature_input_example_and_git_tags(ingested, no_tracking_env):
    edit_params(ingested, "track", enabled=True, experiment="signature")
    git(ingested, "init", "-q")
    commit_all(ingested, "tiny project")
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
    message = assert_user_error((main([command]), capsys), *words)
    assert message.startswith("digitpipe: error: params.yaml: invalid parameters")
    assert sorted(path.name for path in tiny_project.iterdir()) == ["data", "params.yaml"]


@pytest.mark.slow
def test_dvc_exp_run_in_a_temporary_copy_lands_in_the_repos_store(tiny_project):
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    env = tracked_pipeline(tiny_project)  # the default store: the repo's mlflow.db
    for name in ("DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(name, None)
    commit_all(tiny_project, "tiny pipeline")
    head = git(tiny_project, "rev-parse", "HEAD")
    # --temp runs the experiment in a copy under .dvc/tmp, as a queued one does; only ingest
    # and train (the target) run.
    dvc(
        tiny_project, env, "exp", "run", "--temp", "-n", "lower-lr", "-S", "train.lr=0.004", "train"
    )
    client = MlflowClient(f"sqlite:///{tiny_project.resolve()}/mlflow.db")
    (run,) = experiment_runs(client, "digitpipe")
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
