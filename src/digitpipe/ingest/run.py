"""The ingest stage: read every source, split, write the Parquet splits and a first look."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from digitpipe.core.atomic import atomic_dir, write_json
from digitpipe.core.config import DataParams, Params
from digitpipe.core.paths import INGEST_REPORTS, PROCESSED_DIR
from digitpipe.dataset.images import ImageSet
from digitpipe.dataset.parquet import write_split
from digitpipe.ingest.figures import class_distribution_figure, sample_digits_figure
from digitpipe.ingest.sources import INCOMING_PREFIX, Batch, concat, load_batches, load_source
from digitpipe.ingest.split import split_off, stratified_sample
from digitpipe.plotting import save_figure


def build_splits(data: DataParams, root: Path = Path(".")) -> dict[str, ImageSet]:
    """Read every source and return the named splits: train, val, test and maybe predict."""
    return _build(data, root)[0]


def _build(data: DataParams, root: Path) -> tuple[dict[str, ImageSet], list[Batch]]:
    """The splits, and the drop folder's batches that went into train and val.

    A held-out test split (no test source) comes from the training source alone, so new batches
    never move images the current champion trained on into the test split.
    """
    labelled = load_source(data.train, data, root, "train", labelled=True)
    if data.test is not None:
        test = load_source(data.test, data, root, "test", labelled=True)
    else:
        kept, held = split_off(labelled.labels, data.test_fraction, data.seed + 1)
        labelled, test = labelled.take(kept), labelled.take(held)
    batches = load_batches(data, root, labelled.image_size)
    labelled = concat([labelled, *(batch.images for batch in batches)])
    train_rows, val_rows = split_off(labelled.labels, data.val_fraction, data.seed)
    splits = {"train": labelled.take(train_rows), "val": labelled.take(val_rows), "test": test}
    if data.predict is not None:
        splits["predict"] = load_source(data.predict, data, root, "predict", labelled=False)
    limited = {
        name: _limit(images, getattr(data.limit, name), data.seed)
        for name, images in splits.items()
    }
    return limited, batches


def _limit(images: ImageSet, limit: int | None, seed: int) -> ImageSet:
    """At most ``limit`` rows: a stratified sample when labelled, else the first rows."""
    if limit is None or limit >= len(images):
        return images
    if images.labels is None:
        return images.take(np.arange(limit))
    return images.take(stratified_sample(images.labels, limit, seed))


def write_splits(splits: dict[str, ImageSet], out_dir: Path) -> None:
    """Write each split to ``out_dir/<name>.parquet``; the directory appears only when complete."""
    with atomic_dir(out_dir) as tmp:
        for name, images in splits.items():
            write_split(images, tmp / f"{name}.parquet")


def summarize(splits: dict[str, ImageSet], batches: Sequence[Batch] = ()) -> dict:
    """Counts per split and per class, and the image size; with drop-folder batches, each
    batch's files, images per class and how many of them each split holds."""
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
            "batches": {batch.name: _batch_summary(batch, splits) for batch in batches},
        }
    return summary


def _batch_summary(batch: Batch, splits: dict[str, ImageSet]) -> dict:
    source = f"{INCOMING_PREFIX}{batch.name}"
    placed = {
        name: sum(1 for image_id in splits[name].ids if image_id.rsplit("-", 1)[0] == source)
        for name in ("train", "val")
    }
    return {
        "files": batch.files,
        "count": len(batch.images),
        "per_class": batch.images.class_counts(),
        "in_splits": placed,
    }


def run(params: Params, root: Path = Path(".")) -> dict:
    """Run the ingest stage under ``root``; return the summary it writes."""
    splits, batches = _build(params.data, root)
    write_splits(splits, root / PROCESSED_DIR)
    summary = summarize(splits, batches)
    report_dir = root / INGEST_REPORTS
    write_json(report_dir / "summary.json", summary)
    save_figure(class_distribution_figure(summary), report_dir / "class_distribution.png")
    save_figure(
        sample_digits_figure(splits["train"], params.data.seed), report_dir / "sample_digits.png"
    )
    return summary
