"""Training on splits larger than the memory budget: streamed from Parquet row groups (issue 34).

The tiny project's splits are re-ingested in row groups of 100 images and trained with a budget
far below their pixels, which forces the streaming path."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers.data import REPO
from helpers.processes import PAUSE_AFTER_A_CHECKPOINT, paused_after_a_checkpoint
from helpers.project import edit_params
from helpers.servers import free_port

from digitpipe.core.config import TrainParams, load_params, parse_params
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset import parquet
from digitpipe.dataset.images import ImageSet
from digitpipe.dataset.parquet import split_layout, write_split
from digitpipe.ingest.run import run as ingest
from digitpipe.outputs.ingest import PROCESSED_DIR
from digitpipe.outputs.train import MODEL_DIR, TRAIN_REPORTS
from digitpipe.train import streaming
from digitpipe.train.data import pixel_stats
from digitpipe.train.run import run as train
from digitpipe.train.streaming import ShardBatches, StreamedSplit

GROUP_ROWS = 25  # images per row group of the re-ingested splits: 22 shards of training data
TINY_BUDGET = 1e-6  # GB: every split streams
STREAMING = {"memory_budget_gb": TINY_BUDGET, "max_epochs": 2, "limit_batches": None}


@pytest.fixture()
def sharded(ingested: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ingested tiny project with splits of GROUP_ROWS-image row groups, training `mlp`."""
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", GROUP_ROWS * 784)
    ingest(load_params(ingested / "params.yaml"), ingested)
    edit_params(ingested, "model", arch="mlp")
    return ingested


