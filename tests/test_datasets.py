"""Any IDX/CSV image dataset, not only MNIST: image sizes, class counts and names go through every
stage, or are refused before any work with a message that says how to fix them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.data import default_params, write_csv
from helpers.errors import assert_user_error
from helpers.project import run_cli

from digitpipe.activations.run import run as activations
from digitpipe.cli import main
from digitpipe.core.config import load_params
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.idx import write_idx
from digitpipe.dataset.parquet import read_split
from digitpipe.evaluate.run import run as evaluate
from digitpipe.ingest.run import run as ingest
from digitpipe.model.sizes import MIN_SIDE
from digitpipe.model.zoo import BUILDERS
from digitpipe.report.run import run as report
from digitpipe.train.run import run as train

PER_CLASS = 8  # training images per class: enough for every stage, small enough to be quick


def resized(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of (N, 28, 28) digits to (N, height, width)."""
    rows = np.arange(height) * images.shape[1] // height
    cols = np.arange(width) * images.shape[2] // width
    return images[:, rows][:, :, cols]


def dataset(folder: Path, images, size: tuple[int, int], classes: int, **data) -> Path:
    """A project of ``classes`` classes of ``size`` images (IDX train, CSV test), params from the
    package defaults, tracking off, one quick epoch."""
    count = classes * PER_CLASS
    labels = np.arange(count + 2 * classes) % classes
    pictures = resized(images[: len(labels)], *size)
    write_idx(pictures[:count], folder / "train-images.gz", compress=True)
    write_idx(labels[:count].astype(np.uint8), folder / "train-labels.gz", compress=True)
    write_csv(folder / "test.csv", pictures[count:], labels[count:])
    params = default_params(
        {
            "train": {"images": "train-images.gz", "labels": "train-labels.gz"},
            "test": {"csv": "test.csv"},
            "image_size": list(size),
            **data,
        },
        train={"max_epochs": 1, "limit_batches": 2},  # the recipes' batches, lowered to fit
        activations={"barcode_images": 2},
        track={"enabled": False},
        runtime={"progress": "none"},
    )
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


SIZES = [(8, 8), (16, 16), (28, 28), (32, 32), (20, 36)]
CLASSES = [2, 10, 47]


def pruned(arch: str, size: tuple[int, int], classes: int) -> bool:
    """The part of the matrix `make test` runs: every architecture at the smallest and an oblong
    shape with 10 classes; the default and a dense model at every other shape and class count.
    `make test-matrix` runs all of it."""
    if classes == 10:
        return size in [(8, 8), (20, 36)]
    return arch in ("bncnn", "mlp") and size in SIZES[1:4]


MATRIX = [
    pytest.param(
        arch,
        size,
        classes,
        id=f"{arch}-{size[0]}x{size[1]}-{classes}",
        marks=() if pruned(arch, size, classes) else pytest.mark.matrix,
    )
    for arch in BUILDERS
    for size in SIZES
    for classes in CLASSES
]


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "size", "classes"), MATRIX)
def test_every_stage_or_a_refusal_before_ingest_writes(tmp_path, mnist_train, arch, size, classes):
    project = dataset(tmp_path, mnist_train[0], size, classes)
    (tmp_path / "params.yaml").write_text(
        (tmp_path / "params.yaml").read_text().replace("arch: bncnn", f"arch: {arch}")
    )
    params = load_params(project / "params.yaml")
    if min(size) < MIN_SIDE[arch]:  # refused before ingest writes anything
        with pytest.raises(DigitpipeError, match=f"needs images of at least {MIN_SIDE[arch]}"):
            ingest(params, project)
        assert not (project / "data/processed").exists() and not (project / "reports").exists()
        return
    ingest(params, project)
    train(params, project)
    metrics = evaluate(params, project)
    manifest = activations(params, project)
    markdown = report(params, project)
    assert metrics["n"] == 2 * classes
    assert read_split(project / "data/processed/test.parquet").class_names == tuple(
        str(k) for k in range(classes)
    )
    assert f"{size[0]} x {size[1]} images of {classes} classes" in markdown
    assert manifest["layers"][-1]["shape"] == [len(manifest["images"]), classes]


