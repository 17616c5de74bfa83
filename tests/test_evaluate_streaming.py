"""Evaluate and activations on splits of many row groups: the pixels read a row group at a time,
or just the rows a picture needs, with the outputs of a split read whole (issue 34).

The tiny project's test split (200 images) is ingested in row groups of GROUP_ROWS images and
evaluated by an untrained, seeded model (the reading is under test, not the training)."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.project import edit_params, ingest

from digitpipe.activations.run import barcode_sample
from digitpipe.activations.run import run as activations
from digitpipe.core.config import load_params
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset import parquet
from digitpipe.dataset.images import ImageSet
from digitpipe.dataset.parquet import open_split, read_split, split_layout, write_split
from digitpipe.evaluate.run import run as evaluate
from digitpipe.model import inference
from digitpipe.model.export import ModelSpec, save_model
from digitpipe.outputs.ingest import split_file
from digitpipe.outputs.train import MODEL_DIR

GROUP_ROWS = 25  # 8 row groups of the 200 test images
BATCH = 16  # evaluate.batch_size: batches cross the row groups' ends


def evaluated_project(project: Path, monkeypatch, group_rows: int | None) -> Path:
    """``project`` ingested (in row groups of ``group_rows`` images, or as ingest writes them), a
    seeded untrained tinycnn saved as its model, then evaluate and activations run."""
    edit_params(project, "evaluate", batch_size=BATCH)
    with monkeypatch.context() as patch:
        if group_rows:
            patch.setattr(parquet, "ROW_GROUP_BYTES", group_rows * 28 * 28)
        ingest(project)
    torch.manual_seed(0)
    spec = ModelSpec("tinycnn", 28, 28, [str(k) for k in range(10)], 33.3, 78.6, test_time_shift=1)
    save_model(spec.build(), spec, project / MODEL_DIR)
    params = load_params(project / "params.yaml")
    evaluate(params, project)
    activations(params, project)
    return project


def report_files(project: Path) -> dict[str, bytes]:
    folders = [project / "reports" / stage for stage in ("evaluate", "activations")]
    return {
        str(path.relative_to(project)): path.read_bytes()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_split_in_many_row_groups_gives_the_reports_of_one(tiny_project, monkeypatch):
    whole = report_files(evaluated_project(tiny_project, monkeypatch, None))
    assert len(split_layout(tiny_project / split_file("test")).group_rows) == 1
    evaluated_project(tiny_project, monkeypatch, GROUP_ROWS)
    assert len(split_layout(tiny_project / split_file("test")).group_rows) == 200 // GROUP_ROWS
    assert {"predictions.parquet", "typical_images.png", "activations.safetensors"} <= {
        Path(name).name for name in whole
    }
    assert report_files(tiny_project) == whole  # every file, pictures too, byte for byte


class PixelReads:
    """Every read of a row group's pixels (``parquet._group_pixels``, where all are read) from
    the real file: (file name, row group, images) in ``reads``, ``("read", images)`` in
    ``events``; and how many earlier reads' pixels were still held at each read (each read
    returns a copy, whose holders keep it alive)."""

    def __init__(self, monkeypatch, events: list | None = None) -> None:
        self.reads: list[tuple[str, int, int]] = []
        self.held_at_reads: list[int] = []
        self.events = [] if events is None else events
        self._held: list[weakref.ref] = []
        monkeypatch.setattr(parquet, "_group_pixels", self._reading(parquet._group_pixels))

    def _reading(self, real):
        def reading(path, file, group, size):
            self.held_at_reads.append(sum(ref() is not None for ref in self._held))
            pixels = np.array(real(path, file, group, size))
            self._held.append(weakref.ref(pixels))
            self.reads.append((path.name, group, len(pixels)))
            self.events.append(("read", len(pixels)))
            return pixels

        return reading


def test_evaluate_holds_one_row_group_of_pixels_at_a_time(tiny_project, monkeypatch):
    evaluated_project(tiny_project, monkeypatch, GROUP_ROWS)  # the model and parted splits
    events: list[tuple[str, int]] = []
    pixels = PixelReads(monkeypatch, events)
    real_views = inference.shifted_views

    def classifying(batch, shift):
        events.append(("classified", len(batch)))
        return real_views(batch, shift)

    monkeypatch.setattr(inference, "shifted_views", classifying)
    evaluate(load_params(tiny_project / "params.yaml"), tiny_project)
    # val, then test: each row group read once, whole, in order; then the galleries' few
    groups = [len(split_layout(tiny_project / split_file(s)).group_rows) for s in ("val", "test")]
    assert groups[1] == 200 // GROUP_ROWS
    streamed = [(name, group) for name, group, _ in pixels.reads[: sum(groups)]]
    assert streamed == [("val.parquet", k) for k in range(groups[0])] + [
        ("test.parquet", k) for k in range(groups[1])
    ]
    assert max(rows for _, _, rows in pixels.reads) <= GROUP_ROWS
    # When a row group is read, every row read before it has been classified but for fewer
    # than a batch (copied), and no earlier row group's pixels are still held.
    last = max(k for k, (what, _) in enumerate(events) if what == "classified")
    read = classified = 0
    for what, rows in events[: last + 1]:
        if what == "read":
            assert read - classified < BATCH
            read += rows
        else:
            classified += rows
    assert (
        read
        == classified
        == sum(len(open_split(tiny_project / split_file(s))) for s in ("val", "test"))
    )
    assert pixels.held_at_reads == [0] * len(pixels.reads)


def test_evaluate_checks_a_split_before_reading_its_pixels(tiny_project, monkeypatch):
    evaluated_project(tiny_project, monkeypatch, GROUP_ROWS)
    spec = ModelSpec("softmax", 28, 28, [f"c{k}" for k in range(10)], 33.3, 78.6)
    save_model(spec.build(), spec, tiny_project / MODEL_DIR)
    pixels = PixelReads(monkeypatch)
    with pytest.raises(DigitpipeError, match="differ from the model's"):
        evaluate(load_params(tiny_project / "params.yaml"), tiny_project)
    assert pixels.reads == []


def test_activations_read_only_the_row_groups_of_the_images_they_draw(tiny_project, monkeypatch):
    evaluated_project(tiny_project, monkeypatch, GROUP_ROWS)
    edit_params(tiny_project, "activations", typical=False, worst_cases=2, barcode_images=1)
    pixels = PixelReads(monkeypatch)
    manifest = activations(load_params(tiny_project / "params.yaml"), tiny_project)
    test = open_split(tiny_project / split_file("test"))
    chosen = [int(np.flatnonzero(test.ids == image["image_id"])[0]) for image in manifest["images"]]
    drawn = {row // GROUP_ROWS for row in [*chosen, *barcode_sample(test, 1)]}
    assert {group for _, group, _ in pixels.reads} == drawn
    assert len(drawn) < 200 // GROUP_ROWS  # the test could tell
    assert pixels.held_at_reads == [0] * len(pixels.reads)


def test_chosen_rows_come_from_their_row_groups(tmp_path, monkeypatch):
    rows = np.arange(95)
    images = np.stack([rows, rows // 7, rows % 3, rows % 5], axis=1).astype(np.uint8)
    split = ImageSet(
        rows.astype(str).astype(object), images.reshape(-1, 2, 2), rows % 10, tuple("0123456789")
    )
    with monkeypatch.context() as patch:
        patch.setattr(parquet, "ROW_GROUP_BYTES", 10 * 4)  # row groups of 10 images
        write_split(split, tmp_path / "test.parquet")
    opened = open_split(tmp_path / "test.parquet")
    assert np.array_equal(opened.ids, split.ids) and np.array_equal(opened.labels, split.labels)
    pixels = PixelReads(monkeypatch)
    wanted = np.array([93, 3, 12, 3, 0, 19])
    assert np.array_equal(opened.images[wanted], images.reshape(-1, 2, 2)[wanted])
    assert np.array_equal(opened.images[94], images.reshape(-1, 2, 2)[94])
    assert [group for _, group, _ in pixels.reads] == [0, 1, 9, 9]
    assert np.array_equal(
        np.concatenate(list(opened.images.groups())), read_split(tmp_path / "test.parquet").images
    )
    with pytest.raises(IndexError):
        opened.images[np.array([95])]
