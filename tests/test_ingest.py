"""The ingest stage on real MNIST digits: splits, layout, determinism, CSV parity and bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.data import MNIST, REPO, mnist_data, write_csv
from helpers.errors import assert_user_error
from helpers.project import edit_params, ingest
from PIL import Image

from digitpipe.cli import main
from digitpipe.core.config import load_params
from digitpipe.dataset.idx import read_idx, write_idx
from digitpipe.dataset.parquet import read_split
from digitpipe.ingest.run import build_splits
from digitpipe.outputs.ingest import INGEST_REPORTS, PROCESSED_DIR


def test_splits_are_stratified_and_map_back_to_the_source(tiny_project, mnist_train):
    summary = ingest(tiny_project)
    images, labels = mnist_train
    assert {k: v["count"] for k, v in summary["splits"].items()} == {
        "train": 540,
        "val": 60,
        "test": 200,
    }
    train = read_split(tiny_project / PROCESSED_DIR / "train.parquet")
    val = read_split(tiny_project / PROCESSED_DIR / "val.parquet")
    source_counts = np.bincount(labels[:600], minlength=10)
    assert np.abs(np.bincount(val.labels, minlength=10) - source_counts * 0.1).max() <= 1
    rows = np.array([int(i.split("-")[1]) for i in np.concatenate([train.ids, val.ids])])
    assert sorted(rows) == list(range(600))
    np.testing.assert_array_equal(train.images, images[rows[:540]])
    np.testing.assert_array_equal(train.labels, labels[rows[:540]])
    test = read_split(tiny_project / PROCESSED_DIR / "test.parquet")
    assert test.ids[0] == "test-000000" and test.labels[0] == labels[600]


def test_parquet_layout_is_self_describing(tiny_project, mnist_train):
    ingest(tiny_project)
    table = pq.read_table(tiny_project / PROCESSED_DIR / "val.parquet")
    assert table.column_names == ["image_id", "label", "pixels"]
    meta = json.loads(table.schema.metadata[b"digitpipe"])
    assert meta == {"height": 28, "width": 28, "class_names": [str(i) for i in range(10)]}
    assert table.schema.field("image_id").type == pa.string()
    assert table.schema.field("label").type == pa.int16()
    assert table.schema.field("pixels").type == pa.binary(28 * 28)  # fixed_size_binary(H*W)
    # Decoded as the README shows, without this package: the source images and labels.
    images = np.frombuffer(b"".join(table.column("pixels").to_pylist()), np.uint8)
    rows = [int(image_id.split("-")[1]) for image_id in table.column("image_id").to_pylist()]
    np.testing.assert_array_equal(images.reshape(len(table), 28, 28), mnist_train[0][rows])
    assert table.column("label").to_pylist() == mnist_train[1][rows].tolist()


def test_same_params_give_byte_identical_files_and_seed_changes_split(tiny_project):
    ingest(tiny_project)
    first = {p.name: p.read_bytes() for p in (tiny_project / PROCESSED_DIR).iterdir()}
    ingest(tiny_project)
    assert first == {p.name: p.read_bytes() for p in (tiny_project / PROCESSED_DIR).iterdir()}
    edit_params(tiny_project, "data", seed=7)
    ingest(tiny_project)
    assert (tiny_project / PROCESSED_DIR / "val.parquet").read_bytes() != first["val.parquet"]


def test_reports_summary_and_pictures(tiny_project):
    ingest(tiny_project)
    summary = json.loads((tiny_project / INGEST_REPORTS / "summary.json").read_text())
    assert sum(summary["splits"]["test"]["per_class"].values()) == 200
    for name in ("class_distribution.png", "sample_images.png"):
        picture = np.asarray(Image.open(tiny_project / INGEST_REPORTS / name).convert("L"))
        assert picture.shape[0] > 200 and picture.shape[1] > 400
        assert picture.std() > 20, f"{name} looks blank"


def test_limit_caps_each_split_with_a_stratified_sample(tiny_project):
    edit_params(tiny_project, "data", limit={"train": 100, "val": 20, "test": 50, "predict": None})
    splits = build_splits(load_params(tiny_project / "params.yaml").data, tiny_project)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [100, 20, 50]
    assert np.bincount(splits["train"].labels, minlength=10).min() >= 5


def test_a_checksum_of_no_source_file_is_reported(tiny_project, capsys):
    ingest(tiny_project)
    assert "data.checksums" not in capsys.readouterr().err
    typo = "data/raw/train-image.gz"  # the source is train-images.gz
    edit_params(tiny_project, "data", checksums={typo: "0" * 64})
    ingest(tiny_project)
    assert f"data.checksums lists {typo}, which is no file of" in capsys.readouterr().err


def test_kaggle_csv_matches_the_idx_path(tmp_path, mnist_train):
    images, labels = mnist_train[0][:3000], mnist_train[1][:3000]
    write_idx(images, tmp_path / "images.gz", compress=True)
    write_idx(labels, tmp_path / "labels.gz", compress=True)
    write_csv(tmp_path / "train.csv", images, labels)
    params = mnist_data()
    from_idx = build_splits(
        params.model_copy(
            update={
                "train": params.train.model_copy(
                    update={"images": "images.gz", "labels": "labels.gz"}
                ),
                "test": None,
                "test_fraction": 0.2,
                "checksums": {},
            }
        ),
        tmp_path,
    )
    from_csv = build_splits(
        params.model_copy(
            update={
                "train": params.train.model_validate({"csv": "train.csv"}),
                "test": None,
                "test_fraction": 0.2,
                "checksums": {},
            }
        ),
        tmp_path,
    )
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(from_csv[split].images, from_idx[split].images)
        np.testing.assert_array_equal(from_csv[split].labels, from_idx[split].labels)
        np.testing.assert_array_equal(from_csv[split].ids, from_idx[split].ids)
    assert len(from_idx["test"]) == 600 and len(from_idx["val"]) == 240


def test_pixels_only_csv_becomes_the_predict_split(tiny_project, mnist_train):
    write_csv(tiny_project / "data/raw/test.csv", mnist_train[0][:30], None)
    edit_params(tiny_project, "data", predict={"csv": "data/raw/test.csv"})
    ingest(tiny_project)
    predict = read_split(tiny_project / PROCESSED_DIR / "predict.parquet")
    assert predict.labels is None and predict.ids[0] == "predict-000000"
    np.testing.assert_array_equal(predict.images, mnist_train[0][:30])


def test_non_square_csv_uses_image_size(tiny_project):
    rng = np.random.default_rng(0)
    write_csv(
        tiny_project / "data/raw/wide.csv", rng.integers(0, 256, (40, 4, 6)), np.arange(40) % 10
    )
    edit_params(
        tiny_project,
        "data",
        train={"csv": "data/raw/wide.csv"},
        test=None,
        test_fraction=0.25,
        image_size=[4, 6],
    )
    splits = build_splits(load_params(tiny_project / "params.yaml").data, tiny_project)
    assert splits["train"].image_size == (4, 6) and len(splits["test"]) == 10


def test_full_mnist_acceptance(tmp_path):
    splits = build_splits(mnist_data(), REPO)
    assert len(splits["train"]) + len(splits["val"]) == 60000 and len(splits["test"]) == 10000
    train_counts = np.bincount(np.concatenate([splits["train"].labels, splits["val"].labels]))
    assert train_counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(splits["test"].labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    first = splits["train"].ids[0]
    source_row = int(first.split("-")[1])
    assert source_row == 0 and read_idx(MNIST / "train-labels-idx1-ubyte.gz")[source_row] == 5
    assert splits["train"].labels[0] == 5


# Each bad input: (how to break the tiny project, words the message must contain).
def _truncate(project):
    path = project / "data/raw/test-images"
    path.write_bytes(path.read_bytes()[:-100])


def _wrong_magic(project):
    path = project / "data/raw/test-images"
    path.write_bytes(b"\x00\x00\x99\x03" + path.read_bytes()[4:])


def _dims_disagree(project):
    path = project / "data/raw/test-images"
    path.write_bytes(path.read_bytes() + bytes(784))


def _counts_differ(project):
    write_idx(read_idx(project / "data/raw/test-labels")[:150], project / "data/raw/test-labels")


def _label_out_of_range(project):
    labels = read_idx(project / "data/raw/test-labels").copy()
    labels[17] = 12
    write_idx(labels, project / "data/raw/test-labels")


def _stray_training_label(project):
    labels = read_idx(project / "data/raw/train-labels.gz").copy()
    labels[5] = 200
    write_idx(labels, project / "data/raw/train-labels.gz", compress=True)


def _fractional_pixel(project):
    images = read_idx(project / "data/raw/test-images").astype(np.float32)
    images[3, 5, 7] = 0.5
    write_idx(images, project / "data/raw/test-images")


def _scaled_to_one(project):
    images = read_idx(project / "data/raw/test-images").astype(np.float32)
    write_idx(images / 255, project / "data/raw/test-images")


def _too_small_for_the_model(project):
    """12x12 images (the centre of the digits) for LeNet, which takes 16x16 or more."""
    for name in ("train-images.gz", "test-images"):
        path = project / "data/raw" / name
        write_idx(read_idx(path)[:, 8:20, 8:20], path, compress=name.endswith(".gz"))
    edit_params(project, "model", arch="lenet")


def _fractional_label(project):
    labels = read_idx(project / "data/raw/test-labels").astype(np.float64)
    labels[4] = 1.5
    write_idx(labels, project / "data/raw/test-labels")


def _empty(project):
    (project / "data/raw/test-images").write_bytes(b"")


def _checksum(project):
    edit_params(project, "data", checksums={"data/raw/train-labels.gz": "0" * 64})


def _csv_train(project, text):
    (project / "data/raw/train.csv").write_text(text)
    digits = [str(k) for k in range(10)]  # labels must then be 0..9
    edit_params(project, "data", train={"csv": "data/raw/train.csv"}, class_names=digits)


CSV_HEADER = "label," + ",".join(f"pixel{i}" for i in range(4))


def _csv_rows(rows: str):
    """A way to break the tiny project: a training CSV of CSV_HEADER, then ``rows``."""
    return lambda project: _csv_train(project, f"{CSV_HEADER}\n{rows}")


BAD_INPUTS = {
    "truncated": (_truncate, ["test-images", "truncated"]),
    "wrong magic": (_wrong_magic, ["test-images", "wrong magic number"]),
    "dims disagree": (_dims_disagree, ["test-images", "longer than its header says"]),
    "count mismatch": (_counts_differ, ["test-labels", "150 labels for 200 images"]),
    "label range": (_label_out_of_range, ["test-labels", "label 12", "out of range"]),
    "stray training label": (
        _stray_training_label,
        ["largest training label is 200", "classes are 0..200", "'10', '11'", "stray label"],
    ),
    "idx fractional pixel": (_fractional_pixel, ["test-images", "0.5 in image 3", "0..255"]),
    "idx fractional label": (_fractional_label, ["test-labels", "label 1.5", "not a whole number"]),
    "too small for model.arch": (  # refused before any output, not first at train
        _too_small_for_the_model,
        ["model.arch 'lenet' needs images of at least 16x16 pixels; these are 12x12", "mlp"],
    ),
    "idx shape": (
        lambda p: write_idx(np.zeros((5, 4, 4, 3), np.uint8), p / "data/raw/test-images"),
        ["test-images", "N x H x W", "(5, 4, 4, 3)"],
    ),
    "idx no images": (
        lambda p: write_idx(np.zeros((0, 28, 28), np.uint8), p / "data/raw/test-images"),
        ["test-images", "holds no images"],
    ),
    "empty file": (_empty, ["test-images", "empty"]),
    "val_fraction too small for one image": (
        lambda p: edit_params(p, "data", val_fraction=0.0005),
        ["data.val_fraction 0.0005 of 600 labelled images holds out no image", "0.0017"],
    ),
    "test_fraction too small for one image": (
        lambda p: edit_params(p, "data", test=None, test_fraction=0.0005),
        ["data.test_fraction 0.0005 of 600 labelled images holds out no image"],
    ),
    "checksum": (_checksum, ["train-labels.gz", "checksum mismatch"]),
    "corrupt gzip": (  # a download cut short: the IDX header arrives, the pixels do not
        lambda p: (p / "data/raw/train-images.gz").write_bytes(
            gzip.compress(
                bytes([0, 0, 8, 3, 0, 0, 2, 88, 0, 0, 0, 28, 0, 0, 0, 28])
                + np.random.default_rng(0).bytes(600 * 784)
            )[:5000]
        ),
        ["train-images.gz", "gzip stream is corrupt or truncated"],
    ),
    "csv no label": (lambda p: _csv_train(p, "a,b,c,d\n1,2,3,4\n"), ["train.csv", "label"]),
    "csv pixel count": (
        lambda p: _csv_train(p, "label,p0,p1,p2\n1,2,3,4\n"),
        ["train.csv", "3 pixel columns is not a square"],
    ),
    "csv image_size": (
        lambda p: (
            _csv_rows("1,2,3,4,5\n")(p),
            edit_params(p, "data", image_size=[1, 3]),
        ),
        ["train.csv", "wrong pixel count: 4 pixels per image", "data.image_size 1x3 needs 3"],
    ),
    "idx image_size": (  # an IDX file has its own size: a different promise is refused
        lambda p: edit_params(p, "data", image_size=[14, 56]),
        ["train-images.gz", "the images are 28x28 pixels, but data.image_size is 14x56"],
    ),
    "csv value of 5000 digits": (
        _csv_rows(f"1,2,3,4,{'9' * 5000}\n"),
        ["train.csv", "'pixel3' has a value that reads as infinite", "data row 1"],
    ),
    "csv row longer than a block": (  # pyarrow's own words ("straddling object") stay hidden
        _csv_rows(f"1,2,3,4,5\n1,2,3,4,{'5' * 2**21}\n"),
        ["train.csv", "line 3 (the longest) is longer than 1,048,576 bytes while"],
    ),
    "incoming holds the sources": (  # the test set would be appended to training
        lambda p: edit_params(p, "data", incoming="data/raw"),
        ["data/raw: data.incoming holds the source data/raw/"],
    ),
    "csv non-numeric": (
        _csv_rows("1,2,x,4,5\n"),
        ["train.csv", "'pixel1' is not numeric"],
    ),
    "csv negative": (
        _csv_rows("1,2,3,-4,5\n"),
        ["train.csv", "'pixel2'", "-4", "not a whole number in 0..255"],
    ),
    "csv too bright": (
        _csv_rows("1,2,3,4,256\n"),
        ["train.csv", "'pixel3'", "256"],
    ),
    "csv nan": (
        _csv_rows("1,2,3,4,5\n1,NaN,3,4,5\n"),
        ["train.csv", "'pixel0'", "missing or NaN", "row 2"],
    ),
    "csv fraction": (
        _csv_rows("1,2.5,3,4,5\n"),
        ["train.csv", "2.5", "not a whole number"],
    ),
    "csv pixels scaled 0..1": (
        _csv_rows("1,0,0.329,1,0\n2,0.5,0,0,1\n"),
        ["train.csv", "'pixel1' has value 0.329", "0..255", "within 0..1", "multiply them by 255"],
    ),
    "idx pixels scaled 0..1": (_scaled_to_one, ["test-images", "within 0..1", "by 255"]),
    "csv without a header row": (
        lambda p: _csv_train(p, "0,0,0,0,0\n1,0,0,255,0\n"),
        ["train.csv", "first row holds numbers, not column names", "no header row"],
    ),
    "csv row of too few values": (  # line numbers as an editor shows them: blank lines count
        _csv_rows("1,2,3,4,5\n\n1,2,3\n1,2,3,4,5\n"),
        ["train.csv", "line 4 has 3 values where the header has 5 columns", "fix or remove"],
    ),
    "csv stray quote": (
        _csv_rows('1,2,3,4,5\n1,"2,3,4,5\n1,2,3,4,5\n'),
        ["train.csv", "line 3 has an unpaired double quote", "Remove the stray quote"],
    ),
    "csv empty": (lambda p: _csv_train(p, ""), ["train.csv", "empty"]),
    "csv label range": (
        _csv_rows("10,2,3,4,5\n"),
        ["train.csv", "label 10", "out of range"],
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_clearly_with_no_output(case, tiny_project, monkeypatch, capsys):
    break_it, words = BAD_INPUTS[case]
    break_it(tiny_project)
    monkeypatch.chdir(tiny_project)
    assert_user_error((main(["ingest"]), capsys), *words, alone=True)
    assert not (tiny_project / PROCESSED_DIR).exists()
    assert not (tiny_project / INGEST_REPORTS).exists()
    assert not list((tiny_project / "data").glob(".processed*"))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"val_fraction": 1.5}, ["data.val_fraction", "less than 1", "1.5"]),
        ({"val_fraction": 0}, ["data.val_fraction", "greater than 0"]),
        ({"colour": "red"}, ["data.colour: not a key of data; its keys are train, test, predict"]),
        (
            {"tset_fraction": 0.2},
            ["data.tset_fraction: not a key of data; did you mean data.test_"],
        ),
        (
            {"train": {"imgs": "a"}},
            ["data.train.imgs: not a key of data.train; did you mean data."],
        ),
        ({"train": {"images": "a", "csv": "b"}}, ["data.train: give either 'images'"]),
        (
            {"test_fraction": 0.1},
            [
                "data: give a 'test' source or a 'test_fraction', not both: set data.test: null to "
                "hold out test_fraction of train, or test_fraction: 0 to keep the test source\n"
            ],
        ),
        (
            {"class_names": ["a", "b", "a"]},
            ["data: class_names must be unique, but these appear more than once: ['a']; give"],
        ),
        ({"limit": {"train": 0}}, ["data.limit.train", "greater than 0"]),
        ({"limit": 2000}, ["data.limit", "give a cap per split, e.g. limit: {train: 2000"]),
        ({"class_names": ["a\nb", "c"]}, ["data.class_names.0", "one line of text"]),
        ({"class_names": ["x" * 65, "c"]}, ["data.class_names.0", "at most 64 characters"]),
        (  # YAML reads 0 and true unquoted as a number and a boolean
            {"class_names": [0, "1", True]},
            [
                "data.class_names.0: Input should be a valid string (got 0); quote it to make it "
                "text: '0'",
                "data.class_names.2: Input should be a valid string (got True); quote it to make "
                "it text: 'true'",
            ],
        ),
    ],
)
def test_bad_params_name_the_key(tiny_project, monkeypatch, capsys, changes, words):
    edit_params(tiny_project, "data", **changes)
    monkeypatch.chdir(tiny_project)
    message = assert_user_error((main(["ingest"]), capsys), "params.yaml", *words)
    # A validator's own sentence, without pydantic's prefix or the whole section it was given.
    assert "Value error" not in message and "(got {" not in message


# ---------------------------------------------------------------- IDX types, predict sources


# The IDX type byte of each numpy type (the third byte of the header).
IDX_TYPES = {"i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


@pytest.mark.parametrize("dtype", IDX_TYPES)
def test_idx_of_other_types_with_whole_values_is_read_as_uint8(tiny_project, dtype):
    images = read_idx(tiny_project / "data/raw/test-images")
    labels = read_idx(tiny_project / "data/raw/test-labels")
    if dtype == "i1":  # int8 holds 0..127: halve the pixels
        images = images // 2
    write_idx(images.astype(dtype), tiny_project / "data/raw/test-images")
    write_idx(labels.astype(dtype), tiny_project / "data/raw/test-labels")
    for name in ("test-images", "test-labels"):  # written raw: the header is the first bytes
        assert (tiny_project / "data/raw" / name).read_bytes()[2] == IDX_TYPES[dtype]
    ingest(tiny_project)
    test = read_split(tiny_project / PROCESSED_DIR / "test.parquet")
    assert test.images.dtype == np.uint8
    np.testing.assert_array_equal(test.images, images)
    np.testing.assert_array_equal(test.labels, labels)


@pytest.mark.parametrize(
    ("dtype", "value", "words"),
    [
        ("i2", 256, "pixel value 256 in image 3"),
        ("i2", -1, "pixel value -1 in image 3"),
        ("f4", 12.5, "pixel value 12.5 in image 3"),
        ("f8", np.inf, "pixel value inf in image 3"),
        ("f8", np.nan, "pixel value nan in image 3"),
    ],
)
def test_idx_values_that_are_not_pixels_are_refused(
    tiny_project, monkeypatch, capsys, dtype, value, words
):
    images = read_idx(tiny_project / "data/raw/test-images").astype(dtype)
    images[3, 10, 12] = value
    write_idx(images, tiny_project / "data/raw/test-images")
    monkeypatch.chdir(tiny_project)
    assert_user_error((main(["ingest"]), capsys), "test-images", words, "0..255")
    assert not (tiny_project / PROCESSED_DIR).exists()
    assert not (tiny_project / INGEST_REPORTS).exists()


def test_idx_predict_source_and_its_limit(tiny_project, mnist_train):
    images = mnist_train[0][1000:1080]
    write_idx(images, tiny_project / "data/raw/predict-images.gz", compress=True)
    edit_params(tiny_project, "data", predict={"images": "data/raw/predict-images.gz"})
    summary = ingest(tiny_project)
    predict = read_split(tiny_project / PROCESSED_DIR / "predict.parquet")
    assert predict.labels is None and len(predict) == summary["splits"]["predict"]["count"] == 80
    assert predict.ids.tolist() == [f"predict-{i:06d}" for i in range(80)]
    np.testing.assert_array_equal(predict.images, images)

    # data.limit.predict: the first rows (unlabelled, so no stratified sample); the other
    # splits are untouched.
    before = {
        name: (tiny_project / PROCESSED_DIR / f"{name}.parquet").read_bytes()
        for name in ("train", "val", "test")
    }
    edit_params(tiny_project, "data", limit={"predict": 25})
    summary = ingest(tiny_project)
    predict = read_split(tiny_project / PROCESSED_DIR / "predict.parquet")
    assert len(predict) == summary["splits"]["predict"]["count"] == 25
    assert predict.ids.tolist() == [f"predict-{i:06d}" for i in range(25)]
    np.testing.assert_array_equal(predict.images, images[:25])
    for name, content in before.items():
        assert (tiny_project / PROCESSED_DIR / f"{name}.parquet").read_bytes() == content, name
