"""Read a pixel CSV into a :class:`RowFile` a block of lines at a time: the pixels are never all
in memory (pyarrow's whole-file reader held about 12x the file: 4.7 GB for 200,000 Kaggle rows,
4 GB for 40 rows of 160,000 columns).

The block reader takes the common file only: a header without quotes, then rows of unsigned
whole numbers 0..255 with one value per column, plain ASCII digits and commas. A file with
anything else (a quote, a sign, a decimal point, an empty value, a row of another length, a
line longer than :mod:`.pixel_csv` allows, a label above 255, no rows, binary content, more
than MAX_TEXT_BYTES) is read by :func:`read_pixel_csv` as a whole, which reads it or refuses it
with its exact message: a file refused here costs the memory it always cost.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO

import numpy as np

from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.idx import MAX_TEXT_BYTES, is_binary, open_data
from digitpipe.dataset.pixel_csv import (
    LINE_END,
    MAX_HEADER_BYTES,
    MIN_BLOCK_BYTES,
    check_names,
    pixel_order,
    read_pixel_csv,
)
from digitpipe.dataset.stored import RowFile

TEXT_BYTES = 8 * 2**20  # text parsed at a time; its int64 values take about 3x that (24 MB)
PLAIN = b"0123456789,\r\n"  # every byte of a row the block reader takes
LINE_ENDS = re.compile(rb"[\r\n]+")


@dataclass(frozen=True)
class CsvRows:
    """Flat pixel rows (N, P) in pixel order, and the labels (as :class:`.pixel_csv.CsvImages`
    has them) when the file has a label column."""

    rows: RowFile
    labels: np.ndarray | None


class _Unusual(Exception):
    """The file is not one the block reader takes."""


def read_csv_rows(path: Path, label_column: str) -> CsvRows:
    """Read a pixel CSV as :func:`read_pixel_csv` does, a block of TEXT_BYTES at a time."""
    try:
        return _read_blocks(path, label_column)
    except (_Unusual, DigitpipeError, OSError, EOFError, zlib.error, ValueError, OverflowError):
        table = read_pixel_csv(path, label_column)
        rows = RowFile(table.pixels.shape[1])
        rows.append(table.pixels)
        return CsvRows(rows, table.labels)


def _read_blocks(path: Path, label_column: str) -> CsvRows:
    with open_data(path) as stream:
        blocks = _whole_lines(stream, TEXT_BYTES)
        first = next(blocks, b"")
        header_end = LINE_END.search(first).start() if LINE_END.search(first) else len(first)
        if is_binary(first[:4]) or not header_end or b'"' in first[:header_end]:
            raise _Unusual
        names = first[:header_end].decode("utf-8").split(",")
        check_names(path, names, label_column)
        label = names.index(label_column) if label_column in names else None
        pixels = [col for col in range(len(names)) if col != label]
        order = [pixels[k] for k in pixel_order(path, [names[col] for col in pixels])]
        longest = max(MIN_BLOCK_BYTES, 16 * (header_end + 1)) // 2  # the block pyarrow reads
        rows, labels = RowFile(len(order)), []
        for block in chain([first[header_end:]], blocks):
            values = _plain_values(block, len(names), longest)
            if label is not None:
                labels.append(values[:, label].copy())  # a view would keep the block alive
            rows.append(values[:, order].astype(np.uint8))
    if not rows.rows or not order:
        raise _Unusual
    return CsvRows(rows, np.concatenate(labels) if label is not None else None)


def _whole_lines(stream: BinaryIO, text_bytes: int) -> Iterator[bytes]:
    """The content of ``stream`` in blocks of about ``text_bytes`` that end at a line end."""
    carry, total = b"", 0
    while data := stream.read(text_bytes):
        total += len(data)
        if total > MAX_TEXT_BYTES:
            raise _Unusual
        data = carry + data
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        carry = data[end:]
        if len(carry) > MAX_HEADER_BYTES:
            raise _Unusual  # no line end for too long: read_pixel_csv says what is wrong
        if end:
            yield data[:end]
    if carry:
        yield carry


def _plain_values(block: bytes, columns: int, longest: int) -> np.ndarray:
    """The rows of ``block`` (blank lines skipped) as an int64 matrix of ``columns`` columns."""
    if block.translate(None, PLAIN):
        raise _Unusual
    # Runs of line ends made one first: blank lines (30 MB of them in a test) make no list items.
    lines = LINE_ENDS.sub(b"\n", block).decode("ascii").split("\n")
    lines = [line for line in lines if line]
    if not lines:
        return np.zeros((0, columns), np.int64)
    if max(map(len, lines)) > longest:
        raise _Unusual
    values = np.loadtxt(lines, np.int64, delimiter=",", comments=None, ndmin=2)
    if values.shape[1] != columns or values.max() > 255:
        raise _Unusual
    return values
