"""Benchmark: `digitpipe predict` on a 28000-row Kaggle test.csv with the default bncnn.

End to end (load the model, read and validate the CSV, predict, write predictions.csv and the
submission) against the bare work in the same run: ``pandas.read_csv`` plus one forward pass
over the same pixels, in one call (all 28000 images at once: about 1.5 GB of activations) and in
calls of BATCH_SIZE images as ``predict`` makes them; then end to end again with the default
recipe's test-time shifts (five forward passes), as a ratio to without. The rows are MNIST test
images, repeated; the weights are random (the work is the same). Run:
`.venv/bin/python bench/predict.py`.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from record import Row, record
from timing import REPEATS, median_time

from digitpipe.dataset.idx import read_idx
from digitpipe.model.export import ModelSpec, save_model
from digitpipe.predict.command import predict
from digitpipe.predict.predictor import BATCH_SIZE, Predictor

REPO = Path(__file__).resolve().parents[1]
ROWS = 28000
TARGET_S = 10.0


def write_test_csv(path: Path) -> None:
    """A Kaggle-layout test.csv: a header pixel0..pixel783 and ROWS rows of MNIST test pixels."""
    images = read_idx(REPO / "data/raw/mnist/t10k-images-idx3-ubyte.gz").reshape(10000, -1)
    rows = np.resize(images, (ROWS, images.shape[1]))
    columns = [f"pixel{i}" for i in range(rows.shape[1])]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_test_csv(out / "test.csv")
        torch.manual_seed(0)
        spec = ModelSpec("bncnn", 28, 28, [str(k) for k in range(10)], 0.13, 0.31)
        save_model(spec.build(), spec, out / "model")
        shifting = replace(spec, test_time_shift=1)  # as the default recipe exports it
        save_model(shifting.build(), shifting, out / "model-shifts")
        bare_net = spec.build().eval()

        def bare(batch: int = ROWS) -> None:
            pixels = torch.tensor(pd.read_csv(out / "test.csv").to_numpy(np.float32))
            with torch.inference_mode():
                for chunk in pixels.reshape(-1, 1, 28, 28).split(batch):
                    bare_net(chunk)

        def ours(model: str = "model") -> str:
            return predict(
                [out / "test.csv"],
                Predictor.from_dir(out / model),
                out / "predictions.csv",
                out / "submission.csv",
                strict=False,
            )

        print(ours())
        ours_s = median_time(ours)
        shifts_s = median_time(lambda: ours("model-shifts"))
        baselines = {
            "pandas.read_csv + one forward pass": median_time(bare),
            f"  the same, {BATCH_SIZE} images a call": median_time(lambda: bare(BATCH_SIZE)),
        }
    verdict = "ok" if ours_s <= TARGET_S else "OVER TARGET"
    print(
        f"bncnn, {ROWS} CSV rows, {torch.get_num_threads()} threads "
        f"(median of {REPEATS} after a warm-up):"
    )
    name = "digitpipe predict (end to end)"
    print(f"  {name:<36} {ours_s:6.2f} s   target < {TARGET_S} s: {verdict}")
    for name, seconds in baselines.items():
        print(f"  {name:<36} {seconds:6.2f} s   ratio {ours_s / seconds:5.2f}")
    name = "the same, with test-time shifts of 1"
    print(f"  {name:<36} {shifts_s:6.2f} s   ratio to without {shifts_s / ours_s:5.2f}")
    one_call, batched = baselines.values()
    rows = [
        Row(
            what=f"predict a {ROWS}-row Kaggle CSV end to end (`bncnn`, one pass per image)",
            value=round(ours_s, 2),
            unit="s",
            ratio=round(ours_s / batched, 3),
            baseline=f"`pandas.read_csv` + forward passes of {BATCH_SIZE} images ({batched:.2f} s; "
            f"ratio {ours_s / one_call:.2f} to one pass of all, {one_call:.2f} s)",
            target=f"< {TARGET_S:.0f} s",
            met=ours_s < TARGET_S,
            command="bench/predict.py",
        ),
        Row(
            what="the same with the default model's test-time shifts (five passes per image)",
            value=round(shifts_s, 2),
            unit="s",
            ratio=round(shifts_s / ours_s, 3),
            baseline="one pass per image",
            target=f"< {TARGET_S:.0f} s",
            met=shifts_s < TARGET_S,
            command="bench/predict.py",
        ),
    ]
    record("predict", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
