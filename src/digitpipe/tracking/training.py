"""What `train` logs to MLflow: per-epoch metrics (a callback) and, at the end, the results,
datasets, figures and the model (a pyfunc: digitpipe.tracking.serving) with a signature. The
training loop never calls MLflow itself."""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

import digitpipe
from digitpipe.model.export import read_spec
from digitpipe.outputs.train import MODEL_DIR, SPEC_FILE, WEIGHTS_FILE
from digitpipe.tracking import serving
from digitpipe.tracking.runs import (
    MODEL_URI_TAG,
    RunRef,
    log_artifacts,
    log_datasets,
    mark_ended,
    pipeline_run,
    trained_run_of_state,
)
from digitpipe.tracking.state import (
    DATA_DIGEST_TAG,
    WEIGHTS_DIGEST_TAG,
    training_data_digest,
    weights_digest,
)
from digitpipe.tracking.store import store_errors

RESUME = (
    "the last finished epoch's checkpoint is kept under checkpoints/: rerun the stage once the "
    "store answers, and training resumes from it (runtime.resume: true)."
)
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s")


class EpochMetrics(L.Callback):
    """Logs each epoch's row (from ``latest_row``, called after the epoch) to the run with
    ``step=epoch``, on rank 0; marks the run FAILED when training raises."""

    def __init__(self, latest_row: Callable[[], dict[str, float]], ref: RunRef) -> None:
        self.latest_row, self.ref = latest_row, ref

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row, now = self.latest_row(), int(time.time() * 1000)
        metrics = [Metric(key, float(row[key]), now, int(row["epoch"])) for key in EPOCH_METRICS]
        with store_errors(self.ref.tracking_uri, RESUME):
            MlflowClient(self.ref.tracking_uri).log_batch(self.ref.run_id, metrics=metrics)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, error: BaseException):
        """Mark the run KILLED or FAILED while the store still answers (a store that stopped
        answering is not asked again: the next training closes the run it left RUNNING)."""
        if trainer.is_global_zero:
            mark_ended(self.ref, error)


def log_model(model_dir: Path, example: np.ndarray) -> str:
    """Log the model in ``model_dir`` as an MLflow pyfunc (digitpipe.tracking.serving: images
    [N,H,W], [N,H*W] or [N,1,H,W] as float pixels 0..255 in; label, its probability and every
    class's probability out) with its safetensors weights and spec, an output signature and an
    input example; return its model URI."""
    spec = read_spec(model_dir / SPEC_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / serving.MODEL_ARTIFACT  # only these two files, not the checkpoint
        weights.mkdir()
        for name in (WEIGHTS_FILE, SPEC_FILE):
            shutil.copyfile(model_dir / name, weights / name)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=serving.__file__,
            artifacts={serving.MODEL_ARTIFACT: str(weights)},
            signature=serving.signature(spec),
            input_example=example.reshape(len(example), spec.height, spec.width),
            metadata={"input": serving.expected_shapes(spec)},
            code_paths=[str(Path(digitpipe.__file__).parent)],
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
                f"safetensors=={importlib.metadata.version('safetensors')}",
            ],
        )
    return info.model_uri


def log_training(
    ref: RunRef,
    root: Path,
    metrics: dict[str, float],
    tags: dict[str, str],
    example: np.ndarray,
    datasets: dict[str, Path],
    artifacts: dict[str, list[Path]],
) -> None:
    """Log the training results into the run, with the model; tag the run with the digests of
    the weights and of the data they were trained on, by which later stages find it.

    One MLflow run per pipeline state: when another run already trained these weights on this
    data (`dvc repro -f`, or a clone that trains without DVC's cache), the later stages come back
    from DVC's run-cache and never log into a new run, which would stay without test results
    (and, as the newest, stand for the model). So this training's metrics and tags go into
    that run, and its own run is deleted (MLflow keeps it in the trash)."""
    with store_errors(ref.tracking_uri, RESUME):
        weights, data = weights_digest(root), training_data_digest(root)
        earlier = trained_run_of_state(ref, weights, data)
        if earlier is not None:
            # Through the client: made active again, the finished run would turn RUNNING, and
            # KILLED or FAILED if this process were stopped now.
            client, now = MlflowClient(ref.tracking_uri), int(time.time() * 1000)
            client.log_batch(
                earlier,
                metrics=[Metric(key, value, now, 0) for key, value in metrics.items()],
                tags=[RunTag(key, value) for key, value in tags.items()],
            )
            client.set_terminated(ref.run_id)
            client.delete_run(ref.run_id)
            return
        with pipeline_run(ref):
            mlflow.log_metrics(metrics)
            mlflow.set_tags(tags)
            log_datasets(datasets)
            log_artifacts(artifacts)
            model_uri = log_model(root / MODEL_DIR, example)
            mlflow.set_tags(
                {WEIGHTS_DIGEST_TAG: weights, DATA_DIGEST_TAG: data, MODEL_URI_TAG: model_uri}
            )
