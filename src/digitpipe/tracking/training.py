"""What `train` logs to MLflow: per-epoch metrics (a callback) and, at the end, the results,
datasets, figures and the model with a signature. The training loop never calls MLflow itself."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import lightning as L
import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow.entities import Metric
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from torch import nn

import digitpipe
from digitpipe.tracking.runs import (
    MODEL_DIGEST_TAG,
    MODEL_URI_TAG,
    RunRef,
    log_datasets,
    mark,
    model_digest,
    pipeline_run,
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
        MlflowClient(self.ref.tracking_uri).log_batch(self.ref.run_id, metrics=metrics)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, error: BaseException):
        if trainer.is_global_zero:
            mark(self.ref, "FAILED")


def log_model(net: nn.Module, example: np.ndarray) -> str:
    """Log ``net`` + softmax as an MLflow PyTorch model (float pixels 0..255 in, class
    probabilities out) with a signature and an input example; return its model URI."""
    served = nn.Sequential(OrderedDict(model=net, softmax=nn.Softmax(dim=1))).eval()
    with torch.inference_mode():
        probabilities = served(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        served,
        name="model",
        signature=infer_signature(example, probabilities),
        input_example=example,
        code_paths=[str(Path(digitpipe.__file__).parent)],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
    )
    return info.model_uri


def log_training(
    ref: RunRef,
    root: Path,
    metrics: dict[str, float],
    tags: dict[str, str],
    net: nn.Module,
    example: np.ndarray,
    datasets: dict[str, Path],
    artifacts: dict[str, list[Path]],
) -> None:
    """Log the training results into the run, with the model; tag the run with the model's
    digest, by which later stages find it."""
    with pipeline_run(ref):
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        log_datasets(datasets)
        for folder, files in artifacts.items():
            for path in files:
                mlflow.log_artifact(str(path), folder or None)
        model_uri = log_model(net, example)
        mlflow.set_tags({MODEL_DIGEST_TAG: model_digest(root), MODEL_URI_TAG: model_uri})
