"""README promises of the train stage: progress display, resume switched off or on other params,
bf16-mixed on a CPU, DDP with tracking on (rank 0 alone talks to MLflow), documented sizes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import PAUSE_AFTER_A_CHECKPOINT, REPO, edit_params, paused_after_a_checkpoint
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from digitpipe.core.config import load_params
from digitpipe.dataset.parquet import read_split
from digitpipe.model.export import load_model
from digitpipe.model.zoo import BUILDERS
from digitpipe.outputs.ingest import PROCESSED_DIR
from digitpipe.outputs.train import CHECKPOINT_ROOT, MODEL_DIR, TRAIN_REPORTS
from digitpipe.tracking.runs import MODEL_URI_TAG
from digitpipe.train.run import run as train


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


def stage(project, paused=False, **kwargs):
    """The train stage as DVC runs it: a process of its own, output to a pipe; ``paused``: held
    after its first checkpoint (conftest.PAUSE_AFTER_A_CHECKPOINT)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env", {})}
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        env.pop(name, None)
    hold = ["-c", PAUSE_AFTER_A_CHECKPOINT] if paused else []
    return subprocess.Popen(
        [sys.executable, *hold, str(REPO / "stages/train.py")],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def killed_after_first_epoch(project) -> list:
    """Start the training and kill it once it has saved its last checkpoint (after epoch 1 of
    EPOCHS); return those checkpoints."""
    process = stage(project, paused=True)
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
    process = stage(ingested)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output
    client = MlflowClient(f"sqlite:///{ingested.resolve()}/mlflow.db")
    experiment = client.get_experiment_by_name("ddp")
    (run,) = client.search_runs([experiment.experiment_id])  # one run, not one per rank
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


def layers_count(layers) -> int:
    return sum(p.numel() for layer in layers.values() for p in layer.parameters())


def test_documented_parameter_counts_of_bncnn_and_best():
    """The README's counts (62,538 and 505,322), and the same by hand from its descriptions:
    convs and the hidden dense layer have no bias (batch norm follows), batch norm has a scale
    and a shift per channel."""

    def conv(cin, cout, k):
        return cin * cout * k * k

    def bn(channels):
        return 2 * channels

    def dense(fin, fout, bias=True):
        return fin * fout + (fout if bias else 0)

    # stem conv6x6/2 x32, maxpool, BN; conv3x3 x64, BN; conv3x3 x64, maxpool, BN; 576 -> 10
    bncnn = conv(1, 32, 6) + bn(32) + conv(32, 64, 3) + bn(64) + conv(64, 64, 3) + bn(64)
    bncnn += dense(3 * 3 * 64, 10)
    # stem (14x14), BN; conv3x3 x48, pool, BN; conv3x3 x96, pool, BN; 864 -> 512, BN; 512 -> 10
    best = conv(1, 32, 6) + bn(32) + conv(32, 48, 3) + bn(48) + conv(48, 96, 3) + bn(96)
    best += dense(3 * 3 * 96, 512, bias=False) + bn(512) + dense(512, 10)
    assert (bncnn, best) == (62_538, 505_322)
    assert layers_count(BUILDERS["bncnn"](28, 28, 10)) == bncnn
    assert layers_count(BUILDERS["best"](28, 28, 10)) == best
