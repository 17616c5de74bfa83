"""The LightningModule: a zoo network, its loss, torchmetrics accuracy, optimiser and schedule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from digitpipe.core.config import Recipe
from digitpipe.model.zoo import build_model
from digitpipe.train.data import Batch

MIN_ONE_CYCLE_STEPS = 8  # shorter runs (smoke tests) keep a constant learning rate
START_DIV = 25.0  # one-cycle warms up from lr / START_DIV


def build_optimizer(params: Iterable[torch.nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params``."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay
        )
    kind = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)


class DigitClassifier(L.LightningModule):
    """Classifies (N, 1, H, W) uint8 batches; hyperparameters are primitives (safe checkpoints)."""

    def __init__(
        self,
        arch: str,
        height: int,
        width: int,
        class_names: list[str],
        mean: float,
        std: float,
        recipe: dict[str, Any],
    ) -> None:
        super().__init__()
        # One explicit step per batch: Lightning's automatic closure and its hooks cost about
        # 2% of a small network's CPU step (bench/train.py).
        self.automatic_optimization = False
        self.save_hyperparameters()
        self.recipe = Recipe.model_validate(recipe)
        # Channels-last weights and batches: about twice the CPU throughput of NCHW here.
        self.net = build_model(arch, height, width, len(class_names), mean, std).to(
            memory_format=torch.channels_last
        )
        classes = len(class_names)
        # Labels are validated at ingest; per-step argument checks would cost ~10% of a step.
        self.train_loss = MeanMetric(nan_strategy="disable")  # the NaN check syncs every step
        self.train_acc = MulticlassAccuracy(classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(classes, average="micro", validate_args=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def objective(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with the recipe's label smoothing: trained on, and validated on, so
        the exported epoch (lowest validation loss) is the best by the measure it was trained
        for; plain cross-entropy stops falling early under smoothing."""
        return F.cross_entropy(logits, labels, label_smoothing=self.recipe.label_smoothing or 0.0)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()
        logits = self(images)
        loss = self.objective(logits, labels)
        self.manual_backward(loss)
        optimizer.step()
        schedule = self.lr_schedulers()
        if schedule is not None:
            schedule.step()
        self.train_loss.update(loss.detach(), len(labels))
        self.train_acc.update(logits.detach(), labels)
        if self.trainer.is_last_batch:  # once per epoch: each self.log costs ~1 ms on a CPU
            metrics = {"train/loss": self.train_loss, "train/acc": self.train_acc}
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_train_start(self) -> None:
        self.val_acc.reset()  # the sanity check must not leak into epoch 1

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_acc.update(logits, labels)
        loss = self.objective(logits, labels)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        recipe = self.recipe
        optimizer = build_optimizer(self.parameters(), recipe)
        steps = int(self.trainer.estimated_stepping_batches)
        if recipe.scheduler == "none" or steps < MIN_ONE_CYCLE_STEPS:
            return {"optimizer": optimizer}
        # Warm up for a quarter of the run (at least 2 steps, which OneCycleLR needs).
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=recipe.lr,
            total_steps=steps,
            pct_start=max(0.25, 2 / steps),
            div_factor=START_DIV,
            final_div_factor=1 / (START_DIV * recipe.final_lr_fraction),
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}  # stepped per batch, above
