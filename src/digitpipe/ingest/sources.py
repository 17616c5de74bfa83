"""Turn a configured source (IDX pair or CSV) into a validated ImageSet; find the batches of the
drop folder (``data.incoming``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitpipe.core.config import MAX_CLASSES, DataParams, Source
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.checks import check_labels
from digitpipe.dataset.csv_rows import read_csv_rows
from digitpipe.dataset.idx import IdxChunks, IdxHeader, content_sha256, parse_idx, read_bytes
from digitpipe.dataset.images import INCOMING_PREFIX, ImageSet, make_ids
from digitpipe.dataset.shapes import PixelCheck, image_size
from digitpipe.dataset.stored import RowFile, StoredImages


def load_source(
    source: Source, data: DataParams, root: Path, name: str, *, labelled: bool
) -> ImageSet:
    """Read, verify and validate one source; ``name`` prefixes the image ids (``train-000000``).
    The images go a chunk at a time to a temporary file (:mod:`digitpipe.dataset.stored`)."""
    if source.csv is not None:
        path = root / source.csv
        if source.csv in data.checksums:
            _verify_checksum(path, content_sha256(path), source.csv, data)
        table = read_csv_rows(path, data.csv_label_column)
        if labelled and table.labels is None:
            raise DigitpipeError(
                f"{path}: no label column '{data.csv_label_column}' in the header; the "
                f"{name} split needs labels (set data.csv_label_column to the right name)."
            )
        height, width = image_size(path, (table.rows.rows, table.rows.row_bytes), data.image_size)
        images = table.rows.images(height, width)
        labels = table.labels
    else:
        images, labels = _load_idx(source, data, root, name, labelled=labelled)
    if labels is not None:
        path = root / (source.labels or source.csv)
        if data.class_names:
            check_labels(path, labels, len(data.class_names), "data.class_names")
        else:
            check_labels(path, labels, MAX_CLASSES, "digitpipe (data.class_names: null)")
        labels = labels.astype(np.int64, copy=False)
    return ImageSet(make_ids(name, len(images)), images, labels, tuple(data.class_names or ()))


def _load_idx(
    source: Source, data: DataParams, root: Path, name: str, *, labelled: bool
) -> tuple[StoredImages, np.ndarray | None]:
    path = root / source.images
    images = _idx_images(source.images, data, root)
    if source.labels is None:
        if labelled:
            raise DigitpipeError(
                f"{path}: the {name} split needs labels: add 'labels: <idx1 file>' to data.{name}."
            )
        return images, None
    label_path = root / source.labels
    labels = _read_verified(source.labels, data, root)
    if labels.ndim != 1:
        raise DigitpipeError(
            f"{label_path}: a label file must be 1-dimensional (idx1); it has shape {labels.shape}."
        )
    if len(labels) != len(images):
        raise DigitpipeError(
            f"{label_path}: {len(labels)} labels for {len(images)} images in {path}; "
            "the counts must match (is it the label file of another split?)."
        )
    return images, labels


def _read_verified(relative: Path, data: DataParams, root: Path) -> np.ndarray:
    raw = read_bytes(root / relative, "idx")  # stops at the size the IDX header declares
    if relative in data.checksums:
        _verify_checksum(raw.path, raw.sha256, relative, data)
    return parse_idx(raw)


def _idx_images(relative: Path, data: DataParams, root: Path) -> StoredImages:
    """An IDX image file read a chunk at a time into a temporary file, refused as
    ``as_images(path, read_idx(path))`` would refuse it, in the same order: its size, its checksum,
    its shape, its values."""
    path = root / relative
    chunks, pixels = IdxChunks(path), PixelCheck(path)
    rows = None
    for chunk in chunks:
        rows = rows or _row_file(path, chunks.header, data)
        if rows is not None:  # None: a shape refused below, once the checksum is checked
            rows.append(pixels.uint8(chunk).reshape(len(chunk), -1))
    if relative in data.checksums:
        _verify_checksum(path, chunks.sha256, relative, data)
    if chunks.header is None:
        raise DigitpipeError(f"{path}: the file is empty; expected an IDX file.")
    height, width = image_size(path, chunks.header.shape, data.image_size)
    pixels.check()
    return (rows or RowFile(height * width)).images(height, width)


def _row_file(path: Path, header: IdxHeader, data: DataParams) -> RowFile | None:
    """A file for the images of ``header``'s shape, or None when the shape is refused."""
    try:
        height, width = image_size(path, header.shape, data.image_size)
    except DigitpipeError:
        return None
    return RowFile(height * width)


def unused_checksums(data: DataParams, batches: Sequence[Batch]) -> list[Path]:
    """The data.checksums entries that name no file of a configured source or of a drop-folder
    batch: nothing checks them."""
    sources = (data.train, data.test, data.predict, *(batch.source for batch in batches))
    named = {file for source in sources if source is not None for file in source.files}
    return [path for path in data.checksums if path not in named]


