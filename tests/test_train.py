"""The train stage on a few hundred real MNIST digits: zoo, determinism, DDP, resume, errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import lightning as L
import numpy as np
import pytest
import torch
from helpers.errors import assert_user_error
from helpers.processes import paused_after_a_checkpoint, train_stage
from helpers.project import edit_params
from helpers.tracking import experiment_runs
from mlflow.tracking import MlflowClient
from pydantic import ValidationError
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from digitpipe.cli import main
from digitpipe.core.config import ARCHITECTURES, Augment, TrainParams, load_params
from digitpipe.dataset.parquet import read_split
from digitpipe.model.export import load_model
from digitpipe.model.zoo import BUILDERS
from digitpipe.outputs.ingest import PROCESSED_DIR
from digitpipe.outputs.train import CHECKPOINT_ROOT, MODEL_DIR, TRAIN_REPORTS
from digitpipe.outputs.train import DECLARED as TRAIN_DECLARED
from digitpipe.tracking.runs import MODEL_URI_TAG
from digitpipe.train.callbacks import History, weight_average
from digitpipe.train.checkpoint import read_checkpoint, write_portable_checkpoint
from digitpipe.train.data import DigitData, IndexBatches, augment
from digitpipe.train.recipes import RECIPES, resolve_recipe
from digitpipe.train.run import INTERRUPTED, build_module, build_trainer, fit
from digitpipe.train.run import run as train

TOO_MANY = max(2, len(os.sched_getaffinity(0))) + 1  # CPU training processes beyond the cap


def train_in(project, **changes):
    edit_params(project, "train", **changes.pop("train", {}))
    if changes:
        edit_params(project, "model", **changes)
    return train(load_params(project / "params.yaml"), project)


def test_zoo_and_recipes_cover_every_architecture():
    assert tuple(BUILDERS) == ARCHITECTURES == tuple(RECIPES)


def test_an_augment_key_keeps_the_recipes_other_augmentations():
    rotation_only = TrainParams.model_validate({"augment": {"rotation": 3}})
    expected = RECIPES["bncnn"].augment.model_copy(update={"rotation": 3.0})
    assert expected.translation > 0 and resolve_recipe("bncnn", rotation_only).augment == expected
    all_off = TrainParams.model_validate({"augment": dict.fromkeys(Augment.model_fields, 0)})
    assert resolve_recipe("bncnn", all_off).augment == Augment()
    assert resolve_recipe("best", TrainParams()).augment == RECIPES["best"].augment
    with pytest.raises(ValidationError, match="sets no key"):  # it would keep the recipe's
        TrainParams.model_validate({"augment": {}})


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_zoo_model_trains_and_exports(ingested, arch):
    metrics = train_in(ingested, arch=arch)
    net, spec = load_model(ingested / MODEL_DIR)
    assert spec.arch == arch and metrics["parameters"] == sum(p.numel() for p in net.parameters())
    assert spec.test_time_shift == (arch in ("bncnn", "best"))  # references predict plainly
    test = read_split(ingested / PROCESSED_DIR / "test.parquet")
    with torch.no_grad():
        logits = net(torch.from_numpy(test.images[:16].copy()).unsqueeze(1).float())
    assert logits.shape == (16, 10) and torch.isfinite(logits).all()
    history = (ingested / TRAIN_REPORTS / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss") and len(history) == 2
    row = dict(zip(history[0].split(","), map(float, history[1].split(",")), strict=True))
    # The one epoch is the exported one: its validation figures are the exported network's on
    # the validation images (60, fewer than the 3 batches of 32 validated).
    assert metrics["best_epoch"] == row["epoch"] == 1
    assert (metrics["best_epoch_val_loss"], metrics["best_epoch_val_accuracy"]) == (
        row["val_loss"],
        row["val_acc"],
    )
    val = read_split(ingested / PROCESSED_DIR / "val.parquet")
    with torch.no_grad():
        logits = net(torch.from_numpy(val.images[:, None].astype(np.float32)))
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(val.labels))
    assert row["val_loss"] == pytest.approx(loss.item(), abs=1e-5)
    accuracy = (logits.argmax(1).numpy() == val.labels).mean()
    assert row["val_acc"] == pytest.approx(accuracy, abs=1e-6)
    assert np.isfinite(row["train_loss"])
    assert not (ingested / CHECKPOINT_ROOT).exists()  # nor the empty folder


@pytest.mark.parametrize("arch", ["softmax", "lenet"])
def test_train_loss_and_accuracy_are_the_epochs_cross_entropy_and_hits(ingested, arch):
    # A learning rate of 1e-12 leaves the weights where they started (to ~1e-9), so the epoch's
    # mean training loss is the exported network's cross-entropy over every training image
    # (540 = 9 batches of 60, no augmentation, no averaging); these networks have no batch
    # norm, so training mode computes what evaluation mode does.
    train_in(
        ingested,
        arch=arch,
        train={
            "batch_size": 60,
            "limit_batches": None,
            "optimizer": "sgd",
            "lr": 1e-12,
            "momentum": 0.0,
            "scheduler": "none",
            "ema": 0.0,
            "label_smoothing": 0.0,
            "augment": {"rotation": 0, "translation": 0, "scale": 0, "elastic": 0},
        },
    )
    history = np.genfromtxt(ingested / TRAIN_REPORTS / "history.csv", delimiter=",", names=True)
    net, _ = load_model(ingested / MODEL_DIR)
    train_split = read_split(ingested / PROCESSED_DIR / "train.parquet")
    assert len(train_split) == 540
    with torch.no_grad():
        logits = net(torch.from_numpy(train_split.images[:, None].astype(np.float32)))
    labels = torch.from_numpy(train_split.labels)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert loss > 1.5, "an untrained network is far from the labels"
    assert float(history["train_loss"]) == pytest.approx(loss, abs=1e-5)
    accuracy = (logits.argmax(1) == labels).double().mean().item()
    assert float(history["train_acc"]) == pytest.approx(accuracy, abs=1e-6)


def test_reference_parameter_counts():
    # tinycnn: 18,810 trainable; the reference's 18,813 adds Keras' 3 normalisation statistics.
    expected = {
        "softmax": 7850,
        "mlp": 101770,
        "lenet": 431080,
        "convnet3": 16938,
        "tinycnn": 18810,
    }
    for arch, count in expected.items():
        layers = BUILDERS[arch](28, 28, 10)
        assert sum(p.numel() for layer in layers.values() for p in layer.parameters()) == count


def test_same_params_give_identical_weights_and_metrics(ingested):
    first = train_in(ingested, train={"max_epochs": 2})
    model_files = {p.name: p.read_bytes() for p in (ingested / MODEL_DIR).iterdir()}
    weights = model_files["model.safetensors"]
    assert set(model_files) == {"model.safetensors", "model.json", "model.ckpt", "recipe.json"}
    second = train_in(ingested)
    # Every file of models/ is the same bytes: the DVC output hash repeats, so nothing after
    # train reruns for an identical retrain.
    assert {p.name: p.read_bytes() for p in (ingested / MODEL_DIR).iterdir()} == model_files
    assert first == second
    changed = train_in(ingested, train={"seed": 1})
    assert (ingested / MODEL_DIR / "model.safetensors").read_bytes() != weights
    assert changed["epochs"] == 2


def test_clean_epochs_end_the_training_without_augmentation(ingested, capsys):
    weights = ingested / MODEL_DIR / "model.safetensors"

    def trained(augment: dict | None, clean_epochs: int) -> bytes:
        recipe = {"max_epochs": 2, "augment": augment, "clean_epochs": clean_epochs}
        train_in(ingested, arch="softmax", train=recipe)
        return weights.read_bytes()

    plain = trained(None, 0)
    shaken = {"rotation": 20, "translation": 0.1}
    assert trained(shaken, 2) == plain  # every epoch clean: the augmentation never ran
    header = " ".join(capsys.readouterr().out.split())  # wrapped at the terminal's width
    assert "train.clean_epochs 2 covers all 2 epochs: no epoch is augmented" in header
    first_only = trained(shaken, 1)
    assert first_only != plain  # the first epoch was augmented
    assert first_only != trained(shaken, 0)  # and the second was not


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_the_exported_epoch_has_the_lowest_validation_loss(ingested, smoothing):
    # The validation loss is the training objective, label smoothing included: under smoothing,
    # plain cross-entropy is lowest after epoch 1 while accuracy still rises.
    metrics = train_in(ingested, train={"max_epochs": 4, "label_smoothing": smoothing})
    history = np.genfromtxt(ingested / TRAIN_REPORTS / "history.csv", delimiter=",", names=True)
    assert metrics["best_epoch"] == history["epoch"][np.argmin(history["val_loss"])]
    net, _ = load_model(ingested / MODEL_DIR)
    val = read_split(ingested / PROCESSED_DIR / "val.parquet")
    seen = 3 * 32  # QUICK_TRAIN validates on 3 batches of 32
    with torch.no_grad():
        logits = net(torch.from_numpy(val.images[:seen, None].astype(np.float32)))
    loss = torch.nn.functional.cross_entropy(
        logits, torch.from_numpy(val.labels[:seen]), label_smoothing=smoothing
    )
    assert loss.item() == pytest.approx(metrics["best_epoch_val_loss"], abs=1e-5)


class LinearProbe(L.LightningModule):
    """One linear layer fit by plain SGD; remembers its raw weights after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.raw: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.layer(inputs), targets)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # A copy on the CPU: after training on a GPU, Lightning returns the module to the CPU.
        self.raw.append(self.layer.weight.detach().to("cpu", copy=True))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_weight_average_is_an_ema_with_warm_up():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(6, 3, generator=generator)
    batches = DataLoader(TensorDataset(inputs, inputs.sum(1, keepdim=True)), batch_size=1)
    probe = LinearProbe()
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[weight_average(0.8)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(probe, train_dataloaders=batches)
    expected = probe.raw[0]
    for count, raw in enumerate(probe.raw[1:], start=1):
        rate = min(0.8, (1 + count) / (10 + count))  # 0.18, 0.25, 0.31, ... capped at 0.8
        expected = rate * expected + (1 - rate) * raw
    assert not torch.allclose(probe.layer.weight, probe.raw[-1])  # the average, not the last step
    torch.testing.assert_close(probe.layer.weight.detach(), expected)


def test_exported_model_is_the_weight_average(ingested):
    train_in(ingested, train={"ema": 0.9, "max_epochs": 1})
    checkpoint = torch.load(ingested / MODEL_DIR / "model.ckpt", weights_only=True)
    exported = load_file(ingested / MODEL_DIR / "model.safetensors")
    for name, value in exported.items():
        assert torch.equal(value, checkpoint["state_dict"][f"net.{name}"])
    raw = checkpoint["current_model_state"]
    assert not torch.equal(exported["conv1.weight"], raw["net.conv1.weight"])


def test_one_cycle_ends_at_the_final_lr_fraction(ingested):
    train_in(
        ingested,
        train={"max_epochs": 2, "limit_batches": 6, "lr": 0.01, "final_lr_fraction": 0.3},
    )
    history = np.genfromtxt(ingested / TRAIN_REPORTS / "history.csv", delimiter=",", names=True)
    assert history["lr"][0] > 0.005  # epoch 1 ends on the way down from the peak
    assert history["lr"][-1] == pytest.approx(0.003, rel=0.1)  # one step short of the end


def test_index_batches_cover_each_row_once_and_shard_by_rank():
    tensors = (torch.arange(105).view(105, 1, 1, 1), torch.arange(105))
    epoch = [0]
    seen = []
    for rank in (0, 1):
        batches = IndexBatches(
            tensors, 10, shuffle=True, seed=5, epoch_of=lambda: epoch[0], rank=rank, world_size=2
        )
        labels = torch.cat([y for _, y in batches])
        assert len(labels) == 52 and len(batches) == 6
        seen.append(labels)
    assert len(set(torch.cat(seen).tolist())) == 104
    again = torch.cat([y for _, y in IndexBatches(tensors, 10, shuffle=True, seed=5)])
    assert torch.equal(
        again, torch.cat([y for _, y in IndexBatches(tensors, 10, shuffle=True, seed=5)])
    )
    epoch[0] = 1
    assert not torch.equal(
        seen[0],
        torch.cat(
            [
                y
                for _, y in IndexBatches(
                    tensors, 10, shuffle=True, seed=5, epoch_of=lambda: epoch[0], world_size=2
                )
            ]
        ),
    )


def test_training_batches_never_end_with_a_lone_image():
    tensors = (torch.zeros(21, 1, 2, 2), torch.arange(21))
    train_batches = IndexBatches(tensors, 10, shuffle=True)
    assert [len(y) for _, y in train_batches] == [10, 10] and len(train_batches) == 2
    assert [len(y) for _, y in IndexBatches(tensors, 10, shuffle=False)] == [10, 10, 1]


@pytest.mark.parametrize(
    "settings",
    [{"rotation": 15, "translation": 0.1, "scale": 0.1}, {"elastic": 1.5}],
    ids=["affine", "elastic"],
)
def test_augment_moves_ink_but_keeps_the_digit(mnist_train, settings):
    from digitpipe.core.config import Augment

    images = torch.from_numpy(mnist_train[0][:64].copy()).unsqueeze(1).float()
    moved = augment(images, Augment(**settings), torch.Generator().manual_seed(0))
    assert moved.shape == images.shape
    assert (moved - images).abs().mean() > 10
    ink_ratio = moved.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert ((ink_ratio > 0.7) & (ink_ratio < 1.4)).all()


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(ingested):
    edit_params(
        ingested,
        "train",
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
    )
    edit_params(ingested, "runtime", progress="auto")
    process = train_stage(ingested)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    summary = json.loads((ingested / TRAIN_REPORTS / "summary.json").read_text())
    speed = json.loads((ingested / TRAIN_REPORTS / "speed.json").read_text())
    assert speed["devices"] == 2 and summary["epochs"] == 2
    assert output.count("epoch 2/2 ") == 1, output  # reports come from rank 0 only
    assert "\r" not in output  # not a terminal: plain lines, no bar


def paused_training(project) -> subprocess.Popen:
    """A 6-epoch train stage, started, and held at the first batch after its first checkpoint."""
    edit_params(project, "train", max_epochs=6, limit_batches=12)
    edit_params(project, "runtime", progress="lines")
    process = train_stage(project, paused=True)
    paused_after_a_checkpoint(project, process)
    return process


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(ingested):
    process = paused_training(ingested)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (ingested / TRAIN_REPORTS / "summary.json").exists()
    resumed = train_stage(ingested)
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert "Resuming from" in output and "epoch 1/6 " not in output
    assert "GPU available" not in output and "Tip" not in output  # Lightning's INFO lines
    assert "is not empty" not in output  # the run's own folder, kept for resuming
    history = np.genfromtxt(ingested / TRAIN_REPORTS / "history.csv", delimiter=",", names=True)
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert json.loads((ingested / TRAIN_REPORTS / "summary.json").read_text())["epochs"] == 6
    assert not list((ingested / CHECKPOINT_ROOT).glob("*/last.ckpt"))
    # The default recipe augments: the resumed run drew what an uninterrupted one draws.
    resumed_weights = (ingested / MODEL_DIR / "model.safetensors").read_bytes()
    uninterrupted = train_stage(ingested)
    assert uninterrupted.wait(timeout=300) == 0
    assert (ingested / MODEL_DIR / "model.safetensors").read_bytes() == resumed_weights


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_the_rerun_goes_on_from_there(ingested):
    process = paused_training(ingested)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 1 and INTERRUPTED in output, output
    resumed = train_stage(ingested)
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    finished = int(re.search(r"Resuming from .*: epoch (\d) was the last to finish", output)[1])
    assert f"epoch {finished}/6 " not in output and f"epoch {finished + 1}/6 " in output


def train_outputs(project) -> dict[str, bytes]:
    """Every file the train stage publishes, by path, with its bytes."""
    files = [project / path for path in TRAIN_DECLARED.paths()]
    files = [f for path in files for f in (sorted(path.rglob("*")) if path.is_dir() else [path])]
    return {str(f.relative_to(project)): f.read_bytes() for f in files}


@pytest.mark.slow
def test_a_stopped_training_leaves_the_previous_outputs_as_they_were(ingested):
    """The history is written after every epoch, beside the checkpoints: a training ended before
    its export replaces none of the outputs that describe the previous model."""
    edit_params(ingested, "train", max_epochs=2)
    assert train_stage(ingested).wait(timeout=300) == 0
    previous = train_outputs(ingested)
    assert len(previous) == 7  # four files in models/, three in reports/train/
    process = paused_training(ingested)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 128 + signal.SIGTERM, output
    assert train_outputs(ingested) == previous
    assert list((ingested / CHECKPOINT_ROOT).glob("*/history.csv"))  # the run's, kept to resume


def test_exported_checkpoint_bytes_do_not_depend_on_where_its_objects_came_from(tmp_path):
    """A resumed training's optimizer state was read from a checkpoint: equal values, but each
    key a string object of its own. The exported checkpoint is the same bytes all the same."""

    def read_back(name: str) -> str:
        return "".join(list(name))  # an equal string, another object (as unpickling gives)

    def checkpoint(key) -> dict:
        moments = {
            index: {key("step"): torch.tensor(3.0), key("exp_avg"): torch.ones(2)}
            for index in (0, 1)
        }
        return {"epoch": 2, "optimizer_states": [{"state": moments}]}

    uninterrupted, resumed = tmp_path / "uninterrupted.ckpt", tmp_path / "resumed.ckpt"
    write_portable_checkpoint(checkpoint(str), uninterrupted)
    write_portable_checkpoint(checkpoint(read_back), resumed)
    assert uninterrupted.read_bytes() == resumed.read_bytes()


def test_last_checkpoint_follows_every_epoch_not_only_the_best(ingested, tmp_path):
    # A learning rate of 1e-12 leaves the weights, and so the validation loss, as they were: no
    # epoch after the first is the best, and the checkpoint a resume reads must still move on.
    edit_params(ingested, "model", arch="softmax")
    edit_params(ingested, "train", max_epochs=3, optimizer="sgd", lr=1e-12, momentum=0.0, ema=0.0)
    params = load_params(ingested / "params.yaml")
    recipe = resolve_recipe("softmax", params.train)
    train_split, val_split = (
        read_split(ingested / PROCESSED_DIR / f"{split}.parquet") for split in ("train", "val")
    )
    history = History(tmp_path / "history.csv", print_lines=False)
    trainer, best = build_trainer(params.train, params.runtime, recipe, tmp_path, [history])
    data = DigitData.for_recipe(train_split, val_split, recipe, params.train.seed)
    fit(trainer, build_module("softmax", recipe, train_split), data, None)
    assert read_checkpoint(best.best_model_path)["epoch"] == 0
    last = read_checkpoint(tmp_path / "last.ckpt")
    assert last["epoch"] == 2
    assert [row["epoch"] for row in last["callbacks"]["History"]["rows"]] == [1, 2, 3]


@pytest.mark.parametrize(
    ("section", "changes", "words"),
    [
        ("model", {"arch": "resnet"}, ["model.arch", "'softmax'", "'bncnn'"]),
        ("train", {"recipe": "lenet"}, ["train: holds the 'lenet' recipe", "-S model=bncnn`"]),
        ("train", {"lr": -0.1}, ["train.lr", "greater than 0"]),
        (
            "train",
            {"learning_rate": 0.1},
            ["train.learning_rate: not a key of train; did you mean train.lr?"],
        ),
        (
            "train",
            {"augment": {"rotate": 5}},
            ["train.augment.rotate: not a key of train.augment; did you mean train.augment.rot"],
        ),
        (
            "trian",
            {"lr": 0.1},
            ["trian: not a section of the parameters; did you mean train or track?"],
        ),
        ("train", {"accelerator": "tpu"}, ["train.accelerator", "'auto'", "'mps'"]),
        ("train", {"batch_size": 5000}, ["train.batch_size 5000", "larger than the training"]),
        (
            "train",
            {"batch_size": 33, "devices": 2, "strategy": "ddp", "accelerator": "cpu"},
            ["train.batch_size 33", "not divisible by the 2 processes"],
        ),
        ("train", {"nesterov": True, "momentum": 0}, ["train.nesterov", "momentum"]),
        ("train", {"test_time_shift": 5}, ["train.test_time_shift", "less than or equal to 4"]),
        ("train", {"lr": 1e300}, ["train.lr", "less than or equal to 100"]),
        ("train", {"batch_size": 1}, ["a batch of 1 image per process: bncnn uses batch norm"]),
        (
            "train",
            {"batch_size": 2, "devices": 2, "strategy": "ddp", "accelerator": "cpu"},
            ["a batch of 1 image per process: bncnn"],
        ),
        ("train", {"strategy": "ddp_spawn"}, ["train.strategy", "'ddp'", "got 'ddp_spawn'"]),
        ("train", {"precision": "64-true"}, ["train.precision", "'bf16-mixed'"]),
        (
            "train",
            {"devices": TOO_MANY, "batch_size": TOO_MANY, "accelerator": "cpu", "strategy": "ddp"},
            [f"train.devices is {TOO_MANY}", "CPU core"],
        ),
    ],
)
def test_bad_params_fail_before_training(ingested, monkeypatch, capsys, section, changes, words):
    edit_params(ingested, section, **changes)
    monkeypatch.chdir(ingested)
    assert_user_error((main(["train"]), capsys), *words)
    assert not (ingested / MODEL_DIR).exists()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"accelerator": "gpu"}, ["train.accelerator", "no CUDA GPU", "cpu"]),
        ({"precision": "16-mixed"}, ["train.precision '16-mixed' needs a CUDA GPU"]),
    ],
    ids=["gpu", "16-mixed"],
)
def test_gpu_settings_follow_what_the_machine_has(ingested, monkeypatch, capsys, changes, words):
    """Refused before training where no CUDA GPU is visible; trained on it where one is."""
    edit_params(ingested, "train", **changes)
    monkeypatch.chdir(ingested)
    status = main(["train"])
    if torch.cuda.is_available():
        assert status == 0, capsys.readouterr().err
        speed = json.loads((ingested / TRAIN_REPORTS / "speed.json").read_text())
        assert speed["accelerator"] == "cuda"
        assert speed["precision"] == changes.get("precision", "32-true")
    else:
        assert_user_error((status, capsys), *words)
        assert not (ingested / MODEL_DIR).exists()


