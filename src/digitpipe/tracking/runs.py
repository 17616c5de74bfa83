"""One MLflow run per pipeline state: `train` starts a run; each later stage logs into the latest
run of the same model unless that run already holds the stage's results (it reran with other
params or code), in which case the stage starts a run of its own, linked to the training run.

Runs are found by the digest of the model they used (a run tag), in the tracking store resolved
where the stage runs: no run id or store path is ever written into a DVC output.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Experiment, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from digitpipe.core.config import Params, TrackParams
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.stage import quiet_libraries
from digitpipe.outputs.train import MODEL_DIR, SPEC_FILE
from digitpipe.provenance import file_digest, git_commit
from digitpipe.tracking.state import DATA_DIGEST_TAG, WEIGHTS_DIGEST_TAG, weights_digest
from digitpipe.tracking.store import (
    StoreFailed,
    ensure_reachable,
    local_artifacts,
    repo_root,
    root_reason,
    shown,
    store_errors,
    tracking_uri,
)

quiet_libraries()  # importing mlflow set its INFO level again

MODEL_URI_TAG = "digitpipe.model_uri"
TRAINING_RUN_TAG = "digitpipe.training_run"  # the run that trained the model
NO_TRAINING_RUN = "not in this store"  # its value for a model trained untracked or elsewhere
STAGE_TAG = "digitpipe.stage.{}"  # set once a stage has logged into the run
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
HOST_TAG, PID_TAG = "digitpipe.host", "digitpipe.pid"  # the training process, while it runs
WEIGHTS_ARTIFACTS = "weights"  # the run's model.safetensors + model.json, logged by `train`
# The params.yaml sections that change the model or its metrics (the rest only shape reports).
MODEL_SECTIONS = {"data", "model", "train"}
ARTIFACT_DIR = "mlartifacts"
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
VERSIONED_PACKAGES = ("digitpipe", "torch", "lightning", "torchmetrics", "mlflow", "dvc")


@dataclass(frozen=True)
class RunRef:
    """Where a pipeline run lives."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    model_uri: str | None = None  # the logged model, once `train` has logged it


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def git_tags(root: Path) -> dict[str, str]:
    """The commit and whether the source differs from it (empty outside a git repo)."""
    commit = git_commit(root)
    if commit is None:
        return {}
    return {"mlflow.source.git.commit": commit.sha, "git.dirty": str(commit.dirty).lower()}


def package_version(package: str) -> str:
    """The installed version of ``package``; "not installed" when it runs from source (a
    checkout on PYTHONPATH) or the distribution's metadata is missing."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_tags(root: Path) -> dict[str, str]:
    tags = git_tags(root)
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    for package in VERSIONED_PACKAGES:
        tags[f"version.{package}"] = package_version(package)
    return tags


def run_name(arch: str) -> str:
    """``<arch>-<DVC experiment name>``, or ``<arch>-<date and time>`` outside an experiment."""
    return f"{arch}-{os.environ.get('DVC_EXP_NAME') or time.strftime('%Y%m%d-%H%M%S')}"


def loggable(values: dict[str, Any]) -> dict[str, str]:
    """Params as MLflow strings, without the unset (None) ones."""
    return {key: str(value) for key, value in values.items() if value is not None}


def log_datasets(files: dict[str, Path]) -> None:
    """Log Parquet splits as dataset inputs with their content digests, one context each."""
    for context, path in files.items():
        with warnings.catch_warnings():  # a local path matches two equivalent source types
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(path.resolve()))
        dataset = MetaDataset(source, name=path.name, digest=file_digest(path, length=16))
        mlflow.log_input(dataset, context=context)


def experiment_in(name: str, uri: str, root: Path) -> str:
    """The experiment's id, creating it if needed. With a database store (SQLite, PostgreSQL,
    ...) this process writes the artifacts itself: into ``mlartifacts/`` in the repository,
    never into the working folder (MLflow's default, ./mlruns: the temporary copy a queued DVC
    experiment runs in). The experiment is marked as model training, so the MLflow UI opens on
    its runs, not the GenAI overview."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = (repo_root(root) / ARTIFACT_DIR).as_uri() if local_artifacts(uri) else None
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        check_artifact_location(experiment, uri)
        experiment_id = experiment.experiment_id
    if experiment is None or EXPERIMENT_KIND_TAG not in experiment.tags:
        MlflowClient(uri).set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return experiment_id


