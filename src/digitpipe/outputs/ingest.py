"""The ingest stage's outputs: the validated splits and their summary."""

from __future__ import annotations

from pathlib import Path

from digitpipe.outputs import Declared, StageReport

PROCESSED_DIR = Path("data/processed")
INGEST_REPORTS = Path("reports/ingest")
SUMMARY = INGEST_REPORTS / "summary.json"  # counts per split and class, incoming batches
CLASS_DISTRIBUTION = INGEST_REPORTS / "class_distribution.png"
SAMPLE_IMAGES = INGEST_REPORTS / "sample_images.png"

DECLARED = Declared(outs=(PROCESSED_DIR, SUMMARY), plots=(CLASS_DISTRIBUTION, SAMPLE_IMAGES))


def split_file(split: str) -> Path:
    """The Parquet file of one split (train, val, test, predict)."""
    return PROCESSED_DIR / f"{split}.parquet"


class ImageSize(StageReport):
    height: int
    width: int


class SplitSummary(StageReport):
    count: int


class IngestSummary(StageReport):
    """reports/ingest/summary.json."""

    image_size: ImageSize
    class_names: list[str]
    splits: dict[str, SplitSummary]