def test_sources_of_two_sizes_are_refused_naming_both(tmp_path, mnist_train, monkeypatch, capsys):
    project = dataset(tmp_path, mnist_train[0], (28, 28), 10)
    write_csv(tmp_path / "test.csv", resized(mnist_train[0][:20], 32, 32), np.arange(20) % 10)
    edit = yaml.safe_load((tmp_path / "params.yaml").read_text())
    edit["data"]["image_size"] = None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edit))
    err = assert_user_error((run_cli(project, monkeypatch, "ingest"), capsys))
    assert "test.csv: images are 32x32" in err and "train-images.gz has 28x28" in err
    assert not (project / "data/processed").exists()


def test_class_names_that_the_labels_do_not_use_are_refused(
    tmp_path, mnist_train, monkeypatch, capsys
):
    names = ["zero", "one", "two", *(f"unused{k}" for k in range(7))]
    project = dataset(tmp_path, mnist_train[0], (28, 28), 3, class_names=names)
    err = assert_user_error((run_cli(project, monkeypatch, "ingest"), capsys))
    assert "10 classes, but the training data has no image of 'unused0'" in err
    assert "data.class_names: null" in err
    assert not (project / "data/processed").exists()


def test_null_class_names_are_inferred_and_test_labels_checked_against_them(
    tmp_path, mnist_train, monkeypatch, capsys
):
    project = dataset(tmp_path, mnist_train[0], (28, 28), 3)
    ingest(load_params(project / "params.yaml"), project)
    summary = json.loads((project / "reports/ingest/summary.json").read_text())
    assert summary["class_names"] == ["0", "1", "2"]
    write_csv(tmp_path / "test.csv", mnist_train[0][:6], np.array([0, 1, 2, 3, 0, 1]))
    err = assert_user_error((run_cli(project, monkeypatch, "ingest"), capsys))
    assert "test.csv: label 3 at position 3 is out of range" in err
    assert "the training source (data.class_names: null) has 3 classes" in err


def test_a_batch_larger_than_the_data_is_refused_before_any_run(
    tmp_path, mnist_train, monkeypatch, capsys
):
    project = dataset(tmp_path, mnist_train[0], (28, 28), 2)
    store = tmp_path / "store"
    store.mkdir()
    edit = yaml.safe_load((tmp_path / "params.yaml").read_text())
    edit["train"]["batch_size"] = 64
    edit["track"] = {"enabled": True, "tracking_uri": f"sqlite:///{store}/mlflow.db"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edit))
    ingest(load_params(project / "params.yaml"), project)
    err = assert_user_error((run_cli(project, monkeypatch, "train"), capsys))
    assert "train.batch_size 64 is larger than the training set" in err
    assert not any(store.iterdir()) and not (project / "models").exists()


def test_held_out_test_images_say_where_they_came_from(tmp_path, mnist_train):
    project = dataset(tmp_path, mnist_train[0], (28, 28), 10)
    edit = yaml.safe_load((tmp_path / "params.yaml").read_text())
    edit["data"].update(test=None, test_fraction=0.2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edit))
    ingest(load_params(project / "params.yaml"), project)
    test = read_split(project / "data/processed/test.parquet")
    train_ids = set(read_split(project / "data/processed/train.parquet").ids)
    assert all(image_id.startswith("test-from-train-") for image_id in test.ids)
    assert not {image_id.removeprefix("test-from-") for image_id in test.ids} & train_ids


def test_predict_reads_a_csv_label_column_as_ingest_does(
    tmp_path, mnist_train, monkeypatch, capsys
):
    project = dataset(tmp_path, mnist_train[0], (28, 28), 10, csv_label_column="digit")
    csv = (tmp_path / "test.csv").read_text()
    (tmp_path / "test.csv").write_text(csv.replace("label,", "digit,", 1))
    params = load_params(project / "params.yaml")
    ingest(params, project)
    train(params, project)
    (tmp_path / "new.csv").write_text((tmp_path / "test.csv").read_text())
    monkeypatch.chdir(project)
    assert main(["predict", "new.csv", "--out", "out.csv"]) == 0
    frame = pd.read_csv(project / "out.csv")
    count = 10 * PER_CLASS  # the training images; the 20 test rows follow, labelled k % 10
    assert frame["label"].tolist() == (np.arange(count, count + 20) % 10).tolist()
    assert "accuracy" in capsys.readouterr().out
