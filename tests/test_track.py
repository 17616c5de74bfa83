"""MLflow tracking: where runs go, failing fast, and one run holding a whole pipeline run."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch
from conftest import (
    QUICK_TRAIN,
    REPO,
    dvc,
    edit_params,
    free_port,
    init_pipeline_repo,
    model_probabilities,
)
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
    assert result.returncode == 2, result.stdout + result.stderr
    assert uri in result.stderr and "cannot be reached" in result.stderr
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
    assert main(["predict", str(images), "--model-uri", "models:/predict-test@nobody"]) == 2
    assert "models:/predict-test@nobody" in capsys.readouterr().err
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


def experiment_runs(uri: str, name: str) -> list:
    experiment = MlflowClient(uri).get_experiment_by_name(name)
    return [] if experiment is None else MlflowClient(uri).search_runs([experiment.experiment_id])


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
    edit_params(
        tiny_project, "track", enabled=True, tracking_uri=mlflow_server, experiment="states"
    )
    env = init_pipeline_repo(tiny_project)
    env.pop("MLFLOW_TRACKING_URI", None)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "add", "-A"], cwd=tiny_project, check=True)
    subprocess.run([*git, "commit", "-qm", "clean"], cwd=tiny_project, check=True)
    dvc(tiny_project, env, "repro")
    (trained,) = experiment_runs(mlflow_server, "states")
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
    runs = experiment_runs(mlflow_server, "states")
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
    assert len(experiment_runs(mlflow_server, "states")) == 2

    # A run refused by its checks never starts a run.
    edit_params(tiny_project, "train", batch_size=100_000)
    failed = subprocess.run(
        ["dvc", "repro"], cwd=tiny_project, env=env, capture_output=True, text=True
    )
    assert failed.returncode != 0 and "larger than the training set" in failed.stderr
    runs = experiment_runs(mlflow_server, "states")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)

    # A forced retrain that gives the same weights on the same data: DVC skips the later
    # stages, so the retraining logs into the run of that state, which holds their results,
    # and opens none that would stay without them.
    edit_params(tiny_project, "train", batch_size=QUICK_TRAIN["batch_size"])
    assert "Running stage 'evaluate'" not in dvc(tiny_project, env, "repro", "-f", "-s", "train")
    assert len(experiment_runs(mlflow_server, "states")) == 2
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
    runs = client.search_runs([client.get_experiment_by_name("late").experiment_id])
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
