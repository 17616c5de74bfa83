"""The Parquet layout of a split: image_id, label, and each image's pixels as one binary value.

``pixels`` is ``fixed_size_binary(height * width)``: the row-major uint8 bytes of the image, so
a whole split converts to a (N, H, W) array without a copy per row (about 20x faster to write than
a list<uint8> column). Height, width and class names live in the schema metadata.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from digitpipe.core.atomic import atomic_path
from digitpipe.core.errors import DigitpipeError, excerpt
from digitpipe.core.files import check_regular, rerun
from digitpipe.core.numbers import counted
from digitpipe.dataset.images import ImageSet, are_class_names

META_KEY = b"digitpipe"
# Pixels per row group: 85,598 28x28 images, so a split of MNIST (60,000) is one row group, as
# it was when a split was written in one piece. pyarrow's own limit (1Mi rows) still applies.
ROW_GROUP_BYTES = 64 * 2**20
MAX_ROW_GROUP_ROWS = 2**20
# The columns of a split: the kind of Arrow type each must have, and its name in messages.
COLUMNS = {
    "image_id": (pa.types.is_string, "string"),
    "label": (pa.types.is_integer, "an integer type"),
    "pixels": (pa.types.is_fixed_size_binary, "fixed_size_binary"),
}


def to_table(images: ImageSet) -> pa.Table:
    """The Arrow table of an ImageSet (pixels zero-copy from a uint8 array in memory)."""
    height, width = images.image_size
    flat = np.ascontiguousarray(np.asarray(images.images), dtype=np.uint8).reshape(-1)
    pixels = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(height * width), len(images), [None, pa.py_buffer(flat)]
    )
    labels = (
        pa.nulls(len(images), pa.int16())
        if images.labels is None
        else pa.array(images.labels.astype(np.int16), pa.int16())
    )
    meta = {"height": height, "width": width, "class_names": list(images.class_names)}
    return pa.table(
        {"image_id": pa.array(images.ids, pa.string()), "label": labels, "pixels": pixels},
        metadata={META_KEY: json.dumps(meta).encode()},
    )


def write_split(images: ImageSet, path: str | os.PathLike) -> None:
    """Write an ImageSet to Parquet atomically, one row group of at most ROW_GROUP_BYTES of
    pixels at a time (the memory writing costs); same data gives byte-identical files."""
    step = min(MAX_ROW_GROUP_ROWS, max(1, ROW_GROUP_BYTES // math.prod(images.image_size)))
    schema = to_table(images.take(np.arange(0))).schema
    with (
        atomic_path(path) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=False) as writer,
    ):
        for start in range(0, max(len(images), 1), step):  # an empty split: one empty group
            rows = np.arange(start, min(start + step, len(images)))
            writer.write_table(to_table(images.take(rows)))


def read_split(path: str | os.PathLike, *, ids: bool = True) -> ImageSet:
    """Read a split written by :func:`write_split`, checked to be one: a damaged or tampered file
    is refused with the fault named, in vectorised checks (no loop over the rows).

    The pixels are copied a row group at a time into one writable uint8 array: the split is held
    once, with no whole-split temporary (``read_table`` + ``combine_chunks`` held 2x the pixel
    bytes at the peak: 1.5 GB more for 800,000 28x28 images).

    ``ids=False`` leaves the image ids unread (training needs none): every id is then ``""``, a
    view of one string. 1M ids as Python strings were 120 MB of a training's peak."""
    path = Path(path)
    with _reading(path) as file:
        meta = _checked_metadata(path, file)
        height, width = meta["height"], meta["width"]
        table = file.read(columns=["image_id", "label"] if ids else ["label"])
        if ids:
            _check_no_nulls(path, table.column("image_id"), "image_id")
        images = np.empty((table.num_rows, height, width), np.uint8)
        start = 0
        for group in range(file.num_row_groups):
            rows = _group_pixels(path, file, group, height * width)
            images.reshape(-1, height * width)[start : start + len(rows)] = rows
            start += len(rows)
    # Arrow's allocator keeps the freed row-group buffers for reuse: 150 MB after reading 800,000
    # 28x28 images, held through a whole training. Give them back.
    pa.default_memory_pool().release_unused()
    labels = _labels(path, table.column("label"), len(meta["class_names"]))
    names = (
        np.asarray(table.column("image_id").to_pylist(), dtype=object)
        if ids
        else np.broadcast_to(np.array("", dtype=object), table.num_rows)
    )
    return ImageSet(names, images, labels, tuple(meta["class_names"]))


