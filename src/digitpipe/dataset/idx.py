"""Read and write IDX files (the MNIST format), gzip-compressed or raw, of any shape and dtype.

Reading is bounded: only regular files are opened (a device or FIFO would never end or never
start), gzip is inflated as a stream, and the stream stops where the content must end: for IDX
content at the size its header declares (at most ``MAX_IDX_BYTES`` read whole,
``MAX_CHUNKED_IDX_BYTES`` read a chunk at a time), for any other content (a CSV) at
``MAX_TEXT_BYTES``. A decompression bomb therefore costs at most what its header claims.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from digitpipe.core.atomic import atomic_path
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.files import UnreadableFile, cannot_read, check_regular
from digitpipe.dataset.stored import chunk_rows

GZIP_MAGIC = b"\x1f\x8b"
MAX_IDX_BYTES = 4 * 2**30  # the most data an IDX file read whole may declare (decompressed)
# The most a file read a chunk at a time (ingest's images) may declare: 87M 28x28 images in
# constant memory; a gzip bomb that claims it costs minutes of inflating, never memory.
MAX_CHUNKED_IDX_BYTES = 64 * 2**30
MAX_TEXT_BYTES = 2**30  # the most a file of any other content (a CSV) may hold (decompressed)
MAX_IDX_DIMS = 4  # images N x H x W (x 1), flat rows N x P, labels N
CHUNK = 2**20  # bytes per read: no read holds more than this beyond the result

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
Kind = Literal["auto", "idx", "text"]


class NotIdxError(DigitpipeError):
    """The content does not even start like an IDX file (its first two bytes are not zero)."""


@dataclass(frozen=True)
class RawFile:
    """The decompressed bytes of a file, with their SHA-256."""

    path: Path
    data: bytes | memoryview

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class IdxHeader:
    """An IDX header: the value type and the dimensions."""

    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return 4 + 4 * len(self.shape)

    @property
    def data_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"header dims {'x'.join(map(str, self.shape))} of {self.dtype.itemsize}-byte values"


@contextmanager
def open_data(path: Path) -> Iterator[BinaryIO]:
    """A regular file opened for reading, through gzip when its content starts with the gzip
    magic bytes (not by its name)."""
    check_regular(path, "give the path of a regular file holding the data.")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise UnreadableFile(path, cannot_read(exc)) from exc
    with handle:
        compressed = handle.read(2) == GZIP_MAGIC
        handle.seek(0)
        yield gzip.GzipFile(fileobj=handle, mode="rb") if compressed else handle


def read_bytes(path: str | os.PathLike, kind: Kind = "auto") -> RawFile:
    """Read a file, transparently decompressing gzip, stopping where its content must end.

    ``kind``: "idx" refuses anything but IDX content at its first bytes, "text" anything
    binary; "auto" reads binary content as IDX and anything else as text.
    """
    path = Path(path)
    with open_data(path) as stream, _reading(path, stream):
        return RawFile(path, _read_content(path, stream, kind))


@contextmanager
def _reading(path: Path, stream: BinaryIO) -> Iterator[None]:
    """Turn a fault of reading ``stream`` (corrupt gzip, disk error) into one message."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(stream, gzip.GzipFile):
            raise DigitpipeError(
                f"{path}: the gzip stream is corrupt or truncated ({exc}); "
                "re-download or re-compress the file."
            ) from exc
        raise DigitpipeError(f"{path}: cannot read the file ({exc}).") from exc


class IdxChunks:
    """An IDX file's data (gzip or raw), iterated a whole number of rows at a time as
    native-endian arrays (k, *shape[1:]): about ``stored.CHUNK_BYTES`` of it at a time.

    Read by the rules of ``read_bytes(path, "idx")``, with the same errors: the header is checked
    first, the size it declares at the end. After the iteration, ``header`` is the header (None:
    the file is empty) and ``sha256`` the SHA-256 of the decompressed content.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.header: IdxHeader | None = None
        self._digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def __iter__(self) -> Iterator[np.ndarray]:
        path = self.path
        with open_data(path) as stream, _reading(path, stream):
            head = stream.read(4)
            self._digest.update(head)
            if not head:
                return
            if head[:2] != b"\0\0":
                raise NotIdxError(_wrong_magic(path, head))
            head += stream.read(4 * head[3]) if len(head) == 4 else b""
            self.header = header = idx_header(path, head, MAX_CHUNKED_IDX_BYTES)
            self._digest.update(head[4:])
            yield from self._rows(stream, header)

    def _rows(self, stream: BinaryIO, header: IdxHeader) -> Iterator[np.ndarray]:
        row_shape = header.shape[1:]
        row_bytes = math.prod(row_shape) * header.dtype.itemsize
        step = chunk_rows(row_bytes)
        native, read = header.dtype.newbyteorder("="), 0
        for start in range(0, header.shape[0], step):
            count = min(step, header.shape[0] - start)
            buffer = bytearray(count * row_bytes)
            filled = stream.readinto(buffer)
            while filled < len(buffer) and (more := stream.readinto(memoryview(buffer)[filled:])):
                filled += more
            read += filled
            if filled < len(buffer):
                check_idx_size(self.path, header, read)
            self._digest.update(buffer)
            rows = np.frombuffer(buffer, header.dtype).reshape(count, *row_shape)
            yield rows.astype(native, copy=False)
        check_idx_size(self.path, header, None if stream.read(1) else read)


def _read_content(path: Path, stream: BinaryIO, kind: Kind) -> bytes | memoryview:
    """The content of ``stream``, read by its first bytes (see :func:`read_bytes`)."""
    head = stream.read(4)
    if not head:
        return head
    binary = is_binary(head)
    if kind == "idx" and head[:2] != b"\0\0":
        raise NotIdxError(_wrong_magic(path, head))
    if kind == "text" and binary:
        raise DigitpipeError(
            f"{path}: binary content (starts with 0x{head.hex()}), not text; a CSV must be "
            "UTF-8 text."
        )
    if kind == "text" or not binary:
        return _read_text(path, stream, head)
    head += stream.read(4 * head[3]) if len(head) == 4 else b""
    header = idx_header(path, head)
    return _read_idx(path, stream, head, header)


def _read_text(path: Path, stream: BinaryIO, head: bytes) -> bytes:
    """The rest of ``stream`` after ``head``, refused beyond MAX_TEXT_BYTES."""
    chunks, total = [head], len(head)
    while chunk := stream.read(CHUNK):
        total += len(chunk)
        if total > MAX_TEXT_BYTES:
            raise TooMuchText(path)
        chunks.append(chunk)
    return b"".join(chunks)


def is_binary(head: bytes) -> bool:
    """Whether the first bytes of a file say binary content (a control character), not text."""
    return any(byte < 0x20 and byte not in b"\t\n\r" for byte in head)


class TooMuchText(DigitpipeError):
    """Content that is not IDX beyond ``MAX_TEXT_BYTES``."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path}: more than {MAX_TEXT_BYTES >> 20} MiB of data (after decompression), "
            "the limit for files that are not IDX; reading stopped there. Split the data "
            "into smaller files, or convert it to IDX."
        )


