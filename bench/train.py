"""Benchmark: LeNet training throughput under Lightning vs a plain PyTorch loop, and the default
recipe's seconds to 99% test accuracy.

Both LeNet loops train on the same in-memory tensors with the same batch size, optimiser and
per-batch preprocessing, interleaved step by step in one process: after each Lightning step a
callback runs one step of the plain loop on its own copy of the network, and each loop is timed
alone (a Lightning step from the end of the previous plain step to the end of its own batch, so
its hooks and data fetching count). The shared VM's speed drifts by 10-25% within seconds; step by
step, the drift hits both loops alike. The figure is the median ratio of ROUNDS such runs. The
default recipe trains with the pipeline's own Trainer (validating on the test set after each
epoch); only the training seconds count. Needs `data/processed` (run `make repro` or
`dvc repro ingest` first). The rows go to bench/results/train.json (without the recipe's row
when it is skipped).
Run: `.venv/bin/python bench/train.py [--skip-recipe]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from record import Row, record

from digitpipe.core.config import Augment, Params, RuntimeParams, TrainParams, load_params
from digitpipe.core.stage import quiet_libraries
from digitpipe.dataset.parquet import read_split
from digitpipe.outputs.ingest import PROCESSED_DIR
from digitpipe.train.callbacks import History
from digitpipe.train.data import Batch, DigitData, as_tensors
from digitpipe.train.module import DigitClassifier, build_optimizer
from digitpipe.train.recipes import resolve_recipe
from digitpipe.train.run import build_module, build_trainer, fit, seed_process

REPO = Path(__file__).resolve().parents[1]
BATCHES = 300
ROUNDS = 5
BATCH_SIZE = 100


def lenet_module(params: Params, train) -> DigitClassifier:
    # The reference recipe, whatever params.yaml holds (its train keys are model.arch's).
    recipe = resolve_recipe("lenet", TrainParams()).model_copy(update={"scheduler": "none"})
    return build_module("lenet", recipe, train)


class PlainLoop:
    """A hand-written loop, one step at a time: index, float, channels-last, forward, backward,
    step."""

    def __init__(self, module: DigitClassifier, tensors: Batch) -> None:
        self.module, (self.images, self.labels) = module, tensors
        self.optimizer = build_optimizer(module.parameters(), module.recipe)
        self.order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(0))
        self.steps = 0
        module.train()

    def step(self) -> None:
        index = self.order[self.steps * BATCH_SIZE : (self.steps + 1) * BATCH_SIZE]
        x = self.images.index_select(0, index).float().contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(self.module(x), self.labels.index_select(0, index))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.steps += 1


class Interleave(L.Callback):
    """After each Lightning training step, one plain-loop step; sums each loop's own seconds."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.lightning_seconds = self.plain_seconds = 0.0
        self._mark = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        started = time.perf_counter()
        self.lightning_seconds += started - self._mark
        self.plain.step()
        self._mark = time.perf_counter()
        self.plain_seconds += self._mark - started


def paired_run(params: Params, train, val) -> tuple[float, float]:
    """Images/s of the plain loop and of Lightning's training epoch (no validation), stepping
    in turn on the same batches from the same initial weights."""
    L.seed_everything(0, verbose=False)
    plain = PlainLoop(lenet_module(params, train), as_tensors(train))
    L.seed_everything(0, verbose=False)
    module = lenet_module(params, train)
    interleave = Interleave(plain)
    with tempfile.TemporaryDirectory() as scratch:
        history = History(Path(scratch) / "history.csv", print_lines=False)  # as in training
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_train_batches=BATCHES,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            callbacks=[history, interleave],
        )
        fit(
            trainer,
            module,
            DigitData(train, val, BATCH_SIZE, 0, Augment(), augmented_epochs=0),
            None,
        )
    images = BATCHES * BATCH_SIZE
    return images / interleave.plain_seconds, images / interleave.lightning_seconds


def recipe_to_99(params: Params, train, test) -> Row:
    """Train the default recipe with the pipeline's own Trainer, validating on the test set."""
    recipe = resolve_recipe(params.model.arch, params.train)
    module = build_module(params.model.arch, recipe, train)
    quiet = RuntimeParams(progress="none", resume=False)
    with tempfile.TemporaryDirectory() as scratch:
        history = History(Path(scratch) / "history.csv", print_lines=False)
        trainer, _ = build_trainer(params.train, quiet, recipe, Path(scratch), [history])
        seed_process(params.train)
        data = DigitData.for_recipe(train, test, recipe, params.train.seed)
        fit(trainer, module, data, None)
    trained, reached = 0.0, None
    for row in history.rows:
        trained += row["train_seconds"]
        accuracy = row["val_acc"]
        print(f"  epoch {row['epoch']}: {trained:6.1f} s trained, test accuracy {accuracy:.4f}")
        if reached is None and accuracy >= 0.99:
            reached = trained
    reached_text = "not reached" if reached is None else f"{reached:.1f} s"
    print(
        f"default recipe ({params.model.arch}): 99% test accuracy after {reached_text} of "
        f"training (target <= 40 s); {trained:.1f} s for all {recipe.max_epochs} epochs, "
        f"final test accuracy {history.rows[-1]['val_acc']:.4f}"
    )
    return Row(
        what=f"default recipe (`{params.model.arch}`), training seconds to 99% test accuracy",
        value=round(reached if reached is not None else trained, 1),
        unit="s",
        detail=f"{'not reached: ' if reached is None else ''}{trained:.1f} s for all "
        f"{recipe.max_epochs} epochs, final test accuracy {history.rows[-1]['val_acc']:.4f}",
        target="<= 40 s",
        met=reached is not None and reached <= 40,
        command="bench/train.py",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-recipe", action="store_true", help="only the LeNet comparison")
    args = parser.parse_args()
    quiet_libraries()
    params = load_params(REPO / "params.yaml")
    train, val, test = (
        read_split(REPO / PROCESSED_DIR / f"{s}.parquet") for s in ("train", "val", "test")
    )
    runs = [paired_run(params, train, val) for _ in range(ROUNDS)]
    plain, lightning = zip(*runs, strict=True)
    ratios = sorted(light / hand for hand, light in runs)
    print(
        f"LeNet, batch {BATCH_SIZE}, {BATCHES} steps each, interleaved, x {ROUNDS} runs: plain "
        f"loop {statistics.median(plain):.0f} img/s, Lightning {statistics.median(lightning):.0f} "
        f"img/s (medians); Lightning/plain per run {', '.join(f'{r:.3f}' for r in ratios)}: "
        f"median {statistics.median(ratios):.3f} (target >= 0.95)"
    )
    median_ratio = statistics.median(ratios)
    rows = [
        Row(
            what="LeNet training under Lightning vs a plain PyTorch loop, interleaved step by "
            f"step (batch {BATCH_SIZE}, {BATCHES} steps, median of {ROUNDS} runs)",
            value=round(statistics.median(lightning)),
            unit="images/s",
            detail=f"plain loop {statistics.median(plain):.0f} images/s; runs "
            f"{', '.join(f'{r:.3f}' for r in ratios)}",
            ratio=round(median_ratio, 3),
            baseline="the plain loop",
            target="ratio >= 0.95",
            met=median_ratio >= 0.95,
            command="bench/train.py",
        )
    ]
    if not args.skip_recipe:
        rows.append(recipe_to_99(params, train, test))
    record("train", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
