"""The ingest stage: read every source, split, write the Parquet splits and a first look."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from digitpipe.core.atomic import staged_outputs
from digitpipe.core.config import DataParams, Params, Source
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.checks import check_labels
from digitpipe.dataset.images import ImageSet, batch_of, concat
from digitpipe.dataset.parquet import write_split
from digitpipe.ingest.duplicates import (
    Leak,
    digests,
    duplicate_counts,
    refuse_a_copy_of_the_test_split,
    without_test_images,
)
from digitpipe.ingest.figures import class_distribution_figure, sample_images_figure
from digitpipe.ingest.sources import Batch, load_batches, load_source, unused_checksums
from digitpipe.ingest.split import split_off, stratified_sample
from digitpipe.model.sizes import check_image_size
from digitpipe.outputs import ingest, write_report
from digitpipe.outputs.ingest import IngestSummary
from digitpipe.plotting import save_figure


def build_splits(data: DataParams, root: Path = Path(".")) -> dict[str, ImageSet]:
    """Read every source and return the named splits: train, val, test and maybe predict."""
    return _build(data, root)[0]


def _build(data: DataParams, root: Path) -> tuple[dict[str, ImageSet], list[Batch], list[Leak]]:
    """The splits, the drop folder's batches that went into train and val, and the images
    dropped from them as copies of test images.

    A held-out test split (no test source) comes from the training source alone, so new batches
    never move images the current champion trained on into the test split.
    """
    source = load_source(data.train, data, root, "train", labelled=True)
    names = class_names(data, source)
    if data.test is not None:
        test = load_source(data.test, data, root, "test", labelled=True)
        check_same_size(data.test, test, data.train, source, root)
        test = named(test, names, data, root / data.test.files[-1])
        labelled = named(source, names, data)
    else:
        kept, held = hold_out(source.labels, data.test_fraction, data.seed + 1, "test_fraction")
        labelled, test = named(source.take(kept), names, data), held_out(source.take(held), names)
    batches = [
        replace(batch, images=named(batch.images, names, data, root / batch.source.files[-1]))
        for batch in load_batches(data, root, source.image_size)
    ]
    test_digests = digests(test.images)
    labelled, leak = without_test_images(labelled, test_digests, data.train.files[0])
    parts, leaks = [labelled], [leak]
    for batch in batches:
        kept, leak = without_test_images(batch.images, test_digests, batch.source.files[0])
        refuse_a_copy_of_the_test_split(leak, batch.name, len(batch.images), data.incoming)
        parts.append(kept)
        leaks.append(leak)
    labelled = concat(parts)
    check_every_class_trained(labelled, data)
    train_rows, val_rows = hold_out(labelled.labels, data.val_fraction, data.seed, "val_fraction")
    splits = {"train": labelled.take(train_rows), "val": labelled.take(val_rows), "test": test}
    if data.predict is not None:
        predict = load_source(data.predict, data, root, "predict", labelled=False)
        check_same_size(data.predict, predict, data.train, source, root)
        splits["predict"] = named(predict, names, data)
    limited = {
        name: _limit(images, getattr(data.limit, name), data.seed)
        for name, images in splits.items()
    }
    return limited, batches, [leak for leak in leaks if leak is not None]


def hold_out(
    labels: np.ndarray, fraction: float, seed: int, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_off`, refusing a fraction too small to hold out a single image."""
    kept, held = split_off(labels, fraction, seed)
    if not len(held):
        raise DigitpipeError(
            f"data.{key} {fraction} of {len(labels):,} labelled images holds out no image; "
            f"raise it to at least {1 / len(labels):.2g}."
        )
    return kept, held


def class_names(data: DataParams, source: ImageSet) -> tuple[str, ...]:
    """The configured class names, or 0..K-1 from the training source's labels when
    data.class_names is null."""
    return tuple(data.class_names or (str(k) for k in range(int(source.labels.max()) + 1)))


def named(
    images: ImageSet, names: tuple[str, ...], data: DataParams, labels_file: Path | None = None
) -> ImageSet:
    """``images`` with the dataset's class names; labels read from ``labels_file`` are checked
    against classes the training source defined (when data.class_names does not list them)."""
    if labels_file is not None and not data.class_names:
        check_labels(labels_file, images.labels, len(names), NAMED_BY_TRAINING)
    return replace(images, class_names=names)


NAMED_BY_TRAINING = "the training source (data.class_names: null)"


def check_every_class_trained(labelled: ImageSet, data: DataParams) -> None:
    """Refuse classes some of which have no training image: names and data disagree, or (with
    the classes taken from the largest label) a stray label makes classes that do not exist."""
    counts = labelled.class_counts()
    empty = [name for name, count in counts.items() if not count]
    if not empty:
        return
    missing = f"{', '.join(map(repr, empty[:10]))}{' ...' if len(empty) > 10 else ''}"
    if data.class_names:
        raise DigitpipeError(
            f"data.class_names: {len(counts)} classes, but the training data has no image of "
            f"{missing}; list only the classes the labels use (label k is the k-th name), or "
            "set data.class_names: null to name them 0..K-1."
        )
    raise DigitpipeError(
        f"the largest training label is {len(counts) - 1}, so (data.class_names: null) the "
        f"classes are 0..{len(counts) - 1}, but no training image has the label {missing}; "
        "look for a stray label in the training source, or list the classes in "
        "data.class_names."
    )