# ---------------------------------------------------------------- progress, resume, precision


def history_of(project) -> np.ndarray:
    return np.atleast_1d(
        np.genfromtxt(project / TRAIN_REPORTS / "history.csv", delimiter=",", names=True)
    )


def plain_line(epoch: int, epochs: int) -> str:
    """The start of the plain per-epoch line (`runtime.progress: lines`)."""
    return f"epoch {epoch}/{epochs}  train_loss "


@pytest.mark.parametrize("progress", ["bar", "lines", "none"])
def test_progress_modes(ingested, capfd, progress):
    edit_params(ingested, "train", max_epochs=2)
    edit_params(ingested, "runtime", progress=progress)
    capfd.readouterr()
    train(load_params(ingested / "params.yaml"), ingested)
    captured = capfd.readouterr()
    shown = captured.out + captured.err
    lines = [plain_line(epoch, 2) in shown for epoch in (1, 2)]
    bar = "\r" in shown and "epoch 1/2: " in shown and "epoch 2/2: " in shown
    assert (bar, lines) == {
        "bar": (True, [False, False]),  # a bar, even when the output is not a terminal
        "lines": (False, [True, True]),
        "none": (False, [False, False]),
    }[progress], shown
    if progress == "bar":  # each bar is followed by its epoch's figures
        figures = r"(?m)^  train_loss [\d.]+  train_acc [\d.]+  val_loss [\d.]+  val_acc [\d.]+$"
        assert len(re.findall(figures, shown)) == 2, shown
    assert history_of(ingested)["epoch"].tolist() == [1, 2]  # the history is kept in every mode


