"""Data at scale: ingest reads IDX and CSV a chunk at a time and writes Parquet a row group at a
time, with the same bytes as when everything fits one chunk; training holds the pixels once and
computes their statistics exactly. (Peak memory is measured by bench/scale.py, not here.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers.data import write_csv
from helpers.project import edit_params

from digitpipe.core.config import load_params
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset import csv_rows, parquet, stored
from digitpipe.dataset.idx import read_idx, write_idx
from digitpipe.dataset.parquet import read_split
from digitpipe.dataset.shapes import as_images
from digitpipe.ingest.run import run as ingest
from digitpipe.outputs.ingest import PROCESSED_DIR
from digitpipe.train import data
from digitpipe.train.data import as_tensors, pixel_stats


def ingested_files(project: Path) -> dict[str, bytes]:
    ingest(load_params(project / "params.yaml"), project)
    return {path.name: path.read_bytes() for path in (project / PROCESSED_DIR).iterdir()}


def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 5 images and 1000 bytes of CSV text: every source takes many of them."""
    monkeypatch.setattr(stored, "CHUNK_BYTES", 5 * 784 + 17)
    monkeypatch.setattr(csv_rows, "TEXT_BYTES", 1000)


def test_chunked_idx_ingest_writes_the_same_bytes(tiny_project: Path, monkeypatch) -> None:
    whole = ingested_files(tiny_project)
    small_chunks(monkeypatch)
    assert ingested_files(tiny_project) == whole


def csv_project(project: Path, mnist_train, line_end: str = "\n") -> Path:
    images, labels = mnist_train
    raw = project / "data" / "raw"
    write_csv(raw / "train.csv", images[:700], labels[:700])
    write_csv(raw / "predict.csv", images[700:750], None)
    for name in ("train.csv", "predict.csv"):
        path = raw / name
        path.write_bytes(path.read_bytes().replace(b"\n", line_end.encode()))
    edit_params(
        project,
        "data",
        train={"csv": "data/raw/train.csv"},
        test=None,
        test_fraction=0.15,
        predict={"csv": "data/raw/predict.csv"},
    )
    return project


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r", "\n\n"])
def test_chunked_csv_ingest_writes_the_same_bytes(
    tiny_project: Path, mnist_train, monkeypatch, line_end: str
) -> None:
    project = csv_project(tiny_project, mnist_train, line_end)
    whole = ingested_files(project)
    small_chunks(monkeypatch)
    assert ingested_files(project) == whole


def test_a_csv_the_block_reader_does_not_take_is_read_whole_alike(
    tiny_project: Path, mnist_train
) -> None:
    """Values written as 0.0 (and a quoted header) go to the whole-file reader: same splits."""
    project = csv_project(tiny_project, mnist_train)
    plain = ingested_files(project)
    for name in ("train.csv", "predict.csv"):
        path = project / "data" / "raw" / name
        header, rows = path.read_text().split("\n", 1)
        quoted = ",".join(f'"{column}"' for column in header.split(","))
        path.write_text(quoted + "\n" + rows.replace(",0,", ",0.0,"))
    assert ingested_files(project) == plain


def test_a_bad_value_in_a_later_chunk_is_refused_as_in_the_whole_array(
    tiny_project: Path, mnist_train, monkeypatch
) -> None:
    """float32 images, one bad pixel in image 37: the message names it as the whole-array check
    does, with every value in 0..1 (0 and 1, then 0.5: the scaled-pixels hint) or not."""
    small_chunks(monkeypatch)
    images = mnist_train[0][:600].astype(np.float32)
    path = tiny_project / "data" / "raw" / "train-images.gz"
    params = load_params(tiny_project / "params.yaml")
    for scaled in (False, True):
        values = (images > 127).astype(np.float32) if scaled else images.copy()
        values[37, 3, 4] = 0.5 if scaled else 300
        write_idx(values, path, compress=True)
        with pytest.raises(DigitpipeError) as whole:
            as_images(path, read_idx(path), params.data.image_size)
        with pytest.raises(DigitpipeError) as chunked:
            ingest(params, tiny_project)
        assert str(chunked.value) == str(whole.value)
        assert "in image 37" in str(whole.value)
        assert ("look scaled" in str(whole.value)) is scaled


def test_a_split_of_many_row_groups_reads_back_whole(ingested: Path, monkeypatch) -> None:
    one_group = read_split(ingested / PROCESSED_DIR / "train.parquet")
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 100 * 784)
    ingest(load_params(ingested / "params.yaml"), ingested)
    path = ingested / PROCESSED_DIR / "train.parquet"
    assert pq.ParquetFile(path).num_row_groups == -(-len(one_group) // 100)
    groups = read_split(path)
    np.testing.assert_array_equal(groups.images, one_group.images)
    np.testing.assert_array_equal(groups.labels, one_group.labels)
    assert list(groups.ids) == list(one_group.ids)


def test_training_holds_the_split_once(ingested: Path) -> None:
    train = read_split(ingested / PROCESSED_DIR / "train.parquet")
    images, labels = as_tensors(train)
    assert np.shares_memory(images.numpy(), train.images)
    assert images.shape == (len(train), 1, 28, 28) and labels.dtype == torch.int64


def test_pixel_stats_are_exact_in_any_chunks(ingested: Path, monkeypatch) -> None:
    """Mean and std from chunks of 1000 pixels are the float64 values rounded to float32: within
    an ulp of the float32 tensor's (whose float32 sums round by order and thread count), and
    equal to them on these splits (the exported weights are unchanged)."""
    monkeypatch.setattr(data, "STATS_PIXELS", 1000)
    for split in ("train", "val", "test"):
        images = read_split(ingested / PROCESSED_DIR / f"{split}.parquet")
        scaled = images.images / np.float64(255)
        exact = (float(np.float32(scaled.mean())), float(np.float32(scaled.std(ddof=1))))
        assert pixel_stats(images) == exact
        pixels = torch.from_numpy(images.images).float().div_(255)
        assert exact == (float(pixels.mean()), float(pixels.std()))
