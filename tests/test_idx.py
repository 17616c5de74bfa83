"""IDX reading and writing: shapes, dtypes, gzip, and every malformed-file error."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from digitpipe.data.idx import read_idx, write_idx
from digitpipe.errors import DigitpipeError


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


def test_corrupt_gzip_is_reported(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04abcd")[:-6])
    with pytest.raises(DigitpipeError, match="gzip stream is corrupt or truncated"):
        read_idx(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(DigitpipeError, match="cannot read the file"):
        read_idx(tmp_path / "nope.gz")
