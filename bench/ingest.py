"""Benchmark: ingest time of the full MNIST IDX set and of a 42000-row Kaggle-style CSV.

Each is reported against the bare read in the same run (gzip + np.frombuffer for IDX,
pandas.read_csv for the CSV). Run: `.venv/bin/python bench/ingest.py` (or `make bench`).
"""

from __future__ import annotations

import gzip
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from record import Row, record
from timing import median_time

from digitpipe.core.config import load_params
from digitpipe.dataset.idx import read_idx
from digitpipe.ingest.run import build_splits, write_splits

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "data" / "raw" / "mnist"


def bare_idx_read() -> None:
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        data = gzip.decompress((MNIST / f"{name}.gz").read_bytes())
        np.frombuffer(data, np.uint8, offset=16 if "images" in name else 8)


def write_kaggle_csv(path: Path, rows: int) -> None:
    images = read_idx(MNIST / "train-images-idx3-ubyte.gz")[:rows].reshape(rows, -1)
    labels = read_idx(MNIST / "train-labels-idx1-ubyte.gz")[:rows]
    frame = pd.DataFrame(images, columns=[f"pixel{i}" for i in range(images.shape[1])])
    frame.insert(0, "label", labels)
    frame.to_csv(path, index=False)


def report(what: str, ours: float, baseline: float, baseline_name: str, target: float) -> Row:
    verdict = "ok" if ours <= target else "OVER TARGET"
    print(
        f"{what:<28} {ours:6.3f} s   {baseline_name} {baseline:6.3f} s   "
        f"ratio {ours / baseline:5.2f}   target <= {target} s: {verdict}"
    )
    return Row(
        what=what,
        value=round(ours, 3),
        unit="s",
        ratio=round(ours / baseline, 3),
        baseline=f"{baseline_name} ({baseline:.3f} s)",
        target=f"<= {target} s",
        met=ours <= target,
        command="bench/ingest.py",
    )


def main() -> int:
    data = load_params(REPO / "params.yaml").data
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        idx_time = median_time(lambda: write_splits(build_splits(data, REPO), out / "idx"))
        idx = report(
            "IDX ingest, full MNIST (70000 images: read, verify checksums, validate, split, "
            "write Parquet)",
            idx_time,
            median_time(bare_idx_read),
            "gzip + `np.frombuffer`",
            1.5,
        )
        write_kaggle_csv(out / "train.csv", 42000)
        csv_data = data.model_copy(
            update={
                "train": data.train.model_validate({"csv": str(out / "train.csv")}),
                "test": None,
                "test_fraction": 0.1,
                "checksums": {},
            }
        )
        csv_time = median_time(lambda: write_splits(build_splits(csv_data, REPO), out / "csv"))
        csv = report(
            "CSV ingest, 42000 Kaggle-style rows",
            csv_time,
            median_time(lambda: pd.read_csv(out / "train.csv")),
            "`pandas.read_csv`",
            2.5,
        )
    record("ingest", [idx, csv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