@dataclass(frozen=True)
class SplitLayout:
    """What a split's footer says (checked): its image size, class names and the rows of each
    row group, without reading a row."""

    path: Path
    height: int
    width: int
    class_names: tuple[str, ...]
    group_rows: tuple[int, ...]

    @property
    def rows(self) -> int:
        return sum(self.group_rows)

    @property
    def pixel_bytes(self) -> int:
        return self.rows * self.height * self.width


def split_layout(path: str | os.PathLike) -> SplitLayout:
    """The layout of the split at ``path``, its schema and metadata checked as :func:`read_split`
    checks them."""
    path = Path(path)
    with _reading(path) as file:
        meta = _checked_metadata(path, file)
        groups = tuple(file.metadata.row_group(k).num_rows for k in range(file.num_row_groups))
    return SplitLayout(path, meta["height"], meta["width"], tuple(meta["class_names"]), groups)


def read_group(layout: SplitLayout, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Row group ``group`` of a labelled split: its (k, height, width) uint8 pixels and int64
    labels, checked as :func:`read_split` checks them; a row group's memory at most."""
    path = layout.path
    with _reading(path) as file:
        labels = _labels(
            path, file.read_row_group(group, columns=["label"]).column(0), len(layout.class_names)
        )
        pixels = _group_images(layout, file, group)
    if labels is None and len(pixels):
        raise _damaged(path, f"the labels of row group {group} are all null")
    labels = np.zeros(0, np.int64) if labels is None else labels
    return pixels, labels


def open_split(path: str | os.PathLike) -> ImageSet:
    """A split with its ids and labels read (checked as :func:`read_split` checks them) and its
    pixels left in the file (:class:`SplitPixels`): for a stage that needs the pixels of a few
    rows, or of one row group at a time (evaluating 300,000 images: a row group's pixels, not
    235 MB)."""
    layout = split_layout(path)
    with _reading(layout.path) as file:
        table = file.read(columns=["image_id", "label"])
    _check_no_nulls(layout.path, table.column("image_id"), "image_id")
    labels = _labels(layout.path, table.column("label"), len(layout.class_names))
    ids = np.asarray(table.column("image_id").to_pylist(), dtype=object)
    return ImageSet(ids, SplitPixels(layout), labels, layout.class_names)


@dataclass(frozen=True)
class SplitPixels:
    """The pixels of a split, left in its Parquet file: indexing reads the rows asked for (from
    their row groups, one at a time), :meth:`groups` yields them a row group at a time."""

    layout: SplitLayout

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.layout.rows, self.layout.height, self.layout.width

    def __len__(self) -> int:
        return self.layout.rows

    def __getitem__(self, rows: int | np.ndarray) -> np.ndarray:
        """The (k, height, width) uint8 pixels of the rows ``rows``, in that order (of one row,
        (height, width)), reading only the row groups that hold them."""
        if np.ndim(rows) == 0:
            return self[np.array([rows])][0]
        rows = np.asarray(rows, dtype=np.int64)
        outside = rows[(rows < 0) | (rows >= self.layout.rows)]
        if len(outside):
            raise IndexError(f"row {outside[0]} is not in a split of {self.layout.rows} images")
        starts = np.cumsum((0, *self.layout.group_rows))
        groups = np.searchsorted(starts, rows, side="right") - 1
        pixels = np.empty((len(rows), self.layout.height, self.layout.width), np.uint8)
        for group in np.unique(groups):
            chosen = groups == group
            pixels[chosen] = self.group(int(group))[rows[chosen] - starts[group]]
        return pixels

    def group(self, group: int) -> np.ndarray:
        """Row group ``group``'s (k, height, width) uint8 pixels, checked."""
        with _reading(self.layout.path) as file:
            return _group_images(self.layout, file, group)

    def groups(self) -> Iterator[np.ndarray]:
        """Each row group's pixels in order, one row group read at a time."""
        for group in range(len(self.layout.group_rows)):
            yield self.group(group)
            pa.default_memory_pool().release_unused()  # see read_split


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[pq.ParquetFile]:
    """``path`` open as Parquet; a file that is no readable Parquet becomes the ingest error."""
    check_regular(path, rerun("ingest"))
    try:
        with pq.ParquetFile(path) as file:
            yield file
    except (OSError, pa.ArrowException) as exc:
        reason = str(exc).partition("\n")[0]  # Arrow may add the whole schema on more lines
        raise _damaged(path, f"cannot read the Parquet split ({reason})") from exc


def _checked_metadata(path: Path, file: pq.ParquetFile) -> dict:
    """The split's digitpipe metadata, its columns checked against it."""
    meta = _metadata(path, file.schema_arrow)
    problem = _columns_problem(file.schema_arrow, meta["height"] * meta["width"])
    if problem:
        raise _damaged(path, problem)
    return meta


def _group_images(layout: SplitLayout, file: pq.ParquetFile, group: int) -> np.ndarray:
    """Row group ``group``'s pixels as (k, height, width) uint8 images."""
    size = layout.height * layout.width
    return _group_pixels(layout.path, file, group, size).reshape(-1, layout.height, layout.width)


def _group_pixels(path: Path, file: pq.ParquetFile, group: int, size: int) -> np.ndarray:
    """Row group ``group``'s pixels as (k, size) uint8 rows (a view when it is one chunk)."""
    column = file.read_row_group(group, columns=["pixels"]).column(0)
    _check_no_nulls(path, column, "pixels")
    parts = [
        np.frombuffer(chunk.buffers()[1], np.uint8, len(chunk) * size, chunk.offset * size)
        for chunk in column.chunks
    ]
    rows = parts[0] if len(parts) == 1 else np.concatenate(parts or [np.zeros(0, np.uint8)])
    return rows.reshape(-1, size)


def _check_no_nulls(path: Path, column: pa.ChunkedArray, name: str) -> None:
    if column.null_count:
        raise _damaged(path, f"column {name!r} has {counted(column.null_count, 'null value')}")


def _damaged(path: Path, problem: str) -> DigitpipeError:
    """The error for a split that is not as the ingest stage writes it, and what to do."""
    return DigitpipeError(f"{path}: {problem}; {rerun('ingest')}")


def _metadata(path: Path, schema: pa.Schema) -> dict:
    """The digitpipe metadata of a split's schema, checked."""
    try:
        meta = json.loads(schema.metadata[META_KEY])
    except (KeyError, TypeError):
        raise _damaged(path, "no digitpipe metadata in its schema") from None
    except (ValueError, RecursionError) as exc:
        raise _damaged(path, f"its digitpipe metadata is not valid JSON ({exc})") from None
    problem = _meta_problem(meta)
    if problem:
        raise _damaged(path, problem)
    return meta


def _meta_problem(meta: object) -> str | None:
    """What is wrong with the digitpipe metadata (image size, class names), or None."""
    if not isinstance(meta, dict):
        return f"its digitpipe metadata must be a JSON object, not {excerpt(meta)}"
    height, width, names = meta.get("height"), meta.get("width"), meta.get("class_names")
    if type(height) is not int or type(width) is not int or min(height, width) < 1:
        return (
            "height and width in its digitpipe metadata must be positive whole numbers, not "
            f"{excerpt(height)}, {excerpt(width)}"
        )
    if not are_class_names(names):
        return (
            "class_names in its digitpipe metadata must be a list of distinct strings, not "
            f"{excerpt(names)}"
        )
    return None


def _columns_problem(schema: pa.Schema, size: int) -> str | None:
    """A column missing, repeated or of the wrong type, or pixels of another byte width than the
    metadata's ``size`` (height * width), or None. (Nulls are checked as the columns are read.)"""
    for name, (fits, kind) in COLUMNS.items():
        index = schema.get_field_index(name)  # -1: missing, or more than one
        if index < 0:
            return f"it needs exactly one column {name!r}, it has {excerpt(schema.names)}"
        if not fits(schema.field(index).type):
            return f"column {name!r} is {schema.field(index).type}, not {kind}"
    width = schema.field("pixels").type.byte_width
    if width != size:
        return (
            f"its images are {width} bytes each, but its digitpipe metadata says height * width "
            f"is {size}"
        )
    return None


def _labels(path: Path, column: pa.ChunkedArray, classes: int) -> np.ndarray | None:
    """The labels as class indices; None for an unlabelled split (every label null)."""
    if column.null_count == len(column) and len(column):
        return None
    if column.null_count:
        raise _damaged(path, f"{column.null_count:,} of its {len(column):,} labels are null")
    labels = column.to_numpy().astype(np.int64)
    wrong = (labels < 0) | (labels >= classes)
    if wrong.any():
        raise _damaged(
            path,
            f"{counted(int(wrong.sum()), 'label')} outside the class indices 0 to "
            f"{classes - 1}, e.g. {labels[wrong][0]} (row {int(wrong.argmax())})",
        )
    return labels
