"""Benchmark: memory at scale. Synthetic 28x28 digits (10 classes) as raw IDX at each size:
ingest seconds and peak RSS, then one short epoch of `model.arch: mlp` (train.limit_batches):
training images/s and peak RSS; and the ingest peak RSS of a 200,000-row Kaggle-style CSV and of
a 40-row CSV of 400x400-pixel images (160,000 columns).

Each stage runs in its own child process (`python stages/<stage>.py` in a temporary project);
its peak RSS is the child's own ``ru_maxrss`` (``os.wait4``), so nothing of this process counts.
The figures go to stdout and to reports/bench/scale.json (git-ignored), checked against the
targets of issue 34. Timings are printed, never asserted.
Run: `.venv/bin/python bench/scale.py [--sizes 100000 1000000] [--skip-csv]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers.data import default_params  # noqa: E402 (the tests' whole-params builder)

GB = 2**30
# Issue 34's targets, peak RSS in GB.
TARGETS = {
    "ingest 1000000": 0.6,
    "train 1000000": 1.3,
    "csv 200000 rows": 1.0,
    "csv 160000 columns": 1.0,
}
WRITE_ROWS = 50_000  # synthetic rows generated at a time (this process stays small too)


def synthetic_idx(folder: Path, count: int, seed: int) -> dict:
    """Raw IDX images (count x 28 x 28) and labels (0..9): a digit-sized blob per image on a
    blank background, so the bytes compress like digits do."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = folder / "images-idx3-ubyte", folder / "labels-idx1-ubyte"
    with images.open("wb") as out_images, labels.open("wb") as out_labels:
        out_images.write(bytes([0, 0, 8, 3]) + np.array([count, 28, 28], ">u4").tobytes())
        out_labels.write(bytes([0, 0, 8, 1]) + np.array([count], ">u4").tobytes())
        for start in range(0, count, WRITE_ROWS):
            rows = min(WRITE_ROWS, count - start)
            out_images.write(digits(rng, rows).tobytes())
            out_labels.write(rng.integers(0, 10, rows, dtype=np.uint8).tobytes())
    return {"images": str(images), "labels": str(labels)}


def digits(rng: np.random.Generator, rows: int, side: int = 28) -> np.ndarray:
    """``rows`` images with random ink in their middle square and zeros around it."""
    images = np.zeros((rows, side, side), np.uint8)
    inner = slice(side // 5, side - side // 5)
    ink = rng.integers(0, 256, images[:, inner, inner].shape, dtype=np.uint8)
    images[:, inner, inner] = np.where(ink > 100, ink, 0)
    return images


def synthetic_csv(path: Path, rows: int, side: int, seed: int) -> Path:
    """A Kaggle-style CSV (label, pixel0..) of ``rows`` synthetic ``side`` x ``side`` images."""
    rng = np.random.default_rng(seed)
    columns = ["label", *(f"pixel{k}" for k in range(side * side))]
    step = max(1, WRITE_ROWS * 784 // (side * side))
    with path.open("wb") as out:
        out.write((",".join(columns) + "\n").encode())
        for start in range(0, rows, step):
            count = min(step, rows - start)
            flat = digits(rng, count, side).reshape(count, -1)
            table = pa.table([rng.integers(0, 10, count), *flat.T], names=columns)
            pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False))
    return path


def run_stage(project: Path, stage: str) -> dict:
    """Run ``stages/<stage>.py`` in ``project``; its wall seconds and peak RSS in GB."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(REPO / "stages" / f"{stage}.py")],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{stage} failed in {project}:\n{child.stderr.read().decode()[-3000:]}")
    child.stderr.close()
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(usage.ru_maxrss * 1024 / GB, 3)}


def make_project(folder: Path, data: dict, **sections: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    params = default_params(
        data, track={"enabled": False}, runtime={"progress": "none"}, **sections
    )
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def bench_idx(tmp: Path, count: int, batches: int) -> dict:
    source = synthetic_idx(tmp / f"raw-{count}", count, seed=count)
    project = make_project(
        tmp / f"idx-{count}",
        {"train": source, "test_fraction": 0.1, "val_fraction": 0.1},
        model={"arch": "mlp"},
        train={"max_epochs": 1, "limit_batches": batches},
    )
    ingest = run_stage(project, "ingest")
    train = run_stage(project, "train")
    speed = json.loads((project / "reports/train/speed.json").read_text())
    return {
        "ingest": ingest,
        "train": {**train, "images_per_s": speed["images_per_s"]},
    }


def bench_csv(tmp: Path, name: str, rows: int, side: int) -> dict:
    path = synthetic_csv(tmp / f"{name}.csv", rows, side, seed=rows)
    project = make_project(
        tmp / name, {"train": {"csv": str(path)}, "test": None, "test_fraction": 0.1}
    )
    return {"file_mb": round(path.stat().st_size / 2**20, 1), **run_stage(project, "ingest")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--limit-batches", type=int, default=50)
    parser.add_argument("--skip-csv", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="digitpipe-scale-") as tmp:
        for count in args.sizes:
            measured = bench_idx(Path(tmp), count, args.limit_batches)
            results[f"ingest {count}"] = measured["ingest"]
            results[f"train {count}"] = measured["train"]
            print(f"{count:>9,} images: {json.dumps(measured)}", flush=True)
        if not args.skip_csv:
            for name, rows, side in (
                ("csv 200000 rows", 200_000, 28),
                ("csv 160000 columns", 40, 400),
            ):
                results[name] = bench_csv(Path(tmp), name.replace(" ", "-"), rows, side)
                print(f"{name}: {json.dumps(results[name])}", flush=True)
    for name, target in TARGETS.items():
        if name in results:
            peak = results[name]["peak_rss_gb"]
            results[name]["target_gb"] = target
            verdict = "ok" if peak < target else "OVER TARGET"
            print(f"{name:<22} peak RSS {peak:.3f} GB   target < {target} GB: {verdict}")
    out = REPO / "reports" / "bench" / "scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
