"""Read and write IDX files (the MNIST format), gzip-compressed or raw, of any shape and dtype."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitpipe.core.atomic import atomic_path
from digitpipe.core.errors import DigitpipeError

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian numpy dtype ("THE IDX FILE FORMAT" on the MNIST page).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
DTYPE_CODES = {dtype: code for code, dtype in IDX_DTYPES.items()}


@dataclass(frozen=True)
class RawFile:
    """The decompressed bytes of a file, with their SHA-256."""

    path: Path
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def read_bytes(path: str | os.PathLike) -> RawFile:
    """Read a file, transparently decompressing gzip (detected by its magic bytes, not its name)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DigitpipeError(f"{path}: cannot read the file ({exc.strerror}).") from exc
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DigitpipeError(
                f"{path}: the gzip stream is corrupt or truncated ({exc}); "
                "re-download or re-compress the file."
            ) from exc
    return RawFile(path, data)


def parse_idx(raw: RawFile) -> np.ndarray:
    """Parse IDX bytes into an array in native byte order, validating header against size."""
    path, data = raw.path, raw.data
    if not data:
        raise DigitpipeError(f"{path}: the file is empty; expected an IDX file.")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DigitpipeError(
            f"{path}: not an IDX file: wrong magic number 0x{data[:4].hex()} "
            "(expected 0x0000 followed by a type code 08/09/0B/0C/0D/0E and the number of "
            "dimensions, e.g. 0x00000803 for uint8 images)."
        )
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    if ndim == 0:
        raise DigitpipeError(f"{path}: the IDX header declares zero dimensions.")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DigitpipeError(f"{path}: truncated IDX header ({len(data)} bytes).")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        fault = "truncated" if actual < expected else "longer than its header says"
        raise DigitpipeError(
            f"{path}: file is {fault}: header dims {'x'.join(map(str, shape))} of "
            f"{dtype.itemsize}-byte values need {expected} data bytes, found {actual}."
        )
    array = np.frombuffer(data, dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a native-endian numpy array."""
    return parse_idx(read_bytes(path))


def write_idx(array: np.ndarray, path: str | os.PathLike, *, compress: bool = False) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``compress``), atomically."""
    code = DTYPE_CODES.get(array.dtype.newbyteorder(">"))
    if code is None:
        raise DigitpipeError(f"IDX cannot store dtype {array.dtype}.")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(array, IDX_DTYPES[code]).tobytes()
    if compress:
        payload = gzip.compress(payload, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
