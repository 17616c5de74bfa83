"""README promises of the ingest stage: IDX files of any numeric type whose values are whole
numbers in 0..255, an IDX source of images to predict, and data.limit.predict."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import edit_params

from digitpipe.cli import main
from digitpipe.core.config import load_params
from digitpipe.dataset.idx import read_idx, write_idx
from digitpipe.dataset.parquet import read_split
from digitpipe.ingest.run import run as ingest
from digitpipe.outputs.ingest import INGEST_REPORTS, PROCESSED_DIR

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
    ingest(load_params(tiny_project / "params.yaml"), tiny_project)
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
    assert main(["ingest"]) == 2
    message = capsys.readouterr().err
    assert "test-images" in message and words in message and "0..255" in message
    assert not (tiny_project / PROCESSED_DIR).exists()
    assert not (tiny_project / INGEST_REPORTS).exists()


def test_idx_predict_source_and_its_limit(tiny_project, mnist_train):
    images = mnist_train[0][1000:1080]
    write_idx(images, tiny_project / "data/raw/predict-images.gz", compress=True)
    edit_params(tiny_project, "data", predict={"images": "data/raw/predict-images.gz"})
    summary = ingest(load_params(tiny_project / "params.yaml"), tiny_project)
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
    summary = ingest(load_params(tiny_project / "params.yaml"), tiny_project)
    predict = read_split(tiny_project / PROCESSED_DIR / "predict.parquet")
    assert len(predict) == summary["splits"]["predict"]["count"] == 25
    assert predict.ids.tolist() == [f"predict-{i:06d}" for i in range(25)]
    np.testing.assert_array_equal(predict.images, images[:25])
    for name, content in before.items():
        assert (tiny_project / PROCESSED_DIR / f"{name}.parquet").read_bytes() == content, name