def check_artifact_location(experiment: Experiment, uri: str) -> None:
    """Refuse, before any work, an experiment whose artifacts only its tracking server can
    write (``mlflow-artifacts:``, made by `mlflow server --serve-artifacts`) when this process
    talks to the database behind that server directly."""
    if local_artifacts(uri) and experiment.artifact_location.startswith("mlflow-artifacts:"):
        raise DigitpipeError(
            f"MLflow experiment {experiment.name!r} in {shown(uri)} keeps its artifacts on a "
            f"tracking server ({experiment.artifact_location}), which only that server can "
            "write: set MLFLOW_TRACKING_URI / track.tracking_uri to the server's http:// "
            "address, or use another track.experiment with this database."
        )


def start_pipeline_run(
    params: Params, root: Path, extra: dict[str, Any], resumed: str | None = None
) -> RunRef:
    """Create the training run (params, tags) and return where it is; it stays RUNNING until
    training has logged its model. Runs left RUNNING by a killed process are closed first.

    A training resumed from its checkpoint continues the run ``resumed`` (the interrupted
    one's id) when this store holds it, so one run keeps every epoch."""
    uri = open_store(params.track, root)
    with store_errors(uri):
        return new_or_resumed_run(params, root, extra, uri, resumed)


def new_or_resumed_run(
    params: Params, root: Path, extra: dict[str, Any], uri: str, resumed: str | None
) -> RunRef:
    """:func:`start_pipeline_run` in the store ``uri``, once it has been checked."""
    experiment_id = experiment_in(params.track.experiment, uri, root)
    close_abandoned_runs(uri, experiment_id)
    process = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    interrupted = resumable_run(uri, experiment_id, resumed)
    if interrupted is not None:
        ref = RunRef(uri, experiment_id, interrupted)
        MlflowClient(uri).log_batch(interrupted, tags=[RunTag(k, v) for k, v in process.items()])
        mark(ref, "RUNNING")
        return ref
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name(params.model.arch),
        tags=run_tags(root) | process | {STAGE_TAG.format("train"): "done"},
    ) as run:
        model_inputs = params.model_dump(
            mode="json", include=MODEL_SECTIONS, exclude={"data": {"checksums"}}
        )
        mlflow.log_params(loggable(flatten(model_inputs) | extra))
        mlflow.set_tag(TRAINING_RUN_TAG, run.info.run_id)
    ref = RunRef(uri, experiment_id, run.info.run_id)
    mark(ref, "RUNNING")
    return ref


def resumable_run(uri: str, experiment_id: str, run_id: str | None) -> str | None:
    """``run_id`` when it names an interrupted (KILLED or FAILED) training run of this store's
    experiment, else None."""
    if not run_id:
        return None
    try:
        run = MlflowClient(uri).get_run(run_id)
    except MlflowException:  # another store, or the run was deleted
        return None
    interrupted = run.info.status in ("KILLED", "FAILED") and MODEL_URI_TAG not in run.data.tags
    return run_id if interrupted and run.info.experiment_id == experiment_id else None


def close_abandoned_runs(uri: str, experiment_id: str) -> None:
    """Mark KILLED the RUNNING runs whose training process, on this host, no longer exists (a
    SIGKILL leaves no chance to say so)."""
    client = MlflowClient(uri)
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'")
    for run in running:
        tags = run.data.tags
        if tags.get(HOST_TAG) == socket.gethostname() and not alive(int(tags.get(PID_TAG, 0))):
            client.set_terminated(run.info.run_id, status="KILLED")


def alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_store(track: TrackParams, root: Path) -> str:
    """Resolve, check and select the tracking store; return its URI."""
    uri = tracking_uri(track, root)
    ensure_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def mark(ref: RunRef, status: str) -> None:
    """Set a run's status (RUNNING while training, FAILED when training fails)."""
    MlflowClient(ref.tracking_uri).update_run(ref.run_id, status=status)


def mark_ended(ref: RunRef, error: BaseException) -> None:
    """End the run KILLED (a signal, Ctrl-C) or FAILED after ``error``, while the store still
    answers. A store that stopped answering (StoreFailed) is not asked again, which would take
    its retries (~35 s). ``error`` is the one to report: a run left RUNNING is a note on it
    (printed with its message), the store's own error only its reason."""
    status = "KILLED" if isinstance(error, KeyboardInterrupt | SystemExit) else "FAILED"
    if isinstance(error, StoreFailed):
        error.add_note(left_running(ref, status))
        return
    try:
        MlflowClient(ref.tracking_uri).set_terminated(ref.run_id, status)
    except Exception as exc:  # any failure of the store leaves the run as it was
        error.add_note(left_running(ref, status, exc))


def left_running(ref: RunRef, status: str, exc: BaseException | None = None) -> str:
    """What became of a run that could not be marked ``status``, and how it gets closed: the
    next training on this host marks KILLED the runs of processes that are gone, and a resumed
    one continues that run."""
    reason = f" ({root_reason(exc)})" if exc is not None else ""
    return (
        f"The MLflow run {ref.run_id} in {shown(ref.tracking_uri)} could not be marked {status}"
        f"{reason} and shows RUNNING: rerunning the stage once the store can be written closes "
        "it (a resumed training continues it)."
    )