def content_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of ``read_bytes(path).data``, with the same errors, read a chunk at a time."""
    path = Path(path)
    with open_data(path) as stream, _reading(path, stream):
        head = stream.read(4)
        if is_binary(head):
            chunks = IdxChunks(path)
            for _ in chunks:
                pass
            return chunks.sha256
        digest, total = hashlib.sha256(head), len(head)
        while chunk := stream.read(CHUNK):
            total += len(chunk)
            if total > MAX_TEXT_BYTES:
                raise TooMuchText(path)
            digest.update(chunk)
        return digest.hexdigest()


def _read_idx(path: Path, stream: BinaryIO, head: bytes, header: IdxHeader) -> memoryview:
    """The whole IDX file: ``head`` (its header) and exactly the data the header declares."""
    try:
        buffer = memoryview(np.empty(header.size + header.data_bytes, np.uint8))  # lazy pages
    except MemoryError:
        raise DigitpipeError(
            f"{path}: {header.describe()} declare {header.data_bytes} data bytes, more memory "
            "than this machine can give; split the data into smaller files."
        ) from None
    buffer[: len(head)] = head
    filled = len(head)
    while filled < len(buffer) and (count := stream.readinto(buffer[filled : filled + CHUNK])):
        filled += count
    check_idx_size(path, header, None if stream.read(1) else filled - header.size)
    return buffer


def idx_header(path: Path, data: bytes | memoryview, limit: int = MAX_IDX_BYTES) -> IdxHeader:
    """The IDX header at the start of ``data``, validated: magic number, 1 to MAX_IDX_DIMS
    dimensions, and a declared data size of at most ``limit`` bytes."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DigitpipeError(_wrong_magic(path, bytes(data[:4])))
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    if not 1 <= ndim <= MAX_IDX_DIMS:
        raise DigitpipeError(
            f"{path}: the IDX header declares {ndim} dimensions; digitpipe reads 1 to "
            f"{MAX_IDX_DIMS} (labels N, images N x H x W or N x H x W x 1, flat rows N x P)."
        )
    if len(data) < 4 + 4 * ndim:
        raise DigitpipeError(f"{path}: truncated IDX header ({len(data)} bytes).")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    header = IdxHeader(dtype, shape)
    if header.data_bytes > limit:
        raise DigitpipeError(
            f"{path}: {header.describe()} declare {header.data_bytes} data bytes, more than "
            f"the {limit >> 30} GiB digitpipe reads from one file here; the header is corrupt, "
            "or the data must be split into smaller files."
        )
    return header


def check_idx_size(path: Path, header: IdxHeader, actual: int | None) -> None:
    """Refuse ``actual`` data bytes that are not what ``header`` declares (None: more than
    declared, how many more unread)."""
    if actual != header.data_bytes:
        short = actual is not None and actual < header.data_bytes
        fault = "truncated" if short else "longer than its header says"
        raise DigitpipeError(
            f"{path}: file is {fault}: {header.describe()} need {header.data_bytes} data "
            f"bytes, found {'more' if actual is None else actual}."
        )


def _wrong_magic(path: Path, head: bytes) -> str:
    return (
        f"{path}: not an IDX file: wrong magic number 0x{head.hex()} "
        "(expected 0x0000 followed by a type code 08/09/0B/0C/0D/0E and the number of "
        "dimensions, e.g. 0x00000803 for uint8 images)."
    )


def parse_idx(raw: RawFile) -> np.ndarray:
    """Parse IDX bytes into an array in native byte order, validating header against size."""
    path, data = raw.path, raw.data
    if not data:
        raise DigitpipeError(f"{path}: the file is empty; expected an IDX file.")
    header = idx_header(path, data)
    check_idx_size(path, header, len(data) - header.size)
    array = np.frombuffer(data, header.dtype, offset=header.size).reshape(header.shape)
    return array.astype(header.dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a native-endian numpy array."""
    return parse_idx(read_bytes(path, "idx"))


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