def held_out(test: ImageSet, names: tuple[str, ...]) -> ImageSet:
    """A test split held out of the training source, its ids saying so: ``test-from-train-000794``
    is row 794 of the training source, never trained on."""
    ids = np.array([f"test-from-{image_id}" for image_id in test.ids], dtype=object)
    return replace(test, ids=ids, class_names=names)


def check_same_size(
    source: Source, images: ImageSet, train_source: Source, train: ImageSet, root: Path
) -> None:
    """Refuse a source whose images are not the training source's size, naming both files."""
    if images.image_size != train.image_size:
        (height, width), (h, w) = images.image_size, train.image_size
        raise DigitpipeError(
            f"{root / source.files[0]}: images are {height}x{width}, but the training source "
            f"{root / train_source.files[0]} has {h}x{w}; every source of a dataset must share "
            "one image size (resize one of them, or choose matching files)."
        )


def _limit(images: ImageSet, limit: int | None, seed: int) -> ImageSet:
    """At most ``limit`` rows: a stratified sample when labelled, else the first rows."""
    if limit is None or limit >= len(images):
        return images
    if images.labels is None:
        return images.take(np.arange(limit))
    return images.take(stratified_sample(images.labels, limit, seed))


def write_splits(splits: dict[str, ImageSet], out_dir: Path) -> None:
    """Write each split to ``out_dir/<name>.parquet``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, images in splits.items():
        write_split(images, out_dir / f"{name}.parquet")


def summarize(
    splits: dict[str, ImageSet], batches: Sequence[Batch] = (), leaks: Sequence[Leak] = ()
) -> dict:
    """Counts per split and per class, and the image size; with drop-folder batches, each
    batch's files, images per class and how many of them each split holds; with exact duplicate
    images, their counts (:func:`duplicate_counts`)."""
    any_split = next(iter(splits.values()))
    height, width = any_split.image_size
    summary = {
        "image_size": {"height": height, "width": width},
        "class_names": list(any_split.class_names),
        "splits": {
            name: {"count": len(images), "per_class": images.class_counts()}
            for name, images in splits.items()
        },
    }
    if batches:
        summary["incoming"] = {
            "count": sum(len(batch.images) for batch in batches),
            "batches": {batch.name: _batch_summary(batch, splits, leaks) for batch in batches},
        }
    duplicates = duplicate_counts(splits, list(leaks))
    if duplicates is not None:  # no key when there is none: such a summary is as it was
        summary["duplicates"] = duplicates
    return summary


def _batch_summary(batch: Batch, splits: dict[str, ImageSet], leaks: Sequence[Leak]) -> dict:
    placed = {
        name: sum(1 for image_id in splits[name].ids if batch_of(image_id) == batch.name)
        for name in ("train", "val")
    }
    summary = {
        "files": batch.files,
        "count": len(batch.images),
        "per_class": batch.images.class_counts(),
        "in_splits": placed,
    }
    dropped = sum(leak.count for leak in leaks if leak.file in batch.files)
    if dropped:
        summary["identical_to_test"] = dropped
    return summary


def limit_warning(summary: dict) -> str | None:
    """Say so when data.limit sampled drop-folder images out of train and val."""
    incoming = summary.get("incoming")
    if incoming is None:
        return None
    batches = incoming["batches"].values()
    kept = sum(sum(batch["in_splits"].values()) for batch in batches)
    usable = incoming["count"] - sum(batch.get("identical_to_test", 0) for batch in batches)
    if kept == usable:
        return None
    return (
        f"data.limit keeps {kept:,} of the {usable:,} images of the drop-folder "
        "batches (train and val are stratified samples of all their images), and a retrain's "
        "drift report compares only those; set data.limit.train and data.limit.val to null to "
        "train on every image."
    )


def run(params: Params, root: Path = Path(".")) -> dict:
    """Run the ingest stage under ``root``; return the summary it writes. The splits and the
    reports appear together or not at all (both are swapped in only once everything is drawn)."""
    splits, batches, leaks = _build(params.data, root)
    # Here, not first at train: no splits are written for a model that cannot take them.
    check_image_size(params.model.arch, *splits["train"].image_size)
    summary = summarize(splits, batches, leaks)
    warnings = [
        *(leak.warning() for leak in leaks),
        *(
            f"data.checksums lists {path}, which is no file of data.train, data.test, "
            "data.predict or a drop-folder batch, so nothing was checked against it; correct the "
            "path or remove the entry."
            for path in unused_checksums(params.data, batches)
        ),
        limit_warning(summary),
    ]
    for warning in filter(None, warnings):
        print(f"digitpipe: warning: {warning}", file=sys.stderr)
    with staged_outputs(root, "ingest", (ingest.PROCESSED_DIR, ingest.INGEST_REPORTS)) as out:
        write_splits(splits, out / ingest.PROCESSED_DIR)
        write_report(out / ingest.SUMMARY, IngestSummary, summary)
        save_figure(class_distribution_figure(summary), out / ingest.CLASS_DISTRIBUTION)
        samples = sample_images_figure(splits["train"], params.data.seed)
        save_figure(samples, out / ingest.SAMPLE_IMAGES)
    return summary
