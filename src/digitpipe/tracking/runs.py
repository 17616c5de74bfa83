"""One pipeline run = one MLflow run: `train` starts it, later stages log into it.

Later stages find the run by the digest of the model it trained (a run tag), in the tracking
store resolved where they run: no run id or store path is ever written into a DVC output.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
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
from mlflow.tracking import MlflowClient

from digitpipe.core.config import Params, TrackParams
from digitpipe.core.paths import MODEL_DIR, WEIGHTS_FILE
from digitpipe.tracking.store import ensure_reachable, repo_root, tracking_uri

MODEL_DIGEST_TAG = "digitpipe.model_digest"  # SHA-256 of the run's model.safetensors
MODEL_URI_TAG = "digitpipe.model_uri"
WEIGHTS_ARTIFACTS = "weights"  # the run's model.safetensors + model.json, logged by `train`
# The params.yaml sections that change the model or its metrics (the rest only shape reports).
MODEL_SECTIONS = {"data", "model", "train"}
ARTIFACT_DIR = "mlartifacts"
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
SOURCE_PATHS = (":(exclude)reports", ":(exclude)dvc.lock")
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
    """The commit and whether the work tree differs from it (empty outside a git repo)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        # DVC deletes a stage's outputs before running it, git-tracked metrics and plots
        # included: only the source (code, params, raw data) counts as dirty.
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS))
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git.dirty": str(dirty).lower()}


def run_tags(root: Path) -> dict[str, str]:
    tags = git_tags(root)
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    for package in VERSIONED_PACKAGES:
        tags[f"version.{package}"] = importlib.metadata.version(package)
    return tags


def run_name(params: Params) -> str:
    """The DVC experiment's name when there is one, else the architecture and a timestamp."""
    return os.environ.get("DVC_EXP_NAME") or (
        f"{params.model.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    )


def file_digest(path: Path, length: int = 16) -> str:
    """The first ``length`` hex digits of the file's SHA-256, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:length]


def log_datasets(files: dict[str, Path]) -> None:
    """Log Parquet splits as dataset inputs with their content digests, one context each."""
    for context, path in files.items():
        with warnings.catch_warnings():  # a local path matches two equivalent source types
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(path.resolve()))
        dataset = MetaDataset(source, name=path.name, digest=file_digest(path))
        mlflow.log_input(dataset, context=context)


def experiment_in(name: str, uri: str, root: Path) -> str:
    """The experiment's id, creating it if needed; a local store keeps artifacts beside it in
    the repository (never in the temporary copy a queued DVC experiment runs in). The experiment
    is marked as model training, so the MLflow UI opens on its runs, not the GenAI overview."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = (repo_root(root) / ARTIFACT_DIR).as_uri() if uri.startswith("sqlite:") else None
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    if experiment is None or EXPERIMENT_KIND_TAG not in experiment.tags:
        MlflowClient(uri).set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return experiment_id


def start_pipeline_run(params: Params, root: Path, extra: dict[str, Any]) -> RunRef:
    """Create the run (params, tags), record it in RUN_FILE, and return where it is."""
    uri = tracking_uri(params.track, root)
    ensure_reachable(uri)
    mlflow.set_tracking_uri(uri)
    experiment_id = experiment_in(params.track.experiment, uri, root)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name(params), tags=run_tags(root)
    ) as run:
        model_inputs = params.model_dump(
            mode="json", include=MODEL_SECTIONS, exclude={"data": {"checksums"}}
        )
        values = flatten(model_inputs) | extra
        mlflow.log_params({key: str(value) for key, value in values.items()})
    ref = RunRef(uri, experiment_id, run.info.run_id)
    mark(ref, "RUNNING")  # until training has logged its model
    return ref


def mark(ref: RunRef, status: str) -> None:
    """Set the pipeline run's status (RUNNING between stages, FAILED when training fails)."""
    MlflowClient(ref.tracking_uri).update_run(ref.run_id, status=status)


def model_digest(root: Path) -> str:
    """The SHA-256 of the trained weights: what ties a model to the run that trained it."""
    return file_digest(root / MODEL_DIR / WEIGHTS_FILE, length=64)


def find_training_run(track: TrackParams, root: Path) -> RunRef | None:
    """The latest run that trained the model now in ``models/``, in the configured store; None
    when tracking is off or the store holds no such run (the model was trained elsewhere)."""
    if not track.enabled:
        return None
    uri = tracking_uri(track, root)
    ensure_reachable(uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(track.experiment)
    if experiment is None:
        return None
    runs = MlflowClient(uri).search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{model_digest(root)}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    return RunRef(uri, experiment.experiment_id, run.info.run_id, run.data.tags.get(MODEL_URI_TAG))


@contextmanager
def pipeline_run(ref: RunRef) -> Iterator[None]:
    """Make the pipeline run active (fluent mlflow API) for the duration of the block."""
    ensure_reachable(ref.tracking_uri)
    mlflow.set_tracking_uri(ref.tracking_uri)
    with mlflow.start_run(run_id=ref.run_id):
        yield


def log_stage(
    track: TrackParams,
    root: Path,
    folder: str,
    files: list[Path],
    metrics: dict[str, float] | None = None,
    datasets: dict[str, Path] | None = None,
) -> None:
    """Log a later stage's files (under ``folder``), metrics and datasets into the run that
    trained the model; nothing when tracking is off, a note when no run holds the model."""
    ref = find_training_run(track, root)
    if ref is None:
        if track.enabled:
            print(
                f"{folder}: no MLflow run in {tracking_uri(track, root)} trained this model "
                "(it came from another store or a DVC cache); nothing logged.",
                flush=True,
            )
        return
    with pipeline_run(ref):
        if metrics:
            mlflow.log_metrics(metrics)
        if datasets:
            log_datasets(datasets)
        for path in files:
            mlflow.log_artifact(str(path), folder)
