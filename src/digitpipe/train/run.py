"""The train stage: seed, data, model, callbacks, Trainer; fit (resuming if asked); export."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.nn.modules.batchnorm import _BatchNorm

from digitpipe.core.atomic import staged_outputs, write_json, write_text
from digitpipe.core.config import (
    ACCELERATORS,
    Augment,
    Params,
    Recipe,
    RuntimeParams,
    TrainParams,
)
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.files import read_bounded
from digitpipe.core.numbers import counted
from digitpipe.dataset.images import ImageSet
from digitpipe.dataset.parquet import split_layout
from digitpipe.model import zoo
from digitpipe.model.export import ModelSpec, save_model
from digitpipe.model.sizes import check_image_size
from digitpipe.model.zoo import count_parameters
from digitpipe.outputs import write_report
from digitpipe.outputs.ingest import split_file
from digitpipe.outputs.train import (
    CHECKPOINT_FILE,
    CHECKPOINT_ROOT,
    DECLARED,
    HISTORY,
    LEARNING_CURVES,
    MODEL_DIR,
    RECIPE_FILE,
    SPEC_FILE,
    SPEED,
    SUMMARY,
    WEIGHTS_FILE,
    TrainSummary,
)
from digitpipe.plotting import save_figure
from digitpipe.provenance import file_digest, json_digest
from digitpipe.terminal import wrapped
from digitpipe.train import module as lightning_module
from digitpipe.train.callbacks import (
    EpochBar,
    GeneratorStates,
    History,
    wants_bar,
    wants_lines,
    weight_average,
)
from digitpipe.train.checkpoint import (
    CheckpointsBeside,
    network_weights,
    read_checkpoint,
    write_portable_checkpoint,
)
from digitpipe.train.data import DigitData, pixel_stats
from digitpipe.train.distributed import agreed_resume, strategy
from digitpipe.train.figures import learning_curves_figure
from digitpipe.train.module import DigitClassifier
from digitpipe.train.recipes import resolve_recipe
from digitpipe.train.streaming import StreamedSplit, held_or_streamed, memory_budget_gb

MLFLOW_RUN_FILE = "mlflow_run_id"  # beside the checkpoints: the run a resumed training continues
MAX_RUN_ID_BYTES = 256  # an MLflow run id is 32 hex digits
LATEST_CHECKPOINT = "last.ckpt"  # beside them: the latest finished epoch, what a rerun resumes
# Set by torchrun / torch.distributed launchers and by SLURM: without one, num_nodes > 1 hangs.
LAUNCHER_VARIABLES = ("MASTER_ADDR", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK")


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
    if train.num_nodes > 1 and not any(name in os.environ for name in LAUNCHER_VARIABLES):
        raise DigitpipeError(
            f"train.num_nodes is {train.num_nodes}, but this process was not started by a "
            "multi-node launcher, so it would wait forever for the other nodes. Start the same "
            "command on every node with torchrun (--nnodes, --node-rank, --master-addr) or "
            "srun under SLURM, or set train.num_nodes: 1."
        )


def fit_batch(
    recipe: Recipe, train: TrainParams, world_size: int, images: ImageSet | StreamedSplit
) -> Recipe:
    """The recipe with a batch the data and processes allow: a recipe's batch larger than a
    small training set is lowered to it, with a note; one set in train.batch_size is the user's
    word, and refused when it cannot work."""
    batch = recipe.batch_size
    if train.batch_size is None and batch > len(images):
        batch = max(world_size, len(images) // world_size * world_size)
        print(
            f"train: the {recipe.batch_size}-image batch of the recipe is larger than the "
            f"{len(images)} training images; training with batches of {batch}.",
            flush=True,
        )
    if batch % world_size:
        raise DigitpipeError(
            f"train.batch_size {batch} is not divisible by the {world_size} processes "
            "(devices x num_nodes); choose a batch size that is a multiple of it."
        )
    if batch > len(images):
        raise DigitpipeError(
            f"train.batch_size {batch} is larger than the training set ({len(images)} "
            "images); lower it or ingest more data (data.limit)."
        )
    return recipe.model_copy(update={"batch_size": batch})


def check_cpu_processes(trainer: L.Trainer) -> None:
    """Refuse more CPU training processes than the cores this process may use (2 always run:
    DDP on any machine), as Lightning resolved train.accelerator and train.devices."""
    if trainer.strategy.root_device.type != "cpu":
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    most = max(2, cores or 1)
    if trainer.num_devices > most:
        raise DigitpipeError(
            f"train.devices is {trainer.num_devices}: that many training processes on the "
            f"{counted(cores or 1, 'CPU core')} this process may use; use at most {most} (1 "
            "process already uses every core)."
        )


def check_batch_norm(module: DigitClassifier, per_process: int) -> None:
    """Refuse a batch of one image per process for a network with batch norm, which cannot
    normalise a single image (training would stop at its first step)."""
    if per_process < 2 and any(isinstance(m, _BatchNorm) for m in module.modules()):
        raise DigitpipeError(
            f"a batch of {counted(per_process, 'image')} per process: {module.hparams.arch} uses "
            "batch norm, which needs at least 2; raise train.batch_size (or the training data, "
            "data.limit.train) or use fewer devices."
        )


def build_module(arch: str, recipe: Recipe, train: ImageSet | StreamedSplit) -> DigitClassifier:
    """A fresh ``arch`` network for ``train``'s image size and classes, normalising with its
    pixel statistics, to be trained with ``recipe``."""
    mean, std = train.pixel_stats() if isinstance(train, StreamedSplit) else pixel_stats(train)
    height, width = train.image_size
    return DigitClassifier(
        arch, height, width, list(train.class_names), mean, std, recipe.model_dump()
    )


# Part of the checkpoint folder's name: a checkpoint of another format is never resumed.
# 2: manual optimisation (counts its own steps: an automatic-mode checkpoint would resume with
# the weight average frozen). 3: `last.ckpt` after every epoch, with the generators' states.
CHECKPOINT_FORMAT = 3


# The code that defines the network and its training step: a checkpoint of an interrupted run is
# resumed only by the same code (a changed layer size made every rerun fail to load it).
MODEL_CODE = (Path(zoo.__file__), Path(lightning_module.__file__))


def run_key(params: Params, recipe: Recipe, data_files: list[Path]) -> str:
    """Names the checkpoint folder: resume only ever continues the very same run, of the same
    model code."""
    identity = [
        CHECKPOINT_FORMAT,
        params.model.model_dump(),
        params.train.model_dump(exclude={"ddp_timeout"}),  # how long to wait changes no result
        recipe.model_dump(),
        [file_digest(path) for path in data_files],
        [file_digest(path) for path in MODEL_CODE],
    ]
    return json_digest(identity)[:16]


def build_trainer(
    train: TrainParams,
    runtime: RuntimeParams,
    recipe: Recipe,
    run_dir: Path,
    callbacks: list[L.Callback],
) -> tuple[L.Trainer, ModelCheckpoint]:
    # The exported epoch has the lowest validation loss: near 99.5% accuracy on a few thousand
    # images, epochs differ in accuracy by a handful of images, which is noise.
    checkpoint = ModelCheckpoint(dirpath=run_dir, filename="best", monitor="val/loss", mode="min")
    # Resume continues from the latest epoch: a callback of its own, since `save_last` on the
    # monitored one rewrites `last.ckpt` only in epochs that improve on the best (Lightning 2.6).
    latest = ModelCheckpoint(
        dirpath=run_dir, filename=Path(LATEST_CHECKPOINT).stem, enable_version_counter=False
    )
    bar = wants_bar(runtime.progress)
    callbacks = [checkpoint, latest, GeneratorStates(), *callbacks]
    callbacks += [weight_average(recipe.ema)] if recipe.ema else []
    callbacks += [EpochBar()] if bar else []
    try:
        trainer = L.Trainer(
            accelerator=train.accelerator,
            devices=train.devices,
            num_nodes=train.num_nodes,
            strategy=strategy(train),
            precision=train.precision,
            max_epochs=recipe.max_epochs,
            deterministic=train.deterministic,
            callbacks=callbacks,
            logger=False,
            enable_progress_bar=bar,
            enable_model_summary=False,  # one line from `run` instead (the table shows FLOPs 0)
            use_distributed_sampler=False,
            default_root_dir=run_dir,
            limit_train_batches=train.limit_batches,
            limit_val_batches=train.limit_batches,
            num_sanity_val_steps=0,
            plugins=[CheckpointsBeside()],
        )
    except (MisconfigurationException, ValueError, RuntimeError) as exc:
        raise DigitpipeError(f"train: the Trainer rejected these settings: {exc}") from exc
    return trainer, checkpoint


def seed_process(train: TrainParams) -> None:
    """Seed every generator; this changes process-wide state, so stages call it once, first.

    The Trainer's deterministic mode also fills each new tensor with NaN to expose reads of
    uninitialised memory: a debugging aid that costs ~5% of a CPU step. Runs stay bit-identical
    without it, so it is turned off.
    """
    L.seed_everything(train.seed, workers=True, verbose=False)
    torch.utils.deterministic.fill_uninitialized_memory = False


def run(params: Params, root: Path = Path(".")) -> dict | None:
    """Train the configured model; return the metrics it writes (None on non-zero ranks)."""
    recipe = resolve_recipe(params.model.arch, params.train)
    check_params(params.train, recipe)
    data_files = {split: root / split_file(split) for split in ("train", "val")}
    layouts = [split_layout(path) for path in data_files.values()]
    if not layouts[1].rows:
        raise DigitpipeError(
            f"{data_files['val']} holds no image: training picks the exported epoch by the "
            "validation loss. Give data.val_fraction a value > 0 and rerun ingest (dvc repro)."
        )
    check_image_size(params.model.arch, layouts[0].height, layouts[0].width)
    run_dir = root / CHECKPOINT_ROOT / run_key(params, recipe, list(data_files.values()))
    history = History(run_dir / HISTORY.name, print_lines=wants_lines(params.runtime.progress))
    trainer, checkpoint = build_trainer(params.train, params.runtime, recipe, run_dir, [history])
    check_cpu_processes(trainer)
    budget = memory_budget_gb(params.train)
    (train, val), memory = held_or_streamed(layouts, budget, trainer.num_devices)
    recipe = fit_batch(recipe, params.train, trainer.world_size, train)
    seed_process(params.train)
    module = build_module(params.model.arch, recipe, train)
    check_batch_norm(module, recipe.batch_size // trainer.world_size)
    on_rank_zero = rank_zero_only.rank == 0  # under DDP only rank 0 prints and talks to MLflow
    if on_rank_zero:
        print(wrapped(describe(params, recipe, module, train, trainer) + f"; {memory}"), flush=True)
    choice = resume_from(run_dir, params.runtime, module) if on_rank_zero else None
    with agreed_resume(trainer, choice, params.train.ddp_timeout) as resume:
        tracking = (
            start_tracking(params, root, recipe, history, run_dir, resume) if on_rank_zero else None
        )
        if tracking is not None:
            trainer.callbacks.append(tracking)
        started = time.perf_counter()
        fit(
            trainer,
            module,
            DigitData.for_recipe(train, val, recipe, params.train.seed),
            resume,
        )
    if not trainer.is_global_zero:
        return None
    with failed_run(tracking):
        with staged_outputs(root, "train", DECLARED.paths()) as out:
            net, best_epoch = export(module, recipe, checkpoint.best_model_path, out / MODEL_DIR)
            history.write(out / HISTORY)
            metrics = write_reports(net, history, best_epoch, out)
        # Timings are no stage output (a top-level metric): written once the outputs are out.
        speed = write_speed(history, trainer, time.perf_counter() - started, root)
    if tracking is not None:
        with failed_run(tracking):
            log_results(tracking.ref, root, metrics, speed, val, data_files)
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):  # the root too, unless other runs' checkpoints are there
        run_dir.parent.rmdir()
    return metrics


@contextlib.contextmanager
def failed_run(tracking) -> Iterator[None]:
    """Mark the training's MLflow run FAILED (KILLED on a signal) when the block raises: after
    `fit`, Lightning's exception hook no longer does. Runs after the staged outputs are removed,
    which frees the space a full disk needs for the store's write."""
    try:
        yield
    except BaseException as exc:
        if tracking is not None:
            from digitpipe.tracking.runs import mark_ended

            mark_ended(tracking.ref, exc)
        raise


