"""The ingest stage: read every source, split, write the Parquet splits and a first look."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitpipe.core.atomic import atomic_dir, write_json
from digitpipe.core.config import DataParams, Params
from digitpipe.core.paths import INGEST_REPORTS, PROCESSED_DIR
from digitpipe.dataset.images import ImageSet
from digitpipe.dataset.parquet import write_split
from digitpipe.ingest.figures import class_distribution_figure, sample_digits_figure
from digitpipe.ingest.sources import load_source
from digitpipe.ingest.split import split_off, stratified_sample
from digitpipe.plotting import save_figure


def build_splits(data: DataParams, root: Path = Path(".")) -> dict[str, ImageSet]:
    """Read every source and return the named splits: train, val, test and maybe predict."""
    labelled = load_source(data.train, data, root, "train", labelled=True)
    if data.test is not None:
        test = load_source(data.test, data, root, "test", labelled=True)
    else:
        kept, held = split_off(labelled.labels, data.test_fraction, data.seed + 1)
        labelled, test = labelled.take(kept), labelled.take(held)
    train_rows, val_rows = split_off(labelled.labels, data.val_fraction, data.seed)
    splits = {"train": labelled.take(train_rows), "val": labelled.take(val_rows), "test": test}
    if data.predict is not None:
        splits["predict"] = load_source(data.predict, data, root, "predict", labelled=False)
    return {
        name: _limit(images, getattr(data.limit, name), data.seed)
        for name, images in splits.items()
    }


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


def summarize(splits: dict[str, ImageSet]) -> dict:
    """Counts per split and per class, and the image size."""
    any_split = next(iter(splits.values()))
    height, width = any_split.image_size
    return {
        "image_size": {"height": height, "width": width},
        "class_names": list(any_split.class_names),
        "splits": {
            name: {"count": len(images), "per_class": images.class_counts()}
            for name, images in splits.items()
        },
    }


def run(params: Params, root: Path = Path(".")) -> dict:
    """Run the ingest stage under ``root``; return the summary it writes."""
    splits = build_splits(params.data, root)
    write_splits(splits, root / PROCESSED_DIR)
    summary = summarize(splits)
    report_dir = root / INGEST_REPORTS
    write_json(report_dir / "summary.json", summary)
    save_figure(class_distribution_figure(summary), report_dir / "class_distribution.png")
    save_figure(
        sample_digits_figure(splits["train"], params.data.seed), report_dir / "sample_digits.png"
    )
    return summary
