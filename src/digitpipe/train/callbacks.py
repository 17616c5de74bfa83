"""Training callbacks: per-epoch history (CSV + plain progress lines), throughput, weight EMA,
random generator states."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar, WeightAveraging

from digitpipe.core.atomic import write_text
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.numbers import rounded

# The file's columns: results only, so the same training writes the same bytes. Each row also
# holds the epoch's train_seconds and images_per_s, for the epoch lines, MLflow and speed.json
# (never a DVC output: timings differ between identical runs).
HISTORY_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]
# What each epoch shows: its column (and printed name), and the name the module logs it under.
FIGURES = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "val_loss": "val/loss",
    "val_acc": "val/acc",
}


def logged_figures(logged: Mapping[str, Any]) -> dict[str, float]:
    """The epoch's FIGURES from Lightning's logged metrics, rounded (NaN for one not logged)."""
    return {name: rounded(logged.get(key, float("nan"))) for name, key in FIGURES.items()}


def epoch_figures(values: dict[str, float]) -> str:
    """The epoch's FIGURES as printed: ``train_loss 0.2360  train_acc 0.9439  ...``."""
    return "  ".join(f"{name} {values[name]:.4f}" for name in FIGURES)


class History(L.Callback):
    """Records one row per epoch, rewrites ``path`` (without the timings) after each, and
    optionally prints it. ``path`` is a working copy beside the checkpoints: the stage publishes
    the history with its other outputs (:meth:`write`) only once training has succeeded.

    The rows travel in checkpoints, so a resumed run continues its history. Hand-written rather
    than Lightning's CSVLogger: that logger writes one row per logging call (train and validation
    values on separate rows) into versioned folders and starts a new file on resume, while the
    learning curves, the epoch lines, MLflow's per-epoch metrics and DVC's plots all want one
    complete row per epoch in one file.
    """

    def __init__(self, path: Path, print_lines: bool) -> None:
        self.path, self.print_lines = path, print_lines
        self.rows: list[dict[str, float]] = []
        self.resumed_epochs = 0  # rows from the checkpoint: epochs an earlier process trained
        self._start = self._end = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = self._end = time.perf_counter()
        self._images = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1]) * trainer.world_size
        self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        seconds = self._end - self._start
        row = {
            "epoch": trainer.current_epoch + 1,
            **logged_figures(trainer.callback_metrics),
            "lr": rounded(trainer.optimizers[0].param_groups[0]["lr"]),
            "train_seconds": round(seconds, 3),
            "images_per_s": round(self._images / seconds, 1) if seconds else float("nan"),
        }
        if not math.isfinite(row["train_loss"]):
            raise DigitpipeError(
                f"training diverged: the train loss is {row['train_loss']} after epoch "
                f"{row['epoch']}; lower train.lr (now {trainer.optimizers[0].defaults['lr']}). "
                "Nothing was exported."
            )
        self.rows.append(row)
        if trainer.is_global_zero:
            self.write(self.path)
            if self.print_lines:
                print(self._line(row, trainer.max_epochs), flush=True)

    def write(self, path: Path) -> None:
        """The rows so far as CSV (without the timings) into ``path``."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, HISTORY_FIELDS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(path, buffer.getvalue())

    @staticmethod
    def _line(row: dict[str, float], max_epochs: int) -> str:
        return (
            f"epoch {row['epoch']}/{max_epochs}  {epoch_figures(row)}  "
            f"{row['train_seconds']:.1f}s {row['images_per_s']:.0f} img/s"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self.resumed_epochs = len(self.rows)

    def timed_here(self) -> list[dict[str, float]]:
        """The rows of the epochs this process trained (a resumed run's earlier epochs ran in
        another process, whose time is not this one's)."""
        return self.rows[self.resumed_epochs :]


class EpochBar(TQDMProgressBar):
    """Lightning's bar, counting epochs from 1 as the plain lines do; each finished epoch's bar
    stays on screen, followed by a line with its figures (a bar's postfix would be cut off in a
    narrow terminal)."""

    def __init__(self) -> None:
        super().__init__(leave=True)

    def get_metrics(self, *args: Any) -> dict[str, Any]:
        """No postfix: the epoch's figures are known at its end, and get a line of their own."""
        return {}

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_end(trainer, *args)  # closes the epoch's bar, left on screen
        print(f"  {epoch_figures(logged_figures(trainer.callback_metrics))}", flush=True)

    def on_train_start(self, *args: Any) -> None:
        """No bar yet: each epoch opens its own (Lightning's would stay behind, empty)."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        )


DEVICE_GENERATORS = {"cuda": torch.cuda, "mps": torch.mps}  # the accelerators' own generators


class GeneratorStates(L.Callback):
    """Carries torch's global random generators (the CPU's and the training device's) in each
    checkpoint, so a resumed run draws the augmentations the uninterrupted run would have drawn:
    Lightning's checkpoints hold no generator state."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.device = trainer.strategy.root_device

    def state_dict(self) -> dict[str, Any]:
        states = {"cpu": torch.get_rng_state()}
        if backend := DEVICE_GENERATORS.get(self.device.type):
            states[self.device.type] = backend.get_rng_state(self.device)
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["cpu"])
        if (backend := DEVICE_GENERATORS.get(self.device.type)) and (
            state := state_dict.get(self.device.type)
        ) is not None:
            backend.set_rng_state(state, self.device)


def wants_bar(progress: str) -> bool:
    """A live bar only in a terminal (or when asked); plain lines in logs and CI."""
    return progress == "bar" or (progress == "auto" and sys.stdout.isatty())


def wants_lines(progress: str) -> bool:
    """One plain line per epoch: asked for, or `auto` outside a terminal; `none` prints none."""
    return progress == "lines" or (progress == "auto" and not sys.stdout.isatty())


def weight_average(decay: float) -> WeightAveraging:
    """Exponential moving average of the weights and batch-norm statistics, used for validation,
    checkpoints and the exported model.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so a short run averages
    its recent steps rather than its first ones.
    """

    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor):
        updates = float(count)
        weight = 1 - min(decay, (1 + updates) / (10 + updates))
        for mean, value in zip(averaged, current, strict=True):
            if mean.is_floating_point():
                mean.lerp_(value, weight)
            else:  # integer buffers (batch-norm step counters) follow the model
                mean.copy_(value)

    return WeightAveraging(multi_avg_fn=average, use_buffers=True)