def describe(
    params: Params,
    recipe: Recipe,
    module: DigitClassifier,
    train: ImageSet | StreamedSplit,
    trainer: L.Trainer,
) -> str:
    """What is about to train, on what (and when augmentation never runs): one sentence, which
    ``wrapped`` breaks between words for the terminal."""
    height, width = train.image_size
    never_augmented = recipe.augment != Augment() and recipe.clean_epochs >= recipe.max_epochs
    return (
        f"train: {params.model.arch} ({count_parameters(module.net):,} parameters) on "
        f"{len(train):,} {height}x{width} images, {counted(recipe.max_epochs, 'epoch')} of batch "
        f"{recipe.batch_size}, {trainer.world_size} x {trainer.strategy.root_device.type} "
        f"({trainer.precision})"
        + (
            f"; train.clean_epochs {recipe.clean_epochs} covers all "
            f"{counted(recipe.max_epochs, 'epoch')}: no epoch is augmented"
            if never_augmented
            else ""
        )
    )


def start_tracking(
    params: Params,
    root: Path,
    recipe: Recipe,
    history: History,
    run_dir: Path,
    resume: Path | None,
):
    """The MLflow run of this training (params logged), as a callback; None when tracking is off.
    MLflow is imported only then. The run's id is kept beside the checkpoints, so a resumed
    training continues the interrupted run."""
    if not params.track.enabled:
        return None
    from digitpipe.tracking.runs import flatten, start_pipeline_run
    from digitpipe.tracking.training import EpochMetrics

    marker = run_dir / MLFLOW_RUN_FILE
    resumed = interrupted_run_id(marker) if resume else None
    ref = start_pipeline_run(params, root, flatten({"recipe": recipe.model_dump()}), resumed)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(marker, ref.run_id)
    return EpochMetrics(lambda: history.rows[-1], ref)


