"""Benchmark: evaluating the 10000 MNIST test images with LeNet on the CPU.

The prediction pass (batched, inference mode, channels-last, softmax) and the full report
(predictions table, metrics, confusion matrix, statistics, worst cases and every figure) are
timed separately, against a bare ``net(x)`` over the same float tensor in the same run. LeNet
has random weights: the work is the same. Needs `data/processed` (`dvc repro ingest`).
Run: `.venv/bin/python bench/evaluate.py`.
"""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from record import Row, record
from timing import REPEATS, median_time

from digitpipe.core.config import load_params
from digitpipe.dataset.parquet import read_split
from digitpipe.evaluate.run import write_reports
from digitpipe.model.inference import predict_probabilities
from digitpipe.model.zoo import build_model
from digitpipe.outputs.ingest import PROCESSED_DIR

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 5.0


def main() -> int:
    settings = load_params(REPO / "params.yaml").evaluate
    test = read_split(REPO / PROCESSED_DIR / "test.parquet")
    torch.manual_seed(0)
    net = build_model("lenet", *test.image_size, len(test.class_names), 0.13, 0.31).eval()
    bare_net = copy.deepcopy(net)
    pixels = torch.from_numpy(test.images.astype(np.float32)).unsqueeze(1)

    def bare() -> None:
        with torch.inference_mode():
            bare_net(pixels)

    probabilities = predict_probabilities(net, test.images, settings.batch_size, 0)
    with tempfile.TemporaryDirectory() as tmp:
        times = {
            "bare net(x)": median_time(bare),
            "prediction pass": median_time(
                lambda: predict_probabilities(net, test.images, settings.batch_size, 0)
            ),
            "full report": median_time(
                lambda: write_reports(test, probabilities, settings, Path(tmp))
            ),
        }
    total = times["prediction pass"] + times["full report"]
    baseline = times["bare net(x)"]
    print(
        f"LeNet, {len(test)} test images, batch {settings.batch_size}, "
        f"{torch.get_num_threads()} threads (median of {REPEATS} after a warm-up):"
    )
    for name, seconds in times.items():
        print(f"  {name:<16} {seconds:6.2f} s   ratio to bare {seconds / baseline:5.2f}")
    verdict = "ok" if total <= TARGET_S else "OVER TARGET"
    print(
        f"  {'total':<16} {total:6.2f} s   ratio to bare {total / baseline:5.2f}   "
        f"target < {TARGET_S} s: {verdict}"
    )
    row = Row(
        what=f"evaluate {len(test)} test images with LeNet (prediction + full report)",
        value=round(total, 2),
        unit="s",
        detail=f"prediction {times['prediction pass']:.2f} s, report {times['full report']:.2f} s",
        ratio=round(total / baseline, 3),
        baseline=f"a bare `net(x)` ({baseline:.2f} s)",
        target=f"< {TARGET_S:.0f} s",
        met=total < TARGET_S,
        command="bench/evaluate.py",
    )
    record("evaluate", [row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
