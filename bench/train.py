"""Benchmark: LeNet training throughput under Lightning vs a plain PyTorch loop, and the default
recipe's seconds to 99% test accuracy.

Both LeNet loops train on the same in-memory tensors with the same batch size, optimiser and
per-batch preprocessing, in the same run, in back-to-back pairs; the figure is the median of the
pairs' ratios (single runs on a shared VM vary by +-5%, as much as Lightning's overhead). The
default recipe trains with the pipeline's own Trainer (validating on the test set after each
epoch); only the training seconds count. Needs `data/processed` (run `make repro` or
`dvc repro ingest` first).
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

from digitpipe.core.config import Augment, Params, RuntimeParams, load_params
from digitpipe.core.paths import PROCESSED_DIR
from digitpipe.core.stage import quiet_libraries
from digitpipe.dataset.parquet import read_split
from digitpipe.train.callbacks import History
from digitpipe.train.data import DigitData, as_tensors
from digitpipe.train.module import DigitClassifier, build_optimizer
from digitpipe.train.recipes import resolve_recipe
from digitpipe.train.run import build_module, build_trainer, fit, seed_process

REPO = Path(__file__).resolve().parents[1]
BATCHES = 300
ROUNDS = 5


def lenet_module(params: Params, train) -> DigitClassifier:
    recipe = resolve_recipe("lenet", params.train).model_copy(update={"scheduler": "none"})
    return build_module("lenet", recipe, train)


def plain_loop(module: DigitClassifier, tensors, batch_size: int) -> float:
    """Images/s of a hand-written loop: index, float, channels-last, forward, backward, step."""
    images, labels = tensors
    optimizer = build_optimizer(module.parameters(), module.recipe)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    module.train()
    start = time.perf_counter()
    for step in range(BATCHES):
        index = order[step * batch_size : (step + 1) * batch_size]
        x = images.index_select(0, index).float().contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(module(x), labels.index_select(0, index))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return BATCHES * batch_size / (time.perf_counter() - start)


def lightning_loop(module: DigitClassifier, train, val, batch_size: int, seed: int) -> float:
    """Images/s inside Lightning's training epoch (same batches, no validation)."""
    history = History(Path(tempfile.mkdtemp()) / "history.csv", print_lines=False)
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
        callbacks=[history],
    )
    fit(trainer, module, DigitData(train, val, batch_size, seed, Augment()), None)
    return history.rows[-1]["images_per_s"]


def recipe_to_99(params: Params, train, test) -> None:
    """Train the default recipe with the pipeline's own Trainer, validating on the test set."""
    recipe = resolve_recipe(params.model.arch, params.train)
    module = build_module(params.model.arch, recipe, train)
    quiet = RuntimeParams(progress="none", resume=False)
    with tempfile.TemporaryDirectory() as scratch:
        history = History(Path(scratch) / "history.csv", print_lines=False)
        trainer, _ = build_trainer(params.train, quiet, recipe, Path(scratch), [history])
        seed_process(params.train)
        data = DigitData(train, test, recipe.batch_size, params.train.seed, recipe.augment)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-recipe", action="store_true", help="only the LeNet comparison")
    args = parser.parse_args()
    quiet_libraries()
    params = load_params(REPO / "params.yaml")
    train, val, test = (
        read_split(REPO / PROCESSED_DIR / f"{s}.parquet") for s in ("train", "val", "test")
    )
    batch = 100
    plain, lightning = [], []
    for _ in range(ROUNDS):  # back-to-back pairs: a noisy neighbour slows both halves of a pair
        L.seed_everything(0, verbose=False)
        plain.append(plain_loop(lenet_module(params, train), as_tensors(train), batch))
        L.seed_everything(0, verbose=False)
        lightning.append(lightning_loop(lenet_module(params, train), train, val, batch, 0))
    ratios = sorted(light / hand for light, hand in zip(lightning, plain, strict=True))
    print(
        f"LeNet, batch {batch}, {BATCHES} batches x {ROUNDS} pairs: plain loop "
        f"{statistics.median(plain):.0f} img/s, Lightning {statistics.median(lightning):.0f} img/s "
        f"(medians); Lightning/plain per pair {', '.join(f'{r:.3f}' for r in ratios)}: "
        f"median {statistics.median(ratios):.3f} (target >= 0.95)"
    )
    if not args.skip_recipe:
        recipe_to_99(params, train, test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
