"""What `train` logs to MLflow: per-epoch metrics (a callback) and the model with a signature."""

from __future__ import annotations

import time
from collections import OrderedDict
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
from digitpipe.track.runs import RunRef
from digitpipe.train.callbacks import History

EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s")


class EpochMetrics(L.Callback):
    """Logs each epoch's history row to the pipeline run with ``step=epoch`` (rank 0 only).

    Place it after the History callback, whose row it sends.
    """

    def __init__(self, history: History, ref: RunRef) -> None:
        self.history, self.ref = history, ref

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row, now = self.history.rows[-1], int(time.time() * 1000)
        metrics = [Metric(key, float(row[key]), now, int(row["epoch"])) for key in EPOCH_METRICS]
        MlflowClient(self.ref.tracking_uri).log_batch(self.ref.run_id, metrics=metrics)


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
