"""Images kept on disk while the ingest stage splits them: a source's validated uint8 rows are
appended to an unnamed temporary file (:class:`RowFile`) a chunk at a time, and a split is a
list of rows of such files (:class:`StoredImages`), read back a chunk at a time when written.

So ingest holds the labels and ids of every image but the pixels of one chunk only, whatever
the number of images (1M 28x28 images were 1.8 GB at the peak when held in memory).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

CHUNK_BYTES = 32 * 2**20  # pixels read or converted at a time: the memory a chunk costs


def chunk_rows(row_bytes: int) -> int:
    """How many rows of ``row_bytes`` make a chunk of CHUNK_BYTES (read when called: a test sets
    it small), at least one."""
    return max(1, CHUNK_BYTES // max(row_bytes, 1))


class RowFile:
    """An unnamed temporary file of uint8 rows of ``row_bytes``: the system removes it when it is
    closed or its process ends, however it ends (``TMPDIR`` chooses its disk)."""

    def __init__(self, row_bytes: int) -> None:
        self.row_bytes, self.rows = row_bytes, 0
        # Open as long as the rows are wanted: no context manager fits that lifetime.
        self._file = tempfile.TemporaryFile(prefix="digitpipe-ingest-")  # noqa: SIM115

    def append(self, rows: np.ndarray) -> None:
        """Append ``rows`` (k, row_bytes) uint8."""
        self._file.write(np.ascontiguousarray(rows, np.uint8).data)
        self.rows += len(rows)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` to ``stop`` (exclusive) as (stop - start, row_bytes) uint8."""
        self._file.flush()
        size = (stop - start) * self.row_bytes
        data = os.pread(self._file.fileno(), size, start * self.row_bytes)
        return np.frombuffer(data, np.uint8).reshape(stop - start, self.row_bytes)

    def images(self, height: int, width: int) -> StoredImages:
        """Every row, as images of ``height`` x ``width`` (their product is ``row_bytes``)."""
        return StoredImages(
            (self,), np.zeros(self.rows, np.int32), np.arange(self.rows), height, width
        )


@dataclass(frozen=True, eq=False)
class StoredImages:
    """Images (N, height, width) that are rows of :class:`RowFile` s: image i is row
    ``rows[i]`` of ``files[file_of[i]]``. Selecting rows (``images[index]``) reads nothing;
    ``np.asarray`` or :meth:`chunks` read the pixels."""

    files: tuple[RowFile, ...]
    file_of: np.ndarray
    rows: np.ndarray
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.rows), self.height, self.width

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: np.ndarray) -> StoredImages:
        return StoredImages(
            self.files, self.file_of[index], self.rows[index], self.height, self.width
        )

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        images = np.empty(self.shape, np.uint8)
        step = chunk_rows(self.height * self.width)
        for start, chunk in zip(range(0, len(self), step), self.chunks(step), strict=True):
            images[start : start + len(chunk)] = chunk
        return images if dtype is None else images.astype(dtype)

    @staticmethod
    def concat(parts: Sequence[StoredImages]) -> StoredImages:
        """The images of every part, in order (one image size)."""
        files = tuple(dict.fromkeys(file for part in parts for file in part.files))
        number = {id(file): position for position, file in enumerate(files)}
        file_of = np.concatenate(
            [
                np.array([number[id(f)] for f in part.files], np.int32)[part.file_of]
                for part in parts
            ]
        )
        rows = np.concatenate([part.rows for part in parts])
        return StoredImages(files, file_of, rows, parts[0].height, parts[0].width)

    def chunks(self, step: int) -> Iterator[np.ndarray]:
        """The images in order, ``step`` at a time, as (k, height, width) uint8 arrays."""
        for start in range(0, len(self), step):
            yield self._read(self.file_of[start : start + step], self.rows[start : start + step])

    def _read(self, file_of: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The given rows: each run of one file read as one span when the rows are dense in it
        (a split's rows are ascending), else row by row (a sample of a few)."""
        out = np.empty((len(rows), self.height * self.width), np.uint8)
        runs = np.flatnonzero(np.diff(file_of, prepend=-1, append=-1)) if len(rows) else []
        for begin, end in pairwise(runs):
            file, wanted = self.files[file_of[begin]], rows[begin:end]
            low, high = int(wanted.min()), int(wanted.max()) + 1
            if high - low <= 2 * len(wanted) + chunk_rows(file.row_bytes):
                out[begin:end] = file.read(low, high)[wanted - low]
            else:
                for position, row in enumerate(wanted, begin):
                    out[position] = file.read(int(row), int(row) + 1)[0]
        return out.reshape(len(rows), self.height, self.width)