def interrupted_run_id(marker: Path) -> str | None:
    """The MLflow run id an interrupted training left in ``marker``, if it is readable."""
    try:
        return read_bounded(marker, MAX_RUN_ID_BYTES).decode("ascii").strip() or None
    except (DigitpipeError, UnicodeDecodeError):
        return None


def resume_from(run_dir: Path, runtime: RuntimeParams, module: L.LightningModule) -> Path | None:
    """The interrupted run's last checkpoint, when resuming is on and it is readable and fits
    ``module``; one that does not (a truncated write, a network changed since) is set aside with
    a message, and training starts afresh."""
    last = run_dir / LATEST_CHECKPOINT
    if not (runtime.resume and last.exists()):
        return None
    try:
        checkpoint = read_checkpoint(last)
        finished = checkpoint["epoch"] + 1  # Lightning counts epochs from 0
        saved = checkpoint["state_dict"]
    except Exception as exc:  # any unreadable checkpoint: torch raises many kinds
        set_aside(last, "corrupt", f"cannot be read ({type(exc).__name__})")
        return None
    misfit = does_not_fit(saved, module.state_dict())
    if misfit:
        set_aside(last, "mismatch", f"does not fit the network ({misfit})")
        return None
    print(f"Resuming from {last}: epoch {finished} was the last to finish", flush=True)
    return last