EPOCHS = 8  # the run is killed at epoch 2, after its first checkpoint


def killed_after_first_epoch(project) -> list:
    """Start the training and kill it once it has saved its last checkpoint (after epoch 1 of
    EPOCHS); return those checkpoints."""
    process = train_stage(project, paused=True)
    paused_after_a_checkpoint(project, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (project / TRAIN_REPORTS / "summary.json").exists()
    return list((project / CHECKPOINT_ROOT).glob("*/last.ckpt"))


@pytest.mark.slow
def test_resume_false_and_changed_params_start_afresh(ingested, capfd):
    edit_params(ingested, "train", max_epochs=EPOCHS, limit_batches=4)
    edit_params(ingested, "runtime", progress="lines")
    (interrupted,) = killed_after_first_epoch(ingested)

    # Other params (seed): another run, which starts at epoch 1 and leaves the interrupted one.
    edit_params(ingested, "train", seed=7)
    capfd.readouterr()
    train(load_params(ingested / "params.yaml"), ingested)
    output = capfd.readouterr().out
    assert "Resuming from" not in output and plain_line(1, EPOCHS) in output
    assert history_of(ingested)["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert interrupted.exists()

    # The interrupted run's own params with runtime.resume false: from epoch 1, not from its
    # checkpoint, which is then removed with the run's folder.
    edit_params(ingested, "train", seed=42)
    edit_params(ingested, "runtime", resume=False)
    train(load_params(ingested / "params.yaml"), ingested)
    output = capfd.readouterr().out
    assert "Resuming from" not in output and plain_line(1, EPOCHS) in output
    assert history_of(ingested)["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert not interrupted.parent.exists()


def test_bf16_mixed_trains_on_a_cpu(ingested):
    edit_params(ingested, "train", accelerator="cpu", precision="32-true")
    train(load_params(ingested / "params.yaml"), ingested)
    full = (ingested / MODEL_DIR / "model.safetensors").read_bytes()
    edit_params(ingested, "train", precision="bf16-mixed")
    summary = train(load_params(ingested / "params.yaml"), ingested)
    speed = json.loads((ingested / TRAIN_REPORTS / "speed.json").read_text())
    assert (speed["accelerator"], speed["precision"]) == ("cpu", "bf16-mixed")
    # The precision reached the Trainer: bfloat16 arithmetic gives other weights...
    assert (ingested / MODEL_DIR / "model.safetensors").read_bytes() != full
    # ...exported as float32, and the reported validation loss is the exported network's.
    weights = load_file(ingested / MODEL_DIR / "model.safetensors")
    assert {value.dtype for value in weights.values() if value.is_floating_point()} == {
        torch.float32
    }
    net, _ = load_model(ingested / MODEL_DIR)
    val = read_split(ingested / PROCESSED_DIR / "val.parquet")
    with torch.no_grad():
        logits = net(torch.from_numpy(val.images[:, None].astype(np.float32)))
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(val.labels)).item()
    # Validation ran under bf16 autocast: agreement to bfloat16's precision (8 bits).
    assert summary["best_epoch_val_loss"] == pytest.approx(loss, rel=0.02)


@pytest.mark.slow
def test_ddp_rank_zero_alone_logs_to_mlflow(ingested):
    edit_params(ingested, "train", accelerator="cpu", devices=2, strategy="ddp", max_epochs=2)
    edit_params(ingested, "track", enabled=True, experiment="ddp")  # the repo's SQLite store
    process = train_stage(ingested)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output
    client = MlflowClient(f"sqlite:///{ingested.resolve()}/mlflow.db")
    (run,) = experiment_runs(client, "ddp")  # one run, not one per rank
    assert run.info.status == "FINISHED"
    assert run.data.tags["train.devices"] == "2" and run.data.tags["train.accelerator"] == "cpu"
    summary = json.loads((ingested / TRAIN_REPORTS / "summary.json").read_text())
    history = history_of(ingested)
    for name in ("train_loss", "val_loss", "val_acc"):
        logged = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in logged] == [1, 2], name  # each epoch once: rank 1 logs nothing
        assert [m.value for m in logged] == pytest.approx(history[name].tolist()), name
    assert run.data.metrics["train.best_epoch_val_accuracy"] == summary["best_epoch_val_accuracy"]
    assert MODEL_URI_TAG in run.data.tags