def runs_of_model(uri: str, experiment_id: str, digest: str) -> list[Run]:
    """The runs that trained or used the model with this digest, newest first."""
    return MlflowClient(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.`{WEIGHTS_DIGEST_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )


def trained_run_of_state(ref: RunRef, weights: str, data: str) -> str | None:
    """The id of another run in ``ref``'s experiment that trained and logged these weights on
    this data (the newest), else None."""
    runs = runs_of_model(ref.tracking_uri, ref.experiment_id, weights)
    return next(
        (
            run.info.run_id
            for run in runs
            if run.info.run_id != ref.run_id
            and MODEL_URI_TAG in run.data.tags
            and run.data.tags.get(DATA_DIGEST_TAG) == data
        ),
        None,
    )


def find_training_run(track: TrackParams, root: Path) -> RunRef | None:
    """The latest run that trained and logged the model now in ``models/``; None when tracking
    is off or the store holds no such run (the model was trained elsewhere)."""
    if not track.enabled:
        return None
    uri = open_store(track, root)
    experiment = mlflow.get_experiment_by_name(track.experiment)
    if experiment is None:
        return None
    run = training_run(runs_of_model(uri, experiment.experiment_id, weights_digest(root)))
    if run is None:
        return None
    model_uri = run.data.tags[MODEL_URI_TAG]
    return RunRef(uri, experiment.experiment_id, run.info.run_id, model_uri)


def training_run(runs: list[Run]) -> Run | None:
    """The newest of ``runs`` (newest first) that trained and logged the model and that the
    evaluate stage logged into, else the newest that trained it. A retrain that gives the same
    weights from other data (or in a store older than `log_training`'s one run per state) has a
    run that no later stage logged into (DVC restored them): the run with the model's results
    stays the one that stands for it."""
    trained = [run for run in runs if MODEL_URI_TAG in run.data.tags]
    evaluated = (run for run in trained if STAGE_TAG.format("evaluate") in run.data.tags)
    return next(evaluated, trained[0] if trained else None)


@contextmanager
def active_run(run_id: str) -> Iterator[None]:
    """Make the run active (fluent mlflow API) for the block; it ends FINISHED, FAILED when the
    block raises, KILLED when the process is interrupted (Ctrl-C; SIGTERM and SIGHUP exit
    through ``core.lifetime.exit_on``), where MLflow alone would say FAILED."""
    with mlflow.start_run(run_id=run_id):
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            mlflow.end_run("KILLED")
            raise


@contextmanager
def pipeline_run(ref: RunRef) -> Iterator[None]:
    """Make the run active (fluent mlflow API) for the duration of the block."""
    ensure_reachable(ref.tracking_uri)
    mlflow.set_tracking_uri(ref.tracking_uri)
    with active_run(ref.run_id):
        yield


@dataclass(frozen=True)
class StageRun:
    """The run a later stage logs into, and the logged model it evaluates (when known)."""

    run_id: str
    model_id: str | None


@contextmanager
def stage_run(track: TrackParams, root: Path, stage: str, params: dict[str, Any]):
    """Make the run of this pipeline state active for a later stage, log its params, and yield
    which run it is (:class:`StageRun`).

    That is the latest run of the model in ``models/`` if the stage has not logged into it yet;
    otherwise (the stage reran: new params, new code) a new run, linked to the training run,
    with the training run's params.
    """
    uri = open_store(track, root)
    with store_errors(uri):
        experiment_id = experiment_in(track.experiment, uri, root)
        digest = weights_digest(root)
        runs = runs_of_model(uri, experiment_id, digest)
        done = STAGE_TAG.format(stage)
        if runs and done not in runs[0].data.tags:
            run_id = runs[0].info.run_id
        else:
            run_id = derived_run(uri, experiment_id, root, digest, runs[0] if runs else None)
        trained = training_run(runs)
        model_id = trained.data.tags[MODEL_URI_TAG].rsplit("/", 1)[-1] if trained else None
        with active_run(run_id):
            mlflow.log_params(loggable(flatten({stage: params})))
            yield StageRun(run_id, model_id)
            mlflow.set_tag(done, "done")


def derived_run(uri: str, experiment_id: str, root: Path, digest: str, latest: Run | None) -> str:
    """A new run for later stages that rerun on an existing model; returns its id."""
    training = latest.data.tags.get(TRAINING_RUN_TAG) if latest else None
    training = None if training == NO_TRAINING_RUN else training
    spec = json.loads((root / MODEL_DIR / SPEC_FILE).read_text())
    tags = run_tags(root) | {
        WEIGHTS_DIGEST_TAG: digest,
        TRAINING_RUN_TAG: training or NO_TRAINING_RUN,
        NOTE_TAG: f"Later stages rerun on the model trained by run {training or '(elsewhere)'}.",
    }
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=run_name(spec["arch"]), tags=tags)
    if training:
        inherited = client.get_run(training).data.params
        keys = [k for k in inherited if k.split(".")[0] in MODEL_SECTIONS | {"recipe"}]
        client.log_batch(run.info.run_id, params=[Param(k, inherited[k]) for k in keys])
    return run.info.run_id


def log_stage(
    track: TrackParams,
    root: Path,
    stage: str,
    params: dict[str, Any],
    artifacts: dict[str, list[Path]],
    metrics: dict[str, float] | None = None,
    datasets: dict[str, Path] | None = None,
    note: str | None = None,
) -> None:
    """Log a later stage's params, metrics, datasets, files (``artifacts``: folder -> files,
    "" for the root) and run description into the run of this pipeline state. The metrics are
    also the logged model's (MLflow 3 shows them on the model's page)."""
    with stage_run(track, root, stage, params) as run:
        if note:
            mlflow.set_tag(NOTE_TAG, note)
        if metrics:
            mlflow.log_metrics(metrics, model_id=run.model_id)
        if datasets:
            log_datasets(datasets)
        log_artifacts(artifacts)


def log_artifacts(artifacts: dict[str, list[Path]]) -> None:
    """Log files into the active run: folder -> files, "" for the artifact root."""
    for folder, files in artifacts.items():
        for path in files:
            mlflow.log_artifact(str(path), folder or None)
