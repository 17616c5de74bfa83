"""IDX reading and writing (shapes, dtypes, gzip, malformed files), and the shared pixel and
label checks that turn IDX and CSV arrays into images."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.checks import check_labels
from digitpipe.dataset.idx import MAX_IDX_BYTES, IdxChunks, read_bytes, read_idx, write_idx
from digitpipe.dataset.shapes import as_images


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("shape", [(7,), (5, 3, 4), (2, 9, 6, 1), (3, 16)])
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_any_shape_and_dtype(tmp_path, dtype, shape, compress):
    array = (np.arange(np.prod(shape)) % 120 - (0 if dtype[0] == "u" else 60)).astype(dtype)
    array = array.reshape(shape)
    path = tmp_path / "x.idx"
    write_idx(array, path, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") is compress
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == shape
    np.testing.assert_array_equal(back, array)


def test_reads_the_published_mnist_header(tmp_path):
    header = bytes.fromhex("00000803 00000002 0000001c 0000001c")
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(header + bytes(range(256)) * 6 + bytes(32))
    assert read_idx(path).shape == (2, 28, 28)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"\x00\x00\x08", "wrong magic number"),
        (b"\x12\x34\x08\x01" + bytes(8), "wrong magic number"),
        (b"\x00\x00\x07\x01" + bytes(8), "wrong magic number"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x0a" + bytes(7), "truncated: header dims 10"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x02" + bytes(5), "longer than its header"),
        (b"\x00\x00\x0b\x01\x00\x00\x00\x02" + bytes(3), "2-byte values need 4 data bytes"),
    ],
)
def test_malformed_files_name_the_file_and_fault(tmp_path, payload, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DigitpipeError, match=message) as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


def test_a_file_larger_than_memory_reads_in_chunks_not_whole(tmp_path):
    """Ingest reads an IDX file of more than 4 GiB (10M 28x28 images are 7.8 GB) a chunk at a
    time; read whole (predict's inputs) it is refused. A sparse file: no disk is used."""
    count = MAX_IDX_BYTES // 784 + 1
    path = tmp_path / "images-idx3-ubyte"
    with path.open("wb") as out:
        out.write(bytes([0, 0, 8, 3]) + np.array([count, 28, 28], ">u4").tobytes())
        out.truncate(16 + count * 784)
    first = next(iter(IdxChunks(path)))
    assert first.shape[1:] == (28, 28) and not first.any()
    with pytest.raises(DigitpipeError, match=f"{count}x28x28 .* more than the 4 GiB"):
        read_bytes(path, "idx")


def test_corrupt_gzip_is_reported(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04abcd")[:-6])
    with pytest.raises(DigitpipeError, match="gzip stream is corrupt or truncated"):
        read_idx(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(DigitpipeError, match="cannot read the file"):
        read_idx(tmp_path / "nope.gz")


@pytest.mark.parametrize(
    ("shape", "size", "exact", "images"),
    [
        ((2, 3, 4), (3, 4), True, (2, 3, 4)),  # images of their own size must have it
        ((2, 3, 4), (9, 9), False, (2, 3, 4)),  # unless the size is only a preference
        ((2, 3, 4, 1), None, True, (2, 3, 4)),
        ((2, 16), None, True, (2, 4, 4)),
        ((2, 24), (4, 6), True, (2, 4, 6)),
        ((2, 24), (4, 6), False, (2, 4, 6)),
        ((2, 16), (4, 6), False, (2, 4, 4)),  # not the preferred size, but a square
    ],
)
def test_arrays_become_uint8_images(shape, size, exact, images):
    array = (np.arange(np.prod(shape)) % 256).astype("f4").reshape(shape)
    result = as_images(Path("x.idx"), array, size, exact=exact)
    assert result.dtype == np.uint8 and result.shape == images
    np.testing.assert_array_equal(result.reshape(-1), array.reshape(-1))


@pytest.mark.parametrize(
    ("array", "size", "exact", "message"),
    [
        (np.zeros((2, 3)), None, True, "3 pixel columns is not a square number; set data.image_"),
        (
            np.zeros((2, 3, 4)),
            (9, 9),
            True,
            "the images are 3x4 pixels, but data.image_size is 9x9",
        ),
        (
            np.zeros((2, 16)),
            (4, 6),
            True,
            "wrong pixel count: 16 pixels per image, but data.image_",
        ),
        (np.zeros((2, 3)), (28, 28), False, "3 pixel columns is neither 28x28 (784) nor a square"),
        (np.zeros((2, 3, 4, 2)), None, True, "this file has shape (2, 3, 4, 2)"),
        (np.zeros(5), None, True, "this file has shape (5,)"),
        (np.zeros((0, 4, 4)), None, True, "holds no images"),
        (np.full((2, 2, 2), 2.5), None, True, "pixel value 2.5 in image 0 is not a whole number"),
        (np.array([[[0, 1]], [[0, 256]]], "i2"), None, True, "pixel value 256 in image 1"),
        (np.array([[[0.0, np.nan]]]), None, True, "pixel value nan in image 0"),
        (
            np.array([[[0, -1]]], "i1"),
            None,
            True,
            "pixel value -1 in image 0 is not a whole number",
        ),
    ],
)
def test_arrays_that_are_not_images_are_refused(array, size, exact, message):
    with pytest.raises(DigitpipeError, match=re.escape(message)) as caught:
        as_images(Path("x.idx"), array, size, exact=exact)
    assert str(caught.value).startswith("x.idx: ")


@pytest.mark.parametrize(
    ("labels", "ids", "message"),
    [
        (np.array([0, 9, 10]), None, "label 10 at position 2 is out of range"),
        (np.array([0, -1]), ["1", "2"], "label -1 at image 2 is out of range"),
        (np.array([0.0, 1.5]), None, "label 1.5 at position 1 is not a whole number"),
        (np.array([np.nan]), None, "label nan at position 0 is not a whole number"),
    ],
)
def test_labels_must_be_class_indexes(labels, ids, message):
    with pytest.raises(DigitpipeError, match=re.escape(message)) as caught:
        check_labels(Path("y.csv"), labels, 10, "the model", ids)
    assert str(caught.value).startswith("y.csv: ") and "the model has 10 classes" in str(
        caught.value
    )
    check_labels(Path("y.csv"), np.array([0, 9.0]), 10, "the model")
