"""Read Kaggle-style pixel CSV files: an optional label column plus one column per pixel.

The file is read as bounded text (:func:`digitpipe.dataset.idx.read_bytes`: a regular file,
gzip detected by content, at most ``MAX_TEXT_BYTES``); the header must be UTF-8 with unique
names and at most ``MAX_HEADER_BYTES`` long (a 400x400-pixel header is about 2 MB), the rows
ASCII. A bad row is named by its line number, counted as an editor does (the header is line 1).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from digitpipe.core.errors import DigitpipeError, excerpt
from digitpipe.core.numbers import counted
from digitpipe.dataset.checks import first_invalid, scaled_hint
from digitpipe.dataset.idx import read_bytes

MAX_HEADER_BYTES = 64 * 2**20
MIN_BLOCK_BYTES = 2**20  # pyarrow's default block size; a block must hold the header and a row
PIXEL_NAME = re.compile(r"pixel(\d{1,9})")  # Kaggle's pixel column names
NON_ASCII = re.compile(rb"[\x80-\xff]")
LINE_END = re.compile(rb"[\r\n]")
EXACT_INT = 2**53  # labels beyond this stay float, so a label check reports their real value


@dataclass(frozen=True)
class CsvImages:
    """Flat pixel rows (N, P) as uint8 and, when the file has a label column, the labels:
    int64 when every one fits, else float64 as written (for the label check to report)."""

    pixels: np.ndarray
    labels: np.ndarray | None


def read_pixel_csv(path: Path, label_column: str) -> CsvImages:
    """Read a pixel CSV with a header; every column except ``label_column`` is a pixel."""
    table = _parse(path, read_bytes(path, "text").data)
    check_names(path, table.column_names, label_column)
    if table.num_rows == 0:
        raise DigitpipeError(f"{path}: the CSV has a header but no rows.")
    labels = None
    if label_column in table.column_names:
        labels = _whole_numbers(path, table.select([label_column]), None)[:, 0]
        if np.abs(labels).max() < EXACT_INT:
            labels = labels.astype(np.int64)
        table = table.drop_columns([label_column])
    if table.num_columns == 0:
        raise DigitpipeError(f"{path}: no pixel columns besides {excerpt(label_column)}.")
    table = table.select(pixel_order(path, table.column_names))
    pixels = _whole_numbers(path, table, (0, 255)).astype(np.uint8)
    return CsvImages(pixels, labels)


def pixel_order(path: Path, names: list[str]) -> list[int]:
    """Columns all named pixel<k> (Kaggle's pixel0.., or pixel1..) in the order of k, which must
    run without a gap; columns named otherwise are pixels in file order."""
    matches = [PIXEL_NAME.fullmatch(name) for name in names]
    if not all(matches):
        return list(range(len(names)))
    numbers = [int(match[1]) for match in matches]
    order = sorted(range(len(numbers)), key=numbers.__getitem__)
    ks = [numbers[col] for col in order]
    gap = next((k + 1 for k, following in pairwise(ks) if following != k + 1), None)
    if gap is not None:
        raise DigitpipeError(
            f"{path}: the pixel columns are named pixel{ks[0]} to pixel{ks[-1]} but pixel{gap} "
            "is missing (or named twice); each pixel needs its own column."
        )
    return order


def _parse(path: Path, data: bytes) -> pa.Table:
    """The CSV ``data`` as a table, after checking its header (size, encoding) and rows (ASCII,
    one value per column, no stray quote)."""
    if not data:
        raise DigitpipeError(f"{path}: the file is empty; expected a CSV with a header.")
    header = _header(path, data)
    header_end = len(header.encode())
    _check_ascii_rows(path, data, header_end)
    block = max(MIN_BLOCK_BYTES, 16 * (len(header) + 1))
    # One thread: pyarrow's threaded reader lets a pool thread drop the last reference to `data`
    # after read_csv has returned; that thread then waits for the GIL, and when the interpreter
    # exits first it is ended inside a C++ destructor: "terminate called without an active
    # exception", exit 134 (about 1 run in 5 of a refused file). The serial reader also numbers
    # the rows; on 2 cores it costs a little (ingest of 42000 Kaggle rows, run interleaved with
    # the threaded version: 1.34-1.72 s against 1.15-1.16 s).
    options = pacsv.ReadOptions(block_size=block, use_threads=False)
    invalid: list[pacsv.InvalidRow] = []
    parse = pacsv.ParseOptions(invalid_row_handler=lambda row: invalid.append(row) or "error")
    try:
        table = pacsv.read_csv(pa.py_buffer(data), read_options=options, parse_options=parse)
    except pa.ArrowInvalid as exc:
        if invalid:
            raise _row_error(path, data, invalid[0]) from None
        if "straddl" in str(exc):  # pyarrow's words for a row longer than a block
            raise DigitpipeError(
                f"{path}: line {_longest_line(data)} (the longest) is longer than {block:,} "
                f"bytes while the header is {len(header):,} bytes; a pixel row is about as long "
                "as its header. Check the file's line breaks."
            ) from None
        if b'"' in data:  # a quoted value across a block's end: "out of sync with chunker"
            raise _quote_error(path, data) from None
        raise DigitpipeError(
            f"{path}: not a well-formed CSV ({excerpt(str(exc), 200, quote=False)})."
        ) from None
    _check_row_count(path, data, header_end, table.num_rows)
    return table


def check_names(path: Path, names: list[str], label_column: str) -> None:
    """Refuse a header that names a column twice, or a first row of numbers: no header at all."""
    first: dict[str, int] = {}
    for col, name in enumerate(names):
        if first.setdefault(name, col) == col:
            continue
        if _all_numbers(names):
            raise DigitpipeError(
                f"{path}: the first row holds numbers, not column names: the file has no header "
                f"row. Add one: {label_column},pixel0,...,pixel{len(names) - 2} when the first "
                f"column holds the labels, else pixel0,...,pixel{len(names) - 1}."
            )
        raise DigitpipeError(
            f"{path}: column {excerpt(name)} appears twice in the header (columns "
            f"{first[name] + 1} and {col + 1}); each column name must be unique."
        )


def _all_numbers(names: list[str]) -> bool:
    """Whether every name reads as a number (pyarrow's reading of a CSV value)."""
    try:
        pc.cast(pa.array(names), pa.float64())
    except pa.ArrowInvalid:
        return False
    return True


def _check_ascii_rows(path: Path, data: bytes, start: int) -> None:
    """Refuse a byte beyond ASCII from ``start`` (the end of the header) on: rows hold numbers,
    and pyarrow could not show a row that is not UTF-8 to the invalid-row handler."""
    if data.isascii():
        return
    found = NON_ASCII.search(data, start)
    if found is None:
        return
    line = _line_at(data, found.start())
    raise DigitpipeError(
        f"{path}: line {line} holds byte 0x{data[found.start()]:02x}, which is not ASCII; pixel "
        "CSV rows hold plain numbers only. Fix that line (was the file saved in another "
        "encoding?)."
    )


def _row_error(path: Path, data: bytes, row: pacsv.InvalidRow) -> DigitpipeError:
    """The error for pyarrow's first row with the wrong number of values."""
    if "\n" in row.text or "\r" in row.text:  # a quote opened a value that spans lines
        return _quote_error(path, data)
    line = _line_of(data, row.text) or row.number  # pyarrow's number skips blank lines
    return DigitpipeError(
        f"{path}: line {line} has {counted(row.actual_columns, 'value')} where the header has "
        f"{row.expected_columns} columns ({excerpt(row.text, 40)}); each row needs one value "
        "per column: fix or remove that line."
    )


def _check_row_count(path: Path, data: bytes, header_end: int, rows: int) -> None:
    """Refuse a parse that lost rows: every line after the header that is not blank must be one
    row. (pyarrow's block parser can swallow the lines after a stray double quote silently.)"""
    if rows == data.count(b"\n") + (not data.endswith(b"\n")) - 1:
        return  # the common case: no blank lines, "\n" or "\r\n" line ends
    if rows == _lines_holding_text(memoryview(data)[header_end:]):
        return
    raise _quote_error(path, data)


def _lines_holding_text(data: memoryview) -> int:
    """The lines of ``data`` that are not blank (a line ends at LF, CR LF or CR), counted a chunk
    at a time: a file of blank lines costs no more memory than a chunk's masks."""
    count, after_line_end = 0, True
    for start in range(0, len(data), MIN_BLOCK_BYTES):
        chunk = np.frombuffer(data[start : start + MIN_BLOCK_BYTES], np.uint8)
        ends = (chunk == ord("\n")) | (chunk == ord("\r"))
        starts_a_line = np.concatenate(([after_line_end], ends[:-1]))
        count += int(np.count_nonzero(starts_a_line & ~ends))
        after_line_end = bool(ends[-1])
    return count


def _quote_error(path: Path, data: bytes) -> DigitpipeError:
    """The error for rows that a quote made span lines, naming the first unpaired quote."""
    start = _unpaired_quote_line(data)
    where = (
        "a quoted value spans lines"
        if start is None
        else f"line {_line_at(data, start)} has an unpaired double quote "
        f"({excerpt(data[start : start + 80].splitlines()[0].decode(errors='replace'), 40)})"
    )
    return DigitpipeError(
        f"{path}: {where}, so its rows cannot be read reliably; pixel CSVs need one row per "
        "line and no quotes around values. Remove the stray quote."
    )


def _unpaired_quote_line(data: bytes) -> int | None:
    """Where the first line holding an odd number of double quotes starts (None: no such line).
    Only the lines holding a quote are visited, each search starting where the last ended."""
    line_end, quote = 0, data.find(b'"')
    while quote >= 0:
        start = max(data.rfind(b"\n", line_end, quote), data.rfind(b"\r", line_end, quote)) + 1
        line_end = _line_end(data, quote)
        if data.count(b'"', start, line_end) % 2:
            return start
        quote = data.find(b'"', line_end)
    return None


def _line_end(data: bytes, position: int, stop: int | None = None) -> int:
    """Where the line holding ``data[position]`` ends: its LF or CR, else ``stop`` (default: the
    end of ``data``)."""
    stop = len(data) if stop is None else min(stop, len(data))
    found = LINE_END.search(data, position, stop)
    return stop if found is None else found.start()


def _line_of(data: bytes, text: str) -> int | None:
    """The number of the first line of ``data`` that reads ``text`` in full (None: none does)."""
    found = re.search(rb"(?<![^\r\n])" + re.escape(text.encode()) + rb"(?![^\r\n])", data)
    return None if found is None else _line_at(data, found.start())


def _line_at(data: bytes, position: int) -> int:
    """The number (from 1) of the line holding ``data[position]``; a line ends at LF, CR LF or CR,
    as pyarrow's do."""
    ends = data.count(b"\n", 0, position) + data.count(b"\r", 0, position)
    return ends - data.count(b"\r\n", 0, position) + 1


def _longest_line(data: bytes) -> int:
    """The number (from 1) of the longest line in ``data``."""
    ends = np.append(np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n")), len(data))
    return int(np.diff(ends, prepend=-1).argmax()) + 1


def _header(path: Path, data: bytes) -> str:
    """The first line of ``data`` (to its LF or CR): at most MAX_HEADER_BYTES of UTF-8 text."""
    end = _line_end(data, 0, MAX_HEADER_BYTES + 1)
    if end > MAX_HEADER_BYTES:
        raise DigitpipeError(
            f"{path}: no line break in the first {MAX_HEADER_BYTES >> 20} MiB: the header line "
            "is too long, or this is not a CSV file."
        )
    line = data[:end]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DigitpipeError(
            f"{path}: the header is not UTF-8 text (byte 0x{line[exc.start]:02x} at position "
            f"{exc.start}, near {excerpt(line[max(0, exc.start - 20) : exc.start + 20])}); "
            "save the CSV as UTF-8."
        ) from None


def _whole_numbers(path: Path, table: pa.Table, bounds: tuple[int, int] | None) -> np.ndarray:
    """The table as a numeric matrix, after checking every value is a whole number in bounds."""
    for name, column in zip(table.column_names, table.columns, strict=True):
        if column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise DigitpipeError(
                f"{path}: column {excerpt(name)} has a missing or NaN value at data row {row + 1}."
            )
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            row = _first_non_number(column)
            raise DigitpipeError(
                f"{path}: column {excerpt(name)} is not numeric: value "
                f"{excerpt(column[row].as_py(), 40)} at data row {row + 1}; pixels and labels "
                "must be whole numbers."
            )
    matrix = np.column_stack([column.to_numpy() for column in table.columns])
    index = first_invalid(matrix, bounds)
    if index is not None:
        row, col = index
        fault = "" if bounds is None else f" in {bounds[0]}..{bounds[1]}"
        value = table.column(col)[row].as_py()
        shown = (
            "a value that reads as infinite (too many digits, or inf)"
            if isinstance(value, float) and math.isinf(value)
            else f"value {excerpt(value, 40)}"
        )
        hint = "" if bounds is None else scaled_hint(matrix)
        raise DigitpipeError(
            f"{path}: column {excerpt(table.column_names[col])} has {shown} at data row "
            f"{row + 1}, not a whole number{fault}.{hint}"
        )
    return matrix


def _first_non_number(column: pa.ChunkedArray) -> int:
    """The row of the first value of ``column`` that does not read as a number (else 0)."""
    for row, value in enumerate(column.to_pylist()):
        try:
            float(value)
        except (TypeError, ValueError):
            return row
    return 0
