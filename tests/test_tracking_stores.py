"""Tracking stores a team shares (issue 31): PostgreSQL directly or behind `mlflow server`, and a
store that goes away mid-training. Each failure is one message naming the store (its password
masked), exit status 2, no traceback; subprocess timeouts only guard against hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.data import QUICK_TRAIN
from helpers.errors import assert_user_error
from helpers.processes import stopped_after_a_checkpoint
from helpers.project import edit_params, tracked_pipeline
from helpers.servers import free_port, start_mlflow_server, stop_mlflow_server
from helpers.tracking import experiment_runs
from mlflow.tracking import MlflowClient

from digitpipe.cli import main
from digitpipe.outputs.train import CHECKPOINT_ROOT, MODEL_DIR
from digitpipe.tracking.runs import ARTIFACT_DIR, MODEL_URI_TAG
from digitpipe.train.run import MLFLOW_RUN_FILE

QUICK_FAILURE_S = 20  # a dead database answers in about 5 s (the connection timeout)
STAGE_ENDS_S = 60  # a stage whose server died ends within this (issue 31)
HANG_GUARD_S = 300


@pytest.fixture()
def tracked(ingested, monkeypatch):
    """The ingested tiny project, tracking on, as the current folder."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(ingested)
    return ingested


def train_with(project, uri: str) -> int:
    edit_params(project, "track", enabled=True, tracking_uri=uri, experiment="stores")
    return main(["train"])


def test_unreachable_database_fails_in_seconds_masking_the_password(tracked, capsys):
    uri = f"postgresql://team:s3cret@127.0.0.1:{free_port()}/runs"  # nothing listens there
    started = time.monotonic()
    status = train_with(tracked, uri)
    assert time.monotonic() - started < QUICK_FAILURE_S
    shown = uri.replace("s3cret", "***")
    err = assert_user_error(
        (status, capsys), f"MLflow store {shown} cannot be reached", "Start the database server"
    )
    assert "s3cret" not in err
    assert not (tracked / MODEL_DIR).exists() and not (tracked / CHECKPOINT_ROOT).exists()


def test_database_without_its_driver_is_one_message(tracked, capsys):
    uri = "mysql://team:s3cret@127.0.0.1/runs"  # mysqlclient is not installed
    err = assert_user_error(
        (train_with(tracked, uri), capsys),
        "MLflow store mysql://team:***@127.0.0.1/runs: no database driver",
    )
    assert "pymysql" in err and "s3cret" not in err


def test_missing_database_is_one_message(tracked, postgres, capsys):
    uri = postgres.uri("never_created")
    assert_user_error(
        (train_with(tracked, uri), capsys),
        f"MLflow store {uri} cannot be reached",
        "does not exist",
        "createdb",
    )


@pytest.mark.slow
def test_direct_postgresql_store_keeps_artifacts_in_the_repository(
    tracked, postgres, tmp_path, monkeypatch
):
    """A queued DVC experiment runs in a temporary copy (here the project) and names the
    repository in DVC_ROOT: the artifacts go there, never into the copy's ./mlruns."""
    uri = postgres.create("direct")
    repository = tmp_path / "repository"
    repository.mkdir()
    monkeypatch.setenv("DVC_ROOT", str(repository))
    assert train_with(tracked, uri) == 0
    client = MlflowClient(uri)
    [run] = experiment_runs(client, "stores")
    assert run.info.status == "FINISHED" and "train.best_epoch_val_accuracy" in run.data.metrics
    assert MODEL_URI_TAG in run.data.tags
    assert run.info.artifact_uri.startswith((repository / ARTIFACT_DIR).as_uri())
    assert list((repository / ARTIFACT_DIR).rglob("model.safetensors"))
    assert not (tracked / "mlruns").exists() and not (tracked / ARTIFACT_DIR).exists()