def does_not_fit(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str | None:
    """Why the weights ``saved`` cannot be loaded where ``expected`` are, or None."""
    if unknown := sorted(saved.keys() - expected.keys()):
        return f"{unknown[0]} is not in the network"
    if missing := sorted(expected.keys() - saved.keys()):
        return f"{missing[0]} is missing"
    for name, tensor in expected.items():
        if saved[name].shape != tensor.shape:
            return f"{name} is {list(saved[name].shape)}, the network's {list(tensor.shape)}"
    return None


def set_aside(checkpoint: Path, kind: str, problem: str) -> None:
    """Rename ``checkpoint`` to ``<name>.<kind>`` and say so: training starts afresh."""
    aside = checkpoint.with_name(f"{checkpoint.name}.{kind}")
    checkpoint.replace(aside)  # only rank 0 looks at checkpoints (train.distributed)
    print(f"{checkpoint} {problem}; moved to {aside}, starting afresh.", flush=True)


INTERRUPTED = (
    "train: interrupted. The last finished epoch's checkpoint is kept under checkpoints/; "
    "rerun the stage (runtime.resume: true) to continue from it."
)


KEPT_CHECKPOINT = (
    "The last finished epoch's checkpoint is kept under checkpoints/: the rerun (runtime.resume: "
    "true) continues from it."
)


def fit(trainer: L.Trainer, module: DigitClassifier, data: DigitData, ckpt: Path | None) -> None:
    """``trainer.fit``, without the warnings that do not apply here: workers (in-memory
    batches) and a non-empty checkpoint folder (the run's own, kept for resuming)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")
        try:
            trainer.fit(module, datamodule=data, ckpt_path=ckpt)
        except SystemExit:
            if trainer.interrupted:  # Ctrl-C: Lightning stops and exits with status 1, silently
                print(INTERRUPTED, file=sys.stderr, flush=True)
            raise
        except OSError as exc:
            if exc.filename is None:  # a checkpoint's write (a full disk) names no file
                exc.filename = trainer.default_root_dir
            if (Path(trainer.default_root_dir) / LATEST_CHECKPOINT).exists():
                exc.add_note(KEPT_CHECKPOINT)
            raise


def export(
    module: DigitClassifier, recipe: Recipe, best_checkpoint: str, model_dir: Path
) -> tuple[torch.nn.Module, int]:
    """Write the best epoch's network (safetensors + spec), its recipe and a portable Lightning
    checkpoint into ``model_dir``; every file is the same bytes for the same training."""
    hp = module.hparams
    spec = ModelSpec(
        hp.arch,
        hp.height,
        hp.width,
        list(hp.class_names),
        hp.mean,
        hp.std,
        recipe.test_time_shift,
    )
    checkpoint = read_checkpoint(best_checkpoint)
    net = spec.build()
    net.load_state_dict(network_weights(checkpoint))
    save_model(net, spec, model_dir)
    write_json(model_dir / RECIPE_FILE, recipe.model_dump())
    write_portable_checkpoint(checkpoint, model_dir / CHECKPOINT_FILE)
    return net, checkpoint["epoch"] + 1


def write_reports(net: torch.nn.Module, history: History, best_epoch: int, root: Path) -> dict:
    """reports/train/summary.json (the exported epoch's validation figures: the same for the
    same training) and the learning curves. No DVC metric: evaluate's test figures lead `dvc exp
    show`, and `best_epoch_` tells these (one pass per image, as training validates) from
    evaluate's `val.accuracy` (the exported model, with its test-time shifts)."""
    best = history.rows[best_epoch - 1]
    summary = {
        "best_epoch": best["epoch"],
        "best_epoch_val_accuracy": best["val_acc"],
        "best_epoch_val_loss": best["val_loss"],
        "epochs": len(history.rows),
        "parameters": count_parameters(net),
    }
    write_report(root / SUMMARY, TrainSummary, summary)
    save_figure(learning_curves_figure(history.rows, best_epoch), root / LEARNING_CURVES)
    return summary


def write_speed(history: History, trainer: L.Trainer, wall_seconds: float, root: Path) -> dict:
    """reports/train/speed.json: how long this process trained, and on what. It differs run to
    run, so it is no stage output (dvc.yaml lists it as a top-level metric, git ignores it). A
    resumed run counts only the epochs it trained: the earlier ones ran before ``wall_seconds``
    began (summing them gave train_seconds 563.53 beside wall_seconds 296.63)."""
    timed = history.timed_here()
    trained = sum(row["train_seconds"] for row in timed)
    images = sum(row["train_seconds"] * row["images_per_s"] for row in timed)
    speed = {
        "train_seconds": round(trained, 2),
        "wall_seconds": round(wall_seconds, 2),
        "images_per_s": round(images / trained, 1) if trained else None,
        "epochs_timed": len(timed),
        "resumed_after_epoch": history.resumed_epochs,
        "accelerator": trainer.strategy.root_device.type,
        "devices": trainer.world_size,
        "precision": str(trainer.precision),
    }
    write_json(root / SPEED, speed)
    return speed


def log_results(
    ref,
    root: Path,
    metrics: dict,
    speed: dict,
    val: ImageSet | StreamedSplit,
    data_files: dict[str, Path],
) -> None:
    """The results, datasets, figures and model into the training's MLflow run."""
    from digitpipe.tracking.runs import WEIGHTS_ARTIFACTS
    from digitpipe.tracking.training import log_training

    numbers = {
        f"train.{key}": value
        for key, value in (metrics | speed).items()
        if isinstance(value, int | float) and key != "devices"
    }
    tags = {f"train.{key}": str(speed[key]) for key in ("accelerator", "devices", "precision")}
    model_dir = root / MODEL_DIR
    artifacts = {
        "": [root / LEARNING_CURVES],  # at the root: the compare page shows it
        "train": [root / HISTORY],
        WEIGHTS_ARTIFACTS: [model_dir / WEIGHTS_FILE, model_dir / SPEC_FILE],
    }
    head = val.head(4) if isinstance(val, StreamedSplit) else val.images[:4]
    example = head[:, None].astype("float32")
    log_training(ref, root, numbers, tags, example, data_files, artifacts)
