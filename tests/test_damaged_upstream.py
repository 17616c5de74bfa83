"""Damaged or tampered upstream outputs (a split's Parquet, a stage's JSON or Markdown report):
each is refused with one message naming the file, the fault and the stage to rerun, exit status
2, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.data import QUICK_TRAIN, default_params
from helpers.errors import assert_user_error
from helpers.project import run_cli

from digitpipe.activations.run import run as activations
from digitpipe.core.config import load_params
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.files import MAX_REPORT_BYTES
from digitpipe.dataset.idx import write_idx
from digitpipe.dataset.images import ImageSet, make_ids
from digitpipe.dataset.parquet import META_KEY, read_split, write_split
from digitpipe.evaluate.run import run as evaluate
from digitpipe.ingest.run import run as ingest
from digitpipe.outputs.ingest import split_file
from digitpipe.train.run import run as train

CLASSES = [str(digit) for digit in range(10)]


@pytest.fixture()
def split(tmp_path, mnist_train) -> Path:
    """A split of 50 real MNIST digits, written by write_split."""
    images, labels = mnist_train
    written = ImageSet(make_ids("train", 50), images[:50], labels[:50], tuple(CLASSES))
    write_split(written, tmp_path / "train.parquet")
    return tmp_path / "train.parquet"


def meta(**changes) -> dict[bytes, bytes]:
    """Schema metadata of a 28 x 28 split with ``changes``."""
    return {META_KEY: json.dumps({"height": 28, "width": 28, "class_names": CLASSES} | changes)}


def with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """``table`` with its column ``name`` replaced by ``values``, the metadata kept."""
    return table.set_column(table.schema.get_field_index(name), name, values)


def labels(*values: int | None) -> pa.Array:
    """50 labels: ``values`` first, then zeros."""
    return pa.array([*values, *[0] * (50 - len(values))], pa.int16())


# How a split is damaged (the table as written -> the table written instead), and the fault.
TAMPERED = {
    "metadata not JSON": (
        lambda t: t.replace_schema_metadata({META_KEY: b"{not json"}),
        "its digitpipe metadata is not valid JSON",
    ),
    "metadata not an object": (
        lambda t: t.replace_schema_metadata({META_KEY: b"[28, 28]"}),
        "its digitpipe metadata must be a JSON object, not [28, 28]",
    ),
    "no metadata": (
        lambda t: t.replace_schema_metadata(None),
        "no digitpipe metadata in its schema",
    ),
    "huge size": (
        lambda t: t.replace_schema_metadata(meta(height=10**6, width=10**6)),
        "its images are 784 bytes each, but its digitpipe metadata says height * width is "
        "1000000000000",
    ),
    "size not the pixels'": (
        lambda t: t.replace_schema_metadata(meta(height=14)),
        "its images are 784 bytes each, but its digitpipe metadata says height * width is 392",
    ),
    "zero height": (
        lambda t: t.replace_schema_metadata(meta(height=0, width=784**2)),
        "height and width in its digitpipe metadata must be positive whole numbers, not 0,",
    ),
    "height as text": (
        lambda t: t.replace_schema_metadata(meta(height="28")),
        "height and width in its digitpipe metadata must be positive whole numbers, not '28', 28",
    ),
    "class names a string": (
        lambda t: t.replace_schema_metadata(meta(class_names="0123456789")),
        "class_names in its digitpipe metadata must be a list of distinct strings, not "
        "'0123456789'",
    ),
    "class names repeated": (
        lambda t: t.replace_schema_metadata(meta(class_names=["a", "a"])),
        "must be a list of distinct strings, not ['a', 'a']",
    ),
    "class names numbers": (
        lambda t: t.replace_schema_metadata(meta(class_names=list(range(10)))),
        "must be a list of distinct strings, not [0, 1, 2",
    ),
    "label too high": (
        lambda t: with_column(t, "label", labels(3, 99)),
        "1 label outside the class indices 0 to 9, e.g. 99 (row 1)",
    ),
    "labels negative": (
        lambda t: with_column(t, "label", labels(-1, -1)),
        "2 labels outside the class indices 0 to 9, e.g. -1 (row 0)",
    ),
    "some labels null": (
        lambda t: with_column(t, "label", labels(None, 4, None)),
        "2 of its 50 labels are null",
    ),
    "no label column": (
        lambda t: t.drop_columns(["label"]),
        "it needs exactly one column 'label', it has ['image_id', 'pixels']",
    ),
    "no pixels column": (
        lambda t: t.drop_columns(["pixels"]),
        "it needs exactly one column 'pixels', it has ['image_id', 'label']",
    ),
    "two pixels columns": (
        lambda t: t.append_column("pixels", t.column("pixels")),
        "it needs exactly one column 'pixels', it has ['image_id', 'label', 'pixels', 'pixels']",
    ),
    "labels as text": (
        lambda t: with_column(t, "label", pa.array(["0"] * 50)),
        "column 'label' is string, not an integer type",
    ),
    "pixels of varying size": (
        lambda t: with_column(t, "pixels", t.column("pixels").cast(pa.binary())),
        "column 'pixels' is binary, not fixed_size_binary",
    ),
    "ids as numbers": (
        lambda t: with_column(t, "image_id", pa.array(range(50))),
        "column 'image_id' is int64, not string",
    ),
    "an image null": (
        lambda t: with_column(
            t, "pixels", pa.array([None, *t.column("pixels").to_pylist()[1:]], pa.binary(784))
        ),
        "column 'pixels' has 1 null value",
    ),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_tampered_split_is_refused_naming_the_fault(split, case):
    damage, fault = TAMPERED[case]
    pq.write_table(damage(pq.read_table(split)), split)
    with pytest.raises(DigitpipeError) as error:
        read_split(split)
    assert str(error.value).startswith(f"{split}: ")
    assert fault in str(error.value)
    assert str(error.value).endswith("; rerun the ingest stage (dvc repro ingest).")


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        (None, "cannot read the file (No such file or directory)"),
        (b"junk", "cannot read the Parquet split (Parquet file size is 4 bytes"),
    ],
)
def test_missing_or_unreadable_split_is_refused(split, content, fault):
    if content is None:
        split.unlink()
    else:
        split.write_bytes(content)
    with pytest.raises(DigitpipeError, match="dvc repro ingest") as error:
        read_split(split)
    assert str(error.value).startswith(f"{split}: {fault}")


def test_untampered_splits_read_back_labelled_or_not(split, mnist_train):
    images, digits = mnist_train
    labelled = read_split(split)
    np.testing.assert_array_equal(labelled.images, images[:50])
    np.testing.assert_array_equal(labelled.labels, digits[:50])
    write_split(ImageSet(make_ids("predict", 5), images[:5], None, tuple(CLASSES)), split)
    unlabelled = read_split(split)  # the predict split: every label null
    assert unlabelled.labels is None and unlabelled.ids.tolist() == make_ids("predict", 5).tolist()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mnist_train) -> Path:
    """A tiny project through ingest, train, evaluate and activations: every input the report
    and activations stages read (copy it before damaging it)."""
    project = tmp_path_factory.mktemp("finished")
    images, digits = mnist_train
    for split, rows in {"train": slice(0, 600), "test": slice(600, 800)}.items():
        write_idx(images[rows], project / f"{split}-images")
        write_idx(digits[rows], project / f"{split}-labels")
    sources = {
        split: {"images": f"{split}-images", "labels": f"{split}-labels"}
        for split in ("train", "test")
    }
    params = default_params(
        sources, train=QUICK_TRAIN, track={"enabled": False}, runtime={"progress": "none"}
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    loaded = load_params(project / "params.yaml")
    for stage in (ingest, train, evaluate, activations):
        stage(loaded, project)
    return project


@pytest.fixture()
def project(finished, tmp_path) -> Path:
    """A copy of the finished project, to damage."""
    return Path(shutil.copytree(finished, tmp_path / "project"))


@pytest.mark.parametrize("stage", ["evaluate", "train"])
def test_stages_refuse_a_label_outside_the_classes(project, stage, monkeypatch, capsys):
    damaged = project / split_file("test" if stage == "evaluate" else "train")
    table = pq.read_table(damaged)
    values = table.column("label").to_pylist()
    pq.write_table(with_column(table, "label", pa.array([99, *values[1:]], pa.int16())), damaged)
    err = assert_user_error((run_cli(project, monkeypatch, stage), capsys), alone=True)
    assert f"{split_file(damaged.stem)}: 1 label outside the class indices 0 to 9, e.g. 99" in err
    assert "dvc repro ingest" in err


# A report file, what it is replaced with (None: deleted), the fault and the stage that writes it.
DAMAGED_REPORTS = [
    ("reports/ingest/summary.json", b"[1, 2]", "expected a JSON object, not [1, 2]", "ingest"),
    (
        "reports/train/summary.json",
        b"{}",
        "unexpected content: parameters: Field required",
        "train",
    ),
    ("reports/evaluate/scores.json", b"junk", "not valid JSON (Expecting value", "evaluate"),
    (
        "reports/evaluate/worst_cases.json",
        b"{}",
        "unexpected content: most_confused_pair:",
        "evaluate",
    ),
    ("reports/evaluate/stats.md", None, "cannot read the file (No such file", "evaluate"),
    ("reports/evaluate/stats.md", b"\xff\xfe", "not UTF-8 text (invalid start byte)", "evaluate"),
    ("reports/activations/manifest.json", None, "cannot read the file (No such", "activations"),
    ("models/recipe.json", b"{", "not valid JSON", "train"),
    ("models/model.json", b'{"height": 28}', "unexpected content: arch: Field required", "train"),
    ("models/model.safetensors", None, "cannot read the file (No such file", "train"),
    ("reports/evaluate/confusion.png", None, "cannot read the file (No such file", "evaluate"),
    ("reports/ingest/summary.json", b" " * (MAX_REPORT_BYTES + 1), "larger than 16 MiB", "ingest"),
]


@pytest.mark.parametrize(("name", "content", "fault", "writer"), DAMAGED_REPORTS)
def test_report_refuses_damaged_inputs(project, name, content, fault, writer, monkeypatch, capsys):
    if content is None:
        (project / name).unlink()
    else:
        (project / name).write_bytes(content)
    err = assert_user_error((run_cli(project, monkeypatch, "report"), capsys), alone=True)
    assert f"error: {name}: {fault}" in err
    assert err.endswith(f"; rerun the {writer} stage (dvc repro {writer}).\n")
    assert not (project / "reports/report.md").exists()


# A report, an edit of one value deep inside it (keys and list indices, then the new value),
# and the fault the report stage names.
EDITED_REPORTS = [
    ("reports/ingest/summary.json", ["splits", "train", "count", "many"], "splits.train.count:"),
    ("reports/ingest/summary.json", ["splits", "val", "count", "54"], "val.count: Input should"),
    ("reports/evaluate/scores.json", ["test", "accuracy", None], "test.accuracy: Input should"),
    ("reports/evaluate/worst_cases.json", ["most_confused_pair", "count", [1]], "pair.count:"),
    ("reports/activations/manifest.json", ["layers", 0, "shape", "4x4"], "layers.0.shape:"),
    ("models/recipe.json", ["augment", "rotation", "a lot"], "augment.rotation: Input should"),
]


@pytest.mark.parametrize(("name", "edit", "fault"), EDITED_REPORTS)
def test_report_names_a_wrong_value_deep_in_a_report(
    project, name, edit, fault, monkeypatch, capsys
):
    *keys, last, value = edit
    report = json.loads((project / name).read_text())
    inner = report
    for key in keys:
        inner = inner[key]
    inner[last] = value
    (project / name).write_text(json.dumps(report))
    err = assert_user_error((run_cli(project, monkeypatch, "report"), capsys), alone=True)
    assert f"error: {name}: unexpected content: " in err and fault in err
    assert not (project / "reports/report.md").exists()


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        (b"junk", "not valid JSON"),
        (b"[]", "expected a JSON object, not []"),
        (b'{"typical": {}}', "unexpected content: most_confused_pair: Field required (and 1 more)"),
    ],
)
def test_activations_refuse_damaged_worst_cases(project, content, fault, monkeypatch, capsys):
    (project / "reports/evaluate/worst_cases.json").write_bytes(content)
    err = assert_user_error((run_cli(project, monkeypatch, "activations"), capsys), alone=True)
    assert f"error: reports/evaluate/worst_cases.json: {fault}" in err
    assert err.endswith("; rerun the evaluate stage (dvc repro evaluate).\n")


def flip_a_bit(path: Path) -> None:
    """Flip the lowest bit of a byte of the tensor data (the header stays valid)."""
    data = bytearray(path.read_bytes())
    data[-4] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["evaluate", "activations", "report", "predict"])
def test_weights_changed_after_training_are_refused(project, command, monkeypatch, capsys):
    weights = project / "models/model.safetensors"
    flip_a_bit(weights)
    args = ["test-images", "--out", "out.csv"] if command == "predict" else []
    err = assert_user_error(
        (run_cli(project, monkeypatch, command, *args), capsys),
        "but model.json records",
        "`dvc checkout models`",
        alone=True,
    )
    assert err.startswith("digitpipe: error: models/model.safetensors: the weights' SHA-256 is ")
    assert not (project / "out.csv").exists() and not (project / "reports/report.md").exists()
