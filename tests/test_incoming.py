"""The drop folder (data.incoming): labelled batches appended to the training source in name
order, validated like any source, with their provenance in the image ids and the summary."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers.data import write_csv
from helpers.project import edit_params, ingest

from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.idx import write_idx
from digitpipe.dataset.images import INCOMING_PREFIX, batch_of, make_ids
from digitpipe.dataset.parquet import read_split
from digitpipe.outputs.ingest import INGEST_REPORTS, PROCESSED_DIR
from digitpipe.retrain import drift

INCOMING = "data/raw/incoming"


def outputs(project) -> dict[str, bytes]:
    files = [*(project / PROCESSED_DIR).iterdir(), project / INGEST_REPORTS / "summary.json"]
    return {path.name: path.read_bytes() for path in files}


@pytest.fixture()
def incoming(tiny_project):
    folder = tiny_project / INCOMING
    folder.mkdir(parents=True)
    return folder


def test_batches_join_the_training_source_in_name_order(tiny_project, incoming, mnist_train):
    images, labels = mnist_train
    before = ingest(tiny_project)
    test_before = (tiny_project / PROCESSED_DIR / "test.parquet").read_bytes()
    write_csv(incoming / "b-week2.csv", images[900:950], labels[900:950])
    write_idx(images[800:900], incoming / "a-week1-images-idx3-ubyte.gz", compress=True)
    write_idx(labels[800:900], incoming / "a-week1-labels-idx1-ubyte", compress=False)
    (incoming / "README.md").write_text("Batches of newly labelled digits.\n")
    (incoming / ".gitkeep").touch()
    summary = ingest(tiny_project)

    splits = {
        s: read_split(tiny_project / PROCESSED_DIR / f"{s}.parquet") for s in ("train", "val")
    }
    rows = {i: (s, n) for s, split in splits.items() for n, i in enumerate(split.ids)}
    assert len(rows) == 600 + 150
    for image_id, source_row in (
        ("incoming/a-week1-000012", 812),
        ("incoming/b-week2-000049", 949),
    ):
        split, row = rows[image_id]
        np.testing.assert_array_equal(splits[split].images[row], images[source_row])
        assert splits[split].labels[row] == labels[source_row]
    assert summary["splits"]["train"]["count"] + summary["splits"]["val"]["count"] == 750
    assert summary["splits"]["test"] == before["splits"]["test"]
    assert (tiny_project / PROCESSED_DIR / "test.parquet").read_bytes() == test_before
    batches = summary["incoming"]["batches"]
    assert list(batches) == ["a-week1", "b-week2"] and summary["incoming"]["count"] == 150
    assert batches["a-week1"]["files"] == [
        f"{INCOMING}/a-week1-images-idx3-ubyte.gz",
        f"{INCOMING}/a-week1-labels-idx1-ubyte",
    ]
    assert batches["b-week2"]["files"] == [f"{INCOMING}/b-week2.csv"]
    week1 = batches["a-week1"]
    assert week1["count"] == 100 and sum(week1["per_class"].values()) == 100
    assert week1["per_class"]["0"] == int(np.sum(labels[800:900] == 0))
    assert sum(week1["in_splits"].values()) == 100 and week1["in_splits"]["val"] > 0
    written = json.loads((tiny_project / INGEST_REPORTS / "summary.json").read_text())
    assert written["incoming"] == summary["incoming"]
    # The same folder gives the same bytes; the tracking layer reads the batches back from ids.
    first = outputs(tiny_project)
    ingest(tiny_project)
    assert outputs(tiny_project) == first
    assert drift.batch_counts(*splits.values()) == {"a-week1": 100, "b-week2": 50}


def test_without_batches_the_summary_is_unchanged(tiny_project):
    summary = ingest(tiny_project)
    assert "incoming" not in summary
    (tiny_project / INCOMING).mkdir(parents=True)
    assert ingest(tiny_project) == summary


def bad_size(folder, images, labels):
    write_csv(folder / "small.csv", images[:20, :10, :10], labels[:20])
    return "small.csv", "10x10 images but the training source has 28x28"


def bad_label(folder, images, labels):
    wrong = labels[:20].copy()
    wrong[5] = 10
    write_csv(folder / "labels.csv", images[:20], wrong)
    return "labels.csv", "label 10 at position 5 is out of range"


def unpaired(folder, images, labels):
    write_idx(images[:20], folder / "lonely-images-idx3-ubyte.gz", compress=True)
    return "lonely-images-idx3-ubyte.gz", "has no lonely-labels... file"


def not_a_batch(folder, images, labels):
    (folder / "digits.json").write_text("{}")
    return "digits.json", "not a batch"


def twice(folder, images, labels):
    write_csv(folder / "dup.csv", images[:20], labels[:20])
    write_idx(images[:20], folder / "dup-images.gz", compress=True)
    write_idx(labels[:20], folder / "dup-labels.gz", compress=True)
    return "dup-images.gz", "is given twice"


def copy_of_test(folder, images, labels):
    mixed = np.r_[600:700, 900:920]  # 100 of the tiny project's test images, 20 new ones
    write_idx(images[mixed], folder / "copy-images.gz", compress=True)
    write_idx(labels[mixed], folder / "copy-labels.gz", compress=True)
    return "copy-images.gz", "100 of the 120 images of incoming batch 'copy' are identical"


@pytest.mark.parametrize("make", [bad_size, bad_label, unpaired, not_a_batch, twice, copy_of_test])
def test_a_bad_batch_is_refused_by_name_and_nothing_changes(
    tiny_project, incoming, mnist_train, make
):
    images, labels = mnist_train
    write_csv(incoming / "good.csv", images[900:950], labels[900:950])
    ingest(tiny_project)
    before = outputs(tiny_project)
    name, fault = make(incoming, images, labels)
    with pytest.raises(DigitpipeError) as error:
        ingest(tiny_project)
    assert name in str(error.value) and fault in str(error.value)
    assert outputs(tiny_project) == before


def test_a_limit_that_samples_batch_images_out_says_so(tiny_project, incoming, mnist_train, capsys):
    images, labels = mnist_train
    write_csv(incoming / "week1.csv", images[800:900], labels[800:900])
    ingest(tiny_project)
    assert capsys.readouterr().err == ""  # every batch image is in train or val
    edit_params(tiny_project, "data", limit={"train": 300, "val": 30, "test": None})
    summary = ingest(tiny_project)
    kept = sum(summary["incoming"]["batches"]["week1"]["in_splits"].values())
    assert 0 < kept < 100
    warning = capsys.readouterr().err
    assert f"data.limit keeps {kept} of the 100 images of the drop-folder batches" in warning


def test_a_checksum_of_a_batch_file_is_checked_without_a_warning(
    tiny_project, incoming, mnist_train, capsys
):
    images, labels = mnist_train
    batch = incoming / "week1.csv"
    write_csv(batch, images[800:900], labels[800:900])
    listed = f"{INCOMING}/week1.csv"
    edit_params(
        tiny_project, "data", checksums={listed: hashlib.sha256(batch.read_bytes()).hexdigest()}
    )
    ingest(tiny_project)
    assert "data.checksums" not in capsys.readouterr().err
    edit_params(tiny_project, "data", checksums={listed: "0" * 64})
    with pytest.raises(DigitpipeError, match="checksum mismatch"):
        ingest(tiny_project)


def test_incoming_null_turns_the_folder_off(tiny_project, incoming, mnist_train):
    images, labels = mnist_train
    write_csv(incoming / "week1.csv", images[900:950], labels[900:950])
    edit_params(tiny_project, "data", incoming=None)
    summary = ingest(tiny_project)
    assert "incoming" not in summary and summary["splits"]["train"]["count"] == 540


def test_a_held_out_test_split_never_takes_batch_images(tiny_project, incoming, mnist_train):
    images, labels = mnist_train
    edit_params(tiny_project, "data", test=None, test_fraction=0.2)
    ingest(tiny_project)
    test_before = (tiny_project / PROCESSED_DIR / "test.parquet").read_bytes()
    write_csv(incoming / "week1.csv", images[900:1000], labels[900:1000])
    summary = ingest(tiny_project)
    assert (tiny_project / PROCESSED_DIR / "test.parquet").read_bytes() == test_before
    assert summary["incoming"]["batches"]["week1"]["in_splits"]["train"] > 0


def test_batch_ids_name_their_batch():
    ids = make_ids(f"{INCOMING_PREFIX}2025-06-02-a", 13)
    assert ids[12] == "incoming/2025-06-02-a-000012" and batch_of(ids[12]) == "2025-06-02-a"
    assert batch_of("train-000012") is None


def test_test_images_in_a_batch_or_the_training_source_are_dropped_with_a_warning(
    tiny_project, incoming, mnist_train, capsys
):
    images, labels = mnist_train
    write_csv(
        incoming / "week1.csv", images[np.r_[900:990, 700:710]], labels[np.r_[900:990, 700:710]]
    )
    write_idx(
        np.r_[images[:600], images[750:753]],
        tiny_project / "data/raw/train-images.gz",
        compress=True,
    )
    write_idx(
        np.r_[labels[:600], labels[750:753]],
        tiny_project / "data/raw/train-labels.gz",
        compress=True,
    )
    summary = ingest(tiny_project)

    warnings = capsys.readouterr().err
    assert f"{INCOMING}/week1.csv: dropped 10 images identical to test images" in warnings
    assert "data/raw/train-images.gz: dropped 3 images identical to test images" in warnings
    splits = {
        s: read_split(tiny_project / PROCESSED_DIR / f"{s}.parquet") for s in ("train", "val")
    }
    held = {image.tobytes() for image in images[600:800]}  # the tiny project's test split
    assert not any(image.tobytes() in held for split in splits.values() for image in split.images)
    assert sum(len(split) for split in splits.values()) == 600 + 90
    week1 = summary["incoming"]["batches"]["week1"]
    assert week1["count"] == 100 and week1["identical_to_test"] == 10
    assert sum(week1["in_splits"].values()) == 90
    assert summary["duplicates"]["dropped_as_test_images"] == {
        "data/raw/train-images.gz": 3,
        f"{INCOMING}/week1.csv": 10,
    }
    assert summary["duplicates"]["across"] == {"train/val": 0, "train/test": 0, "val/test": 0}


def test_duplicates_within_and_across_splits_are_counted(tiny_project, incoming, mnist_train):
    images, labels = mnist_train
    assert "duplicates" not in ingest(tiny_project)  # 800 distinct images
    again = np.r_[0:600, 0:600]  # every training image twice: some copies land in val
    write_csv(incoming / "again.csv", images[again], labels[again])
    duplicates = ingest(tiny_project)["duplicates"]
    splits = {
        s: read_split(tiny_project / PROCESSED_DIR / f"{s}.parquet") for s in ("train", "val")
    }
    distinct = {s: len({image.tobytes() for image in split.images}) for s, split in splits.items()}
    assert duplicates["within"] == {
        "train": len(splits["train"]) - distinct["train"],
        "val": len(splits["val"]) - distinct["val"],
        "test": 0,
    }
    in_val = {image.tobytes() for image in splits["val"].images}
    in_both = sum(image.tobytes() in in_val for image in splits["train"].images)
    assert duplicates["across"]["train/val"] == in_both > 0  # train images found in val
    assert duplicates["dropped_as_test_images"] == {}
