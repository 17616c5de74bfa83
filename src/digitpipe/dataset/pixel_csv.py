"""Read Kaggle-style pixel CSV files: an optional label column plus one column per pixel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.checks import first_invalid


@dataclass(frozen=True)
class CsvImages:
    """Flat pixel rows (N, P) as uint8 and, when the file has a label column, raw labels."""

    pixels: np.ndarray
    labels: np.ndarray | None


def read_pixel_csv(path: Path, label_column: str) -> CsvImages:
    """Read a pixel CSV with a header; every column except ``label_column`` is a pixel."""
    try:
        table = pacsv.read_csv(path)
    except FileNotFoundError:
        raise DigitpipeError(f"{path}: file not found.") from None
    except pa.ArrowInvalid as exc:
        message = str(exc)
        if "Empty CSV file" in message:
            raise DigitpipeError(
                f"{path}: the file is empty; expected a CSV with a header."
            ) from None
        raise DigitpipeError(f"{path}: not a well-formed CSV ({message}).") from None
    if table.num_rows == 0:
        raise DigitpipeError(f"{path}: the CSV has a header but no rows.")
    labels = None
    if label_column in table.column_names:
        labels = _whole_numbers(path, table.select([label_column]), None)[:, 0]
        table = table.drop_columns([label_column])
    if table.num_columns == 0:
        raise DigitpipeError(f"{path}: no pixel columns besides '{label_column}'.")
    pixels = _whole_numbers(path, table, (0, 255)).astype(np.uint8)
    return CsvImages(pixels, labels)


def _whole_numbers(path: Path, table: pa.Table, bounds: tuple[int, int] | None) -> np.ndarray:
    """The table as an int64 matrix, after checking every value is a whole number in bounds."""
    for name, column in zip(table.column_names, table.columns, strict=True):
        if column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise DigitpipeError(
                f"{path}: column '{name}' has a missing or NaN value at data row {row + 1}."
            )
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise DigitpipeError(
                f"{path}: column '{name}' is not numeric (first value {column[0].as_py()!r}); "
                "pixels and labels must be whole numbers."
            )
    matrix = np.column_stack([column.to_numpy() for column in table.columns])
    index = first_invalid(matrix, bounds)
    if index is not None:
        row, col = index
        fault = "" if bounds is None else f" in {bounds[0]}..{bounds[1]}"
        raise DigitpipeError(
            f"{path}: column '{table.column_names[col]}' has value "
            f"{table.column(col)[row].as_py()!r} at data row {row + 1}, not a whole number{fault}."
        )
    return matrix.astype(np.int64, copy=False)