def numbered_split(path: Path, count: int, monkeypatch: pytest.MonkeyPatch) -> StreamedSplit:
    """A split of ``count`` 2x2 images whose pixels spell their row number, in row groups of 10."""
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 10 * 4)
    rows = np.arange(count)
    images = np.stack([rows % 256, rows // 256, rows % 7, rows % 3], axis=1).astype(np.uint8)
    ids = np.array([f"n-{k}" for k in rows], dtype=object)
    write_split(ImageSet(ids, images.reshape(-1, 2, 2), rows % 10, tuple("0123456789")), path)
    return StreamedSplit(split_layout(path))


def row_numbers(batch: tuple[torch.Tensor, torch.Tensor]) -> list[int]:
    pixels = batch[0].reshape(len(batch[0]), -1).long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def epoch_batches(split: StreamedSplit, epoch: int, shuffle: bool = True, **rank) -> ShardBatches:
    return ShardBatches(split, 8, shuffle=shuffle, seed=3, epoch_of=lambda: epoch, **rank)


def epoch_rows(batches: ShardBatches) -> list[list[int]]:
    """The row numbers of each batch (their count checked against the batches' length)."""
    rows = [row_numbers(batch) for batch in batches]
    assert len(rows) == len(batches)
    return rows


def flat(rows: list[list[int]]) -> list[int]:
    return list(itertools.chain.from_iterable(rows))


def test_an_epoch_streams_each_row_once_in_a_seeded_order(tmp_path, monkeypatch):
    split = numbered_split(tmp_path / "train.parquet", 95, monkeypatch)  # 9 groups of 10, one of 5
    first = epoch_rows(epoch_batches(split, 0))
    assert sorted(flat(first)) == list(range(95))
    assert [len(rows) for rows in first] == [8] * 11 + [7]
    assert epoch_rows(epoch_batches(split, 0)) == first  # the same seed and epoch: the same rows
    again = epoch_rows(epoch_batches(split, 1))
    assert again != first and sorted(flat(again)) == list(range(95))
    # Rows mix only within a window of WINDOW_SHARDS row groups: the first window's batches.
    window = epoch_batches(split, 0).shards()[: streaming.WINDOW_SHARDS]
    assert {row // 10 for row in flat(first[: 10 * len(window) // 8])} == set(window)


def test_ranks_stream_disjoint_shards_in_lockstep(tmp_path, monkeypatch):
    split = numbered_split(tmp_path / "train.parquet", 95, monkeypatch)
    for epoch in (0, 1):
        ranks = [epoch_batches(split, epoch, rank=rank, world_size=2) for rank in (0, 1)]
        shards = [set(batches.shards()) for batches in ranks]
        assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(10))
        rows = [flat(epoch_rows(batches)) for batches in ranks]
        assert len(ranks[0]) == len(ranks[1])  # DDP ranks step together
        # Each rank takes as many rows as the rank dealt the smallest shards (5, one of 5 rows).
        assert len(rows[0]) == len(rows[1]) == 45
        for own_rows, own_shards in zip(rows, shards, strict=True):
            assert {row // 10 for row in own_rows} <= own_shards
            assert len(set(own_rows)) == len(own_rows)  # each row once


def test_validation_streams_every_row_once_in_order(tmp_path, monkeypatch):
    split = numbered_split(tmp_path / "val.parquet", 95, monkeypatch)
    assert flat(epoch_rows(epoch_batches(split, 0, shuffle=False))) == list(range(95))
    ranks = [
        flat(epoch_rows(epoch_batches(split, 0, shuffle=False, rank=rank, world_size=2)))
        for rank in (0, 1)
    ]
    assert sorted(ranks[0] + ranks[1]) == list(range(95)) and not set(ranks[0]) & set(ranks[1])


def test_streamed_statistics_are_the_in_memory_ones(sharded):
    path = sharded / PROCESSED_DIR / "train.parquet"
    assert pq.ParquetFile(path).num_row_groups == 22
    held = parquet.read_split(path)
    assert StreamedSplit(split_layout(path)).pixel_stats() == pixel_stats(held)


def train_in(project: Path, capsys, **changes) -> tuple[bytes, str]:
    """Train in ``project`` with ``changes`` to the train section: the weights, the stage's
    header (its first line, wrapped at the terminal's width, joined again)."""
    edit_params(project, "train", **changes)
    train(load_params(project / "params.yaml"), project)
    lines = capsys.readouterr().out.splitlines()
    header = itertools.takewhile(lambda line: not line.startswith("epoch "), lines)
    return (project / MODEL_DIR / "model.safetensors").read_bytes(), " ".join(
        " ".join(header).split()
    )


def test_streamed_and_held_trainings_each_repeat_bit_identically(sharded, capsys):
    streamed, line = train_in(sharded, capsys, **STREAMING)
    assert "streaming train.parquet and val.parquet from disk" in line and "25 shards" in line
    assert train_in(sharded, capsys, **STREAMING)[0] == streamed
    summary = json.loads((sharded / TRAIN_REPORTS / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["best_epoch_val_accuracy"] > 0.5
    held, line = train_in(sharded, capsys, memory_budget_gb=1.0)
    assert "in memory (0.00 GB of pixels, budget 1 GB)" in line
    assert train_in(sharded, capsys, memory_budget_gb=1.0)[0] == held
    assert held != streamed  # another order of batches: other weights


# The shared hook, holding the training at batch 5 after the checkpoint: mid-epoch.
PAUSE_MID_EPOCH = PAUSE_AFTER_A_CHECKPOINT.replace(
    "if any(saved) and not held:", "if any(saved) and not held and batch_idx == 5:"
)
assert PAUSE_MID_EPOCH != PAUSE_AFTER_A_CHECKPOINT


def stage(project: Path, *, paused: bool = False) -> subprocess.Popen:
    hold = ["-c", PAUSE_MID_EPOCH] if paused else []
    return subprocess.Popen(
        [sys.executable, *hold, str(REPO / "stages/train.py")],
        cwd=project,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=300)[0]  # a hang guard, not a speed check
    assert process.returncode == 0, output
    return output


@pytest.mark.slow
def test_a_streamed_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(sharded):
    edit_params(sharded, "train", **(STREAMING | {"max_epochs": 3}))
    edit_params(sharded, "runtime", progress="lines")
    process = stage(sharded, paused=True)  # held at batch 5 of epoch 2
    paused_after_a_checkpoint(sharded, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    output = finished(stage(sharded))
    assert "Resuming from" in output and "epoch 1/3 " not in output and "epoch 3/3 " in output
    resumed = (sharded / MODEL_DIR / "model.safetensors").read_bytes()
    output = finished(stage(sharded))
    assert "Resuming from" not in output and "streaming train.parquet" in output
    assert (sharded / MODEL_DIR / "model.safetensors").read_bytes() == resumed


# Runs the stage script sys.argv[1] with every shard a training process streams logged to
# READS_FILE (split, shard, one line each) in the current folder.
READS_FILE = "shards-read"
LOGGING_READS = f"""
import pathlib, runpy, sys
from digitpipe.train import streaming

read = streaming.StreamedSplit.read


def logged(self, shard):
    with open({READS_FILE!r}, "a") as log:
        log.write(f"{{self.layout.path.name}} {{shard}}\\n")
    return read(self, shard)


streaming.StreamedSplit.read = logged
sys.argv = sys.argv[1:]
sys.path.insert(0, str(pathlib.Path(sys.argv[0]).parent))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def node(project: Path, rank: int, port: int) -> subprocess.Popen:
    """The train stage as node ``rank`` of two (one process each, CPU, gloo), reads logged."""
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "NODE_RANK": str(rank),
        "OMP_NUM_THREADS": "1",
    }
    for name in ("LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-c", LOGGING_READS, str(REPO / "stages/train.py")],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_two_ddp_processes_stream_disjoint_shards(sharded, tmp_path_factory):
    edit_params(
        sharded,
        "train",
        **(STREAMING | {"max_epochs": 1}),
        accelerator="cpu",
        devices=1,
        num_nodes=2,
        strategy="ddp",
    )
    other = tmp_path_factory.mktemp("node1") / "project"
    shutil.copytree(sharded, other)
    port = free_port()
    processes = [node(sharded, 0, port), node(other, 1, port)]
    try:
        outputs = [finished(process) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "streaming train.parquet" in outputs[0]
    shards = len(split_layout(sharded / PROCESSED_DIR / "train.parquet").group_rows)
    epoch = []
    for project in (sharded, other):
        lines = (project / READS_FILE).read_text().split()
        reads = [
            int(shard)
            for name, shard in zip(lines[::2], lines[1::2], strict=True)
            if name == "train.parquet"
        ]
        assert reads[:shards] == list(range(shards))  # the statistics' pass, on each rank
        epoch.append(set(reads[shards:]))
    assert len(epoch[0]) == len(epoch[1]) == shards // 2
    assert not epoch[0] & epoch[1] and epoch[0] | epoch[1] == set(range(shards))


@pytest.mark.parametrize("budget", [0, -1, "lots", float("inf")])
def test_a_budget_that_is_no_positive_number_is_refused(budget):
    with pytest.raises(DigitpipeError) as refused:
        parse_params(
            {"data": {"train": {"csv": "train.csv"}}, "train": {"memory_budget_gb": budget}}
        )
    assert "train.memory_budget_gb" in str(refused.value)


def test_the_default_budget_is_half_the_machines_memory():
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    assert streaming.memory_budget_gb(TrainParams()) == pytest.approx(total / 2, abs=0.05)
    assert streaming.memory_budget_gb(TrainParams(memory_budget_gb=0.25)) == 0.25


def test_training_reads_its_splits_without_ids(ingested):
    path = ingested / PROCESSED_DIR / "train.parquet"
    whole, without = parquet.read_split(path), parquet.read_split(path, ids=False)
    np.testing.assert_array_equal(without.images, whole.images)
    np.testing.assert_array_equal(without.labels, whole.labels)
    assert set(without.ids) == {""} and without.ids.strides == (0,)  # one string, no copies
    assert len(without.take(np.arange(3)).ids) == 3