def start_training(project: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    return subprocess.Popen(
        [sys.executable, "-m", "digitpipe.cli", "train"],
        cwd=project,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_server_dying_mid_training_ends_the_stage_and_the_rerun_resumes(tracked, tmp_path):
    home, port = tmp_path / "server", free_port()
    backend = f"sqlite:///{home / 'mlflow.db'}"
    home.mkdir()
    server = start_mlflow_server(backend, home / "artifacts", port)
    uri = f"http://127.0.0.1:{port}"
    edit_params(tracked, "train", max_epochs=5)  # long enough to be stopped mid-way
    edit_params(tracked, "track", enabled=True, tracking_uri=uri, experiment="dying")
    training = start_training(tracked)
    try:
        stopped = stopped_after_a_checkpoint(tracked, lambda: training.pid, training.poll)
        stop_mlflow_server(server, signal.SIGKILL)
        died = time.monotonic()
        os.kill(stopped, signal.SIGCONT)
        out, err = training.communicate(timeout=HANG_GUARD_S)
        ended = time.monotonic() - died
        print(f"the stage ended {ended:.1f} s after the server died")
        assert ended < STAGE_ENDS_S
    finally:
        training.kill()
        stop_mlflow_server(server)
    assert_user_error(
        (training.returncode, err),
        f"MLflow tracking server {uri} stopped answering",
        "resumes from it",
    )
    [marker] = (tracked / CHECKPOINT_ROOT).glob(f"*/{MLFLOW_RUN_FILE}")
    assert (marker.parent / "last.ckpt").exists()
    run_id = marker.read_text().strip()

    # The server back (same store, same address): the rerun resumes and finishes the same run.
    server = start_mlflow_server(backend, home / "artifacts", port)
    try:
        rerun = start_training(tracked)
        out, err = rerun.communicate(timeout=HANG_GUARD_S)
        assert rerun.returncode == 0, out + err
        assert "Resuming from" in out
        client = MlflowClient(uri)
        [run] = experiment_runs(client, "dying")
        assert run.info.run_id == run_id and run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert max(steps) == 5 and MODEL_URI_TAG in run.data.tags
    finally:
        stop_mlflow_server(server)
    assert not (tracked / CHECKPOINT_ROOT).exists()


@pytest.mark.slow
def test_server_on_postgresql_tracks_and_retrain_promotes(tiny_project, postgres, tmp_path):
    """`mlflow server` on PostgreSQL, serving artifacts: `digitpipe retrain` (a `dvc repro`)
    logs one FINISHED run with its metrics and model, registers it and promotes it. Talking to
    that database directly, an experiment whose artifacts the server keeps is refused before
    any training."""
    database, port = postgres.create("server"), free_port()
    server = start_mlflow_server(database, tmp_path / "artifacts", port)
    uri = f"http://127.0.0.1:{port}"
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    env = tracked_pipeline(
        tiny_project,
        tracking_uri=uri,
        experiment="team",
        registered_model="team-digits",
        min_accuracy=0.0,
    )
    try:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "digitpipe"), "retrain"],
            cwd=tiny_project,
            env=env,
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_S * 2,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "version 1 promoted to champion" in done.stdout
        client = MlflowClient(uri)
        [run] = experiment_runs(client, "team")
        assert run.info.status == "FINISHED" and "train.best_epoch_val_accuracy" in run.data.metrics
        # Promotion loads the registered model through the server and predicts with it.
        assert MODEL_URI_TAG in run.data.tags
        champion = client.get_model_version_by_alias("team-digits", "champion")
        assert champion.version == "1" and champion.run_id == run.info.run_id
    finally:
        stop_mlflow_server(server)

    checkpoints = tiny_project / CHECKPOINT_ROOT
    env["MLFLOW_TRACKING_URI"] = database
    refused = subprocess.run(
        [sys.executable, "-m", "digitpipe.cli", "train"],
        cwd=tiny_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert_user_error(refused, "MLflow experiment 'team' in", "mlflow-artifacts:", uri[:7])
    assert not checkpoints.exists()
