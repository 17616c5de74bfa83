"""The train stage: seed, data, model, callbacks, Trainer; fit (resuming if asked); export."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import warnings
from pathlib import Path

import lightning as L
import mlflow
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

from digitpipe.atomic import atomic_path, write_json
from digitpipe.config import ACCELERATORS, Params, Recipe, TrainParams
from digitpipe.data.images import ImageSet
from digitpipe.data.ingest import PROCESSED_DIR
from digitpipe.data.parquet import read_split
from digitpipe.errors import DigitpipeError
from digitpipe.plots import save_figure
from digitpipe.track.registry import WEIGHTS_ARTIFACTS
from digitpipe.track.runs import (
    RUN_FILE,
    RunRef,
    file_digest,
    flatten,
    log_datasets,
    mark,
    pipeline_run,
    start_pipeline_run,
    write_run,
)
from digitpipe.track.training import EpochMetrics, log_model
from digitpipe.train.callbacks import History, wants_bar, weight_average
from digitpipe.train.data import DigitData
from digitpipe.train.export import (
    MODEL_DIR,
    SPEC_FILE,
    WEIGHTS_FILE,
    ModelSpec,
    load_checkpoint,
    save_model,
)
from digitpipe.train.figures import learning_curves_figure
from digitpipe.train.models import count_parameters
from digitpipe.train.module import DigitClassifier
from digitpipe.train.recipes import resolve_recipe

REPORT_DIR = Path("reports/train")
CHECKPOINT_ROOT = Path("checkpoints")  # resume state, outside DVC's outputs; removed on success


def check_params(train: TrainParams, recipe: Recipe) -> None:
    """Reject hardware and recipe settings that cannot work here, before any work."""
    if train.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise DigitpipeError(
            f"train.accelerator is '{train.accelerator}' but no CUDA GPU is visible on this "
            "machine; use 'cpu' or 'auto' here (allowed: " + ", ".join(ACCELERATORS) + ")."
        )
    if train.accelerator == "mps" and not torch.backends.mps.is_available():
        raise DigitpipeError(
            "train.accelerator is 'mps' but Apple's MPS backend is not available here; "
            "use 'cpu' or 'auto'."
        )
    if train.precision == "16-mixed" and not torch.cuda.is_available():
        raise DigitpipeError(
            "train.precision '16-mixed' needs a CUDA GPU; on a CPU use 'bf16-mixed' or '32-true'."
        )
    if recipe.nesterov and not recipe.momentum:
        raise DigitpipeError("train.nesterov is true but train.momentum is 0; set a momentum > 0.")


def check_sizes(batch_size: int, world_size: int, train: ImageSet) -> None:
    if batch_size % world_size:
        raise DigitpipeError(
            f"train.batch_size {batch_size} is not divisible by the {world_size} processes "
            "(devices x num_nodes); choose a batch size that is a multiple of it."
        )
    if batch_size > len(train):
        raise DigitpipeError(
            f"train.batch_size {batch_size} is larger than the training set ({len(train)} "
            "images); lower it or ingest more data (data.limit)."
        )


def pixel_stats(images: ImageSet) -> tuple[float, float]:
    """Mean and standard deviation of the training pixels, scaled to 0..1."""
    pixels = torch.from_numpy(images.images).float().div_(255)
    return float(pixels.mean()), float(pixels.std())


def build_module(arch: str, recipe: Recipe, train: ImageSet) -> DigitClassifier:
    """A fresh ``arch`` network for ``train``'s image size and classes, normalising with its
    pixel statistics, to be trained with ``recipe``."""
    mean, std = pixel_stats(train)
    height, width = train.image_size
    return DigitClassifier(
        arch, height, width, list(train.class_names), mean, std, recipe.model_dump()
    )


def run_key(params: Params, recipe: Recipe, data_files: list[Path]) -> str:
    """Names the checkpoint folder: resume only ever continues the very same run."""
    identity = [
        params.model.model_dump(),
        params.train.model_dump(exclude={"resume", "progress"}),
        recipe.model_dump(),
        [file_digest(path) for path in data_files],
    ]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def build_trainer(
    train: TrainParams, recipe: Recipe, run_dir: Path, history: History, tracking: RunRef | None
) -> tuple[L.Trainer, ModelCheckpoint]:
    # The exported epoch has the lowest validation loss: near 99.5% accuracy on a few thousand
    # images, epochs differ in accuracy by a handful of images, which is noise.
    checkpoint = ModelCheckpoint(
        dirpath=run_dir, filename="best", monitor="val/loss", mode="min", save_last=True
    )
    bar = wants_bar(train.progress)
    callbacks = [checkpoint, history] + ([EpochMetrics(history, tracking)] if tracking else [])
    callbacks += [weight_average(recipe.ema)] if recipe.ema else []
    callbacks += [TQDMProgressBar()] if bar else []
    try:
        trainer = L.Trainer(
            accelerator=train.accelerator,
            devices=train.devices,
            num_nodes=train.num_nodes,
            strategy=train.strategy,
            precision=train.precision,
            max_epochs=recipe.max_epochs,
            deterministic=train.deterministic,
            callbacks=callbacks,
            logger=False,
            enable_progress_bar=bar,
            use_distributed_sampler=False,
            default_root_dir=run_dir,
            limit_train_batches=train.limit_batches,
            limit_val_batches=train.limit_batches,
            num_sanity_val_steps=0,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as exc:
        raise DigitpipeError(f"train: the Trainer rejected these settings: {exc}") from exc
    # Deterministic mode also fills each new tensor with NaN to expose reads of uninitialised
    # memory: a debugging aid that costs ~5% of a CPU step. Runs stay bit-identical without it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    return trainer, checkpoint


def run(params: Params, root: Path = Path(".")) -> dict | None:
    """Train the configured model; return the metrics it writes (None on non-zero ranks)."""
    train_params = params.train
    recipe = resolve_recipe(params.model.arch, train_params)
    check_params(train_params, recipe)
    data_files = {split: root / PROCESSED_DIR / f"{split}.parquet" for split in ("train", "val")}
    train, val = (read_split(path) for path in data_files.values())
    L.seed_everything(train_params.seed, workers=True, verbose=False)
    module = build_module(params.model.arch, recipe, train)
    run_dir = root / CHECKPOINT_ROOT / run_key(params, recipe, list(data_files.values()))
    history = History(
        root / REPORT_DIR / "history.csv", print_lines=not wants_bar(train_params.progress)
    )
    tracking = None
    if rank_zero_only.rank == 0:  # under DDP only rank 0 talks to MLflow
        (root / RUN_FILE).unlink(missing_ok=True)
        if params.track.enabled:
            tracking = start_pipeline_run(params, root, flatten({"recipe": recipe.model_dump()}))
    trainer, checkpoint = build_trainer(train_params, recipe, run_dir, history, tracking)
    check_sizes(recipe.batch_size, trainer.world_size, train)
    resume_from = run_dir / "last.ckpt"
    if train_params.resume and resume_from.exists():
        print(f"Resuming from {resume_from}", flush=True)
    else:
        resume_from = None
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")
        data = DigitData(train, val, recipe.batch_size, train_params.seed, recipe.augment)
        try:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        except BaseException:
            if tracking is not None:
                mark(tracking, "FAILED")
            raise
    if not trainer.is_global_zero:
        return None
    metrics, net = finish(
        params,
        recipe,
        module,
        trainer,
        history,
        checkpoint.best_model_path,
        time.perf_counter() - started,
        root,
    )
    if tracking is not None:
        log_training(tracking, metrics, net, val, data_files, root)
    shutil.rmtree(run_dir, ignore_errors=True)
    return metrics


def finish(
    params: Params,
    recipe: Recipe,
    module: DigitClassifier,
    trainer: L.Trainer,
    history: History,
    best_checkpoint: str,
    seconds: float,
    root: Path,
) -> tuple[dict, torch.nn.Module]:
    """Export the best epoch's weights; write metrics and learning curves."""
    hp = module.hparams
    spec = ModelSpec(hp.arch, hp.height, hp.width, list(hp.class_names), hp.mean, hp.std)
    net = spec.build()
    state, best_epoch = load_checkpoint(best_checkpoint)
    net.load_state_dict(state)
    model_dir = root / MODEL_DIR
    save_model(net, spec, model_dir)
    with atomic_path(model_dir / "model.ckpt") as tmp:
        shutil.copyfile(best_checkpoint, tmp)
    best = history.rows[best_epoch - 1]
    trained = sum(row["train_seconds"] for row in history.rows)
    images = sum(row["train_seconds"] * row["images_per_s"] for row in history.rows)
    metrics = {
        "arch": params.model.arch,
        "parameters": count_parameters(net),
        "epochs": len(history.rows),
        "best_epoch": best["epoch"],
        "val_acc": best["val_acc"],
        "val_loss": best["val_loss"],
        "train_seconds": round(trained, 2),
        "wall_seconds": round(seconds, 2),
        "images_per_s": round(images / trained, 1) if trained else None,
        "accelerator": trainer.strategy.root_device.type,
        "devices": trainer.world_size,
        "precision": str(trainer.precision),
        "recipe": recipe.model_dump(),
    }
    write_json(root / REPORT_DIR / "metrics.json", metrics)
    save_figure(
        learning_curves_figure(history.rows, best_epoch), root / REPORT_DIR / "learning_curves.png"
    )
    return metrics, net


def log_training(
    tracking: RunRef,
    metrics: dict,
    net: torch.nn.Module,
    val: ImageSet,
    data_files: dict[str, Path],
    root: Path,
) -> None:
    """Log results, datasets, curves and the model into the pipeline run; record the model."""
    with pipeline_run(tracking):
        mlflow.log_metrics(
            {
                f"train.{key}": value
                for key, value in metrics.items()
                if isinstance(value, int | float) and key != "devices"
            }
        )
        log_datasets(data_files)
        mlflow.set_tags(
            {f"train.{key}": metrics[key] for key in ("accelerator", "devices", "precision")}
        )
        for name in ("history.csv", "learning_curves.png"):
            mlflow.log_artifact(str(root / REPORT_DIR / name), "train")
        model_uri = log_model(net, val.images[:4, None].astype("float32"))
        for name in (WEIGHTS_FILE, SPEC_FILE):
            mlflow.log_artifact(str(root / MODEL_DIR / name), WEIGHTS_ARTIFACTS)
    write_run(root, dataclasses.replace(tracking, model_uri=model_uri))