def _verify_checksum(path: Path, sha256: str, relative: Path, data: DataParams) -> None:
    if sha256 != data.checksums[relative]:
        raise DigitpipeError(
            f"{path}: checksum mismatch: SHA-256 of the decompressed content is {sha256}, "
            f"data.checksums expects {data.checksums[relative]}. The file is corrupt or not "
            "the one configured; restore it, or update the checksum if the change is intended."
        )


# The drop folder: <batch>.csv, or <batch>-images* + <batch>-labels* (IDX, gzip or raw).
IDX_BATCH = re.compile(r"(?P<batch>.+?)-(?P<kind>images|labels)(?P<rest>.*)")
NOT_BATCHES = (".md", ".txt")  # notes beside the batches (and dotfiles) are skipped


@dataclass(frozen=True)
class Batch:
    """One validated batch of the drop folder."""

    name: str
    source: Source
    images: ImageSet

    @property
    def files(self) -> list[str]:
        return [path.as_posix() for path in self.source.files]


def find_batches(data: DataParams, root: Path) -> dict[str, Source]:
    """The drop folder's batches by name, sorted by name; none when it is off or absent.

    A file that is neither a batch nor a note, a folder, an unpaired IDX file or a batch given
    twice is refused by name.
    """
    if data.incoming is None or not (root / data.incoming).exists():
        return {}
    folder = root / data.incoming
    if not folder.is_dir():
        raise DigitpipeError(f"{folder}: data.incoming must be a folder of batches (or null).")
    _check_apart(data, root, folder)
    csvs: dict[str, Path] = {}
    idx: dict[str, dict[str, Path]] = {"images": {}, "labels": {}}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() in NOT_BATCHES:
            continue
        relative = data.incoming / path.name
        match = IDX_BATCH.fullmatch(path.name)
        if path.is_dir() or (path.suffix.lower() != ".csv" and match is None):
            raise DigitpipeError(
                f"{path}: not a batch. The drop folder {data.incoming} takes files only: "
                "<batch>.csv (a label column plus pixel columns) or an IDX pair "
                "<batch>-images... + <batch>-labels... (gzip or raw)."
            )
        if path.suffix.lower() == ".csv":
            csvs[path.stem] = relative
            continue
        found = idx[match["kind"]]
        if match["batch"] in found:
            raise DigitpipeError(
                f"{path}: batch {match['batch']!r} has two {match['kind']} files "
                f"({found[match['batch']].name} and {path.name}); keep one."
            )
        found[match["batch"]] = relative
    batches = {name: Source(csv=path) for name, path in csvs.items()}
    for name in sorted(idx["images"].keys() | idx["labels"].keys()):
        given = idx["images"].get(name) or idx["labels"][name]
        if name not in idx["images"] or name not in idx["labels"]:
            missing = "images" if name not in idx["images"] else "labels"
            raise DigitpipeError(
                f"{root / given}: batch {name!r} has no {name}-{missing}... file; an IDX batch "
                "is a pair of images and labels."
            )
        if name in batches:
            raise DigitpipeError(
                f"{root / given}: batch {name!r} is given twice, as {name}.csv and as IDX files; "
                "rename one."
            )
        batches[name] = Source(images=idx["images"][name], labels=idx["labels"][name])
    return dict(sorted(batches.items()))


def _check_apart(data: DataParams, root: Path, folder: Path) -> None:
    """Refuse a drop folder holding a configured source: its files would be read as new batches
    (the test set appended to training)."""
    inside = folder.resolve()
    for source in (data.train, data.test, data.predict):
        for path in source.files if source is not None else []:
            if inside in (root / path).resolve().parents:
                raise DigitpipeError(
                    f"{folder}: data.incoming holds the source {path}, whose files would be read "
                    "as new training batches; keep the drop folder for new batches only (the "
                    "default, data/raw/incoming) or set data.incoming: null."
                )


def load_batches(data: DataParams, root: Path, image_size: tuple[int, int]) -> list[Batch]:
    """Read and validate every batch of the drop folder, in name order; a batch whose images are
    not ``image_size`` (the training source's) or whose labels are not classes is refused."""
    batches = []
    for name, source in find_batches(data, root).items():
        images = load_source(source, data, root, f"{INCOMING_PREFIX}{name}", labelled=True)
        if images.image_size != image_size:
            height, width = images.image_size
            raise DigitpipeError(
                f"{root / source.files[0]}: incoming batch {name!r} has {height}x{width} images "
                f"but the training source has {image_size[0]}x{image_size[1]}; the batch is "
                "refused and nothing was written."
            )
        batches.append(Batch(name, source, images))
    return batches
